"""End-to-end stages through the broker: pre-produce, throughput, latency.

Contract:
* `preproduce(broker, topic, products)` writes one ``products`` event per product (key =
  product_id) and returns only when the broker acknowledged all of them.
* `measure_throughput(collector, worker, n, micro_batch)` waits until ``n`` distinct keys reached
  the output topic and computes texts/s from the receive times, excluding start-up: the clock
  starts when the first micro-batch has been received (the receive time of the ``micro_batch``-th
  output, ``micro_batch`` = the worker's STREAM_BATCH_SIZE, whose outputs arrive in one burst) and
  the count is the outputs after it: ``(n - b) / (t[n-1] - t[b-1])``.
* `measure_latency(...)` produces fresh events (keys ``<prefix>-<i>``) at ``rate`` per second for
  ``duration`` s with ``event_time`` = send time (epoch ms) and returns p50/p90/p99 of receive time -
  send time (what a downstream consumer sees) and of ``processed_at - event_time`` (the worker's own
  share: from the send to the worker's stamp, before its publish and the broker's ack).
* `measure_idle_cpu(worker, seconds)`: the worker's CPU seconds over ``seconds`` without traffic
  (``/proc/PID/stat``), once everything sent so far has been answered.
* `measure_backlog(...)`: warm workers (already holding their partitions) get ``n`` products at once;
  texts/s = ``n / (t[n-1] - produced)``, the clock starting when the broker has acknowledged the
  whole backlog: the throughput of a configuration without start-up. (Clocking from the first
  output instead counts the first micro-batch without its time: up to a batch / n high.) It reads
  low by the first fetch's wait (<= STREAM_FETCH_MAX_WAIT_MS, ~1% of a 5,000-product backlog).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from benchmarks.data import Product, event_bytes
from benchmarks.worker import (
    BenchmarkError,
    OutputCollector,
    WorkerProcess,
    cpu_seconds,
)
from stream_app.kafka.config import client_config, producer_config
from stream_app.tools.produce import TokenBucket


def _producer(broker: str, **overrides: Any) -> Producer:
    return Producer(producer_config(client_config(broker), **overrides))


def preproduce(broker: str, topic: str, products: Sequence[Product], timeout: float = 60.0) -> float:
    """Produce every product to ``topic``; returns the seconds it took. Raises on any failed delivery."""
    producer = _producer(broker)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    start = time.perf_counter()
    for product in products:
        while True:
            try:
                producer.produce(topic, key=product.product_id.encode(), value=event_bytes(product),
                                 on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise BenchmarkError(f"pre-produce to {topic}: {remaining} undelivered, {len(errors)} failed "
                             f"{errors[:1]}")
    return time.perf_counter() - start


def rate_from_times(times: Sequence[float], n: int, skip: int) -> float:
    """Messages/s over the first ``n`` receive times, the clock starting at the ``skip``-th one."""
    ordered = sorted(times)[:n]
    skip = max(1, min(skip, n - 1))
    span = ordered[n - 1] - ordered[skip - 1]
    return (n - skip) / span if span > 0 else float("nan")


@dataclass
class ThroughputResult:
    messages: int
    tps: float  # texts/s, start-up excluded
    seconds: float  # first batch received -> n-th output received
    startup_s: float  # worker process start -> first output received (model load, group join, ...)


def measure_throughput(collector: OutputCollector, worker: WorkerProcess, started_at: float, n: int,
                       micro_batch: int, timeout: float) -> ThroughputResult:
    """Wait for ``n`` distinct outputs (``started_at``: time.time() when the worker was launched)."""
    if not collector.wait_for(n, timeout, worker):
        raise BenchmarkError(f"only {collector.count()} of {n} outputs on {collector.topic} after {timeout:.0f} s;"
                             f" worker log tail:\n{worker.tail()}")
    times = sorted(collector.snapshot().values())
    tps = rate_from_times(times, n, micro_batch)
    skip = max(1, min(micro_batch, n - 1))
    return ThroughputResult(n, tps, times[n - 1] - times[skip - 1], times[0] - started_at)


@dataclass
class LatencyResult:
    rate: float  # target messages/s
    achieved_rate: float
    duration_s: float
    sent: int
    received: int
    receive_p50_ms: float  # receive time - send time
    receive_p90_ms: float
    receive_p99_ms: float
    receive_max_ms: float
    processed_p50_ms: float  # processed_at - event_time (worker's own stamp)
    processed_p90_ms: float
    processed_p99_ms: float
    fraction_of_max: float | None = None  # rate / the measured maximum (end-to-end throughput)
    # The samples behind the percentiles (kept out of the JSON): `pool_latency` combines rounds.
    receive_samples_ms: list[float] = field(default_factory=list, repr=False)
    processed_samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["receive_samples_ms"], out["processed_samples_ms"]
        return out


def _latency_result(rate: float, sent: int, elapsed: float, receive_ms: list[float], processed_ms: list[float],
                    fraction_of_max: float | None) -> LatencyResult:
    return LatencyResult(
        rate=rate,
        achieved_rate=sent / elapsed,
        duration_s=elapsed,
        sent=sent,
        received=len(receive_ms),
        receive_p50_ms=_ms(receive_ms, 50),
        receive_p90_ms=_ms(receive_ms, 90),
        receive_p99_ms=_ms(receive_ms, 99),
        receive_max_ms=max(receive_ms) if receive_ms else float("nan"),
        processed_p50_ms=_ms(processed_ms, 50),
        processed_p90_ms=_ms(processed_ms, 90),
        processed_p99_ms=_ms(processed_ms, 99),
        fraction_of_max=fraction_of_max,
        receive_samples_ms=receive_ms,
        processed_samples_ms=processed_ms,
    )


def pool_latency(results: Sequence[LatencyResult]) -> LatencyResult:
    """Percentiles over the samples of several rounds at the same rate (as if one longer stage)."""
    return _latency_result(
        results[0].rate, sum(r.sent for r in results), sum(r.duration_s for r in results),
        [x for r in results for x in r.receive_samples_ms], [x for r in results for x in r.processed_samples_ms],
        results[0].fraction_of_max)


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_latency(broker: str, topic: str, collector: OutputCollector, worker: WorkerProcess,
                    products: Sequence[Product], rate: float, duration: float,
                    drain_timeout: float = 60.0, prefix: str = "lat",
                    fraction_of_max: float | None = None) -> LatencyResult:
    """Paced production of fresh keys (``<prefix>-<i>``) while the collector records receive times."""
    # linger.ms=0: the producer must not add its own batching delay to the latency under test.
    producer = _producer(broker, **{"linger.ms": 0})
    bucket = TokenBucket(rate)
    sent: dict[bytes, float] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    start = time.monotonic()
    i = 0
    while time.monotonic() - start < duration:
        bucket.acquire()
        product = products[i % len(products)]
        key = f"{prefix}-{i}"
        now = time.time()
        producer.produce(topic, key=key.encode(), on_delivery=on_delivery,
                         value=event_bytes(product, product_id=key, event_time_ms=int(now * 1000)))
        sent[key.encode()] = now
        producer.poll(0)
        i += 1
        if i % 200 == 0:
            worker.check_alive()
    elapsed = time.monotonic() - start
    if producer.flush(30) or errors:
        raise BenchmarkError(f"latency stage: delivery to {topic} failed: {errors[:1]}")
    collector.wait_for(set(sent), drain_timeout, worker)
    seen = collector.snapshot()
    receive_ms = [(seen[k] - t) * 1000 for k, t in sent.items() if k in seen]
    processed_ms = []
    for key in sent:
        if key in seen:
            doc = collector.value_json(key)
            if doc.get("event_time") and doc.get("processed_at"):
                delta = datetime.fromisoformat(doc["processed_at"]) - datetime.fromisoformat(doc["event_time"])
                processed_ms.append(delta.total_seconds() * 1000)
    return _latency_result(rate, len(sent), elapsed, receive_ms, processed_ms, fraction_of_max)


def measure_idle_cpu(workers: Sequence[WorkerProcess], seconds: float = 10.0) -> dict[str, float]:
    """CPU seconds the workers used over ``seconds`` of wall time with no input (call it once they are idle).

    ``cpu_s`` is the total over the workers; ``core_share`` = cpu_s / seconds (1.0 = one core busy).
    """
    before = [cpu_seconds(w.pid) for w in workers]
    start = time.monotonic()
    time.sleep(seconds)
    for worker in workers:
        worker.check_alive()
    after = [cpu_seconds(w.pid) for w in workers]
    wall = time.monotonic() - start
    used = sum(a - b for a, b in zip(after, before, strict=True))
    return {"seconds": wall, "cpu_s": used, "core_share": used / wall}


def measure_backlog(broker: str, topic: str, collector: OutputCollector, workers: Sequence[WorkerProcess],
                    products: Sequence[Product], timeout: float) -> dict[str, float]:
    """Produce ``products`` at once to warm workers; texts/s from the backlog's arrival to the last output
    (module docstring): no start-up, no group join."""
    known = collector.count()
    started = time.time()
    preproduce(broker, topic, products)
    produced = time.time()
    target = known + len(products)
    deadline = time.monotonic() + timeout
    while collector.count() < target:
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"only {collector.count() - known} of {len(products)} outputs in {timeout:.0f} s")
        time.sleep(0.05)
    wanted = {p.product_id.encode() for p in products}
    times = sorted(t for k, t in collector.snapshot().items() if k in wanted)
    span = times[-1] - produced
    return {"messages": len(products), "tps": len(times) / span if span > 0 else float("nan"),
            "seconds": span, "first_output_s": times[0] - started}
