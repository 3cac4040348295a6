"""Fuzzing the validation path, no broker: `classify` and `dead_letter` over hostile inputs.

What "fixed" means for one message, whatever its bytes:
* `classify(value, max_bytes)` never raises; it returns `Valid` or `Rejected`.
* A `Rejected` has a `DeadLetterReason`, an error class and a non-empty detail; a schema violation
  names its field (``field`` set, and the detail mentions it), and names the right one when a single
  field is at fault.
* A `Valid` event can be published: its key is bytes that are UTF-8, its text renders to a str that
  encodes as UTF-8, its ``event_time`` is None or an aware UTC datetime.
* A dead letter of any input with any `Rejected` serializes, round-trips its key and value copies
  (or flags them truncated), and is at most STREAM_MAX_OUTPUT_BYTES (1 MiB) serialized, also for a
  ~1,000,000-byte value and a huge key.
* Ordinary products stay valid.

Strategies and the named corpus are in tests/support/hostile_inputs.py.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app.core.text import TextTemplate
from stream_app.messages import DeadLetter, DeadLetterReason, ProductEvent
from stream_app.worker.dead_letters import Rejected, Valid, classify, dead_letter, dlq_key
from tests.support.examples import examples
from tests.support.hostile_inputs import (
    CORPUS,
    FUZZ,
    MAX_MESSAGE_BYTES,
    MAX_OUTPUT_BYTES,
    Blob,
    Hostile,
    Text,
    ValidProduct,
    big_text,
    hostile_products,
    kafka_keys,
    raw_values,
    valid_products,
)

TEMPLATES = [TextTemplate(), TextTemplate(fields=("title", "tags", "description"))]
NINES = b"9" * 5_000


def make_dead_letter(key: bytes | None, value: bytes | None, rejected: Rejected, partition: int = 0,
                     offset: int = 0) -> DeadLetter:
    """The one call of `dead_letter` in this file (its signature may gain a size limit)."""
    return dead_letter(key, value, rejected, "products", partition, offset)


def checked_classify(value: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Valid | Rejected:
    """`classify`, with the contract of its outcome checked. (An exception escapes as is, so that
    hypothesis tells different ones apart and the traceback shows where it came from.)"""
    outcome = classify(value, max_bytes)
    assert isinstance(outcome, Valid | Rejected), outcome
    if isinstance(outcome, Rejected):
        check_rejected(outcome)
    else:
        check_valid(outcome.event)
    return outcome


def check_rejected(rejected: Rejected) -> None:
    assert isinstance(rejected.reason, DeadLetterReason), rejected
    assert isinstance(rejected.error_class, str) and rejected.error_class.strip(), rejected
    assert isinstance(rejected.detail, str) and rejected.detail.strip(), rejected
    if rejected.reason is DeadLetterReason.SCHEMA_VIOLATION:
        assert isinstance(rejected.field, str) and rejected.field, f"schema violation names no field: {rejected}"
        assert rejected.field in rejected.detail, rejected
    # what goes into the dead letter's error must serialize
    rejected.error().model_dump_json().encode("utf-8")


def check_valid(event: ProductEvent) -> None:
    assert isinstance(event, ProductEvent)
    key = event.key
    assert isinstance(key, bytes) and key, event.product_id
    key.decode("utf-8")
    for template in TEMPLATES:
        text = template.render(event.text_fields())
        assert isinstance(text, str) and text, event
        text.encode("utf-8")
    assert event.title.strip()
    when = event.event_time
    assert when is None or (when.tzinfo is not None and when.utcoffset() == timedelta(0)), repr(when)
    if when is not None:
        when.isoformat().encode("utf-8")


# -- classify ---------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=examples(400))
@given(value=raw_values(), max_bytes=st.sampled_from([64, 4_096, MAX_MESSAGE_BYTES]))
@example(value=b'{"product_id": "x", "title": "Caneca", "n": ' + NINES + b"}", max_bytes=MAX_MESSAGE_BYTES)
@example(value=b'{"product_id": "x", "title": "Caneca", "event_time": "0001-01-01T00:00:00+01:00"}',
         max_bytes=MAX_MESSAGE_BYTES)
@example(value=b'{"product_id": "x", "title": "Caneca", "event_time": "9999-12-31T23:59:59-05:00"}',
         max_bytes=MAX_MESSAGE_BYTES)
@example(value=None, max_bytes=MAX_MESSAGE_BYTES)
def test_classify_never_raises_on_any_bytes(value: bytes, max_bytes: int) -> None:
    outcome = checked_classify(value, max_bytes)
    if value is not None and len(value) > max_bytes:
        assert isinstance(outcome, Rejected) and outcome.reason is DeadLetterReason.TOO_LARGE


@settings(FUZZ, max_examples=examples(700))
@given(product=hostile_products())
def test_classify_hostile_products(product: Hostile) -> None:
    outcome = checked_classify(product.value)
    if product.strict:
        assert isinstance(outcome, Rejected), f"{product.culprit}: accepted {outcome}"
        assert outcome.reason is DeadLetterReason.SCHEMA_VIOLATION, outcome
    if (isinstance(outcome, Rejected) and outcome.reason is DeadLetterReason.SCHEMA_VIOLATION
            and product.culprit is not None):
        # every other field is ordinary: the violation must be the culprit's
        assert outcome.field == product.culprit, (product.culprit, outcome)


@pytest.mark.parametrize("name", [name for name, _, _ in CORPUS])
def test_classify_corpus(name: str) -> None:
    (value,) = [v for n, _, v in CORPUS if n == name]
    checked_classify(value)


@settings(FUZZ, max_examples=examples(400))
@given(product=valid_products())
@example(product=ValidProduct(b'{"product_id": 1, "title": "Caneca", "event_time": "2018-07-17 20:27:14"}',
                              {"product_id": 1, "title": "Caneca", "event_time": "2018-07-17 20:27:14"}))
@example(product=ValidProduct(b'{"product_id": "p1", "title": "Caneca", "event_time": "2024-01-01T00:00:00+14:00"}',
                              {"product_id": "p1", "title": "Caneca", "event_time": "2024-01-01T00:00:00+14:00"}))
def test_valid_products_stay_valid(product: ValidProduct) -> None:
    outcome = checked_classify(product.value)
    assert isinstance(outcome, Valid), f"real traffic rejected: {outcome}"
    assert outcome.event.product_id == product.doc["product_id"]
    assert outcome.event.title == product.doc["title"].strip()


# -- dead letters -----------------------------------------------------------------------------------

rejections = st.builds(
    Rejected,
    reason=st.sampled_from(list(DeadLetterReason)),
    error_class=st.text(min_size=1, max_size=60),
    detail=st.one_of(st.text(min_size=1, max_size=3_000), big_text(1_100_000).filter(lambda s: s.strip())
                     .map(lambda s: Text(s.encode("utf-8", "replace").decode("utf-8", "replace")))),
    field=st.one_of(st.none(), st.sampled_from(["product_id", "title", "tags", "description", "event_time"]),
                    st.text(max_size=30)),
)


def check_dead_letter(key: bytes | None, value: bytes | None, rejected: Rejected, partition: int = 0,
                      offset: int = 0) -> None:
    letter = make_dead_letter(key, value, rejected, partition, offset)
    raw = letter.model_dump_json().encode("utf-8")
    assert len(raw) <= MAX_OUTPUT_BYTES, f"dead letter is {len(raw):,} bytes"
    key_len, value_len = len(key or b""), len(value or b"")
    if key_len + value_len <= MAX_MESSAGE_BYTES:
        # An input that fitted in one message gives a DLQ record (its Kafka key + the letter) that fits.
        record_key = len(dlq_key(key) or b"")
        assert record_key + len(raw) <= MAX_OUTPUT_BYTES, (f"DLQ record: key {record_key:,} + value {len(raw):,} "
                                                           "bytes")

    back = DeadLetter.model_validate_json(raw)
    assert back.source.topic == "products" and (back.source.partition, back.source.offset) == (partition, offset)
    assert back.error.reason is rejected.reason and back.error.detail.strip()
    assert back.value_size == value_len

    kept_key = back.original_key()
    if key is None:
        assert kept_key is None
    elif getattr(back, "key_truncated", False):
        assert kept_key is not None and key.startswith(kept_key) and len(kept_key) < len(key)
    else:
        assert kept_key == key, f"key copy lost ({len(kept_key or b''):,} of {key_len:,} bytes) without a flag"

    kept_value = back.original_value()
    if value is None:
        assert kept_value is None and not back.value_truncated
    elif back.value_truncated:
        assert kept_value is not None and value.startswith(kept_value) and len(kept_value) < len(value)
    else:
        assert kept_value == value, (f"value copy lost ({len(kept_value or b''):,} of {value_len:,} bytes) "
                                     "without a flag")
    # the schema's base64 fields stay base64
    for copy in (back.key, back.value):
        if copy is not None:
            base64.b64decode(copy, validate=True)
    json.loads(raw)


@settings(FUZZ, max_examples=examples(300))
@given(key=kafka_keys(), value=st.one_of(st.none(), raw_values()), rejected=st.one_of(st.none(), rejections),
       partition=st.integers(0, 2**31 - 1), offset=st.integers(0, 2**63 - 1))
@example(key=Blob(b"k" * 1_000_000), value=Blob(b"\xff" * MAX_MESSAGE_BYTES), rejected=None, partition=0, offset=0)
@example(key=None, value=Blob(b"\xff" * MAX_MESSAGE_BYTES), rejected=None, partition=0, offset=0)
def test_dead_letter_of_anything_fits_and_round_trips(key: bytes | None, value: bytes | None,
                                                      rejected: Rejected | None, partition: int, offset: int) -> None:
    if rejected is None:
        outcome = checked_classify(value)
        rejected = outcome if isinstance(outcome, Rejected) else Rejected(
            DeadLetterReason.INFERENCE_FAILED, "RuntimeError", "model failed")
    check_dead_letter(key, value, rejected, partition, offset)


BIG_CASES = {
    "value-1MB-not-utf8": (b"key", b"\xff" * MAX_MESSAGE_BYTES),
    "value-1MB-not-utf8-key-48KB": (b"k" * 48_000, b"\xfe" * (MAX_MESSAGE_BYTES - 48_000)),
    "value-999KB-json-array": (b"k", b"[" + b"1," * 499_000 + b"1]"),
    "value-900KB-blank-title": (b"k", b'{"product_id": 1, "title": "' + b" " * 900_000 + b'"}'),
    "key-1MB-value-empty": (b"\x00" * MAX_MESSAGE_BYTES, b""),
    "key-1MB-no-value": (b"\xff" * MAX_MESSAGE_BYTES, None),
    "key-500KB-value-500KB": (b"K" * 500_000, b"\xc3\x28" * 250_000),
    "key-1MB-value-too-large-5MB": (b"K" * MAX_MESSAGE_BYTES, b"x" * 5_000_000),
    "value-too-large-1.05MB": (None, b"x" * 1_050_000),
}


@pytest.mark.parametrize("detail", ["classified", "2MB-detail"])
@pytest.mark.parametrize("case", list(BIG_CASES))
def test_dead_letter_of_megabyte_inputs(case: str, detail: str) -> None:
    key, value = (None if v is None else Blob(v) for v in BIG_CASES[case])
    if detail == "classified":
        outcome = checked_classify(value)
        rejected = outcome if isinstance(outcome, Rejected) else Rejected(
            DeadLetterReason.INFERENCE_FAILED, "RuntimeError", "model failed")
    else:
        rejected = Rejected(DeadLetterReason.INFERENCE_FAILED, "ValueError", Text("x" * 2_000_000))
    check_dead_letter(key, value, rejected)


@pytest.mark.parametrize("name", [name for name, _, _ in CORPUS])
def test_dead_letter_corpus(name: str) -> None:
    (key, value) = next((k, v) for n, k, v in CORPUS if n == name)
    outcome = checked_classify(value)
    if isinstance(outcome, Rejected):
        check_dead_letter(key, value, outcome, 2, 10**12)
