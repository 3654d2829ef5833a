"""The wire contract is fleetcore's alone: ingestd's answers, the pusher's reading of them and
the OpenAPI document all come from `fleetcore.answers` and `fleetcore.protocol`, and drift
between them fails here."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fleetcore import ErrorBody, ErrorCode, IngestAnswer, WireFormat
from fleetcore.answers import BAD_REQUEST_CODES
from fleetcore.protocol import ACCEPTED_MEDIA_TYPES, INGEST_PATH
from ingestd.app import SERVER_OPTIONS, create_app
from ingestd.openapi import openapi_document
from ingestd.settings import Settings
from pusher.delivery import takes_columnar
from pusher.delivery.answers import classify
from pusher.errors import PayloadTooLarge

from tests.fix_ingestd import PostBatch
from tests.samples import encode, measurements

ROOT = Path(__file__).parents[2]
SOURCES = [
    ROOT / "packages" / "fleetcore" / "src" / "fleetcore",
    ROOT / "services" / "ingestd" / "src" / "ingestd",
    ROOT / "services" / "pusher" / "src" / "pusher" / "delivery",
]
"""Where error bodies are written and read (the pusher's metrics have outcome labels of their
own, some spelled like codes: `rate_limited`, `unavailable`)."""
_STRICT_ANSWER = msgspec.json.Decoder(
    msgspec.defstruct("StrictAnswer", [], bases=(IngestAnswer,), forbid_unknown_fields=True)
)
_STRICT_ERROR = msgspec.json.Decoder(
    msgspec.defstruct("StrictError", [], bases=(ErrorBody,), forbid_unknown_fields=True)
)


def _error_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas = document["components"]["schemas"]
    return {
        name: schema
        for name, schema in schemas.items()
        if "error" in schema.get("properties", {}) and "error" in schema.get("required", [])
    }


def test_every_error_code_is_in_the_document_and_fits_the_error_body() -> None:
    """Each ErrorCode an answer may carry is listed by exactly one error schema of the OpenAPI
    document (the 400 ones by BadRequest), and no error schema has a field ErrorBody lacks."""
    listed: dict[str, str] = {}
    fields = {f.name for f in msgspec.structs.fields(ErrorBody)}
    for name, schema in _error_schemas(openapi_document()).items():
        error = schema["properties"]["error"]
        for code in error.get("enum", [error.get("const")]):
            assert code not in listed, f"{code} in {listed.get(code)} and {name}"
            listed[code] = name
        assert set(schema["properties"]) <= fields, name
    # Not documented answers: a 500 says nothing on purpose, and every 400 ingestd raises names
    # what was wrong (bad_request is only BadRequest's class default).
    undocumented = {ErrorCode.INTERNAL_ERROR.value, ErrorCode.BAD_REQUEST.value}
    assert set(listed) == {code.value for code in ErrorCode} - undocumented
    assert {listed[code] for code in BAD_REQUEST_CODES} == {"BadRequest"}


def test_error_codes_are_spelled_once() -> None:
    """No source file of fleetcore, ingestd or the pusher writes an error code as a string; they
    name the ErrorCode member."""
    codes = {code.value for code in ErrorCode}
    offenders = []
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            if path.name == "error_codes.py":
                continue
            tree = ast.parse(path.read_text())
            exported = {  # names in __all__ (a function may be called like a code)
                id(node)
                for assign in tree.body
                if isinstance(assign, ast.Assign)
                and any(getattr(target, "id", None) == "__all__" for target in assign.targets)
                for node in ast.walk(assign.value)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and node.value in codes
                    and id(node) not in exported
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert offenders == []


def test_the_formats_are_the_media_types_ingestd_takes() -> None:
    """The body formats are exactly the media types ingestd accepts and lists in Accept-Post."""
    assert tuple(f.value for f in WireFormat) == ACCEPTED_MEDIA_TYPES


async def test_a_real_answer_is_the_contract_and_the_pusher_takes_it(
    post_batch: PostBatch, customer_token: str
) -> None:
    """ingestd's 200 answer decodes as IngestAnswer with no field more or less, the pusher takes
    it as the delivery of the batch sent, and the answer offers the columnar format."""
    items = measurements(5)
    items[2]["v1"] = "not a number"
    resp = await post_batch(customer_token, "measurements", items)
    raw = await resp.read()
    assert resp.status == 200, raw
    answer = _STRICT_ANSWER.decode(raw)
    assert (answer.accepted, answer.rejected, answer.errors[0].index) == (4, 1, 2)
    delivered = classify(200, raw, None, batch_type="measurements", rows=5)
    assert (delivered.accepted, delivered.rejected) == (4, 1)
    assert takes_columnar(resp.headers)


@pytest.fixture
async def small_client(aiohttp_client: Any, ingestd_settings: Settings) -> TestClient[Any, Any]:
    """An ingestd taking at most 1 KiB on the wire."""
    server = TestServer(create_app(replace(ingestd_settings, max_wire_bytes=1024)))
    await server.start_server(**SERVER_OPTIONS)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


async def test_a_real_413_is_the_contract_and_the_pusher_may_quarantine_on_it(
    small_client: TestClient[Any, Any], customer_token: str
) -> None:
    """ingestd's 413 body decodes as ErrorBody with no field more, and the pusher reads it as
    ingestd's own 413 (the one that may quarantine a row), with the limit it states."""
    headers = {
        "X-Customer-Token": customer_token,
        "X-Batch-Type": "measurements",
        "Content-Type": WireFormat.JSON.value,
    }
    body = encode(measurements(50), gzip=False)
    resp = await small_client.post(INGEST_PATH, data=body, headers=headers)
    raw = await resp.read()
    assert resp.status == 413, raw
    error = _STRICT_ERROR.decode(raw)
    assert (error.error, error.max_bytes) == (ErrorCode.PAYLOAD_TOO_LARGE, 1024)
    with pytest.raises(PayloadTooLarge) as caught:
        classify(413, raw, None, batch_type="measurements", rows=50)
    assert caught.value.protocol and caught.value.max_bytes == 1024
