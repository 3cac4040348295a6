"""Model-only timings of the bundle's INT8 graph (no Kafka, no JSON, no decoding).

Contract: `measure_model_only(bundle, texts, ...)` tokenizes ``texts`` once (tokenization is not
timed) and times `OnnxCategorizer.run_ids`, the exact code the worker runs, in these ways (``batch_size``
is the model batch, the worker's STREAM_MODEL_BATCH_SIZE; ``micro_batch`` is the worker's
STREAM_BATCH_SIZE):

* ``sorted``: all texts in one call, so OnnxCategorizer sorts them by token length and cuts batches of
  ``batch_size`` (padding to the batch maximum stays small). The model's best case: an upper bound
  no stream reaches, since a worker only ever sorts the micro-batch it holds.
* ``arrival``: batches of ``batch_size`` in random order, one call each. Sorting inside a batch of
  32 removes no padding: this is what the worker ran before it took larger micro-batches.
* ``window``: arrival-order windows of ``micro_batch`` texts, one call each, so OnnxCategorizer sorts
  each window and cuts it into batches of ``batch_size``. This is exactly the worker's batching
  under a backlog (one ``Pipeline.predict`` per micro-batch of STREAM_BATCH_SIZE messages): the
  model-only reference at the same batching for the end-to-end figure.
* ``batch1``: one text per call; per-call latency percentiles.

It also times ``Pipeline.predict`` on the same arrival-order windows (tokenize + model + decode +
centroid search): the in-process ceiling of the worker's inference thread.

The sorted, arrival and window passes alternate for ``rounds`` rounds and report the median round,
because this machine is shared and drifts between runs; ratios are taken within one run.
`ReferencePasses` re-times the window and sorted passes on demand (between the end-to-end rounds,
to bracket each of them).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from stream_app.core.bundle import Bundle
from stream_app.core.model import OnnxCategorizer, plan_batches
from stream_app.core.pipeline import Pipeline


@dataclass
class ModelOnlyResult:
    texts: int
    batch_size: int  # texts per model call (STREAM_MODEL_BATCH_SIZE)
    threads: int
    mean_tokens: float
    p95_tokens: float
    sorted_tps: float  # texts/s, median round
    arrival_tps: float  # texts/s, median round
    window: int  # texts per call in the window pass (the micro-batch, STREAM_BATCH_SIZE)
    window_tps: float  # texts/s, median round: arrival-order windows sorted into batches of batch_size
    pipeline_window_tps: float  # texts/s, Pipeline.predict per arrival-order window (the worker's calls)
    batch1_p50_ms: float
    batch1_p99_ms: float
    rounds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def bucketing_gain(self) -> float:
        """How much faster length-sorted batches are than arrival-order batches."""
        return self.sorted_tps / self.arrival_tps if self.arrival_tps else float("nan")

    @property
    def window_over_sorted(self) -> float:
        """Share of the sorted upper bound that the worker's batching (windows) reaches."""
        return self.window_tps / self.sorted_tps if self.sorted_tps else float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"bucketing_gain": self.bucketing_gain, "window_over_sorted": self.window_over_sorted}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _arrival_order(items: Sequence[Any], seed: int) -> list[Any]:
    """The benchmark's "arrival order": a seeded shuffle (the same one for ids and for texts)."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def _warm(categorizer: OnnxCategorizer, ids: Sequence[Sequence[int]], batch_size: int) -> None:
    categorizer.run_ids(ids[: batch_size * 2])  # first runs allocate arenas: keep them out of the timings


def _run_windows(categorizer: OnnxCategorizer, ids: Sequence[Sequence[int]], window: int) -> None:
    for chunk in _chunks(ids, window):
        categorizer.run_ids(chunk)


def _time_pipeline(bundle: Bundle, texts: Sequence[str], threads: int, batch_size: int, micro_batch: int,
                   seed: int) -> float:
    """Seconds of `Pipeline.predict` over the arrival-order windows; the pipeline (a second onnxruntime
    session) is released on return, before the batch-1 timings."""
    pipeline = Pipeline(bundle, threads=threads, batch_size=batch_size)
    shuffled_texts = _arrival_order(texts, seed)
    pipeline.predict(shuffled_texts[:batch_size])
    return _timed(lambda: [pipeline.predict(w) for w in _chunks(shuffled_texts, micro_batch)])


def measure_model_only(
    bundle: Bundle,
    texts: Sequence[str],
    threads: int = 2,
    batch_size: int = 32,
    rounds: int = 2,
    batch1_samples: int = 200,
    seed: int = 11,
    micro_batch: int = 256,
) -> ModelOnlyResult:
    """Time the bundle's model on ``texts`` (see module docstring). Nothing is asserted."""
    manifest = bundle.manifest
    categorizer = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, manifest.max_tokens, threads, batch_size)
    ids = categorizer.encode(texts)
    lengths = np.array([len(x) for x in ids])
    shuffled = _arrival_order(ids, seed)
    arrival_batches = _chunks(shuffled, batch_size)
    windows = _chunks(shuffled, micro_batch)

    _warm(categorizer, ids, batch_size)

    def run_sorted() -> None:
        categorizer.run_ids(ids)

    def run_arrival() -> None:
        for batch in arrival_batches:
            categorizer.run_ids(batch)

    def run_windows() -> None:
        for window in windows:
            categorizer.run_ids(window)

    sorted_s: list[float] = []
    arrival_s: list[float] = []
    window_s: list[float] = []
    for r in range(rounds):
        # Alternate the order of the passes so a slow spell of the shared machine hits all alike.
        passes = [(run_sorted, sorted_s), (run_arrival, arrival_s), (run_windows, window_s)]
        for fn, sink in passes if r % 2 == 0 else reversed(passes):
            sink.append(_timed(fn))

    pipeline_s = _time_pipeline(bundle, texts, threads, batch_size, micro_batch, seed)

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
        window=micro_batch,
        window_tps=count / statistics.median(window_s),
        pipeline_window_tps=count / pipeline_s,
        batch1_p50_ms=float(np.percentile(latencies_ms, 50)),
        batch1_p99_ms=float(np.percentile(latencies_ms, 99)),
        rounds={
            "sorted_tps": [count / s for s in sorted_s],
            "arrival_tps": [count / s for s in arrival_s],
            "window_tps": [count / s for s in window_s],
        },
    )


