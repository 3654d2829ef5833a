#!/usr/bin/env bash
# Installs what Fleet needs on a fresh machine, idempotently:
#   - uv (into .tools/, a private virtualenv, at the version the Dockerfiles use) unless it is
#     already on PATH,
#   - PostgreSQL server binaries (Debian's package) when none are installed,
#   - a C compiler and Python's headers when missing (ingestd's C extension, src/ingestd/_rowscan.c),
#   - the workspace's Python packages into .venv (exactly as pinned in uv.lock): the commands
#     `ingestd` and `pusher` are then .venv/bin/ingestd and .venv/bin/pusher.
# Prints the path of uv on stdout (the Makefile's targets run it).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Keep in step with `ARG UV_IMAGE=ghcr.io/astral-sh/uv:<version>` in deploy/*.Dockerfile (a test checks).
UV_VERSION=0.13.9

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "Python 3.11 or newer is required (found: $("$python" --version 2>&1 || echo none))"
    exit 1
fi

if command -v uv >/dev/null 2>&1; then
    UV=$(command -v uv)
else
    if [ ! -x .tools/bin/uv ]; then
        log "installing uv into .tools/"
        "$python" -m venv .tools
        .tools/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    fi
    UV=$PWD/.tools/bin/uv
fi

have_pg() {
    [ -n "${FLEET_PG_BINDIR:-}" ] && [ -x "$FLEET_PG_BINDIR/initdb" ] && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
    command -v initdb >/dev/null 2>&1
}
if ! have_pg; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing PostgreSQL server binaries (apt-get install postgresql)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        log "no PostgreSQL server binaries found: install postgresql (15 or newer) or set FLEET_PG_BINDIR"
        exit 1
    fi
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root needs a 'postgres' user for the throwaway clusters; creating it"
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi

# The compiler setuptools calls (this Python's CC, or $CC) and this Python's headers.
have_cc() {
    "$python" -c 'import os, shutil, sys, sysconfig
cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
sys.exit(shutil.which(cc) is None or not os.path.isfile(headers))'
}
if ! have_cc; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing a C compiler and Python's headers for ingestd's C extension (apt-get install gcc python3-dev)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends gcc libc6-dev python3-dev >/dev/null
    else
        log "ingestd's C extension needs a C compiler and Python's headers: install gcc and python3-dev"
        exit 1
    fi
fi

"$UV" sync --frozen --quiet
# An editable install builds the extension into the source tree; uv does not notice when that
# file is gone (git clean -X): build it again then.
if ! .venv/bin/python -c 'import ingestd._rowscan' 2>/dev/null; then
    log "building ingestd's C extension again"
    "$UV" sync --frozen --quiet --reinstall-package fleet-ingestd
fi
echo "$UV"
