"""deploy/compose.yaml: valid against the compose-spec schema, fully documented in .env.example."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from importlib import resources
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.dockerfile import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}; `$$` is an escaped dollar.
_VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _compose_spec_schema() -> dict[str, Any]:
    # The compose-spec schema as vendored by check-jsonschema (a dev dependency), with its license
    # and checksum beside it: check_jsonschema/builtin_schemas/vendor/compose-spec.json.
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text("utf-8"))
    return schema


def _env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(values, the comment right above each) from .env.example."""
    values: dict[str, str] = {}
    comments: dict[str, str] = {}
    comment = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("#"):
            comment = line
        elif "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
            comments[key] = comment
        else:
            comment = ""
    return values, comments


def test_compose_file_matches_the_compose_spec() -> None:
    """compose.yaml validates against the compose-spec JSON schema."""
    validator = jsonschema.Draft202012Validator(_compose_spec_schema())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors


def test_schema_refuses_a_misspelt_service_key() -> None:
    """The schema check catches an unknown service key, so the test above can fail."""
    doc = copy.deepcopy(_compose())
    doc["services"]["ingestd"]["enviroment"] = {}
    validator = jsonschema.Draft202012Validator(_compose_spec_schema())
    assert list(validator.iter_errors(doc))


def test_every_variable_is_documented_with_the_same_default() -> None:
    """Each ${VAR} in compose.yaml is in .env.example, under a comment, with the compose default as its value."""
    values, comments = _env_example()
    used = _VARIABLE.findall(COMPOSE.read_text())
    assert used
    for name, default in used:
        assert name in values, f"{name} is not in deploy/.env.example"
        assert comments[name], f"{name} has no comment above it in deploy/.env.example"
        assert default == values[name], f"{name}: compose default {default!r} != {values[name]!r}"
    assert set(values) == {name for name, _ in used}, "a documented variable compose does not use"


def test_defaults_are_safe() -> None:
    """Out of the box nothing is pushed, ingestd listens on loopback only, and no token is inline."""
    values, _ = _env_example()
    assert values["PUSHER_PUSH_ENABLED"] == "false"
    assert values["INGESTD_PUBLISH"].startswith("127.0.0.1:")
    text = COMPOSE.read_text()
    assert "flt_" not in text and "PUSHER_TOKEN:" not in text
    pusher = _compose()["services"]["pusher"]
    assert pusher["environment"]["PUSHER_TOKEN_FILE"].startswith("/var/lib/fleet/")
    assert any(v.endswith(":/var/lib/fleet:ro") for v in pusher["volumes"])


def test_compose_runs_the_same_two_stacks_as_make_dev() -> None:
    """Both stacks are there, migrations run once before their service, images build from deploy/."""
    services = _compose()["services"]
    assert {"customer-db", "pusher-migrate", "simulator", "pusher"} <= set(services)
    assert {"central-db", "ingestd-migrate", "register", "ingestd"} <= set(services)
    assert (
        services["central-db"]["image"].split(":-", 1)[1].startswith("timescale/timescaledb-ha:pg1")
    )
    for service, migrate in (("pusher", "pusher-migrate"), ("ingestd", "ingestd-migrate")):
        condition = services[service]["depends_on"][migrate]["condition"]
        assert condition == "service_completed_successfully"
        assert services[migrate]["command"] == ["migrate"]
    for service in services.values():
        build = service.get("build")
        if build:
            assert build["context"] == ".."
            assert (DEPLOY / ".." / build["dockerfile"]).resolve().is_file()


def test_docker_compose_config_accepts_the_file(tmp_path: Any) -> None:
    """`docker compose config` (no engine needed) resolves the file with the example settings."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            "the docker compose plugin is not installed here (schema check above covers it)"
        )
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
