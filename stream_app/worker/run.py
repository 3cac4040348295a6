"""Start-up of the worker process: check everything that can be checked, then run Faust.

Contract: `run_worker(settings)` loads the bundle to serve (STREAM_BUNDLE_PATH, or the serving
version of STREAM_BUNDLE_STORE), verifies it (checksums, a canary text through the model), creates
its topics explicitly (Tansu would auto-create them with 4 partitions) and runs the Faust worker until
SIGTERM/SIGINT, which drain in-flight batches and commit. A failure before Faust starts raises
`StartupError` with a message naming the setting or file.
"""

from __future__ import annotations

import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stream_app.settings import Settings


class StartupError(RuntimeError):
    """The worker cannot start; the message says which setting or file is at fault."""


def _create_topics(settings: Settings, deadline_s: float = 30.0) -> None:
    from stream_app.kafka.admin import TopicCreationError, create_topics
    from stream_app.kafka.config import ConnectionSettings, client_config

    config = client_config(settings=ConnectionSettings.from_settings(settings))
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            created = create_topics(
                settings.brokers, settings.topic_partitions(), settings.replication_factor, config, timeout=10.0
            )
            for name, was_created in created.items():
                logging.getLogger(__name__).info("topic %s: %s", name, "created" if was_created else "exists")
            return
        except TopicCreationError as exc:
            if time.monotonic() > deadline:
                raise StartupError(f"STREAM_BROKERS={settings.brokers}: {exc}") from exc
            time.sleep(1.0)


def _serving_path(settings: Settings) -> tuple[Path, str]:
    """The bundle to serve first, and the setting that named it (for error messages)."""
    from stream_app.core.store import BundleStore, StoreError

    if settings.bundle_store is None:
        return settings.bundle_path, f"STREAM_BUNDLE_PATH={settings.bundle_path}"
    where = f"STREAM_BUNDLE_STORE={settings.bundle_store}"
    try:
        path = BundleStore(settings.bundle_store).serving_path()
    except StoreError as exc:
        raise StartupError(f"{where}: {exc}") from exc
    if path is None:
        raise StartupError(f"{where}: nothing promoted yet (python -m export promote --store DIR --from BUNDLE)")
    return path, where


def run_worker(settings: Settings) -> None:
    """Blocks until the worker stops; the process exit code is Faust's (0 on a clean stop)."""
    from stream_app.worker.serving import ModelLoadError, load_model

    logging.basicConfig(
        level=settings.log_level.value.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    path, where = _serving_path(settings)
    # The drift search (64 centroids, a micro-batch of queries) is microseconds of work: FAISS's
    # OpenMP pool only adds threads that spin after each search, on the cores the model needs; with
    # it, decoding a batch of 13 took 0.48 ms per text instead of 0.02 (docs/benchmarks.md).
    import faiss

    faiss.omp_set_num_threads(1)
    # One model call at a time: a second concurrent onnxruntime run would only fight for the same
    # cores (STREAM_INFERENCE_THREADS); batches in flight still overlap inference with I/O.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    try:
        model = load_model(path, settings, executor)
    except ModelLoadError as exc:
        raise StartupError(f"{where}: {exc}") from exc
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"STREAM_DATA_DIR={settings.data_dir}: not writable ({exc})") from exc
    _create_topics(settings)

    import faust

    from stream_app.worker.app import build_app

    runtime = build_app(settings, model, executor)
    # The batch processor holds the model from here on; a reference in this frame, which lives as long
    # as the worker, would keep a swapped-out model (and its model process) alive forever.
    del model
    worker = faust.Worker(runtime.app, loglevel=settings.log_level.value, quiet=True)
    # No terminal spinner: at WARNING and above Faust hangs it on the root logger and sets the root
    # level to DEBUG, so every library's debug record is built and handled (aiokafka logs several per
    # message sent): measurable CPU on the event loop (docs/benchmarks.md, profile).
    worker.spinner = None
    # What exists now (modules, the app, the bundle's objects) lives as long as the worker: out of the
    # cyclic GC's reach, a full collection no longer walks it on the event loop (27-37 ms for this
    # heap here, a pause every message in flight waits for). Reference counting still frees it.
    gc.collect()
    gc.freeze()
    worker.execute_from_commandline()
