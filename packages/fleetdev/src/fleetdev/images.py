"""`make images`: Fleet's container images built with the engine this machine has.

    python -m fleetdev.images [--tag dev] [--python-image REF] [--uv-image REF] [--no-install]

Builds `fleet/ingestd`, `fleet/pusher` and `fleet/simulator` from deploy/*.Dockerfile with podman
(docker where that is what the machine has), from the official base images where they can be
pulled and from local stand-ins otherwise (fleetdev.standin says which), then prints each
image's build time, size, user and healthcheck. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetdev.engine import Engine, EngineMissing, find_engine
from fleetdev.standin import Bases, ensure_postgres_standin, resolve_bases

__all__ = ["IMAGES", "BuiltImage", "build_images", "main"]

IMAGES = ("ingestd", "pusher", "simulator")


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    seconds: float
    size_bytes: int
    user: str
    healthcheck: list[str]


def image_ref(name: str, tag: str) -> str:
    return f"localhost/fleet/{name}:{tag}"


def _inspect(engine: Engine, ref: str) -> tuple[str, list[str]]:
    """The image's user and healthcheck (podman keeps the healthcheck beside .Config)."""
    (data,) = json.loads(engine.run("image", "inspect", ref).stdout)
    config = data.get("Config") or {}
    health = (data.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test") or []
    return str(config.get("User") or ""), [str(word) for word in health]


def build_images(
    engine: Engine,
    repo: Path,
    bases: Bases,
    tag: str,
    say: Callable[[str], None] = print,
    names: Sequence[str] = IMAGES,
) -> list[BuiltImage]:
    """Build each image from the repository root; a failed build raises with its log's tail."""
    built = []
    for name in names:
        ref = image_ref(name, tag)
        started = time.monotonic()
        result = engine.run(
            "build", *engine.build_format(), *bases.build_args(),
            "-f", str(repo / "deploy" / f"{name}.Dockerfile"), "-t", ref, str(repo),
            check=False, timeout=1800,
        )  # fmt: skip
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"building {ref} failed:\n{(result.stdout + result.stderr)[-3000:]}")
        user, health = _inspect(engine, ref)
        image = BuiltImage(name, ref, seconds, engine.image_size(ref), user, health)
        say(
            f"{ref}: built in {seconds:.0f} s, {image.size_bytes / 1e6:.0f} MB, user {user or 'root'}, "
            f"healthcheck {' '.join(health[1:]) if health else 'MISSING'}"
        )
        built.append(image)
    return built


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make images", description=__doc__.split("\n")[0])
    parser.add_argument("--tag", default="dev", help="image tag (default: dev)")
    parser.add_argument("--python-image", default="", help="Python base instead of the default")
    parser.add_argument("--uv-image", default="", help="uv image instead of the default")
    parser.add_argument(
        "--central-standin",
        action="store_true",
        help="build only the stand-in central database image (make dev CENTRAL=timescale)",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="do not apt-get install podman where missing"
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {', '.join(IMAGES)} (default: all)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(IMAGES))
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    repo = Path.cwd()
    if not (repo / "deploy/ingestd.Dockerfile").is_file():
        print("run from the repository root (deploy/ingestd.Dockerfile not found)", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        print(f"images: {text}", flush=True)

    started = time.monotonic()
    try:
        engine = find_engine(repo / ".state", install=not args.no_install, say=say)
    except EngineMissing as exc:
        print(f"images: no container engine: {exc}", file=sys.stderr)
        return 1
    say(f"engine: {engine.name} ({engine.executable})")
    if args.central_standin:
        ref = ensure_postgres_standin(engine, repo, repo / ".state", say)
        say(f"{ref}: {engine.image_size(ref) / 1e6:.0f} MB; make dev CENTRAL=timescale uses it")
        return 0
    bases = resolve_bases(
        engine, repo, repo / ".state", say, python=args.python_image, uv=args.uv_image
    )
    try:
        built = build_images(engine, repo, bases, args.tag, say, args.names or IMAGES)
    except RuntimeError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    standins = [
        ref for ref, s in ((bases.python, bases.python_standin), (bases.uv, bases.uv_standin)) if s
    ]
    say(
        f"{len(built)} image(s) in {time.monotonic() - started:.0f} s"
        + (f", from local stand-in bases {', '.join(standins)}" if standins else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
