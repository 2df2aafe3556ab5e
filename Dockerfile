# One image for every process of an autoflow deployment:
#   autoflow serve MODULE...      the REST API, webhooks, /metrics, dashboard (port 8000)
#   autoflow worker MODULE...     node workers (/metrics on MONITORING_PORT when enabled)
#   autoflow scheduler MODULE...  the schedule ticker (one per cluster)
# Your workflows are a Python module on the image's path: copy or mount it into /app.
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY autoflow ./autoflow
# DL3013: this installs the source tree copied above, not a package from an index.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --prefix=/install ".[server]"

FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTOFLOW_HOME=/var/lib/autoflow \
    AUTOFLOW_API_HOST=0.0.0.0 \
    AUTOFLOW_API_PORT=8000
RUN groupadd --system --gid 10001 autoflow \
    && useradd --system --uid 10001 --gid autoflow --home-dir /var/lib/autoflow --create-home autoflow
COPY --from=build /install /usr/local
WORKDIR /app
COPY --chown=10001:10001 examples ./examples
USER 10001:10001
EXPOSE 8000 3001
# The API answers /healthz; workers and the scheduler are checked by their orchestrator.
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AUTOFLOW_API_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["autoflow"]
CMD ["serve", "examples.service_flows"]
