"""Stages of ``make bench`` that compare worker configurations side by side: fetch wait, cores, shadow.

This machine is shared and its speed drifts within minutes, so configurations are compared under
matched conditions: every configuration's workers are started at once (each on its own topics and
consumer group, idle while another is measured), and the measurements alternate in rounds (A B C,
then C B A), so a slow spell of the machine hits all of them alike.

Contract:
* `WorkerGroup` starts ``processes`` workers (``python -m stream_app worker``) in one consumer group on
  fresh topics, with the service defaults plus the given ``STREAM_*`` overrides, waits until every
  input partition is held (each worker's ``/readyz`` says how many it holds) and warms them up
  (``warmup`` products answered: model arenas allocated, producer connected). `running_all` does
  that for several groups at once; leaving it stops every worker (SIGTERM, then SIGKILL) and reader.
* `fetch_wait_sweep(...)`: one worker per ``STREAM_FETCH_MAX_WAIT_MS`` value; their CPU over the same
  ``idle_s`` seconds without input (what each fetch loop burns while nothing arrives), then the
  latency stage at each fraction of the maximum rate (10% and 50% in ``make bench``) for ``duration``
  seconds per round, ``rounds`` rounds in alternating order; percentiles over the pooled rounds,
  each round's p99, the batches, and how much the inference thread ran or waited for a CPU.
* `cores(...)`: for each (processes, inference threads) configuration, warm workers sharing the
  partitions get ``n / rounds`` products at once per round (`benchmarks.e2e.measure_backlog`), rounds
  alternating; texts/s per round and over all rounds (messages / summed seconds).
* `shadow_cost(...)`: the same backlog measurement for a worker with and without a shadow candidate
  scoring a share of the messages (issue 10's target: under 10% lost at a 10% share).
Nothing is asserted; `BenchmarkError` names the configuration that failed.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.data import ROOT, Product
from benchmarks.e2e import measure_backlog, measure_latency, pool_latency, preproduce
from benchmarks.worker import (
    BenchmarkError,
    BenchTopics,
    OutputCollector,
    WorkerProcess,
    assigned_partitions,
    batch_delta,
    cpu_seconds,
    sched_delta,
    thread_sched,
    worker_batch_stats,
    worker_counters,
    worker_env,
)
from stream_app.broker import free_port

RESUME_S = 2.0
SHADOW_COUNTERS = ("stream_shadow_messages_total", "stream_shadow_seconds_total", "stream_shadow_failures_total")


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
    root: Path = ROOT  # the checkout whose worker code runs (another one for an A/B of code)
    topics: BenchTopics | None = None
    collector: OutputCollector | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def like(self, threads: int | None = None, processes: int = 1, **overrides: str) -> WorkerGroup:
        """A group with the same broker, bundle and batching, and its own settings."""
        return WorkerGroup(self.broker, self.bundle, self.workdir, self.partitions, self.micro_batch,
                           self.model_batch, self.threads if threads is None else threads, processes,
                           dict(overrides), self.root)

    def start(self) -> None:
        self.topics = BenchTopics.create(self.broker, self.partitions)
        self.collector = OutputCollector(self.broker, self.topics.output, self.partitions)
        group = f"bench-group-{uuid.uuid4().hex[:8]}"
        tag = "-".join(f"{k.removeprefix('STREAM_').lower()}{v}" for k, v in self.overrides.items()) or "default"
        tag = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
        for i in range(self.processes):
            port = free_port()
            env = worker_env(self.broker, self.topics, self.bundle, self.workdir / f"data-{group}-{i}", port,
                             micro_batch=self.micro_batch, model_batch=self.model_batch, threads=self.threads,
                             partitions=self.partitions)
            env["STREAM_GROUP_ID"] = group
            env["STREAM_WORKER_ID"] = f"bench-{i}"
            env.update(self.overrides)
            log = self.workdir / f"worker-{tag}-{self.processes}x{self.threads}-{group}-{i}.log"
            self.workers.append(WorkerProcess(env, log, cwd=self.root).start())
            self.ports.append(port)

    def warm(self, warmup: Sequence[Product], timeout: float = 240.0) -> None:
        assert self.topics is not None and self.collector is not None
        self._wait_assigned(timeout)
        preproduce(self.broker, self.topics.input, warmup)
        if not self.collector.wait_for(len(warmup), timeout, self.workers[0]):
            raise BenchmarkError(f"{self.describe()}: warm-up got {self.collector.count()} of {len(warmup)} "
                                 f"outputs; log tail:\n{self.workers[0].tail()}")
        for worker in self.workers:
            worker.check_alive()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.collector is not None:
            self.collector.close()

    @contextlib.contextmanager
    def running(self, warmup: Sequence[Product]) -> Iterator[WorkerGroup]:
        with running_all([self], warmup):
            yield self

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


@contextlib.contextmanager
def running_all(groups: Sequence[WorkerGroup], warmup: Sequence[Product]) -> Iterator[Sequence[WorkerGroup]]:
    """Start every group's workers at once, then warm each group up; stop them all on the way out."""
    try:
        for group in groups:
            group.start()
        for group in groups:
            group.warm(warmup)
            if len(groups) > 1 and group.collector is not None:
                group.collector.pause()
        time.sleep(2.0)  # let the warm-ups' commits and metadata refreshes pass
        yield groups
    finally:
        for group in groups:
            group.stop()


