"""Fleet's images built with a real container engine, and containers run from them on the host
network (so they reach the test session's PostgreSQL on 127.0.0.1).

`built_images` builds once per test session, under a tag of its own (parallel sessions on one
machine don't retag each other's images), and removes the tags at the end; the layers stay in
the engine's cache, so the next session rebuilds only the code layer. The engine comes from
fleetdev.engine: podman (installed from Debian's packages when missing and running as root),
or docker where its daemon answers. Without either the tests skip and say why, unless
FLEET_IMAGES_TEST=required (`make images-test`), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fleetdev.engine import Engine, EngineMissing, find_engine
from fleetdev.images import IMAGES, build_images, image_ref
from fleetdev.standin import resolve_bases

from tests.deploy.dockerfile import REPO

__all__ = ["Images", "built_images"]


def _say(text: str) -> None:
    print(f"images: {text}", flush=True)


@dataclass
class Images:
    """The session's images and the engine that built them."""

    engine: Engine
    tag: str
    build_seconds: dict[str, float]
    sizes: dict[str, int]

    def ref(self, name: str) -> str:
        return image_ref(name, self.tag)

    def run(
        self, name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`run --rm` on the host network with a read-only root filesystem; waits for the exit."""
        return self.engine.run(
            "run", "--rm", "--network", "host", "--read-only", *_env(env), self.ref(name), *args,
            check=False, timeout=timeout,
        )  # fmt: skip

    @contextlib.contextmanager
    def started(
        self, name: str, *args: str, env: dict[str, str] | None = None, label: str = ""
    ) -> Iterator[str]:
        """A detached container for the body of the `with`; removed afterwards (logs on failure)."""
        container = f"fleet-test-{label or name}-{os.getpid()}"
        self.engine.run("rm", "-f", container, check=False)
        self.engine.run(
            "run", "-d", "--name", container, "--network", "host", "--read-only", *_env(env),
            self.ref(name), *args,
        )  # fmt: skip
        try:
            yield container
        except BaseException:
            logs = self.engine.run("logs", container, check=False)
            print(f"--- logs of {container} ---\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
            raise
        finally:
            self.engine.run("rm", "-f", "-t", "5", container, check=False, timeout=60)

    def healthcheck(self, container: str) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK, run now inside the container (podman runs it on demand;
        with docker, the same command through `exec`)."""
        if self.engine.name == "podman":
            return self.engine.run("healthcheck", "run", container, check=False, timeout=60)
        health = self.engine.run(
            "inspect", "--format", "{{json .Config.Healthcheck.Test}}", container
        ).stdout
        words = json.loads(health)
        return self.engine.run("exec", container, *words[1:], check=False, timeout=60)


def _env(env: dict[str, str] | None) -> list[str]:
    return [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]


def wait_http(url: str, timeout_s: float = 60) -> int:
    """Poll `url` until it answers; its status (or raise after the deadline)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - http:// only
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s:g} s ({last})")


@contextlib.contextmanager
def built_images() -> Iterator[Images]:
    """Engine found (or installed), bases resolved, the three images built once; skip if impossible."""
    required = os.environ.get("FLEET_IMAGES_TEST") == "required"
    root_with_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
    state = REPO / ".state"
    try:
        engine = find_engine(state, install=root_with_apt, say=_say)
        bases = resolve_bases(engine, REPO, state, _say)
    except (EngineMissing, PermissionError, subprocess.CalledProcessError) as exc:
        if required:
            pytest.fail(f"no container engine or base images: {exc}")
        pytest.skip(f"no container engine or base images here: {exc}")
    tag = f"test-{os.getpid()}"
    built = build_images(engine, REPO, bases, tag, _say)
    images = Images(
        engine, tag, {b.name: b.seconds for b in built}, {b.name: b.size_bytes for b in built}
    )
    try:
        yield images
    finally:
        engine.run("rmi", *(images.ref(name) for name in IMAGES), check=False, timeout=120)
