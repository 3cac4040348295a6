"""BatchProcessor without Kafka: the chain validate -> infer -> publish -> commit, one step faked at a time."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream_app.core.pipeline import Prediction
from stream_app.worker.batching import BatchProcessor
from stream_app.worker.inference import Inference, ModelBroken
from stream_app.worker.outputs import OutputBuilder, Topics
from stream_app.worker.publish import Publish, RecordTooLarge
from stream_app.worker.serving import ServingModel
from tests.worker.fakes import NoDrift, Publisher, prediction, record

TOPICS = Topics("out", "drift", "dlq")


def healthy(texts: list[str]) -> list[Prediction]:
    return [prediction() for _ in texts]


def make(publisher: Any, predict: Any = healthy, max_in_flight: int = 2,
         fatal: list[BaseException] | None = None) -> tuple[BatchProcessor, NoDrift]:
    builder = OutputBuilder(TOPICS, 1_048_576)

    async def on_fatal(exc: BaseException) -> None:
        if fatal is not None:
            fatal.append(exc)

    drift = NoDrift()
    processor = BatchProcessor(
        model=model("v1", predict, drift), outputs=builder, publish=Publish(publisher, builder.refused),
        max_in_flight=max_in_flight, max_message_bytes=1_000_000, on_fatal=on_fatal,
    )
    return processor, drift


def model(version: str, predict: Any = healthy, drift: NoDrift | None = None) -> ServingModel:
    return ServingModel(version, lambda fields: str(fields["title"]), Inference(predict, ThreadPoolExecutor(1)),
                        drift or NoDrift())


def run(scenario: Any) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_batch_is_not_acked_before_an_earlier_batch_is_delivered() -> None:
    """Batch 1's outputs are slow; batch 2's are fast: nothing of batch 2 is acked before batch 1."""

    class SlowFirst(Publisher):
        async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
            self.sent.append((topic, key, value))
            slow = json.loads(value)["source"]["offset"] < 2
            gate = self.gate

            async def delivered() -> None:
                if slow and gate is not None:
                    await gate.wait()

            return delivered()

    async def scenario() -> list[tuple[int, int]]:
        acked: list[tuple[int, int]] = []
        gate = asyncio.Event()
        processor, _ = make(SlowFirst(gate))
        await processor.submit([record(0, acked=acked), record(1, acked=acked)])
        await processor.submit([record(2, acked=acked), record(3, acked=acked)])
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert acked == [], f"acked past undelivered outputs: {acked}"
        gate.set()
        await processor.drain()
        return acked

    assert run(scenario) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_nothing_is_acked_after_a_failed_publish() -> None:
    """Batch 1's delivery fails after batch 2 was delivered: neither is acked; the worker is told to stop."""

    class FailFirst(Publisher):
        async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
            self.sent.append((topic, key, value))
            failing = json.loads(value)["source"]["offset"] == 0

            async def delivered() -> None:
                await asyncio.sleep(0.2 if failing else 0)
                if failing:
                    raise RuntimeError("broker down")

            return delivered()

    async def scenario() -> tuple[list[tuple[int, int]], list[BaseException]]:
        acked: list[tuple[int, int]] = []
        fatal: list[BaseException] = []
        processor, _ = make(FailFirst(), fatal=fatal)
        await processor.submit([record(0, acked=acked)])
        await processor.submit([record(1, acked=acked), record(2, acked=acked)])
        await processor.drain()
        return acked, fatal

    acked, fatal = run(scenario)
    assert acked == [] and len(fatal) == 1 and "broker down" in str(fatal[0])


def test_a_poison_text_is_dead_lettered_and_the_rest_categorized() -> None:
    calls: list[int] = []

    def predict(texts: list[str]) -> list[Prediction]:
        calls.append(len(texts))
        if any("POISON" in t for t in texts):
            raise ValueError("model cannot take this text")
        return healthy(texts)

    async def scenario() -> tuple[Publisher, list[tuple[int, int]], list[BaseException]]:
        acked: list[tuple[int, int]] = []
        fatal: list[BaseException] = []
        publisher = Publisher()
        processor, _ = make(publisher, predict, fatal=fatal)
        titles = ["Caneca", "POISON pill", "Body bebê", "Convite"]
        await processor.submit([record(i, json.dumps({"product_id": i, "title": t}).encode(), acked=acked)
                                for i, t in enumerate(titles)])
        await processor.drain()
        return publisher, acked, fatal

    publisher, acked, fatal = run(scenario)
    # One batch call, then per message; the poison one is followed by a canary call that succeeds.
    assert calls == [4, 1, 1, 1, 1, 1] and not fatal
    assert acked == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert [(t, k) for t, k, _ in publisher.sent] == [("out", b"0"), ("dlq", b"1"), ("out", b"2"), ("out", b"3")]
    letter = json.loads(publisher.sent[1][2])
    assert letter["error"]["reason"] == "inference_failed" and letter["error"]["error_class"] == "ValueError"


