# syntax=docker/dockerfile:1.7
# pusher, the customer-side push daemon. Build from the repository root:
#   docker build -f deploy/pusher.Dockerfile -t fleet/pusher .
# The container runs `pusher run`; `docker run … fleet/pusher migrate|status|check` run the other
# commands (the migrations ship inside the fleet-pusher wheel installed in the image).

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

# Dependency layer (see ingestd.Dockerfile): the lock, the workspace's pyproject files, VERSION.
COPY pyproject.toml uv.lock VERSION ./
COPY packages/fleetcore/pyproject.toml packages/fleetcore/pyproject.toml
COPY packages/fleetdev/pyproject.toml packages/fleetdev/pyproject.toml
COPY packages/fleetservice/pyproject.toml packages/fleetservice/pyproject.toml
COPY services/ingestd/pyproject.toml services/ingestd/pyproject.toml
COPY services/pusher/pyproject.toml services/pusher/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package fleet-pusher

# Code layer: fleetcore and pusher installed as wheels (non-editable).
COPY packages/fleetcore packages/fleetcore
COPY packages/fleetservice packages/fleetservice
COPY services/pusher services/pusher
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package fleet-pusher

FROM ${PYTHON_IMAGE} AS runtime
# The licence of what the image adds (each bundled wheel carries its own in its dist-info).
LABEL org.opencontainers.image.title="fleet-pusher" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Fleet maintainers"
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fleet \
    && install -d -o fleet -g fleet -m 0700 /var/lib/fleet
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PUSHER_PUSH_ENABLED=false \
    PUSHER_LOG_FORMAT=json
USER 10001:10001
WORKDIR /app
# `pusher status` reads the customer database only: a healthcheck must not send batches to
# ingestd every interval (`pusher check` does, and writes an audit row each time).
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["pusher", "status"]
ENTRYPOINT ["pusher"]
CMD ["run"]
