"""Time texts read a column at a time: the µs of the datetime msgspec decodes from the same text,
or no answer (the caller then lets msgspec decide); never a time msgspec would not give."""

from __future__ import annotations

from datetime import datetime

import msgspec
import numpy as np
from fleetcore.columnar import micros_from_datetime
from fleetcore.rfc3339 import micros_of_texts
from fleetcore.schemas import AwareTime
from hypothesis import given, settings
from hypothesis import strategies as st

_DECODE = msgspec.json.Decoder(AwareTime).decode


def _msgspec_micros(text: str) -> int | None:
    try:
        return micros_from_datetime(_DECODE(msgspec.json.encode(text)))
    except (msgspec.ValidationError, OverflowError):
        return None


@st.composite
def time_texts(draw: st.DrawFn) -> str:
    """Texts near and around the accepted forms: valid and invalid dates and times, fractions of
    0-9 digits, Z or z or offsets with and without their colon, T or t or a space."""
    year = draw(st.one_of(st.integers(0, 9999), st.sampled_from([1, 1970, 2000, 2024, 9999])))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    hour, minute, second = (
        draw(st.integers(0, 25)),
        draw(st.integers(0, 61)),
        draw(st.integers(0, 61)),
    )
    text = f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from('TTTt '))}"
    text += f"{hour:02d}:{minute:02d}:{second:02d}"
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))
        )
    zone = draw(st.sampled_from(["Z", "Z", "z", "offset", "offset", "compact"]))
    if zone in ("offset", "compact"):
        sign = draw(st.sampled_from("+-"))
        oh, om = draw(st.integers(0, 25)), draw(st.integers(0, 61))
        text += f"{sign}{oh:02d}:{om:02d}" if zone == "offset" else f"{sign}{oh:02d}{om:02d}"
    else:
        text += zone
    return text


@settings(max_examples=500, deadline=None)
@given(st.lists(time_texts(), min_size=1, max_size=6))
def test_an_answer_is_msgspec_s_time_and_a_refusal_leaves_it_to_msgspec(texts: list[str]) -> None:
    """A column of texts gets, when it gets an answer, each text's µs exactly as msgspec decodes
    it; any text in another form or invalid makes the whole column unanswered."""
    got = micros_of_texts(np.array(texts, dtype=object))
    expected = [_msgspec_micros(t) for t in texts]
    if got is None:
        return
    assert got.tolist() == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        min_size=1,
        max_size=8,
    ),
    st.lists(
        st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-11:45", "+23:59"]),
        min_size=8,
        max_size=8,
    ),
    st.lists(st.integers(0, 6), min_size=8, max_size=8),
)
def test_the_forms_gateways_send_are_all_answered(
    times: list[datetime], zones: list[str], fractions: list[int]
) -> None:
    """Times of years 1-9999 with a fraction of 0-6 digits and Z or any offset within ±23:59,
    mixed in one column, are all read, each as msgspec reads it."""
    texts = []
    for when, zone, digits in zip(times, zones, fractions, strict=False):
        text = when.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
        if digits:
            text += "." + f"{when.microsecond:06d}"[:digits]
        texts.append(text + zone)
    got = micros_of_texts(np.array(texts, dtype=object))
    assert got is not None
    assert got.tolist() == [_msgspec_micros(t) for t in texts]


def test_longer_or_non_ascii_texts_are_left_to_msgspec() -> None:
    """A text past the longest accepted form, with a character that is not ASCII, or empty,
    gets no answer."""
    for text in (
        "2026-01-01T00:00:00Z" + " " * 20,
        "2026-01-01T00:00:00Zé",
        "",
        "2026-01-01T00:00:00.000000+01:00x",
    ):
        assert micros_of_texts(np.array([text], dtype=object)) is None
    assert micros_of_texts(np.array([], dtype=object)) is not None