def test_a_broken_model_stops_the_worker_without_dead_letters() -> None:
    def broken(texts: list[str]) -> list[Prediction]:
        raise RuntimeError("onnxruntime: session is gone")

    async def scenario() -> tuple[Publisher, list[tuple[int, int]], list[BaseException]]:
        acked: list[tuple[int, int]] = []
        fatal: list[BaseException] = []
        publisher = Publisher()
        processor, _ = make(publisher, broken, fatal=fatal)
        await processor.submit([record(i, acked=acked) for i in range(5)])
        await processor.submit([record(i, acked=acked) for i in range(5, 8)])
        await processor.drain()
        return publisher, acked, fatal

    publisher, acked, fatal = run(scenario)
    assert publisher.sent == [] and acked == []
    assert fatal and isinstance(fatal[0], ModelBroken)


def test_the_reported_poison_messages_do_not_stop_the_batch() -> None:
    """The hardening issue's reproductions: a 5,000-digit number, year-0001 and year-9999 offsets."""
    poison = [
        b'{"product_id":"x","title":"Caneca","n":' + b"9" * 5000 + b"}",
        b'{"product_id":"y","title":"Caneca","event_time":"0001-01-01T00:00:00+01:00"}',
        b'{"product_id":"z","title":"Caneca","event_time":"9999-12-31T23:59:59-05:00"}',
    ]

    async def scenario() -> tuple[Publisher, list[tuple[int, int]], list[BaseException]]:
        acked: list[tuple[int, int]] = []
        fatal: list[BaseException] = []
        publisher = Publisher()
        processor, _ = make(publisher, fatal=fatal)
        records = [record(0, acked=acked)] + [record(i + 1, v, acked=acked) for i, v in enumerate(poison)]
        await processor.submit([*records, record(4, acked=acked)])
        await processor.drain()
        return publisher, acked, fatal

    publisher, acked, fatal = run(scenario)
    assert not fatal and acked == [(0, i) for i in range(5)]
    assert [t for t, _, _ in publisher.sent] == ["out", "out", "dlq", "dlq", "out"]
    reasons = [json.loads(v)["error"] for t, _, v in publisher.sent if t == "dlq"]
    assert all(r["field"] == "event_time" for r in reasons), reasons


def test_an_output_refused_as_too_large_becomes_a_dead_letter() -> None:
    class RefusesCategories(Publisher):
        async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
            if topic == "out":
                raise RecordTooLarge("The message is 2000000 bytes when serialized")
            return await super().send(topic, key, value)

    async def scenario() -> tuple[Publisher, list[tuple[int, int]], list[BaseException]]:
        acked: list[tuple[int, int]] = []
        fatal: list[BaseException] = []
        publisher = RefusesCategories()
        processor, _ = make(publisher, fatal=fatal)
        await processor.submit([record(0, acked=acked)])
        await processor.drain()
        return publisher, acked, fatal

    publisher, acked, fatal = run(scenario)
    assert not fatal and acked == [(0, 0)]
    ((topic, key, value),) = publisher.sent
    letter = json.loads(value)
    assert topic == "dlq" and key == b"0" and letter["error"]["reason"] == "output_too_large"
    assert len(value) <= 16_384


def test_the_drift_tracker_sees_every_message_in_order() -> None:
    async def scenario() -> NoDrift:
        processor, drift = make(Publisher())
        await processor.submit([record(0), record(1, b"not json"), record(2)])
        await processor.submit([record(3)])
        await processor.drain()
        return drift

    assert run(scenario).seen == [(0, 0, True), (0, 1, False), (0, 2, True), (0, 3, True)]


def test_a_swap_takes_effect_from_the_next_batch_and_never_splits_one() -> None:
    async def scenario() -> list[str]:
        publisher = Publisher()
        processor, _ = make(publisher)
        await processor.submit([record(0), record(1)])
        processor.swap(model("v2"))
        await processor.submit([record(2), record(3)])
        await processor.drain()
        return [json.loads(v)["model_version"] for _, _, v in publisher.sent]

    assert run(scenario) == ["v1", "v1", "v2", "v2"]
