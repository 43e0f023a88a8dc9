# A small, non-root image that runs mesh apps: `mesh run MODULE:APP` is the entry point.
#   docker build -t my-service .            (your code and mesh.yaml sit beside this file)
#   docker run my-service my_service:app    (health on :8080/livez and /readyz)
# syntax=docker/dockerfile:1

FROM python:3.12-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md LICENSE ./
COPY mesh ./mesh
COPY plugins ./plugins
# Pick the extras of your broker: kafka, rabbitmq, nats, redis (or all).
ARG MESH_EXTRAS=all
RUN python -m venv /venv && /venv/bin/pip install ".[${MESH_EXTRAS}]"

FROM python:3.12-slim
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MESH_CONFIG=/app/mesh.yaml
RUN groupadd --system --gid 10001 mesh && useradd --system --uid 10001 --gid mesh --no-create-home mesh
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=mesh:mesh . /app
USER 10001:10001
EXPOSE 8080
# /readyz answers 200 once every app is connected and consuming, 503 while starting or draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]
# SIGTERM drains handlers for drain_timeout seconds (30 by default), then the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mesh", "run", "--health-port", "8080", "--log-format", "json"]
CMD ["app:app"]
