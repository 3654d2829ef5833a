# syntax=docker/dockerfile:1.7
# ingestd, the central ingest server. Build from the repository root:
#   docker build -f deploy/ingestd.Dockerfile -t fleet/ingestd .
# The container runs `ingestd serve` on 0.0.0.0:8080; `docker run … fleet/ingestd migrate`
# applies the schema (the migrations ship inside the fleet-ingestd wheel installed in the image).

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

# Dependency layer: only the lock, the workspace's pyproject files and VERSION, so it is rebuilt
# only when a dependency (or the release) changes, not on every code change.
COPY pyproject.toml uv.lock VERSION ./
COPY packages/fleetcore/pyproject.toml packages/fleetcore/pyproject.toml
COPY packages/fleetdev/pyproject.toml packages/fleetdev/pyproject.toml
COPY packages/fleetservice/pyproject.toml packages/fleetservice/pyproject.toml
COPY services/ingestd/pyproject.toml services/ingestd/pyproject.toml
COPY services/pusher/pyproject.toml services/pusher/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package fleet-ingestd

# A C compiler (and Python's headers where the base lacks them, as Debian's python3 does) for
# ingestd's C extension (services/ingestd/src/ingestd/_rowscan.c), in this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
    && if ! python3.11 -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11-dev; \
    fi \
    && rm -rf /var/lib/apt/lists/*

# Code layer: the workspace members ingestd needs, installed as wheels (non-editable), so the
# final image needs the virtualenv only, not the sources.
COPY packages/fleetcore packages/fleetcore
COPY packages/fleetservice packages/fleetservice
COPY services/ingestd services/ingestd
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package fleet-ingestd

FROM ${PYTHON_IMAGE} AS runtime
# The licence of what the image adds (each bundled wheel carries its own in its dist-info).
LABEL org.opencontainers.image.title="fleet-ingestd" \
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
    INGESTD_HOST=0.0.0.0 \
    INGESTD_PORT=8080 \
    INGESTD_LOG_FORMAT=json
USER 10001:10001
WORKDIR /app
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('INGESTD_PORT', '8080'), timeout=3)"]
ENTRYPOINT ["ingestd"]
CMD ["serve"]
