"""Model-only timings of the bundle's INT8 graph (no Kafka, no JSON, no decoding).

Contract: `measure_model_only(bundle, texts, ...)` tokenizes ``texts`` once (tokenization is not
timed) and times `Categorizer.run_ids`, the exact code the worker runs, in three ways:

* ``sorted``: all texts in one call, so Categorizer sorts them by token length and cuts batches of
  ``batch_size`` (padding to the batch maximum stays small). This is the model's best case.
* ``arrival``: batches of ``batch_size`` in random order, one call each. Sorting inside a batch of
  32 removes no padding, so this is what a stream of unrelated messages gives the model (the
  worker calls the model once per micro-batch in arrival order).
* ``window``: arrival-order windows of ``window`` texts (default 8 x batch), each one call, so
  Categorizer sorts inside the window: what a worker taking larger micro-batches would get.
* ``batch1``: one text per call; per-call latency percentiles.

It also times ``Pipeline.predict`` on arrival-order batches (tokenize + model + decode + centroid
search): the in-process ceiling of the worker's inference thread.

The sorted and arrival passes alternate for ``rounds`` rounds and report the median round,
because this machine is shared and drifts between runs; ratios are taken within one run.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stream_app.core.bundle import Bundle
from stream_app.core.model import Categorizer
from stream_app.core.pipeline import Pipeline


@dataclass
class ModelOnlyResult:
    texts: int
    batch_size: int
    threads: int
    mean_tokens: float
    p95_tokens: float
    sorted_tps: float  # texts/s, median round
    arrival_tps: float  # texts/s, median round
    window: int  # texts per call in the window pass
    window_tps: float  # texts/s, arrival-order windows sorted into batches of batch_size
    pipeline_arrival_tps: float  # texts/s, Pipeline.predict per arrival-order batch
    batch1_p50_ms: float
    batch1_p99_ms: float
    rounds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def bucketing_gain(self) -> float:
        """How much faster length-sorted batches are than arrival-order batches."""
        return self.sorted_tps / self.arrival_tps if self.arrival_tps else float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"bucketing_gain": self.bucketing_gain}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def measure_model_only(
    bundle: Bundle,
    texts: Sequence[str],
    threads: int = 2,
    batch_size: int = 32,
    rounds: int = 2,
    batch1_samples: int = 200,
    seed: int = 11,
    window: int | None = None,
) -> ModelOnlyResult:
    """Time the bundle's model on ``texts`` (see module docstring). Nothing is asserted."""
    manifest = bundle.manifest
    categorizer = Categorizer(bundle.model_path, bundle.tokenizer_path, manifest.max_tokens, threads, batch_size)
    ids = categorizer.encode(texts)
    lengths = np.array([len(x) for x in ids])
    rng = random.Random(seed)
    shuffled = list(ids)
    rng.shuffle(shuffled)
    arrival_batches = _chunks(shuffled, batch_size)
    window = window or 8 * batch_size
    windows = _chunks(shuffled, window)

    categorizer.run_ids(ids[: batch_size * 2])  # first runs allocate arenas: keep them out of the timings

    def run_sorted() -> None:
        categorizer.run_ids(ids)

    def run_arrival() -> None:
        for batch in arrival_batches:
            categorizer.run_ids(batch)

    sorted_s: list[float] = []
    arrival_s: list[float] = []
    for r in range(rounds):
        # Alternate which pass goes first so a slow spell of the shared machine hits both alike.
        passes = [(run_sorted, sorted_s), (run_arrival, arrival_s)]
        for fn, sink in passes if r % 2 == 0 else reversed(passes):
            sink.append(_timed(fn))

    window_s = _timed(lambda: [categorizer.run_ids(w) for w in windows])

    pipeline = Pipeline(bundle, threads=threads, batch_size=batch_size)
    shuffled_texts = list(texts)
    rng.shuffle(shuffled_texts)
    pipeline.predict(shuffled_texts[:batch_size])
    pipeline_s = _timed(lambda: [pipeline.predict(b) for b in _chunks(shuffled_texts, batch_size)])
    del pipeline

    single = [shuffled[i] for i in range(min(batch1_samples, len(shuffled)))]
    latencies_ms = []
    for seq in single:
        start = time.perf_counter()
        categorizer.run_ids([seq])
        latencies_ms.append((time.perf_counter() - start) * 1000)

    count = len(ids)
    return ModelOnlyResult(
        texts=count,
        batch_size=batch_size,
        threads=threads,
        mean_tokens=float(lengths.mean()),
        p95_tokens=float(np.percentile(lengths, 95)),
        sorted_tps=count / statistics.median(sorted_s),
        arrival_tps=count / statistics.median(arrival_s),
        window=window,
        window_tps=count / window_s,
        pipeline_arrival_tps=count / pipeline_s,
        batch1_p50_ms=float(np.percentile(latencies_ms, 50)),
        batch1_p99_ms=float(np.percentile(latencies_ms, 99)),
        rounds={
            "sorted_tps": [count / s for s in sorted_s],
            "arrival_tps": [count / s for s in arrival_s],
        },
    )


def measure_sorted_tps(bundle: Bundle, texts: Sequence[str], threads: int = 2, batch_size: int = 32) -> float:
    """One sorted pass (texts/s): re-measured right after the end-to-end run to bracket it."""
    categorizer = Categorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens, threads, batch_size)
    ids = categorizer.encode(texts)
    categorizer.run_ids(ids[: batch_size * 2])
    return len(ids) / _timed(lambda: categorizer.run_ids(ids))
