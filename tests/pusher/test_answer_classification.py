"""What the pusher takes an answer to mean (`pusher.delivery.answers.classify`): only ingestd's own answer
to the batch sent is a delivery, only ingestd's own 413 may quarantine, and no bytes at all make
it raise anything but a DeliveryError."""

from __future__ import annotations

import json

import pytest
from fleetcore.answers import RowError
from hypothesis import given
from hypothesis import strategies as st
from pusher.delivery.answers import classify
from pusher.errors import (
    DeliveryError,
    ForeignAnswer,
    PayloadTooLarge,
    PermanentDeliveryError,
    RetryLater,
    TransientDeliveryError,
)


def _answer(**fields: object) -> bytes:
    body = {
        "batch_type": "measurements",
        "batch_id": "6c598868-0133-4491-9493-35f2558e7cde",
        "accepted": 7,
        "duplicates": 2,
        "rejected": 1,
        "errors": [],
    }
    body.update(fields)
    return json.dumps(body).encode()


def test_ingestds_answer_to_this_batch_is_a_delivery() -> None:
    """A 200 with the batch type and counts adding up to the rows sent is delivered."""
    errors = [{"index": 3, "reason": "time\u0000 too far ahead"}]
    answer = classify(200, _answer(errors=errors), None, batch_type="measurements", rows=10)
    assert (answer.accepted, answer.duplicates, answer.rejected) == (7, 2, 1)
    assert answer.errors == [RowError(3, "time? too far ahead")]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (204, b""),
        (201, _answer()),
        (202, _answer()),
        (299, _answer()),
        (200, b""),
        (200, b"<html>Welcome</html>"),
        (200, b"{}"),
        (200, b"[]"),
        (200, b'{"accepted":"x"}'),
        (200, _answer(accepted=8)),
        (200, _answer(rejected=-1, accepted=9)),
        (200, _answer(batch_type="sites")),
        (200, _answer(accepted=True)),
        (200, b'{"batch_type":"measurements","accepted":7,"duplicates":2,"rejected":1,"errors":'
         + b"[" * 1200 + b"]" * 1200 + b"}"),
        (200, b'{"batch_type":"measurements","accepted":7,"duplicates":2,"rejected":1,"errors":'
         + b"[" * 5000 + b"]" * 5000 + b"}"),
    ],
)  # fmt: skip
def test_any_other_2xx_is_a_foreign_answer(status: int, body: bytes) -> None:
    """Another 2xx, another body, counts that do not add up or the wrong batch type: not
    delivered, and the error names the status and shows the first bytes."""
    with pytest.raises(ForeignAnswer) as caught:
        classify(status, body, None, batch_type="measurements", rows=10)
    assert caught.value.status == status and f"HTTP {status}" in caught.value.detail


def test_only_ingestds_own_413_may_quarantine() -> None:
    """The protocol's 413 body marks the error as ingestd's; a bare or HTML 413 does not."""
    own = b'{"error":"payload_too_large","detail":"over","max_bytes":1000}'
    with pytest.raises(PayloadTooLarge) as caught:
        classify(413, own, None, batch_type="measurements", rows=10)
    assert caught.value.protocol and caught.value.max_bytes == 1000
    for bare in (b"", b"<html>413</html>", b'{"error":"payload_too_large"}', b"{}"):
        with pytest.raises(PayloadTooLarge) as caught:
            classify(413, bare, None, batch_type="measurements", rows=10)
        assert not caught.value.protocol


@pytest.mark.parametrize(
    ("body", "protocol"),
    [
        (b'{"error":"too_many_rows","detail":"x","max_rows":100000}', True),
        (b'{"error":"too_many_rejections","detail":"x","max_rejections":1000}', True),
        (b'{"error":"too_many_rows"}', False),
        (b'{"error":"too_many_rejections","max_rows":1}', False),
    ],
)
def test_ingestds_row_count_413s_halve_the_batch(body: bytes, protocol: bool) -> None:
    """ingestd's 413 for too many rows or too many refused rows is its own (the batch is halved
    at once, no backoff); the same code without its limit field is not."""
    with pytest.raises(PayloadTooLarge) as caught:
        classify(413, body, None, batch_type="measurements", rows=10)
    assert caught.value.protocol is protocol and caught.value.max_bytes is None


def test_error_text_is_cut_and_cleaned() -> None:
    """NUL and other control characters never reach a log line or the state table."""
    with pytest.raises(PermanentDeliveryError) as caught:
        classify(400, b'{"error":"bad\\u0000x","detail":"' + b"y" * 5000 + b'"}', None,
                 batch_type="measurements", rows=1)  # fmt: skip
    assert "\x00" not in caught.value.detail and len(caught.value.detail) < 300
    with pytest.raises(RetryLater) as retry:
        classify(503, b"\x00\xff" * 100, "\u00b2", batch_type="measurements", rows=1)
    assert retry.value.retry_after_s is None and "\x00" not in retry.value.detail


@given(
    status=st.integers(0, 1200),
    body=st.one_of(st.binary(max_size=400), st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.sampled_from(["batch_type", "accepted", "duplicates", "rejected", "errors", "error", "detail", "max_bytes"]), st.one_of(st.integers(), st.text(), st.none(), st.lists(st.integers()))))),
    retry_after=st.one_of(st.none(), st.text(max_size=60)),
    rows=st.integers(0, 10_000),
)  # fmt: skip
def test_no_answer_raises_anything_else(status: int, body: bytes, retry_after: str | None, rows: int) -> None:  # fmt: skip
    """Any status, body and Retry-After give an IngestAnswer (ingestd's exact answer) or a
    DeliveryError; a 2xx is a delivery only with counts adding up to `rows`."""
    try:
        answer = classify(status, body, retry_after, batch_type="measurements", rows=rows)
    except DeliveryError as exc:
        assert isinstance(exc, TransientDeliveryError | PermanentDeliveryError | PayloadTooLarge)
        return
    assert status == 200
    assert answer.accepted + answer.duplicates + answer.rejected == rows
