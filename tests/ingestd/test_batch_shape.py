"""An ingest batch reads as one orchestrating function: its collaborators never call back."""

from __future__ import annotations

import json
from pathlib import Path

import ingestd

from tests.call_shape import CallShape
from tests.fix_ingestd import PostBatch
from tests.samples import measurements


async def test_one_batch_has_no_call_backs(post_batch: PostBatch, customer_token: str) -> None:
    """A measurements batch (after a first one: the token is cached, the pool warm) enters no
    ingestd module that is already on its calling stack (figures printed with -s)."""
    batches = measurements(60)
    first = await post_batch(customer_token, "measurements", batches[:10])
    assert first.status == 200, await first.text()
    items = batches[10:]
    shape = CallShape(Path(ingestd.__file__).parent, "ingestd")
    with shape:
        resp = await post_batch(customer_token, "measurements", items)
        body = await resp.json()
    figures = {
        "batch": shape.summary(),
        "batch_without_accessors": shape.summary(accessors=False),
        "call_backs": shape.callbacks,
        "edges": shape.edges(accessors=False),
    }
    print(json.dumps(figures))
    assert (resp.status, body["accepted"]) == (200, 50)
    assert shape.callbacks == []
