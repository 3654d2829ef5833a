# syntax=docker/dockerfile:1.7
# Stand-in for ghcr.io/astral-sh/uv:<version> where no registry is reachable: like the official
# image, an image whose /uv is uv, here taken from PyPI's `uv` wheel of the same version.
# Built by `make images` (fleetdev.standin) on the stand-in Python base:
#   podman build --build-arg PYTHON_IMAGE=… --build-arg UV_VERSION=0.13.9 -f uv.Dockerfile deploy/standin

ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
# The base's CA store (it trusts this machine's authorities), not pip's bundled one.
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}"

FROM scratch
COPY --from=build /opt/uv/bin/uv /uv
