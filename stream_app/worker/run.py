"""Start-up of the worker process: check everything that can be checked, then run Faust.

Contract: `run_worker(settings)` validates the bundle (BundleError naming the file), warms the
model up, creates the four topics explicitly (Tansu would auto-create them with 4 partitions) and
runs the Faust worker until SIGTERM/SIGINT, which drain in-flight batches and commit. A failure
before Faust starts raises `StartupError` with a message naming the setting or file.
"""

from __future__ import annotations

import logging
import time

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


def run_worker(settings: Settings) -> None:
    """Blocks until the worker stops; the process exit code is Faust's (0 on a clean stop)."""
    from stream_app.core.bundle import Bundle, BundleError
    from stream_app.core.pipeline import Pipeline

    logging.basicConfig(
        level=settings.log_level.value.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    try:
        bundle = Bundle.load(settings.bundle_path)
    except BundleError as exc:
        raise StartupError(f"STREAM_BUNDLE_PATH={settings.bundle_path}: {exc}") from exc
    try:
        pipeline = Pipeline(bundle, threads=settings.inference_threads, batch_size=settings.model_batch_size)
        pipeline.predict(["warm up"])  # first run allocates; keep it out of the first batch's latency
    except Exception as exc:
        raise StartupError(f"STREAM_BUNDLE_PATH={settings.bundle_path}: model does not run: {exc!r}") from exc
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"STREAM_DATA_DIR={settings.data_dir}: not writable ({exc})") from exc
    _create_topics(settings)

    import faust

    from stream_app.worker.app import build_app

    runtime = build_app(settings, bundle, pipeline)
    worker = faust.Worker(runtime.app, loglevel=settings.log_level.value, quiet=True)
    worker.execute_from_commandline()