class ReferencePasses:
    """The model-only references, re-timed on demand between end-to-end rounds: one session, the texts
    tokenized once, the same arrival order and windows as `measure_model_only`."""

    def __init__(self, bundle: Bundle, texts: Sequence[str], threads: int = 2, batch_size: int = 32,
                 micro_batch: int = 256, seed: int = 11) -> None:
        self.categorizer = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens,
                                           threads, batch_size)
        self.ids = self.categorizer.encode(texts)
        self.windows = _chunks(_arrival_order(self.ids, seed), micro_batch)
        _warm(self.categorizer, self.ids, batch_size)

    def window_tps(self) -> float:
        """texts/s of one pass over the arrival-order windows (the same-batching reference)."""
        return len(self.ids) / _timed(lambda: [self.categorizer.run_ids(w) for w in self.windows])

    def sorted_tps(self) -> float:
        """texts/s of one pass over the whole sample sorted (the upper bound)."""
        return len(self.ids) / _timed(lambda: self.categorizer.run_ids(self.ids))


def measure_thread_options(bundle: Bundle, texts: Sequence[str], batch_size: int = 32, micro_batch: int = 256,
                           rounds: int = 3, seed: int = 11,
                           configs: Sequence[tuple[int, bool]] = ((1, True), (2, True), (2, False)),
                           ) -> list[dict[str, Any]]:
    """The worker's batching (arrival-order windows) with 1 or 2 onnxruntime threads, spinning or not.

    ``(threads, spinning)``: intra-op threads and onnxruntime's ``session.intra_op.allow_spinning``
    (on by default: idle pool threads busy-wait for the next parallel section). Passes alternate for
    ``rounds`` rounds; per configuration, texts/s (median round) and the benchmark process's CPU
    seconds per text (every thread), which shows what spinning burns when the cores are shared.
    """
    import onnxruntime as ort

    from stream_app.core.model import session_options

    categorizers: dict[tuple[int, bool], OnnxCategorizer] = {}
    for threads, spinning in configs:
        categorizer = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens, threads,
                                      batch_size)
        options = session_options(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        categorizer.session = ort.InferenceSession(str(bundle.model_path), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
        categorizers[(threads, spinning)] = categorizer
    ids = next(iter(categorizers.values())).encode(texts)
    windows = _chunks(_arrival_order(ids, seed), micro_batch)
    for categorizer in categorizers.values():
        _warm(categorizer, ids, batch_size)
    tps: dict[tuple[int, bool], list[float]] = {c: [] for c in categorizers}
    cpu: dict[tuple[int, bool], list[float]] = {c: [] for c in categorizers}
    order = list(categorizers)
    for r in range(rounds):
        for config in order if r % 2 == 0 else list(reversed(order)):
            categorizer = categorizers[config]
            cpu_start, start = time.process_time(), time.perf_counter()
            for window in windows:
                categorizer.run_ids(window)
            tps[config].append(len(ids) / (time.perf_counter() - start))
            cpu[config].append((time.process_time() - cpu_start) / len(ids) * 1000)
    return [{"threads": threads, "spinning": spinning, "tps": statistics.median(tps[(threads, spinning)]),
             "cpu_ms_per_text": statistics.median(cpu[(threads, spinning)]), "rounds_tps": tps[(threads, spinning)]}
            for threads, spinning in categorizers]


def fixed_cut(lengths: Sequence[int], max_rows: int) -> list[tuple[int, int]]:
    """The cut the worker made before `plan_batches`: a call every ``max_rows`` sorted texts."""
    return [(start, min(start + max_rows, len(lengths))) for start in range(0, len(lengths), max_rows)]


def measure_model_batches(bundle: Bundle, texts: Sequence[str], threads: int = 1,
                          model_batches: Sequence[int] = (8, 16, 32), windows: Sequence[int] = (6, 16, 64, 256),
                          rounds: int = 2, seed: int = 11) -> list[dict[str, Any]]:
    """texts/s of arrival-order windows (micro-batches) of each size, sorted and cut into model calls of at
    most each model batch (STREAM_MODEL_BATCH_SIZE), by the worker's cut (`plan_batches`, ``"planned"``)
    and by a call every model batch texts (`fixed_cut`, ``"fixed"``, the cut before it). Small windows
    are what a worker sees under light and medium load (6: half the maximum rate), 256 under a backlog.
    Passes alternate for ``rounds`` rounds; median per (model batch, cut, window)."""
    cuts = {"planned": plan_batches, "fixed": fixed_cut}
    categorizers: dict[tuple[int, str], OnnxCategorizer] = {}
    for mb in model_batches:
        for name, cut in cuts.items():
            categorizer = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens,
                                          threads, mb)
            categorizer.plan = cut
            categorizers[(mb, name)] = categorizer
    ids = _arrival_order(next(iter(categorizers.values())).encode(texts), seed)
    for categorizer in categorizers.values():
        _warm(categorizer, ids, 32)
    seconds: dict[tuple[int, str, int], list[float]] = {}
    order = list(categorizers)
    for r in range(rounds):
        for mb, name in order if r % 2 == 0 else list(reversed(order)):
            for window in windows:
                run = partial(_run_windows, categorizers[(mb, name)], ids, window)
                seconds.setdefault((mb, name, window), []).append(_timed(run))
    return [{"model_batch": mb, "cut": name, "window": window,
             "tps": len(ids) / statistics.median(seconds[(mb, name, window)])}
            for mb, name in categorizers for window in windows]
