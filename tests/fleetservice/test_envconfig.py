"""Settings from the environment: errors naming the variable, the catalogue, renamed prefixes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from fleetservice.envconfig import EnvReader, Variable, format_variables, record_variables


class Bad(ValueError):
    pass


@dataclass(frozen=True)
class Demo:
    url: str
    size: int
    rate: float
    on: bool
    mode: str
    extra: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Demo:
        r = EnvReader(env, Bad, legacy_prefix=("OLD_", "NEW_"))
        return cls(
            url=r.text("NEW_URL", None),
            size=r.integer("NEW_SIZE", 5000, minimum=1),
            rate=r.number("NEW_RATE", 2.5, minimum=0.1),
            on=r.flag("NEW_ON", False),
            mode=r.choice("NEW_MODE", "auto", {"auto", "json"}),
            extra=r.optional("NEW_EXTRA"),
        )


def test_catalogue_lists_what_from_env_reads_with_defaults_and_bounds() -> None:
    """record_variables returns every variable from_env asked for, in order, with its default."""
    assert record_variables(Demo.from_env, {"NEW_URL": "x"}) == [
        Variable("NEW_URL", None, ""),
        Variable("NEW_SIZE", "5000", "integer >= 1"),
        Variable("NEW_RATE", "2.5", "number >= 0.1"),
        Variable("NEW_ON", "false", "true or false"),
        Variable("NEW_MODE", "auto", "one of auto, json"),
        Variable("NEW_EXTRA", "", ""),
    ]
    text = format_variables(record_variables(Demo.from_env, {"NEW_URL": "x"}), ("OLD_", "NEW_"))
    assert "NEW_URL    required" in text and "NEW_EXTRA  unset" in text
    assert "OLD_*" in text


def test_outside_a_recording_nothing_is_kept() -> None:
    """Reading settings normally records nothing (the catalogue is built only on request)."""
    Demo.from_env({"NEW_URL": "x"})
    assert record_variables(Demo.from_env, {"NEW_URL": "y"})[0].name == "NEW_URL"


def test_old_prefix_still_works_and_is_noted() -> None:
    """OLD_SIZE is read when NEW_SIZE is absent; the reader notes it; NEW_ wins when both are set."""
    reader = EnvReader(
        {"OLD_SIZE": "7", "OLD_URL": "a", "NEW_URL": "b"}, Bad, legacy_prefix=("OLD_", "NEW_")
    )
    assert reader.integer("NEW_SIZE", 1) == 7
    assert reader.text("NEW_URL", None) == "b"
    assert reader.deprecated == [("OLD_SIZE", "NEW_SIZE"), ("OLD_URL", "NEW_URL")]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "NEW_URL is required but not set"),
        ({"NEW_URL": "x", "NEW_SIZE": "0"}, "NEW_SIZE must be >= 1, got 0"),
        ({"NEW_URL": "x", "OLD_SIZE": "many"}, "NEW_SIZE must be an integer, got 'many'"),
        ({"NEW_URL": "x", "NEW_RATE": "inf"}, "NEW_RATE must be a finite number"),
        ({"NEW_URL": "x", "NEW_ON": "maybe"}, "NEW_ON must be true or false"),
        ({"NEW_URL": "x", "NEW_MODE": "xml"}, "NEW_MODE must be one of auto, json, got 'xml'"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    """Every bad or missing value is an error whose message names the (new) variable."""
    with pytest.raises(Bad, match=message):
        Demo.from_env(env)