def _measuring(group: WorkerGroup) -> OutputCollector:
    """Resume ``group``'s reader (the others stay paused while it is measured) and give it time to fetch
    again: librdkafka takes up to ~1 s to refetch a resumed partition, which would read as latency."""
    assert group.collector is not None
    group.collector.resume()
    time.sleep(RESUME_S)
    return group.collector


def _alternating(items: Sequence[Any], rounds: int) -> Iterator[tuple[int, Any]]:
    """(round, item): A B C, C B A, A B C..."""
    for r in range(rounds):
        for item in (items if r % 2 == 0 else list(reversed(items))):
            yield r, item


def fetch_wait_sweep(base: WorkerGroup, waits: Sequence[int], products: Sequence[Product], warmup: int,
                     max_rate: float, fractions: Sequence[float], duration: float, idle_s: float,
                     rounds: int = 2) -> list[dict[str, Any]]:
    """One warm worker per ``STREAM_FETCH_MAX_WAIT_MS`` value: idle CPU, then latency at each fraction of
    ``max_rate`` (module docstring); ``latency`` is the stage at half the maximum rate."""
    groups = {wait: base.like(STREAM_FETCH_MAX_WAIT_MS=str(wait)) for wait in waits}
    with running_all(list(groups.values()), products[:warmup]):
        # One window for all of them: the same seconds of the machine.
        idle_each: dict[int, dict[str, float]] = {}
        start = time.monotonic()
        before = {wait: cpu_seconds(g.workers[0].pid) for wait, g in groups.items()}
        time.sleep(idle_s)
        wall = time.monotonic() - start
        for wait, g in groups.items():
            g.workers[0].check_alive()
            used = cpu_seconds(g.workers[0].pid) - before[wait]
            idle_each[wait] = {"seconds": wall, "cpu_s": used, "core_share": used / wall}
        stages: dict[tuple[int, float], list[Any]] = {(w, f): [] for w in waits for f in fractions}
        batches: dict[tuple[int, float], list[dict[str, float] | None]] = {key: [] for key in stages}
        threads: dict[tuple[int, float], list[dict[str, Any]]] = {key: [] for key in stages}
        for fraction in fractions:
            for r, wait in _alternating(list(waits), rounds):
                g = groups[wait]
                assert g.topics is not None and g.collector is not None
                pid = g.workers[0].pid
                stats, sched = worker_batch_stats(g.ports[0]), thread_sched(pid)
                result = measure_latency(base.broker, g.topics.input, _measuring(g), g.workers[0], products[warmup:],
                                         max_rate * fraction, duration, prefix=f"fw{wait}f{fraction}r{r}",
                                         fraction_of_max=fraction)
                g.collector.pause()
                stages[(wait, fraction)].append(result)
                batches[(wait, fraction)].append(batch_delta(stats, worker_batch_stats(g.ports[0]),
                                                             result.duration_s))
                threads[(wait, fraction)].append(sched_delta(pid, sched, thread_sched(pid), result.duration_s))
    out = []
    for wait in waits:
        by_fraction = {}
        for fraction in fractions:
            key = (wait, fraction)
            pooled = pool_latency(stages[key]).to_json()
            pooled["rounds_receive_p99_ms"] = [s.receive_p99_ms for s in stages[key]]
            pooled["worker_batches"] = batches[key]
            pooled["worker_threads"] = threads[key]
            by_fraction[str(fraction)] = pooled
        half = by_fraction.get("0.5") or by_fraction[str(fractions[-1])]
        out.append({"fetch_max_wait_ms": wait, "idle": idle_each[wait], "latency": half,
                    "latency_by_fraction": by_fraction})
    return out


