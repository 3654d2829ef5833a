"""The OpenAPI document's row schemas are the fleetcore structs' own, so they cannot drift."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from fleetcore import DeviceRow, MeasurementRow, SiteRow
from ingestd.openapi import ROW_STRUCTS, openapi_document, row_schemas

_VALID: dict[type[msgspec.Struct], dict[str, Any]] = {
    SiteRow: {"id": 1, "name": "n", "timezone": "UTC", "updated_at": "2026-11-26T00:00:00Z"},
    DeviceRow: {
        "id": 1,
        "site_id": 1,
        "serial_number": "s",
        "model": "m",
        "updated_at": "2026-11-26T00:00:00Z",
    },
    MeasurementRow: {
        "time": "2026-11-26T00:00:00Z",
        "device_id": 1,
        "received_at": "2026-11-26T00:00:01Z",
    },
}


def _bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """The property's non-null alternative (msgspec writes Optional[X] as anyOf [X, null])."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") != "null":
            return dict(option)
    raise AssertionError(schema)


def _edges(bounds: dict[str, Any]) -> list[tuple[Any, bool]]:
    """Values at and just past each limit the document states, with whether they are valid."""
    edges: list[tuple[Any, bool]] = []
    if "maxLength" in bounds:
        edges += [("x" * bounds["maxLength"], True), ("x" * (bounds["maxLength"] + 1), False)]
    if bounds.get("minLength", 0) > 0:
        edges.append(("", False))
    if "maximum" in bounds:
        edges += [(bounds["maximum"], True), (bounds["maximum"] * 2 or 1, False)]
    if "minimum" in bounds:
        past = bounds["minimum"] - 1 if bounds["type"] == "integer" else bounds["minimum"] * 2 or -1
        edges += [(bounds["minimum"], True), (past, False)]
    return edges


@pytest.mark.parametrize("name", sorted(ROW_STRUCTS))
def test_documented_limits_are_the_ones_the_decoder_enforces(name: str) -> None:
    """Every limit the document states for a row field is exactly where fleetcore's decoder
    starts refusing, and every required field is one the decoder requires."""
    struct = ROW_STRUCTS[name]
    schema = openapi_document()["components"]["schemas"][name]
    decoder = msgspec.json.Decoder(struct)
    checked = 0
    for field, prop in schema["properties"].items():
        for value, valid in _edges(_bounds(prop)):
            row = msgspec.json.encode({**_VALID[struct], field: value})
            if valid:
                decoder.decode(row)
            else:
                with pytest.raises(msgspec.ValidationError):
                    decoder.decode(row)
            checked += 1
    assert checked >= len(schema["properties"]) // 2
    for field in schema["required"]:
        row = {k: v for k, v in _VALID[struct].items() if k != field}
        with pytest.raises(msgspec.ValidationError, match="missing required field"):
            decoder.decode(msgspec.json.encode(row))


def test_a_changed_limit_changes_the_document() -> None:
    """The row schemas are generated from the structs: a struct with another limit gives
    another schema (nothing in the document is written by hand for them)."""

    class WiderSite(msgspec.Struct, frozen=True):
        id: int
        name: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]

    wider = row_schemas({"Site": WiderSite})["Site"]
    assert wider["properties"]["name"]["maxLength"] == 300
    assert (
        openapi_document()["components"]["schemas"]["Site"]["properties"]["name"]
        != (wider["properties"]["name"])
    )
