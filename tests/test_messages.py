"""The product contract, dead-letter classification and the committed JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.messages import DeadLetter, DeadLetterReason, ProductEvent
from stream_app.schemas import SCHEMA_DIR, generate, stale
from stream_app.worker.dead_letters import RECORD_OVERHEAD_BYTES, Rejected, Valid, classify, dead_letter, dlq_key

MAX = 10_000

titles = st.text(min_size=1, max_size=40).filter(lambda t: t.strip())
product_ids = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                        st.text(min_size=1, max_size=20).filter(lambda t: t.strip()))
tags = st.one_of(st.none(), st.lists(st.text(max_size=10), max_size=5), st.text(max_size=30))
event_times = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=4_102_444_800_000),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.isoformat()
    ),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pid=product_ids, title=titles, tags=tags, event_time=event_times, extra=st.dictionaries(
    st.sampled_from(["price", "seller_id", "query", "x"]), st.integers(), max_size=2))
def test_valid_products_are_accepted(pid, title, tags, event_time, extra) -> None:
    payload = {"product_id": pid, "title": title, **extra}
    if tags is not None:
        payload["tags"] = tags
    if event_time is not None:
        payload["event_time"] = event_time
    outcome = classify(json.dumps(payload).encode(), MAX)
    assert isinstance(outcome, Valid), outcome
    event = outcome.event
    assert event.product_id == pid and event.title == title.strip()
    assert event.tags is None or all(t and t == t.strip() for t in event.tags)
    assert event.event_time is None or event.event_time.tzinfo is not None
    assert event.key == str(pid).encode()
    # The products schema accepts what the model accepts.
    jsonschema.validate(payload, generate()["products.schema.json"])


bad_values = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False),
                       st.lists(st.integers(), min_size=1, max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
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


def test_event_time_forms() -> None:
    ms = classify(b'{"product_id": 1, "title": "x", "event_time": 1700000000000}', MAX)
    iso = classify(b'{"product_id": 1, "title": "x", "event_time": "2023-11-14T22:13:20Z"}', MAX)
    naive = classify(b'{"product_id": 1, "title": "x", "event_time": "2023-11-14T22:13:20"}', MAX)
    assert isinstance(ms, Valid) and isinstance(iso, Valid) and isinstance(naive, Valid)
    assert ms.event.event_time == iso.event.event_time == naive.event.event_time


def test_text_fields_join_tags() -> None:
    event = ProductEvent.model_validate({"product_id": 1, "title": " Caneca ", "tags": ["a", " b c "]})
    assert event.text_fields() == {"title": "Caneca", "tags": "a b c", "description": None}
    event = ProductEvent.model_validate({"product_id": 1, "title": "Caneca", "tags": "  a   b "})
    assert event.text_fields()["tags"] == "a b"


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


def test_committed_schemas_are_up_to_date() -> None:
    assert not stale(), f"run `python -m stream_app.schemas` to regenerate {stale()} in {SCHEMA_DIR}"
    for schema in generate().values():
        jsonschema.Draft202012Validator.check_schema(schema)