def cores(base: WorkerGroup, configs: Sequence[tuple[int, int]], products: Sequence[Product], warmup: int,
          timeout: float, rounds: int = 2) -> list[dict[str, Any]]:
    """Throughput of each (processes, inference threads) configuration on the same products (module docstring)."""
    groups = {config: base.like(threads=config[1], processes=config[0]) for config in configs}
    measured = products[warmup:]
    per_round = len(measured) // rounds
    runs: dict[tuple[int, int], list[dict[str, float]]] = {config: [] for config in configs}
    with running_all(list(groups.values()), products[:warmup]):
        for r, config in _alternating(list(configs), rounds):
            g = groups[config]
            assert g.topics is not None and g.collector is not None
            # Fresh keys per round: the reader counts distinct keys.
            batch = [Product(f"{p.product_id}-r{r}", p.title, p.tags) for p in measured[r * per_round:
                                                                                      (r + 1) * per_round]]
            runs[config].append(measure_backlog(base.broker, g.topics.input, _measuring(g), g.workers, batch, timeout))
            g.collector.pause()
    out = []
    for (processes, threads), measures in runs.items():
        messages = sum(m["messages"] for m in measures)
        seconds = sum(m["seconds"] for m in measures)
        out.append({"processes": processes, "threads": threads, "messages": messages, "seconds": seconds,
                    "tps": messages / seconds if seconds > 0 else float("nan"),
                    "rounds_tps": [m["tps"] for m in measures]})
    return out


def shadow_cost(base: WorkerGroup, store: Path, version: str, share: float, products: Sequence[Product],
                warmup: int, timeout: float, rounds: int = 2) -> dict[str, Any]:
    """Serving throughput with and without a shadow candidate scoring ``share`` of the messages.

    Two warm workers read bundle ``version`` from the same ``store``; one also shadows it
    (``STREAM_SHADOW_VERSION``: a second session of the same graph, the cost of any candidate of the
    default architecture). Backlogs alternate between them as in `cores`; ``cost`` = 1 - shadowed /
    plain texts/s. The shadowed worker's ``stream_shadow_*`` counters say how many messages the
    shadow actually scored and its model seconds.
    """
    plain = base.like(STREAM_BUNDLE_STORE=str(store))
    shadowed = base.like(STREAM_BUNDLE_STORE=str(store), STREAM_SHADOW_VERSION=version,
                         STREAM_SHADOW_SHARE=str(share))
    groups = {"plain": plain, "shadow": shadowed}
    measured = products[warmup:]
    per_round = len(measured) // rounds
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in groups}
    with running_all(list(groups.values()), products[:warmup]):
        before = worker_counters(shadowed.ports[0], SHADOW_COUNTERS)
        for r, name in _alternating(list(groups), rounds):
            g = groups[name]
            assert g.topics is not None and g.collector is not None
            batch = [Product(f"{p.product_id}-r{r}", p.title, p.tags)
                     for p in measured[r * per_round:(r + 1) * per_round]]
            runs[name].append(measure_backlog(base.broker, g.topics.input, _measuring(g), g.workers, batch, timeout))
            g.collector.pause()
        time.sleep(2.0)  # shadow calls queued behind the last serving batch
        after = worker_counters(shadowed.ports[0], SHADOW_COUNTERS)
    tps = {}
    for name, measures in runs.items():
        seconds = sum(m["seconds"] for m in measures)
        tps[name] = sum(m["messages"] for m in measures) / seconds if seconds > 0 else float("nan")
    scored = after.get("stream_shadow_messages_total", 0.0) - before.get("stream_shadow_messages_total", 0.0)
    shadow_s = after.get("stream_shadow_seconds_total", 0.0) - before.get("stream_shadow_seconds_total", 0.0)
    messages = per_round * rounds
    return {"share": share, "version": version, "plain_tps": tps["plain"], "shadow_tps": tps["shadow"],
            "cost": 1.0 - tps["shadow"] / tps["plain"],
            "rounds_tps": {name: [m["tps"] for m in measures] for name, measures in runs.items()},
            "shadow_messages": scored, "shadowed_share": scored / messages if messages else float("nan"),
            "shadow_model_s_per_message": shadow_s / scored if scored else float("nan"),
            "failures": after.get("stream_shadow_failures_total", 0.0)
            - before.get("stream_shadow_failures_total", 0.0)}
