"""The pusher's interpreter as a gateway has it, for the benches that measure its footprint.

    python bench/gateway_venv.py        # builds it and prints its python

A virtualenv like the .deb's (`fleetdev.debpkg`): Debian's python3.11 where there is one, the
pusher's locked runtime dependencies only (no dev tools: the checkout's venv has rich, which
structlog imports when present, and numpy), Fleet's own packages installed as wheels, and the
bytecode compiled, as the package's postinst does. Measured in the checkout's venv instead, a
pusher compiles every module it imports at each start when PYTHONDONTWRITEBYTECODE is set (it is
on this machine): ~0.5 s and a few MiB that no gateway pays.

Kept in .state/bench-gateway-venv; the dependencies are synced from uv.lock and Fleet's packages
reinstalled at every call (a few seconds), so it always runs the checkout's code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["add_pusher_python_argument", "gateway_python", "pusher_python"]

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".state/bench-gateway-venv"
DEBIAN_PYTHON = "/usr/bin/python3.11"
FLEET = ("packages/fleetcore", "packages/fleetservice", "services/pusher")


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools/bin/uv")
    if not Path(found).exists() and shutil.which(found) is None:
        raise SystemExit("uv is needed (scripts/bootstrap.sh installs it)")
    return found


def _run(*argv: str | Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=REPO, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def gateway_python() -> str:
    """The path of the gateway-like virtualenv's python, built or brought up to date."""
    uv = _uv()
    python = DEBIAN_PYTHON if Path(DEBIAN_PYTHON).exists() else sys.executable
    VENV.parent.mkdir(exist_ok=True)
    _run(uv, "venv", "--quiet", "--allow-existing", "--python", python, VENV)
    requirements = VENV / "requirements.txt"
    _run(uv, "export", "--frozen", "--no-dev", "--package", "fleet-pusher", "--no-emit-workspace",
         "--no-header", "--quiet", "-o", requirements)  # fmt: skip
    venv_python = VENV / "bin/python"
    _run(uv, "pip", "sync", "--quiet", "--python", venv_python, "--require-hashes", requirements)
    _run(uv, "pip", "install", "--quiet", "--python", venv_python, "--no-deps", "--reinstall",
         *FLEET)  # fmt: skip
    _run(venv_python, "-m", "compileall", "-q", "-j", "0", VENV / "lib")
    return str(venv_python)


def add_pusher_python_argument(parser: argparse.ArgumentParser) -> None:
    """The benches' --pusher-python option (`pusher_python` reads it)."""
    parser.add_argument(
        "--pusher-python",
        default="gateway",
        help="the pusher's interpreter: `gateway` (default: a virtualenv like the .deb's, "
        "bench/gateway_venv.py), `checkout` (this one; its dev tools add imports), or a path, "
        "e.g. /opt/fleet-pusher/bin/python of an installed .deb",
    )


def pusher_python(choice: str) -> str:
    """The benches' --pusher-python: `gateway` (this module's virtualenv), `checkout` (the
    running interpreter), or a path to an interpreter."""
    if choice == "gateway":
        return gateway_python()
    if choice in ("checkout", ""):
        return sys.executable
    return choice


if __name__ == "__main__":
    print(gateway_python())
