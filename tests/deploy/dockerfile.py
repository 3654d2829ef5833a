"""A Dockerfile read the way `docker build` reads it, and its image assembled outside a container.

There is no Docker engine on the machines that run the tests, so `build_outside_container` does
what the Dockerfile says with the host's tools instead: the builder stage's COPY and RUN lines
(uv sync, the same flags) run in a temporary folder that stands for the image's `/app`, the final
stage's COPY lines copy the same files, and its ENV, ENTRYPOINT, CMD and HEALTHCHECK come back with
`/app` mapped onto that folder, ready to run. Only the lines an image build would run are run:
`useradd` and friends of the final stage are checked statically by test_dockerfiles.py instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BuiltImage", "Instruction", "Stage", "build_outside_container", "parse_dockerfile"]

REPO = Path(__file__).resolve().parents[2]
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--from=builder src dest` → ({"from": "builder"}, ["src", "dest"])."""
        flags: dict[str, str] = {}
        words: list[str] = []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(Instruction(keyword, rest.strip()))
    return args, stages


def parse_env(args: str) -> list[tuple[str, str]]:
    """`ENV A=1 B="two words"` → [("A", "1"), ("B", "two words")]."""
    pairs = []
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"ENV {args!r}: use the KEY=value form")
        pairs.append((key, value))
    return pairs


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD; the shell form is not used in this project."""
    value = json.loads(args)
    if not isinstance(value, list):
        raise ValueError(f"{args!r} is not the exec form")
    return [str(v) for v in value]


@dataclass
class BuiltImage:
    """The final stage, assembled on the host: `root` stands for the image's /app."""

    dockerfile: Path
    root: Path
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    user: str

    def command(self, *args: str) -> list[str]:
        """ENTRYPOINT plus `args` (or the default CMD), the first word resolved on the image PATH."""
        argv = [*self.entrypoint, *(args or self.cmd)]
        found = shutil.which(argv[0], path=self.env["PATH"])
        if found is None:
            raise FileNotFoundError(f"{argv[0]} is not on the image's PATH {self.env['PATH']}")
        return [found, *argv[1:]]

    def healthcheck_command(self) -> list[str]:
        found = shutil.which(self.healthcheck[0], path=self.env["PATH"])
        assert found is not None, f"{self.healthcheck[0]} not on the image's PATH"
        return [found, *self.healthcheck[1:]]

    def environment(self, **extra: str) -> dict[str, str]:
        """The image's environment (nothing inherited from the test process), plus `extra`."""
        return {"HOME": str(self.root), "LANG": "C.UTF-8", **self.env, **extra}


def _map(value: str, root: Path) -> str:
    return re.sub(r"(?<![\w/])/app(?=/|$|:)", str(root), value)


def _copy(context: Path, sources: list[str], dest: Path) -> None:
    for src in sources:
        origin = context / src
        if origin.is_dir():
            shutil.copytree(origin, dest, ignore=_COPY_IGNORE, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, dest / origin.name if dest.is_dir() else dest)


def build_outside_container(dockerfile: Path, workdir: Path, context: Path = REPO) -> BuiltImage:
    """Run the builder stage's COPY/RUN lines and the final stage's COPY lines on the host."""
    _, stages = parse_dockerfile(dockerfile)
    root = workdir / "app"
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise FileNotFoundError("uv is needed to build the image's virtualenv")
    build_env = {
        **os.environ,
        "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for var in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
        build_env.pop(var, None)
    final = stages[-1]
    image_env: dict[str, str] = {}
    for stage in stages:
        if stage.name == "uv":
            continue
        cwd = root
        for ins in stage.instructions:
            flags, words = ins.flags_and_words()
            if ins.keyword == "WORKDIR":
                cwd = Path(_map(words[0], root))
                cwd.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "ENV":
                for key, value in parse_env(ins.args):
                    value = _map(value, root).replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
                    if stage is final:
                        image_env[key] = value
                    else:
                        build_env[key] = value
            elif ins.keyword == "COPY" and "from" not in flags:
                *sources, dest = words
                target = Path(_map(dest, root)) if dest.startswith("/") else cwd / dest
                _copy(context, sources, target)
            elif ins.keyword == "RUN" and stage is not final:
                command = re.sub(r"--mount=\S+\s*", "", ins.args)
                # The image's interpreter is /usr/local/bin/python3.11; here, the host's.
                build_env["UV_PYTHON"] = sys.base_exec_prefix + "/bin/python3"
                subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=build_env, check=True,
                               capture_output=True, timeout=300)  # fmt: skip
    last = {i.keyword: i for i in final.instructions}
    health = last["HEALTHCHECK"].args
    health_cmd = exec_form(health[health.index("CMD") + 3 :].strip())
    return BuiltImage(
        dockerfile=dockerfile,
        root=root,
        env=image_env,
        entrypoint=exec_form(last["ENTRYPOINT"].args),
        cmd=exec_form(last["CMD"].args) if "CMD" in last else [],
        healthcheck=health_cmd,
        user=last["USER"].args,
    )
