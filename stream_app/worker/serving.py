"""`ServingModel`: one loaded, verified bundle and everything a batch needs from it.

Contract:
* `load_model(path, settings, executor)` loads the bundle (`Bundle.load` verifies every checksum),
  builds its `Pipeline` (in a child process, `ModelProcess`, when STREAM_INFERENCE_PROCESS is true,
  the default; in this process otherwise), scores the canary text once (the same text `Inference`
  uses to tell a broken model from a poison message) and builds the drift tracker calibrated for this
  bundle. Any failure raises `ModelLoadError` naming the path; nothing is half-built.
* A `ServingModel` is immutable. The batch path captures one per batch when the batch is taken, so a
  batch is scored, rendered, drift-tracked and labelled (``model_version``) by exactly one bundle,
  and swapping a model (`BatchProcessor.swap`) takes effect from the next batch on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from stream_app.core.bundle import Bundle
from stream_app.core.pipeline import Pipeline, Prediction
from stream_app.messages import ProductEvent
from stream_app.settings import Settings
from stream_app.worker.drift import DriftTracker
from stream_app.worker.inference import CANARY_TEXT, Inference
from stream_app.worker.model_process import ModelProcess


class ModelLoadError(RuntimeError):
    """A bundle that cannot serve; the message names the path and the reason."""


class Alert(Protocol):
    """A record for the drift topic (`AlertRecord`). Read-only members: a frozen dataclass satisfies them."""

    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...
    @property
    def type(self) -> str: ...
    @property
    def recommendation(self) -> str: ...


class DriftSink(Protocol):
    """Per-message drift bookkeeping (`DriftTracker`), fed every consumed message in consumption order."""

    def observe(
        self, partition: int, offset: int, processed_at: datetime,
        prediction: Prediction | None = None, event: ProductEvent | None = None,
    ) -> Sequence[Alert]: ...


@dataclass(frozen=True)
class ServingModel:
    version: str
    render: Callable[[dict[str, Any]], str]
    inference: Inference
    drift: DriftSink
    # The bundle's Pipeline.predict (in this process or in its model process): what the shadow calls.
    predict: Callable[[list[str]], Sequence[Prediction]] | None = None  # None only in unit tests
    encoder: str = ""
    labels: tuple[str, ...] = ()


def load_model(path: Path, settings: Settings, executor: Executor) -> ServingModel:
    """Load and verify the bundle at ``path`` (see module docstring)."""
    predict: Callable[[list[str]], Sequence[Prediction]]
    try:
        bundle = Bundle.load(path)
        drift = DriftTracker.for_bundle(bundle, settings)
        # Either way the canary is scored once before the model serves: the first run allocates, and
        # a model that cannot score it never serves.
        if settings.inference_process:
            process = ModelProcess(bundle.path, settings.inference_threads, settings.model_batch_size, CANARY_TEXT)
            process.start()
            predict = process.predict
        else:
            pipeline = Pipeline(bundle, threads=settings.inference_threads, batch_size=settings.model_batch_size)
            pipeline.predict([CANARY_TEXT])
            predict = pipeline.predict
    except Exception as exc:
        raise ModelLoadError(f"{path}: {type(exc).__name__}: {exc}") from exc
    manifest = bundle.manifest
    return ServingModel(bundle.version, manifest.text.render, Inference(predict, executor), drift,
                        predict, manifest.base_encoder, tuple(manifest.labels))
