"""The container engine that builds and runs Fleet's images here: podman, or docker.

Podman is preferred (daemonless, and what Debian packages); docker is used where its daemon
answers and podman is absent. On a machine with neither, `find_engine(install=True)` installs
podman and runc from Debian's packages when it runs as root with apt-get; otherwise it returns
None and the reason, and callers skip or stop saying so.

Podman runs with a containers.conf written under `.state/containers/` (unless CONTAINERS_CONF is
set already): runc as the runtime where it is installed (crun refuses some hybrid cgroup layouts)
and container limits lowered to `nofile=1024`, `nproc=1000`, because raising RLIMIT_NPROC above the
caller's is refused on such machines. Builds use the docker image format, without which podman
drops HEALTHCHECK.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Engine", "EngineMissing", "apt_install", "find_engine"]

CONTAINERS_CONF = """\
# Written by fleetdev.engine for podman on this machine (see its docstring).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
{engine}"""


class EngineMissing(RuntimeError):
    """No container engine is usable here; the message says why."""


@dataclass(frozen=True)
class Engine:
    """A container engine's command line, with the environment it needs."""

    name: str
    executable: str
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        return [self.executable, *args]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, input_: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the engine with `args`; stdout and stderr captured as text."""
        return subprocess.run(
            self.argv(*args),
            env=self.environ(),
            check=check,
            capture_output=True,
            text=input_ is None,
            input=input_,
            timeout=timeout,
        )

    def build_format(self) -> list[str]:
        """podman needs `--format docker` to keep HEALTHCHECK; docker always writes that format."""
        return ["--format", "docker"] if self.name == "podman" else []

    def image_exists(self, ref: str) -> bool:
        if self.name == "podman":
            return self.run("image", "exists", ref, check=False, timeout=60).returncode == 0
        return self.run("image", "inspect", ref, check=False, timeout=60).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def apt_install(packages: Sequence[str], say: Callable[[str], None] = print) -> None:
    """Install Debian packages (root with apt-get only); raises EngineMissing otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineMissing(f"{' '.join(packages)} missing, and installing needs root with apt-get")
    say(f"installing {' '.join(packages)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise EngineMissing(f"apt-get install {' '.join(packages)} failed: {done.stderr[-500:]}")


def _podman(state: Path) -> Engine:
    executable = shutil.which("podman")
    assert executable is not None
    env: dict[str, str] = {}
    if "CONTAINERS_CONF" not in os.environ:
        runtime = '[engine]\nruntime = "runc"\n' if shutil.which("runc") else ""
        conf = state / "containers" / "containers.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        text = CONTAINERS_CONF.format(engine=runtime)
        if not conf.exists() or conf.read_text() != text:
            conf.write_text(text)
        env["CONTAINERS_CONF"] = str(conf)
    return Engine("podman", executable, env)


def _docker_answers(executable: str) -> tuple[bool, str]:
    try:
        probe = subprocess.run(
            [executable, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return False, "docker version timed out"
    if probe.returncode != 0:
        return False, (probe.stderr.strip().splitlines() or ["no answer"])[-1]
    return True, ""


def find_engine(state: Path, *, install: bool, say: Callable[[str], None] = print) -> Engine:
    """podman if installed, else docker if its daemon answers, else podman installed now."""
    if shutil.which("podman"):
        return _podman(state)
    docker = shutil.which("docker")
    why = "neither podman nor docker is installed"
    if docker:
        answers, reason = _docker_answers(docker)
        if answers:
            return Engine("docker", docker)
        why = f"podman is not installed and the docker daemon does not answer ({reason})"
    if not install:
        raise EngineMissing(why)
    apt_install(["podman", "runc"], say)
    if not shutil.which("podman"):
        raise EngineMissing("apt-get installed podman but it is not on PATH")
    return _podman(state)
