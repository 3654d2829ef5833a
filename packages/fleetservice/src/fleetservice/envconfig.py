"""Reading typed settings from environment variables, with errors that name the variable."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

__all__ = ["EnvReader"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvReader:
    """Typed access to `env`; every problem raises `error(message)` naming the variable."""

    def __init__(self, env: Mapping[str, str], error: Callable[[str], Exception]) -> None:
        self._env = env
        self._error = error

    def text(self, name: str, default: str | None) -> str:
        """The stripped value; a missing or blank variable without a default is an error."""
        value = self._env.get(name)
        if value is None or value.strip() == "":
            if default is None:
                raise self._error(f"{name} is required but not set")
            return default
        return value.strip()

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise self._error(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"
            raise self._error(f"{name} must be {bound}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise self._error(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise self._error(f"{name} must be a finite number >= {minimum}, got {raw}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "true" if default else "false").lower()
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise self._error(f"{name} must be true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: Collection[str]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise self._error(f"{name} must be one of {', '.join(sorted(choices))}, got {value!r}")
        return value
