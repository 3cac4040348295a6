"""The hot path's fast paths decide exactly what the previous implementation decided, on the same inputs.

* `classify` parses ordinary products with orjson (`dead_letters._fast_object`) and falls back to
  the reference parser whenever orjson refuses or might differ. `reference_classify` below is the
  previous implementation, kept verbatim: both must return the same Valid/Rejected, the same
  reason, error class, detail and field, and the same event (values and types).
* `OutputBuilder.categorized` writes the ``categories`` record with orjson instead of building and
  dumping the pydantic model; `reference_categorized` is the previous implementation: the bytes
  must be identical, and an output the model refuses (NaN or out-of-range scores...) must still
  raise the same ValueError.
* `FaustPublisher` with the app hands records straight to the app's producer (Faust's own
  `Producer.send`, which `Topic.send` ends in): the error contract of tests/worker/test_app_publisher.py
  holds on that path too, and records keep their order.

No timing here: the speed is measured by ``make bench`` / ``make bench-profile`` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stream_app.core.decoding import CategoryScore
from stream_app.core.pipeline import DriftScore, Prediction
from stream_app.messages import (
    CategorizedProduct,
    CategoryOut,
    DeadLetterReason,
    DriftOut,
    ProductEvent,
    SourceRef,
)
from stream_app.worker import dead_letters
from stream_app.worker.dead_letters import (
    Rejected,
    Valid,
    _describe,
    _first_error,
    _parse_int,
    classify,
)
from stream_app.worker.outputs import OutputBuilder, Topics
from stream_app.worker.record import ConsumedRecord
from tests.support.examples import examples
from tests.support.hostile_inputs import (
    CORPUS,
    EPOCH_FLOATS,
    EPOCH_INTS,
    FUZZ,
    MAX_MESSAGE_BYTES,
    SPECIAL_FLOATS,
    hostile_products,
    huge_int,
    nested,
    numbers,
    raw_values,
    valid_products,
)
from tests.worker.fakes import settled_future

# -- classify ---------------------------------------------------------------------------------------


def reference_classify(value: bytes | None, max_bytes: int) -> Valid | Rejected:
    """`classify` before the orjson fast path (verbatim): the reference."""
    if value is None:
        return Rejected(DeadLetterReason.INVALID_JSON, "EmptyValue", "message has no value (tombstone)")
    if len(value) > max_bytes:
        return Rejected(
            DeadLetterReason.TOO_LARGE,
            "PayloadTooLarge",
            f"value is {len(value)} bytes, over STREAM_MAX_MESSAGE_BYTES={max_bytes}",
        )
    try:
        text = value.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Rejected(DeadLetterReason.NOT_UTF8, type(exc).__name__, _describe(exc))
    try:
        obj: Any = json.loads(text, parse_int=_parse_int)
    except Exception as exc:  # noqa: BLE001
        return Rejected(DeadLetterReason.INVALID_JSON, type(exc).__name__, _describe(exc)[:500])
    if not isinstance(obj, dict):
        return Rejected(DeadLetterReason.NOT_AN_OBJECT, "TypeError",
                        f"expected a JSON object, got {type(obj).__name__}")
    try:
        return Valid(ProductEvent.model_validate(obj))
    except ValidationError as exc:
        field, detail = _first_error(exc)
        return Rejected(DeadLetterReason.SCHEMA_VIOLATION, "ValidationError", detail, field)
    except Exception as exc:  # noqa: BLE001
        return Rejected(DeadLetterReason.SCHEMA_VIOLATION, type(exc).__name__, _describe(exc))


def _typed(value: Any) -> Any:
    """A value with the type of every scalar spelled out: 1 and 1.0 (equal in Python) must differ here."""
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def assert_same(value: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Valid | Rejected:
    fast, reference = classify(value, max_bytes), reference_classify(value, max_bytes)
    assert type(fast) is type(reference), (fast, reference)
    if isinstance(reference, Rejected):
        assert fast == reference  # reason, error class, detail and field
    else:
        assert isinstance(fast, Valid)
        mine, theirs = fast.event, reference.event
        assert mine == theirs
        for name in ProductEvent.model_fields:
            assert _typed(getattr(mine, name)) == _typed(getattr(theirs, name)), name
        assert mine.model_dump_json() == theirs.model_dump_json()
    return fast


@settings(FUZZ, max_examples=examples(500))
@given(value=raw_values(), max_bytes=st.sampled_from([64, 4_096, MAX_MESSAGE_BYTES]))
def test_classify_matches_the_reference_on_any_bytes(value: bytes, max_bytes: int) -> None:
    assert_same(value, max_bytes)


@settings(FUZZ, max_examples=examples(700))
@given(product=hostile_products())
def test_classify_matches_the_reference_on_hostile_products(product: Any) -> None:
    assert_same(product.value)


@settings(FUZZ, max_examples=examples(400))
@given(product=valid_products())
def test_classify_matches_the_reference_on_ordinary_products(product: Any) -> None:
    assert isinstance(assert_same(product.value), Valid)


@pytest.mark.parametrize("name", [name for name, _, _ in CORPUS])
def test_classify_matches_the_reference_on_the_corpus(name: str) -> None:
    (value,) = [v for n, _, v in CORPUS if n == name]
    assert_same(value)


def _product(**fields: str) -> bytes:
    pairs = {"product_id": '"p1"', "title": '"Caneca azul"', **fields}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in pairs.items()) + "}").encode()


# Where orjson and Python's parser could differ: integers past 64 bits (orjson makes them floats),
# non-finite numbers, long mantissas, BOMs, surrogates, nesting around both parsers' limits.
EDGE_NUMBERS = ([str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), str(2**64 - 1), str(2**64),
                 str(-(2**64)), str(10**18), str(10**19), str(10**30), "-0", "0", "9007199254740993",
                 "9007199254740993.0", huge_int(4_300), huge_int(4_301), huge_int(5_000, negative=True)]
                + SPECIAL_FLOATS + EPOCH_FLOATS + [str(x) for x in EPOCH_INTS])
EDGE_CASES = (
    [_product(event_time=n) for n in EDGE_NUMBERS]
    + [_product(product_id=n) for n in EDGE_NUMBERS]
    + [_product(tags="[" + n + "]") for n in EDGE_NUMBERS]
    + [_product(price=n) for n in EDGE_NUMBERS]  # an ignored field holds anything
    + [_product(description=n) for n in EDGE_NUMBERS[:12]]
    + [b"\xef\xbb\xbf" + _product(), b"\xef\xbb\xbf\xef\xbb\xbf" + _product(), _product(title='"\\ud800"'),
       _product(n='"\\ud800"'), _product(title='"\\ud83d\\ude00 ok"'), _product(title='"a\\u0000b"'),
       _product(title='"\xed\xa0\x80"'), _product(title='"caf\xc3\xa9"'), _product(title='"\\u2028"'),
       _product(title='"Caneca"', **{"title ": '"x"'}), b'{"product_id": "p1", "title": "a", "title": "b"}',
       b'{"product_id": "p1", "title": "a", "title": 7}', b'{"product_id": 1, "title": "a"} ',
       b'\t{"product_id": 1, "title": "a"}\r\n', b'{"product_id": 1, "title": "a"}\x00', b"{}", b"[]", b"1",
       str(2**64).encode(), b"1e400", b"NaN", b'"x"', b"", b" "]
    + [nested(depth, _product().decode(), kind).encode() for depth in (1, 100, 200, 255, 256, 257, 900, 1_000, 1_023,
                                                                       1_024, 1_025, 5_000)
       for kind in ("[", "{")]
    + [_product(n=nested(depth, "1", kind)) for depth in (10, 200, 254, 255, 256, 900, 1_000, 1_024, 1_100)
       for kind in ("[", "{")]
)


@pytest.mark.parametrize("value", EDGE_CASES, ids=[repr(v[:60]) for v in EDGE_CASES])
def test_classify_matches_the_reference_where_the_parsers_differ(value: bytes) -> None:
    assert_same(value)


@settings(FUZZ, max_examples=examples(400))
@given(field=st.sampled_from(["product_id", "event_time", "tags", "price"]),
       number=st.one_of(numbers, st.floats().map(repr), st.floats(0, 253_402_300_799_999).map(repr),
                        st.integers(-(2**70), 2**70).map(str), st.sampled_from(EDGE_NUMBERS)))
def test_classify_matches_the_reference_on_numbers(field: str, number: str) -> None:
    assert_same(_product(**{field: f"[{number}]" if field == "tags" else number}))


@settings(FUZZ, max_examples=examples(200))
@given(depth=st.integers(1, 1_200), kind=st.sampled_from(["[", "{"]))
@example(depth=1_024, kind="[")
def test_classify_matches_the_reference_at_any_nesting(depth: int, kind: str) -> None:
    assert_same(_product(n=nested(depth, "1", kind)))


def test_ordinary_products_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a silent fallback: an ordinary product is decided without the reference parser."""

    class NoReferenceParser:
        @staticmethod
        def loads(*_: Any, **__: Any) -> Any:
            raise AssertionError("the reference parser was used")

    monkeypatch.setattr(dead_letters, "json", NoReferenceParser)
    outcome = classify(_product(tags='["caneca", "azul"]', event_time="1700000000000", price="12.5"),
                       MAX_MESSAGE_BYTES)
    assert isinstance(outcome, Valid) and outcome.event.tags == ["caneca", "azul"]
    rejected = classify(_product(title="7"), MAX_MESSAGE_BYTES)
    assert isinstance(rejected, Rejected) and rejected.field == "title"


