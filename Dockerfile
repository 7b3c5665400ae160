# The pager daemon. Build: `make image` (docker build -t pager-actors .).
# Run:  docker run -p 8080:8080 -v pager-data:/data pager-actors
# Mount your own /etc/pager/pager.toml; secrets via PAGER_SMS_AUTH_TOKEN etc.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 pager \
    && mkdir -p /data /etc/pager \
    && chown 10001:10001 /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pager_actors ./pager_actors
COPY adapters ./adapters
RUN pip install .

COPY --chown=10001:10001 docker/pager.toml /etc/pager/pager.toml

USER 10001
EXPOSE 8080
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["pager-actors", "run", "--config", "/etc/pager/pager.toml"]
