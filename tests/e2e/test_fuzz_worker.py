"""Fuzzing the live worker: real Elo7 traffic interleaved with hostile messages, through the real broker.

One worker (the real subprocess, default STREAM_MAX_MESSAGE_BYTES) gets ~300 Elo7 products shuffled
with the named corpus of tests/support/hostile_inputs.py (its ~900 KB messages and huge keys included) and
~100 messages drawn from the hostile strategies with a fixed seed. Every input is then accounted for
by its source position: the producer's delivery reports give each message's (partition, offset), and
every `categories` record and dead letter carries ``source.partition`` / ``source.offset``.

What must hold:
* every produced message has at least one output, and no output names an unknown position;
* the worker is the same process (same pid) and still alive, and stops cleanly on SIGTERM;
* every Elo7 product is in `categories`, keyed by its product_id;
* every dead letter has a reason and a non-empty detail and is keyed by the original key;
  every `categories` record is keyed by its product_id;
* no record on either output topic is larger than 1,048,576 bytes (key + value).

A failure lists the messages by name (corpus names, ``drawn-NNN``, ``elo7-<product_id>``).
"""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Producer,
)
from hypothesis import strategies as st

from stream_app.messages import DeadLetterReason
from stream_app.worker.dead_letters import dlq_key
from tests.support.hostile_inputs import (
    CORPUS,
    CORPUS_VALID,
    MAX_MESSAGE_BYTES,
    MAX_OUTPUT_BYTES,
    draw_examples,
    hostile_products,
    kafka_keys,
    raw_values,
)
from tests.support.worker_harness import (
    PARTITIONS,
    WorkerTopics,
    elo7_event,
    elo7_rows,
    poll_records,
    reading,
    start_worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N_ELO7 = 300
N_DRAWN = 100
SEED = 20_240_601
DRAWN_MAX_VALUE = 64_000  # drawn messages stay small; the corpus brings the ~900 KB ones
ACCOUNT_TIMEOUT_S = 300.0


@dataclass
class Message:
    name: str
    key: bytes | None
    value: bytes | None
    product_id: str | None = None  # set for products that must reach `categories`
    position: tuple[int, int] | None = None  # (partition, offset) from the delivery report


@dataclass
class Output:
    topic: str
    key: bytes | None
    size: int  # key + value bytes
    doc: dict[str, Any] | None
    error: str | None = None  # why the value did not parse

    @property
    def position(self) -> tuple[int, int] | None:
        try:
            return int(self.doc["source"]["partition"]), int(self.doc["source"]["offset"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class Accounting:
    outputs: list[Output] = field(default_factory=list)
    by_position: dict[tuple[int, int], list[Output]] = field(default_factory=dict)


def _int(text: str) -> int | str:
    return int(text) if len(text) <= 4_000 else text  # a product_id beyond the int-string limit stays text


def traffic() -> list[Message]:
    messages = [
        Message(f"elo7-{e['product_id']}", str(e["product_id"]).encode(), json.dumps(e).encode(), str(e["product_id"]))
        for e in (elo7_event(r) for r in elo7_rows(N_ELO7, seed=11).itertuples())
    ]
    for name, key, value in CORPUS:
        product_id = None
        if name in CORPUS_VALID:
            product_id = str(json.loads(value or b"{}")["product_id"])
        messages.append(Message(name, key, value, product_id))
    values = st.one_of(raw_values(max_size=DRAWN_MAX_VALUE), hostile_products(max_string=DRAWN_MAX_VALUE // 2)
                       .map(lambda h: h.value))
    drawn = draw_examples(st.tuples(kafka_keys(max_size=4_096), st.none() | values), N_DRAWN, seed_=SEED)
    for i, (key, value) in enumerate(drawn):
        if len(key or b"") + len(value or b"") < MAX_MESSAGE_BYTES:
            messages.append(Message(f"drawn-{i:03d}", key, value))
    random.Random(SEED).shuffle(messages)
    return messages


def produce_tracked(broker: str, topic: str, messages: list[Message]) -> None:
    """Produce in order; set each message's (partition, offset) from its delivery report."""
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "enable.idempotence": False, "acks": "all",
                         "message.max.bytes": 4 * MAX_MESSAGE_BYTES})
    errors: list[str] = []

    def report(message: Message) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{message.name}: {err}")
            else:
                message.position = (msg.partition(), msg.offset())
        return on_delivery

    for message in messages:
        while True:
            try:
                producer.produce(topic, key=message.key, value=message.value, on_delivery=report(message))
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    assert producer.flush(120) == 0, "undelivered messages"
    assert not errors, errors[:5]
    assert all(m.position is not None for m in messages)
    assert len({m.position for m in messages}) == len(messages), "two messages reported at one position"


def account(broker: str, topics: WorkerTopics, expected: set[tuple[int, int]], worker: Any,
            timeout: float = ACCOUNT_TIMEOUT_S, settle: float = 3.0) -> Accounting:
    """Read `categories` and the DLQ until every expected position has an output (then ``settle``
    seconds more, for late extras), the timeout passes, or the worker is gone."""
    consumer = reading(broker, [topics.output, topics.dlq], PARTITIONS,
                       **{"fetch.message.max.bytes": 8 * MAX_OUTPUT_BYTES,
                          "receive.message.max.bytes": 64 * MAX_OUTPUT_BYTES})
    result = Accounting()
    deadline = time.monotonic() + timeout
    done_at: float | None = None

    def stop() -> bool:
        nonlocal done_at
        if done_at is None and not worker.alive():
            done_at = time.monotonic() + settle  # read what it published before it died
        return time.monotonic() >= deadline or (done_at is not None and time.monotonic() > done_at)

    for msg in poll_records(consumer, stop):
        value = msg.value() or b""
        out = Output(msg.topic(), msg.key(), len(msg.key() or b"") + len(value), None)
        try:
            out.doc = json.loads(value, parse_int=_int)
        except ValueError as exc:
            out.error = f"{type(exc).__name__}: {exc}"
        result.outputs.append(out)
        if out.position is not None:
            result.by_position.setdefault(out.position, []).append(out)
        if done_at is None and expected <= result.by_position.keys():
            done_at = time.monotonic() + settle
    return result


def _names(messages: list[Message], limit: int = 40) -> str:
    shown = ", ".join(f"{m.name}@{m.position[0]}:{m.position[1]}" if m.position else m.name for m in messages[:limit])
    return shown + (f" ... (+{len(messages) - limit})" if len(messages) > limit else "")


def _raising(messages: list[Message]) -> list[Message]:
    """Diagnosis of a failure: the messages on which `classify` itself raises (likely poison)."""
    from stream_app.worker.dead_letters import classify

    out = []
    for m in messages:
        try:
            classify(m.value, MAX_MESSAGE_BYTES)
        except Exception:  # noqa: BLE001 - only naming them
            out.append(m)
    return out


def test_worker_survives_hostile_traffic(broker: str, test_bundle: Path, tmp_path: Path) -> None:
    messages = traffic()
    topics = WorkerTopics.create(broker, "fuzz")
    worker = start_worker(broker, topics, test_bundle, tmp_path / "worker")
    assert worker.proc is not None
    pid = worker.proc.pid
    try:
        produce_tracked(broker, topics.input, messages)
        by_position = {m.position: m for m in messages}
        seen = account(broker, topics, set(by_position), worker)
        problems: list[str] = []

        # the same process, alive
        if not worker.alive():
            problems.append(f"worker exited with {worker.proc.returncode}")
        if worker.proc.pid != pid or worker.starts != 1:
            problems.append(f"worker restarted (pid {pid} -> {worker.proc.pid}, starts={worker.starts})")

        # every input accounted for, nothing else
        missing = [m for m in messages if m.position not in seen.by_position]
        if missing:
            first = {}
            for m in sorted(missing, key=lambda m: m.position):
                first.setdefault(m.position[0], m)  # the likely poison message of each partition
            problems.append(f"{len(missing)} of {len(messages)} messages have no output; first per partition: "
                            f"{_names(list(first.values()))}; all: {_names(missing)}")
        unknown = [o for o in seen.outputs if o.position not in by_position]
        if unknown:
            problems.append(f"{len(unknown)} outputs name no produced message: "
                            f"{[(o.topic, o.position, o.error) for o in unknown[:10]]}")
        wrong_topic = [o for o in seen.outputs if o.doc and o.doc.get("source", {}).get("topic") != topics.input]
        if wrong_topic:
            problems.append(f"{len(wrong_topic)} outputs name another source topic")

        # record sizes
        big = [(o.topic, o.position, o.size) for o in seen.outputs if o.size > MAX_OUTPUT_BYTES]
        if big:
            problems.append(f"{len(big)} records over {MAX_OUTPUT_BYTES:,} bytes: "
                            f"{[(by_position[p].name if p in by_position else p, t, s) for t, p, s in big[:20]]}")

        # valid products reach `categories`, keyed by product_id
        uncategorized = []
        for m in messages:
            if m.product_id is None:
                continue
            outs = seen.by_position.get(m.position, [])
            cats = [o for o in outs if o.topic == topics.output]
            if not cats:
                uncategorized.append(m)
                if outs:
                    problems.append(f"{m.name}: dead-lettered, not categorized: {(outs[0].doc or {}).get('error')}")
            elif any(o.key != m.product_id.encode() or str((o.doc or {}).get("product_id")) != m.product_id
                     for o in cats):
                problems.append(f"{m.name}: categories record keyed {cats[0].key[:40]!r}")

        if uncategorized:
            problems.append(f"{len(uncategorized)} valid products not in categories: {_names(uncategorized, 10)}")

        # every record well-formed and keyed
        for o in seen.outputs:
            origin = by_position.get(o.position)
            name = origin.name if origin else o.position
            if o.doc is None:
                problems.append(f"{name}: {o.topic} record is not JSON ({o.error})")
                continue
            if o.topic == topics.output:
                if o.key != str(o.doc.get("product_id")).encode("utf-8", "replace"):
                    problems.append(f"{name}: categories record keyed {(o.key or b'')[:40]!r}, "
                                    f"product_id {str(o.doc.get('product_id'))[:40]!r}")
                continue
            error = o.doc.get("error") or {}
            if error.get("reason") not in {r.value for r in DeadLetterReason}:
                problems.append(f"{name}: dead letter reason {error.get('reason')!r}")
            if not isinstance(error.get("detail"), str) or not error["detail"].strip():
                problems.append(f"{name}: dead letter without detail ({error})")
            if origin is not None:
                expected = dlq_key(origin.key)
                if (o.key or b"") != (expected or b""):  # an empty key may come back as no key
                    problems.append(f"{name}: dead letter keyed {(o.key or b'')[:40]!r} ({len(o.key or b''):,} "
                                    f"bytes), expected {(expected or b'')[:40]!r} ({len(expected or b''):,} bytes)")
                copy = o.doc.get("key")
                if copy is not None and origin.key is not None:
                    kept = base64.b64decode(copy)
                    if kept != origin.key and not (o.doc.get("key_truncated") and origin.key.startswith(kept)):
                        problems.append(f"{name}: dead letter's key copy differs from the original key")

        if worker.alive():
            code = worker.terminate()
            if code != 0:
                problems.append(f"worker exited {code} on SIGTERM")
        raising = _raising(messages) if problems else []
        if raising:
            problems.append(f"classify raises, in this process, on: {_names(raising)}")
        counts = {t: sum(o.topic == t for o in seen.outputs) for t in (topics.output, topics.dlq)}
        summary = (f"{len(messages)} messages ({N_ELO7} Elo7, {len(CORPUS)} corpus, "
                   f"{len(messages) - N_ELO7 - len(CORPUS)} drawn); outputs {counts}")
        assert not problems, summary + "\n" + "\n".join(problems) + "\n--- worker log ---\n" + worker.tail(80)
    finally:
        if worker.alive():
            worker.terminate()
