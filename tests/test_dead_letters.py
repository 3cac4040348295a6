"""Malformed messages go to the DLQ with their reason; good traffic is unaffected; the worker stays up.

Also, without Kafka: a batch whose model call fails is retried one message at a time and only the
failing messages are dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stream_app.messages import DeadLetterReason
from stream_app.schemas import generate
from stream_app.worker.batching import BatchProcessor, Record, Topics
from tests.worker_harness import WorkerTopics, collect_json, elo7_event, elo7_rows, produce, start_worker, \
    wait_for_keys

MAX_BYTES = 20_000

# (kind, value, expected reason); each kind is sent several times with distinct keys.
MALFORMED: list[tuple[str, bytes | None, DeadLetterReason]] = [
    ("latin1", "Caneca de ca\u00e7\u00e3o".encode("latin-1"), DeadLetterReason.NOT_UTF8),
    ("binary", bytes(range(256)), DeadLetterReason.NOT_UTF8),
    ("truncated-json", b'{"product_id": 1, "title": "Cane', DeadLetterReason.INVALID_JSON),
    ("empty", b"", DeadLetterReason.INVALID_JSON),
    ("tombstone", None, DeadLetterReason.INVALID_JSON),
    ("list", b'[{"product_id": 1, "title": "x"}]', DeadLetterReason.NOT_AN_OBJECT),
    ("string", b'"just a string"', DeadLetterReason.NOT_AN_OBJECT),
    ("no-title", b'{"product_id": 5, "tags": "a b"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("blank-title", b'{"product_id": 5, "title": "   "}', DeadLetterReason.SCHEMA_VIOLATION),
    ("no-id", b'{"title": "Caneca"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("bool-id", b'{"product_id": true, "title": "Caneca"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("tags-type", b'{"product_id": 5, "title": "Caneca", "tags": {"a": 1}}', DeadLetterReason.SCHEMA_VIOLATION),
    ("bad-time", b'{"product_id": 5, "title": "Caneca", "event_time": "soon"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("too-large", json.dumps({"product_id": 5, "title": "x" * 70_000}).encode(), DeadLetterReason.TOO_LARGE),
]
FIELD = {"no-title": "title", "blank-title": "title", "no-id": "product_id", "bool-id": "product_id",
         "tags-type": "tags", "bad-time": "event_time"}


@pytest.fixture(scope="module")
def dlq_worker(broker: str, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    topics = WorkerTopics.create(broker, "dlq")
    worker = start_worker(broker, topics, test_bundle, tmp_path_factory.mktemp("dlq"), max_message_bytes=MAX_BYTES,
                          drift_window=100, dlq_alert_ratio=0.1)
    yield worker, topics
    assert worker.terminate() == 0, worker.tail()


@pytest.mark.broker
def test_malformed_messages_are_dead_lettered(dlq_worker, broker: str) -> None:
    worker, topics = dlq_worker
    bad = [(f"bad-{kind}-{i}".encode(), value, reason, kind)
           for i in range(100) for kind, value, reason in [MALFORMED[i % len(MALFORMED)]]]
    good = [elo7_event(r) for r in elo7_rows(300, seed=5).itertuples()]
    traffic: list[tuple[bytes | None, bytes | None]] = [(k, v) for k, v, _, _ in bad]
    traffic += [(str(e["product_id"]).encode(), json.dumps(e).encode()) for e in good]
    random.Random(3).shuffle(traffic)
    produce(broker, topics.input, traffic)

    good_keys = {str(e["product_id"]) for e in good}
    outputs = wait_for_keys(broker, topics.output, good_keys, timeout=120)
    assert set(outputs) == good_keys
    letters = {d["_key"]: d for d in collect_json(broker, topics.dlq, until=len(bad), timeout=60)}
    assert len(letters) == len(bad), worker.tail()

    schema = generate()["dead-letter.schema.json"]
    for key, value, reason, kind in bad:
        letter = letters[key.decode()]
        jsonschema.validate({k: v for k, v in letter.items() if not k.startswith("_")}, schema)
        assert letter["error"]["reason"] == reason.value, (kind, letter["error"])
        assert letter["source"]["topic"] == topics.input and letter["source"]["offset"] >= 0
        assert base64.b64decode(letter["key"]) == key
        if value is None:
            assert letter["value"] is None and letter["value_size"] == 0
        elif reason is DeadLetterReason.TOO_LARGE:
            assert letter["value_size"] == len(value) and letter["value_truncated"]
        else:
            assert base64.b64decode(letter["value"]) == value
        if kind in FIELD:
            assert letter["error"]["field"] == FIELD[kind] and FIELD[kind] in letter["error"]["detail"]
    assert not set(outputs) & {k.decode() for k, *_ in bad}

    assert worker.alive()
    assert worker.get("/livez")[0] == 200
    time.sleep(0.5)
    metrics = worker.get("/metrics")[1]
    assert 'stream_dead_letters_total{reason="schema_violation"}' in metrics
    assert "DEAD-LETTER RATIO" in worker.tail(400)  # 25% of the stream > STREAM_DLQ_ALERT_RATIO=0.1


# -- without Kafka: per-message retry of a failed batch ------------------------------------------


@dataclass
class _Cat:
    name: str
    score: float


@dataclass
class _Drift:
    distance: float = 0.1
    nearest_centroid: int = 0
    outlier: bool = False


@dataclass
class _Pred:
    categories: list[_Cat]
    top_index: int = 0
    drift: _Drift = field(default_factory=_Drift)

    @property
    def top_category(self) -> str:
        return self.categories[0].name


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class _DriftSink:
    def observe(self, *args: Any) -> list[Any]:
        return []

    def count_input(self, dead_letter: bool) -> None:
        pass


def test_failed_batch_is_retried_one_by_one() -> None:
    calls: list[int] = []

    def predict(texts: list[str]) -> list[_Pred]:
        calls.append(len(texts))
        if any("POISON" in t for t in texts):
            raise ValueError("model cannot take this text")
        return [_Pred([_Cat("Bebê", 0.9)]) for _ in texts]

    async def scenario() -> tuple[_Publisher, list[int]]:
        publisher, acked = _Publisher(), []
        processor = BatchProcessor(
            predict=predict, render=lambda f: f["title"], model_version="v1", publisher=publisher,
            topics=Topics("out", "drift", "dlq"), drift=_DriftSink(), executor=ThreadPoolExecutor(1),
            max_in_flight=2, max_message_bytes=10_000, on_fatal=lambda exc: asyncio.sleep(0),
        )
        titles = ["Caneca", "POISON pill", "Body bebê", "Convite"]
        records = [Record(key=str(i).encode(), value=json.dumps({"product_id": i, "title": t}).encode(),
                          topic="in", partition=0, offset=i, timestamp=None, ack=lambda i=i: acked.append(i))
                   for i, t in enumerate(titles)]
        await processor.submit(records)
        await processor.drain()
        return publisher, acked

    publisher, acked = asyncio.run(scenario())
    assert calls == [4, 1, 1, 1, 1]  # one batch call, then one call per message
    assert sorted(acked) == [0, 1, 2, 3]  # every record acked, after its output was sent
    by_topic: dict[str, list[bytes | None]] = {}
    for topic, key, _ in publisher.sent:
        by_topic.setdefault(topic, []).append(key)
    assert by_topic["dlq"] == [b"1"] and by_topic["out"] == [b"0", b"2", b"3"]
    letter = json.loads(next(v for t, _, v in publisher.sent if t == "dlq"))
    assert letter["error"]["reason"] == "inference_failed" and letter["error"]["error_class"] == "ValueError"


def test_unacknowledged_outputs_are_never_acked() -> None:
    """A failed publish leaves the batch unacked (so uncommitted) and stops the worker."""

    class FailingPublisher(_Publisher):
        async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(RuntimeError("broker down"))
            return future

    async def scenario() -> tuple[list[int], list[BaseException]]:
        acked: list[int] = []
        fatal: list[BaseException] = []

        async def on_fatal(exc: BaseException) -> None:
            fatal.append(exc)

        processor = BatchProcessor(
            predict=lambda texts: [_Pred([_Cat("Bebê", 0.9)]) for _ in texts], render=lambda f: f["title"],
            model_version="v1", publisher=FailingPublisher(), topics=Topics("out", "drift", "dlq"),
            drift=_DriftSink(), executor=ThreadPoolExecutor(1), max_in_flight=1, max_message_bytes=10_000,
            on_fatal=on_fatal,
        )
        records = [Record(key=b"k", value=b'{"product_id": 1, "title": "x"}', topic="in", partition=0, offset=0,
                          timestamp=None, ack=lambda: acked.append(0))]
        await processor.submit(records)
        await processor.drain()
        return acked, fatal

    acked, fatal = asyncio.run(scenario())
    assert acked == [] and len(fatal) == 1
