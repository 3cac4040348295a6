"""Stages of ``make bench`` that compare worker configurations side by side: fetch wait and cores.

Contract:
* `WorkerGroup` starts ``processes`` workers (``python -m stream_app worker``) in one consumer group on
  fresh topics, with the service defaults plus the given ``STREAM_*`` overrides, waits until every
  input partition is held (each worker's ``/readyz`` says how many it holds) and warms them up
  (``warmup`` products answered: model arenas allocated, producer connected). Leaving the ``with``
  stops every worker (SIGTERM, then SIGKILL) and the output reader.
* `fetch_wait_sweep(...)`: for each ``STREAM_FETCH_MAX_WAIT_MS`` value, one warm worker: its CPU
  over ``idle_s`` seconds without input (what the fetch loop burns while nothing arrives), then the
  latency stage at ``rate`` (half the measured maximum in ``make bench``).
* `cores(...)`: for each (processes, inference threads) configuration, warm workers sharing the
  partitions get ``n`` products at once (`benchmarks.e2e.measure_backlog`): texts/s per configuration.
Nothing is asserted; `BenchmarkError` names the configuration that failed.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.data import Product
from benchmarks.e2e import measure_backlog, measure_idle_cpu, measure_latency, preproduce
from benchmarks.worker import (
    BenchmarkError,
    BenchTopics,
    OutputCollector,
    WorkerProcess,
    assigned_partitions,
    free_port,
    worker_env,
)


@dataclass
class WorkerGroup:
    broker: str
    bundle: Path
    workdir: Path
    partitions: int
    micro_batch: int
    model_batch: int
    threads: int
    processes: int = 1
    overrides: dict[str, str] = field(default_factory=dict)
    topics: BenchTopics | None = None
    collector: OutputCollector | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self, warmup: Sequence[Product], join_timeout: float = 180.0) -> Iterator[WorkerGroup]:
        self.topics = BenchTopics.create(self.broker, self.partitions)
        self.collector = OutputCollector(self.broker, self.topics.output, self.partitions)
        group = f"bench-group-{uuid.uuid4().hex[:8]}"
        tag = "-".join(f"{k.removeprefix('STREAM_').lower()}{v}" for k, v in self.overrides.items()) or "default"
        try:
            for i in range(self.processes):
                port = free_port()
                env = worker_env(self.broker, self.topics, self.bundle, self.workdir / f"data-{tag}-{i}", port,
                                 micro_batch=self.micro_batch, model_batch=self.model_batch, threads=self.threads,
                                 partitions=self.partitions)
                env["STREAM_GROUP_ID"] = group
                env["STREAM_WORKER_ID"] = f"bench-{i}"
                env.update(self.overrides)
                worker = WorkerProcess(env, self.workdir / f"worker-{tag}-{self.processes}x{self.threads}-{i}.log")
                self.workers.append(worker.start())
                self.ports.append(port)
            self._wait_assigned(join_timeout)
            preproduce(self.broker, self.topics.input, warmup)
            if not self.collector.wait_for(len(warmup), join_timeout, self.workers[0]):
                raise BenchmarkError(f"{self.describe()}: warm-up got {self.collector.count()} of {len(warmup)} "
                                     f"outputs; log tail:\n{self.workers[0].tail()}")
            for worker in self.workers:
                worker.check_alive()
            yield self
        finally:
            for worker in self.workers:
                worker.stop()
            if self.collector is not None:
                self.collector.close()

    def describe(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.overrides.items())
        return f"{self.processes} worker(s) x {self.threads} inference thread(s){extra}"

    def _wait_assigned(self, timeout: float) -> None:
        """Until the group is stable: every partition held, every worker holding some."""
        deadline = time.monotonic() + timeout
        stable_since: float | None = None
        while time.monotonic() < deadline:
            for worker in self.workers:
                worker.check_alive()
            held = [assigned_partitions(p) for p in self.ports]
            if all(h for h in held) and sum(h or 0 for h in held) == self.partitions:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 1.0:
                    return
            else:
                stable_since = None
            time.sleep(0.2)
        raise BenchmarkError(f"{self.describe()}: partitions not assigned within {timeout:.0f} s")


def fetch_wait_sweep(base: WorkerGroup, waits: Sequence[int], products: Sequence[Product], warmup: int, rate: float,
                     fraction: float, duration: float, idle_s: float) -> list[dict[str, Any]]:
    """One warm worker per ``STREAM_FETCH_MAX_WAIT_MS`` value: idle CPU, then latency at ``rate``."""
    results: list[dict[str, Any]] = []
    for wait in waits:
        group = WorkerGroup(base.broker, base.bundle, base.workdir, base.partitions, base.micro_batch,
                            base.model_batch, base.threads, overrides={"STREAM_FETCH_MAX_WAIT_MS": str(wait)})
        with group.running(products[:warmup]) as running:
            assert running.topics is not None and running.collector is not None
            time.sleep(2.0)  # let the warm-up's commit and metadata refreshes pass
            idle = measure_idle_cpu(running.workers, idle_s)
            latency = measure_latency(base.broker, running.topics.input, running.collector, running.workers[0],
                                      products[warmup:], rate, duration, prefix=f"fw{wait}",
                                      fraction_of_max=fraction)
            results.append({"fetch_max_wait_ms": wait, "idle": idle, "latency": latency.to_json()})
    return results


def cores(base: WorkerGroup, configs: Sequence[tuple[int, int]], products: Sequence[Product], warmup: int,
          timeout: float) -> list[dict[str, Any]]:
    """Throughput of each (processes, inference threads) configuration on the same products."""
    results: list[dict[str, Any]] = []
    for processes, threads in configs:
        group = WorkerGroup(base.broker, base.bundle, base.workdir, base.partitions, base.micro_batch,
                            base.model_batch, threads, processes=processes)
        with group.running(products[:warmup]) as running:
            assert running.topics is not None and running.collector is not None
            measured = measure_backlog(base.broker, running.topics.input, running.collector, running.workers,
                                       products[warmup:], timeout)
            results.append({"processes": processes, "threads": threads, **measured})
    return results
