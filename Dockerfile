FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 pager
WORKDIR /app

COPY pyproject.toml README.md ./
COPY pager_actors ./pager_actors
COPY adapters ./adapters
RUN pip install .

USER pager
CMD ["python", "-m", "pager_actors", "demo"]
