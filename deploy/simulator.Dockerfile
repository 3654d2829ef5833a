# syntax=docker/dockerfile:1.7
# The meter simulator (fleetdev), for the compose demo only: it writes plausible readings into a
# customer meter stack. Build from the repository root:
#   docker build -f deploy/simulator.Dockerfile -t fleet/simulator .
# It needs the meter schema, which `pusher migrate` creates.

# The base images are build arguments, so the same file builds from the official images and from
# local stand-ins where no registry is reachable (`make images` picks; deploy/README.md).
ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_SYSTEM_CERTS=1
WORKDIR /app

COPY pyproject.toml uv.lock VERSION ./
COPY packages/fleetcore/pyproject.toml packages/fleetcore/pyproject.toml
COPY packages/fleetdev/pyproject.toml packages/fleetdev/pyproject.toml
COPY packages/fleetservice/pyproject.toml packages/fleetservice/pyproject.toml
COPY services/ingestd/pyproject.toml services/ingestd/pyproject.toml
COPY services/pusher/pyproject.toml services/pusher/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package fleet-dev

COPY packages/fleetdev packages/fleetdev
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package fleet-dev

FROM ${PYTHON_IMAGE} AS runtime
# The licence of what the image adds (each bundled wheel carries its own in its dist-info).
LABEL org.opencontainers.image.title="fleet-simulator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Fleet maintainers"
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fleet
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
# A writer with no port: healthy while it can reach its database.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, psycopg; psycopg.connect(os.environ['SIMULATOR_DATABASE_URL'], connect_timeout=5).close()"]
ENTRYPOINT ["python", "-m", "fleetdev.simulator"]
CMD ["--help"]
