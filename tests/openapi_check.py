"""Checking real responses against ingestd's served OpenAPI document."""

from __future__ import annotations

from typing import Any

import jsonschema
from ingestd.openapi import openapi_document

_SPEC = openapi_document()


def response_schema(
    path: str, method: str, status: int, media: str = "application/json"
) -> dict[str, Any]:
    """The schema the document declares for this operation's response."""
    responses = _SPEC["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not document status {status}"
    return dict(responses[str(status)]["content"][media]["schema"])


def assert_matches(path: str, method: str, status: int, body: Any) -> None:
    """Fail unless `body` is valid for the documented response of (path, method, status)."""
    schema = {**response_schema(path, method, status), "components": _SPEC["components"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        body
    )
