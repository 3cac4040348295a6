"""Dead-letter classification (`stream_app.worker.dead_letters`): `classify` names the reason and the
field of a refused message, and `dead_letter` keeps its bytes within the output limit.

Property tests over hostile inputs are in tests/worker/test_dead_letters_fuzz.py; the live worker's
dead-letter topic in tests/e2e/test_dead_letter_stream.py.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.messages import DeadLetter, DeadLetterReason
from stream_app.schemas import generate
from stream_app.worker.dead_letters import RECORD_OVERHEAD_BYTES, Rejected, classify, dead_letter, dlq_key
from tests.support.examples import examples

MAX = 10_000

bad_values = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False),
                       st.lists(st.integers(), min_size=1, max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=examples(200), deadline=None)
@given(field=st.sampled_from(["product_id", "title", "tags", "description", "event_time"]), value=bad_values)
def test_wrong_types_name_the_field(field: str, value) -> None:
    payload = {"product_id": "p1", "title": "Caneca", field: value}
    if field in ("tags", "description", "event_time") and value is None:
        return  # optional fields may be null
    if field == "event_time" and isinstance(value, float) and 0 <= value <= 253_402_300_799_999:
        return  # fractional epoch milliseconds are accepted
    outcome = classify(json.dumps(payload).encode(), MAX)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is DeadLetterReason.SCHEMA_VIOLATION
    assert outcome.field == field and field in outcome.detail


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        (b"\xff\xfe\x00garbage", DeadLetterReason.NOT_UTF8, None),
        (b"{not json", DeadLetterReason.INVALID_JSON, None),
        (b"", DeadLetterReason.INVALID_JSON, None),
        (None, DeadLetterReason.INVALID_JSON, None),
        (b"[1, 2]", DeadLetterReason.NOT_AN_OBJECT, None),
        (b'"a string"', DeadLetterReason.NOT_AN_OBJECT, None),
        (b"42", DeadLetterReason.NOT_AN_OBJECT, None),
        (b'{"title": "x"}', DeadLetterReason.SCHEMA_VIOLATION, "product_id"),
        (b'{"product_id": 1}', DeadLetterReason.SCHEMA_VIOLATION, "title"),
        (b'{"product_id": 1, "title": "   "}', DeadLetterReason.SCHEMA_VIOLATION, "title"),
        (b'{"product_id": 1, "title": ""}', DeadLetterReason.SCHEMA_VIOLATION, "title"),
        (b'{"product_id": true, "title": "x"}', DeadLetterReason.SCHEMA_VIOLATION, "product_id"),
        (b'{"product_id": 1.5, "title": "x"}', DeadLetterReason.SCHEMA_VIOLATION, "product_id"),
        (b'{"product_id": 1, "title": 7}', DeadLetterReason.SCHEMA_VIOLATION, "title"),
        (b'{"product_id": 1, "title": "x", "tags": [1, 2]}', DeadLetterReason.SCHEMA_VIOLATION, "tags"),
        (b'{"product_id": 1, "title": "x", "event_time": "yesterday"}', DeadLetterReason.SCHEMA_VIOLATION,
         "event_time"),
        (b'{"product_id": 1, "title": "x", "event_time": "1700000000000"}', DeadLetterReason.SCHEMA_VIOLATION,
         "event_time"),
        (b'{"product_id": 1, "title": "x", "event_time": -5}', DeadLetterReason.SCHEMA_VIOLATION, "event_time"),
        (b'{"product_id": 1, "title": "x", "description": 3}', DeadLetterReason.SCHEMA_VIOLATION, "description"),
        (b'{"product_id": 1, "title": "x", "pad": "' + b"a" * MAX + b'"}', DeadLetterReason.TOO_LARGE, None),
        (b"[" * 100_000, DeadLetterReason.TOO_LARGE, None),
    ],
)
def test_classification(value: bytes | None, reason: DeadLetterReason, field: str | None) -> None:
    outcome = classify(value, MAX)
    assert isinstance(outcome, Rejected)
    assert outcome.reason is reason
    assert outcome.field == field
    if field:
        assert field in outcome.detail


def test_deeply_nested_json_is_a_dead_letter_not_a_crash() -> None:
    outcome = classify(b"[" * 5000 + b"]" * 5000, 1_000_000)
    assert (isinstance(outcome, Rejected) and outcome.reason is DeadLetterReason.NOT_AN_OBJECT) or outcome.reason is (
        DeadLetterReason.INVALID_JSON
    )


def test_dead_letter_carries_the_original_bytes() -> None:
    raw = b"\xff\x00 not utf8"
    letter = dead_letter(b"k1", raw, classify(raw, MAX), "products", 3, 41)  # type: ignore[arg-type]
    assert letter.original_value() == raw and letter.original_key() == b"k1"
    assert letter.error.reason is DeadLetterReason.NOT_UTF8 and letter.error.error_class == "UnicodeDecodeError"
    assert (letter.source.topic, letter.source.partition, letter.source.offset) == ("products", 3, 41)
    assert not letter.value_truncated and letter.value_size == len(raw)
    doc = json.loads(letter.model_dump_json())
    jsonschema.validate(doc, generate()["dead-letter.schema.json"])
    assert DeadLetter.model_validate(doc) == letter


@pytest.mark.parametrize("key_size", [0, 10, 900_000])
def test_a_dead_letter_fits_the_output_limit(key_size: int) -> None:
    """A ~1 MB value (and a huge key) still yields a record within STREAM_MAX_OUTPUT_BYTES, with the
    copies' prefixes intact and flagged as cut."""
    raw = b"x" * 999_999
    key = b"k" * key_size if key_size else None
    limit = 1_048_576
    letter = dead_letter(key, raw, classify(raw, 1_000_000), "products", 0, 0, max_bytes=limit)
    assert len(letter.model_dump_json().encode()) + len(dlq_key(key) or b"") + RECORD_OVERHEAD_BYTES <= limit
    assert letter.value_size == len(raw) and letter.key_size == key_size
    value = letter.original_value()
    assert value is not None and raw.startswith(value) and len(value) > limit // 2
    assert letter.value_truncated == (len(value) < len(raw))
    if key is not None:
        copy = letter.original_key()
        assert copy is not None and key.startswith(copy) and letter.key_truncated == (len(copy) < len(key))
    small = dead_letter(key, raw, classify(raw, 10), "products", 0, 0, max_bytes=16_384)
    assert len(small.model_dump_json().encode()) <= 16_384 and small.value_truncated