# -- the categories record --------------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 10, 0, 0, 123_456, tzinfo=UTC)


def reference_categorized(builder: OutputBuilder, record: ConsumedRecord, event: ProductEvent, prediction: Prediction,
                          model_version: str, processed_at: datetime) -> tuple[str, bytes | None, bytes, str,
                                                                                 float | None]:
    """`OutputBuilder.categorized` through the pydantic model, as before the fast path (with ``processed_at`` given
    and ``above_threshold`` carried since)."""
    drift = prediction.drift
    message = CategorizedProduct(
        product_id=event.product_id,
        categories=[CategoryOut(name=c.name, score=float(c.score), above_threshold=c.above_threshold)
                    for c in prediction.categories],
        top_category=prediction.top_category,
        model_version=model_version,
        drift=DriftOut(distance=float(drift.distance), nearest_centroid=int(drift.nearest_centroid),
                       outlier=bool(drift.outlier)),
        event_time=event.event_time,
        processed_at=processed_at,
        source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
    )
    value = message.model_dump_json().encode("utf-8")
    if len(value) > builder.max_output_bytes:
        raise ValueError(f"categories record is {len(value)} bytes, over STREAM_MAX_OUTPUT_BYTES")
    origin = event.event_time.timestamp() if event.event_time is not None else record.timestamp
    return builder.topics.output, event.key, value, "categories", origin


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - compared between the two implementations
        return type(exc).__name__, str(exc)


