"""Reading typed settings from environment variables, with errors that name the variable.

A service's `Settings.from_env` is the one place that knows its variables, their defaults and
their bounds. `record_variables` runs it once on an example environment and keeps every variable
it asked for, so `--help` and the docs list exactly what the code reads, defaults included.

A renamed prefix keeps old names working: an `EnvReader` with `legacy_prefix=("FLEET_",
"PUSHER_")` reads `PUSHER_X`, and falls back to `FLEET_X` when only that is set, noting the old
name in `deprecated` so the service can warn about it once it logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["EnvReader", "Variable", "format_variables", "record_variables"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable a service reads: its default (None: required) and its bounds."""

    name: str
    default: str | None
    detail: str = ""


_recording: ContextVar[dict[str, Variable] | None] = ContextVar("_recording", default=None)


@contextlib.contextmanager
def _record() -> Iterator[dict[str, Variable]]:
    seen: dict[str, Variable] = {}
    token = _recording.set(seen)
    try:
        yield seen
    finally:
        _recording.reset(token)


def record_variables(
    from_env: Callable[[Mapping[str, str]], Any], example: Mapping[str, str]
) -> list[Variable]:
    """Every variable `from_env` reads on `example` (which must make it succeed), in order."""
    with _record() as seen:
        from_env(example)
    return list(seen.values())


def format_variables(
    variables: Collection[Variable], legacy_prefix: tuple[str, str] | None = None
) -> str:
    """The variables as an aligned `--help` epilog."""
    width = max((len(v.name) for v in variables), default=0)
    lines = ["environment variables (default; bounds):"]
    for var in sorted(variables, key=lambda v: v.name):
        default = "required" if var.default is None else (var.default or "unset")
        detail = f"; {var.detail}" if var.detail else ""
        lines.append(f"  {var.name:<{width}}  {default}{detail}")
    if legacy_prefix is not None:
        old, new = legacy_prefix
        lines.append(f"(the former names {old}* still work for {new}*, with a warning)")
    return "\n".join(lines)


class EnvReader:
    """Typed access to `env`; every problem raises `error(message)` naming the variable."""

    def __init__(
        self,
        env: Mapping[str, str],
        error: Callable[[str], Exception],
        *,
        legacy_prefix: tuple[str, str] | None = None,
    ) -> None:
        self._env = env
        self._error = error
        self._legacy = legacy_prefix
        self.deprecated: list[tuple[str, str]] = []  # (old name used, its new name)

    def _raw(self, name: str, default: str | None, detail: str = "") -> str | None:
        seen = _recording.get()
        if seen is not None and name not in seen:
            seen[name] = Variable(name, default, detail)
        value = self._env.get(name)
        if self._legacy is not None:
            old_prefix, new_prefix = self._legacy
            if name.startswith(new_prefix):
                old = old_prefix + name[len(new_prefix) :]
                if old in self._env:
                    self.deprecated.append((old, name))
                    if value is None:
                        value = self._env[old]
        return value

    def text(self, name: str, default: str | None, *, detail: str = "") -> str:
        """The stripped value; a missing or blank variable without a default is an error."""
        value = self._raw(name, default, detail)
        if value is None or value.strip() == "":
            if default is None:
                raise self._error(f"{name} is required but not set")
            return default
        return value.strip()

    def optional(self, name: str, *, detail: str = "") -> str | None:
        value = (self._raw(name, "", detail) or "").strip()
        return value or None

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        bound = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"
        raw = self.text(name, str(default), detail=f"integer {bound}")
        try:
            value = int(raw)
        except ValueError:
            raise self._error(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise self._error(f"{name} must be {bound}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        raw = self.text(name, f"{default:g}", detail=f"number >= {minimum:g}")
        try:
            value = float(raw)
        except ValueError:
            raise self._error(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise self._error(f"{name} must be a finite number >= {minimum}, got {raw}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "true" if default else "false", detail="true or false").lower()
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise self._error(f"{name} must be true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: Collection[str]) -> str:
        allowed = ", ".join(sorted(choices))
        value = self.text(name, default, detail=f"one of {allowed}").lower()
        if value not in choices:
            raise self._error(f"{name} must be one of {allowed}, got {value!r}")
        return value
