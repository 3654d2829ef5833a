# syntax=docker/dockerfile:1.7
# Stand-in for the central database image of `make dev CENTRAL=timescale` where
# timescale/timescaledb-ha cannot be pulled: Debian's PostgreSQL 15 (no TimescaleDB, so ingestd
# takes its plain-PostgreSQL storage path), started the way the official images start: a new
# data folder at PGDATA is initialised with POSTGRES_PASSWORD for the `postgres` role, and the
# server listens on all addresses with password authentication. The data folder sits where
# timescaledb-ha keeps it (/home/postgres/pgdata/data), so the dev stack mounts one volume for both.
# Built by fleetdev.standin on the stand-in Python base (any Debian bookworm image works):
#   podman build --build-arg BASE_IMAGE=… -f postgres.Dockerfile deploy/standin

ARG BASE_IMAGE=docker.io/library/debian:bookworm-20250520-slim

FROM ${BASE_IMAGE}
# The versions are those of the base's Debian snapshot; the image is a local stand-in only.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15/main /etc/postgresql/15/main \
    && install -d -o postgres -g postgres -m 0700 /home/postgres /home/postgres/pgdata
COPY --chmod=0755 postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/home/postgres/pgdata/data
# uid 999 as in the official postgres image (created before the package, which then uses it).
USER 999:999
EXPOSE 5432
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["pg_isready", "-h", "127.0.0.1", "-U", "postgres"]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