scores = st.one_of(st.floats(0, 1), st.sampled_from([0.0, -0.0, 1.0, 5e-324, 1e-7, 0.1, 1 / 3, 0.9999999999999999,
                                                     float("nan"), float("inf"), -1e-300, 1.0000000000000002, 2.0]))
names = st.one_of(st.sampled_from(["Bebê", "Bijuterias e Jóias", "Decoração", "Outros", "Papel e Cia", "a\"b\\c",
                                   "\u2028\x00\x7f", "\U0001f600", ""]), st.text(max_size=20).filter(
    lambda s: s.encode("utf-8", "surrogatepass") == s.encode("utf-8", "ignore")))
event_times = st.one_of(st.none(), st.integers(0, 253_402_300_799_999),
                        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=5)),
                                                                timezone(timedelta(hours=-3, minutes=-30))])
                                     ).map(lambda d: d.isoformat()))
product_ids = st.one_of(st.integers(-(2**63), 2**63 - 1),
                        st.text(min_size=1, max_size=256).filter(lambda s: s.strip() and s.encode(
                            "utf-8", "surrogatepass") == s.encode("utf-8", "ignore")))


@settings(FUZZ, max_examples=examples(1_000))
@given(product_id=product_ids, event_time=event_times,
       categories=st.lists(st.tuples(names, scores), max_size=6),
       distance=st.one_of(st.floats(0, 2), st.sampled_from([-0.0, 2.0, 2.0000000000000004, -1e-9, float("nan")])),
       nearest=st.integers(-2, 1_000), outlier=st.booleans(), version=st.text(max_size=40),
       topic=st.text(min_size=1, max_size=40), partition=st.integers(-1, 2**31 - 1),
       offset=st.integers(-1, 2**63 - 1), max_output=st.sampled_from([1_048_576, 300, 100]))
@example(product_id="p1", event_time=None, categories=[("Bebê", 0.5)], distance=0.3, nearest=1, outlier=False,
         version="v1", topic="products", partition=0, offset=0, max_output=1_048_576)
def test_categorized_writes_the_bytes_the_model_wrote(product_id: Any, event_time: Any,
                                                      categories: list[tuple[str, float]], distance: float,
                                                      nearest: int, outlier: bool, version: str, topic: str,
                                                      partition: int, offset: int, max_output: int) -> None:
    from unittest import mock

    from stream_app.worker import outputs

    doc: dict[str, Any] = {"product_id": product_id, "title": "Caneca"}
    if event_time is not None:
        doc["event_time"] = event_time
    event = ProductEvent.model_validate(doc)
    prediction = Prediction(categories=[CategoryScore(n, s, s >= 0.5) for n, s in categories], top_index=0,
                            drift=DriftScore(distance, nearest, outlier))
    record = ConsumedRecord(key=b"k", value=b"{}", topic=topic, partition=partition, offset=offset, timestamp=1.7e9,
                            ack=lambda: None)
    builder = OutputBuilder(Topics(output="categories", drift="drift", dlq="dlq"), max_output)
    with mock.patch.object(outputs, "_utcnow", lambda: NOW):
        mine = _outcome(lambda: builder.categorized(record, event, prediction, version))
    theirs = _outcome(lambda: reference_categorized(builder, record, event, prediction, version, NOW))
    if mine[0] == "ok":
        out = mine[1]
        mine = ("ok", (out.topic, out.key, out.value, out.what, out.origin))
    assert mine == theirs


