# syntax=docker/dockerfile:1
# One image for every role of otel-insights; the command picks it:
#   run --config FILE      the pipeline worker (the default command)
#   gateway --config FILE  OTLP gRPC/HTTP -> Kafka
#   ui --config FILE       the web UI against a ClickHouse server
#   migrate --config FILE  the ClickHouse schema, once (a Job or a one-shot service)
# Every long-running role serves /healthz and /readyz: run and gateway on the prometheus
# exporter's endpoint (9464), ui on extensions.ui.endpoint (8080). Build from the repository
# root: docker build -t otel-insights .

# --- stage 1: wheels for the project and its runtime dependencies, as pinned in requirements.lock
FROM python:3.11.14-slim-bookworm AS wheels
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY processor ./processor
COPY pipelines ./pipelines
# requirements.lock as constraints: only what the project needs at run time is built, at the
# locked versions (the lock also pins the test tools, which the image leaves out).
RUN pip wheel --wheel-dir /wheels --constraint requirements.lock .

# --- stage 2: the runtime, no compilers and no build tree
FROM python:3.11.14-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="otel-insights" \
      org.opencontainers.image.description="OpenTelemetry Collector-compatible stream processor: service graph, health windows and incident insights from OTLP traces on Kafka into ClickHouse" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# Read-only root filesystem: the only writable place the processes need is TMPDIR (mount an
# emptyDir or tmpfs there; faust's scratch directory and any cache go there). An embedded
# chdb store (chdb:///var/lib/otel-insights/...), if configured, goes under the data volume.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    TMPDIR=/tmp \
    HOME=/tmp \
    OTEL_INSIGHTS_HEALTH_URL=http://127.0.0.1:9464/healthz

RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "otel-insights==${VERSION}" \
    && groupadd --system --gid 10001 otel-insights \
    && useradd --system --uid 10001 --gid otel-insights --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin otel-insights \
    && mkdir -p /var/lib/otel-insights /etc/otel-insights \
    && chown 10001:10001 /var/lib/otel-insights

COPY config/production.yaml /etc/otel-insights/config.yaml

USER 10001:10001
WORKDIR /var/lib/otel-insights
VOLUME ["/var/lib/otel-insights"]
# 4317/4318 OTLP (gateway), 8080 web UI, 9464 /metrics /healthz /readyz and the query API
EXPOSE 4317 4318 8080 9464

# Liveness of whichever role runs: set OTEL_INSIGHTS_HEALTH_URL for the UI
# (http://127.0.0.1:8080/healthz); a one-shot migrate finishes before it matters.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['OTEL_INSIGHTS_HEALTH_URL'], timeout=4)"]

ENTRYPOINT ["otel-insights"]
CMD ["run", "--config", "/etc/otel-insights/config.yaml"]
