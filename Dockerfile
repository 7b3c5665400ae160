# The pager daemon. Build: `make image` (docker build -t pager-actors .).
# Run:  cp docker/pager.toml pager.toml    (edit it: services, gateways)
#       docker run -p 8080:8080 -v pager-data:/data \
#         -v "$PWD/pager.toml:/etc/pager/pager.toml:ro" pager-actors
# Secrets via the environment: -e PAGER_SMS_AUTH_TOKEN=... and the like.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 pager \
    && mkdir -p /data /etc/pager \
    && chown 10001:10001 /data

WORKDIR /app
COPY pyproject.toml README.md docker/constraints.txt ./
COPY pager_actors ./pager_actors
COPY adapters ./adapters
# Exactly the versions the tests ran with (docker/constraints.txt, `make constraints`).
RUN pip install --constraint constraints.txt .

COPY --chown=10001:10001 docker/pager.toml /etc/pager/pager.toml

USER 10001
EXPOSE 8080
VOLUME ["/data"]
STOPSIGNAL SIGTERM
# Asks /healthz on whatever port [server] listen names.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["pager-actors", "healthcheck", "--config", "/etc/pager/pager.toml"]
CMD ["pager-actors", "run", "--config", "/etc/pager/pager.toml"]