def test_ordinary_predictions_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a silent fallback: an ordinary record is written without the pydantic model."""
    from stream_app.worker import outputs

    def no_model(*_: Any) -> bytes:
        raise AssertionError("the pydantic model was used")

    monkeypatch.setattr(outputs, "_validated_json", no_model)
    event = ProductEvent.model_validate({"product_id": 7, "title": "Caneca", "event_time": "2024-05-01T12:00:00+02:00"})
    prediction = Prediction([CategoryScore("Bebê", 0.75, True), CategoryScore("Outros", 0.1, False)], 0,
                            DriftScore(0.25, 3, False))
    record = ConsumedRecord(b"7", b"{}", "products", 2, 41, 1.7e9, lambda: None)
    out = OutputBuilder(Topics("categories", "drift", "dlq"), 1_048_576).categorized(record, event, prediction, "v1")
    doc = json.loads(out.value)
    assert doc["event_time"] == "2024-05-01T10:00:00Z"
    assert doc["categories"] == [{"name": "Bebê", "score": 0.75, "above_threshold": True},
                                 {"name": "Outros", "score": 0.1, "above_threshold": False}]
    assert CategorizedProduct.model_validate_json(out.value).source.offset == 41


# -- the publisher: straight to the producer --------------------------------------------------------


class _AIOKafkaProducer:
    """aiokafka's producer as Faust's `Producer.send` sees it: ``send`` may raise, or return the ack future."""

    def __init__(self, at_send: BaseException | None = None, at_ack: BaseException | None = None) -> None:
        self.at_send, self.at_ack = at_send, at_ack
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        if self.at_send is not None:
            raise self.at_send
        self.sent.append((topic, kwargs.get("key"), value))
        return settled_future(self.at_ack)


class _FaustProducer:
    """Runs Faust's own `Producer.send` (its error wrapping included) over a fake aiokafka producer."""

    allow_headers = True

    def __init__(self, inner: _AIOKafkaProducer) -> None:
        self._producer = inner
        self._transaction_producers: dict[str, Any] = {}
        self.started = 0

    def _ensure_producer(self) -> _AIOKafkaProducer:
        return self._producer

    def _send_on_produce_message(self, **_: Any) -> None:
        pass

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        from faust.transport.drivers.aiokafka import Producer

        return await Producer.send(self, *args, **kwargs)  # type: ignore[arg-type]


class _App:
    def __init__(self, producer: _FaustProducer) -> None:
        self.producer = producer

    async def maybe_start_producer(self) -> _FaustProducer:
        self.producer.started += 1
        return self.producer


def _deliver_direct(inner: _AIOKafkaProducer, sends: int = 1) -> Any:
    import asyncio

    from stream_app.worker.transport import FaustPublisher

    app = _App(_FaustProducer(inner))

    async def scenario() -> Any:
        publisher = FaustPublisher({}, app)  # type: ignore[arg-type]
        deliveries = [await publisher.send("t", b"k%d" % i, b"v%d" % i) for i in range(sends)]
        return [await d for d in deliveries]

    result = asyncio.run(scenario())
    assert app.producer.started == 1  # started once, then the producer is reused
    return result


def test_publisher_straight_to_the_producer_keeps_the_error_contract() -> None:
    """The same outcomes as through `Topic.send` (tests/worker/test_app_publisher.py): the producer's
    and the broker's 'too large' become RecordTooLarge, anything else propagates."""
    from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
    from faust.exceptions import ProducerSendError

    from stream_app.worker.publish import RecordTooLarge

    with pytest.raises(RecordTooLarge):
        _deliver_direct(_AIOKafkaProducer(at_send=MessageSizeTooLargeError("The message is 2000000 bytes")))
    with pytest.raises(RecordTooLarge):
        _deliver_direct(_AIOKafkaProducer(at_ack=MessageSizeTooLargeError()))
    with pytest.raises(ProducerSendError):
        _deliver_direct(_AIOKafkaProducer(at_send=KafkaTimeoutError()))
    with pytest.raises(KafkaTimeoutError):
        _deliver_direct(_AIOKafkaProducer(at_ack=KafkaTimeoutError()))
    inner = _AIOKafkaProducer()
    assert _deliver_direct(inner, sends=3) == ["metadata"] * 3
    assert inner.sent == [("t", b"k0", b"v0"), ("t", b"k1", b"v1"), ("t", b"k2", b"v2")]  # in order
