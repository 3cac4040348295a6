"""Hot swap: follow the bundle store's pointers and swap models between micro-batches, no restart.

Contract of `ModelSwapper.poll()` (a Faust timer calls it every STREAM_BUNDLE_POLL_SECONDS):
* It reads the store's `pointer_stamp()` (two small file reads). When the stamp is unchanged it does
  nothing more. When it changed, and the serving (or shadow) version differs from the one in use,
  it loads the new bundle off the event loop (`load_model`: checksums, the canary text) and then
  swaps it in with `BatchProcessor.swap` (or replaces the shadow): batches already taken finish on
  the old model, the next one is scored by the new one. No rebalance, no restart, nothing lost.
* A version that fails to load or verify is refused: an ERROR log line naming the file,
  ``stream_model_swaps_total{result="refused"}``, `refused` set for /readyz's detail; the old model
  keeps serving. It is not retried until the pointer changes again.
* ``stream_model_info`` follows every swap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from stream_app import metrics
from stream_app.core.store import BundleStore, StoreError
from stream_app.settings import Settings
from stream_app.worker.batching import BatchProcessor
from stream_app.worker.serving import ModelLoadError, ServingModel, load_model
from stream_app.worker.shadow import ShadowScorer

log = logging.getLogger(__name__)

MakeShadow = Callable[[ServingModel], ShadowScorer]


@dataclass
class SwapState:
    stamp: str | None = None
    refused: str | None = None  # the last refused version and why, until a later swap succeeds


class ModelSwapper:
    def __init__(self, store: BundleStore, settings: Settings, executor: Executor, processor: BatchProcessor,
                 make_shadow: MakeShadow) -> None:
        self._store = store
        self._settings = settings
        self._executor = executor
        self._processor = processor
        self._make_shadow = make_shadow
        self.state = SwapState(stamp=store.pointer_stamp())

    async def poll(self) -> None:
        stamp = self._store.pointer_stamp()
        if stamp == self.state.stamp:
            return
        self.state.stamp = stamp
        try:
            serving = self._store.serving_version()
            shadow = self._settings.shadow_version or self._store.shadow_version()
        except StoreError as exc:
            self._refuse("pointer", str(exc))
            return
        if serving is not None and serving != self._processor.model.version:
            model = await self._load(serving)
            if model is not None:
                previous = self._processor.model.version
                self._processor.swap(model)
                metrics.MODEL_SWAPS.labels(result="swapped").inc()
                metrics.set_model_info(model.version, model.encoder, model.labels)
                self.state.refused = None
                log.warning("model swapped: %s -> %s (from the next micro-batch on)", previous, model.version)
        current = self._processor.shadow
        if shadow is None and current is not None:
            self._processor.shadow = None
            log.warning("shadow %s cleared", current.version)
        elif shadow is not None and (current is None or current.version != shadow):
            model = await self._load(shadow)
            if model is not None:
                self._processor.shadow = self._make_shadow(model)
                log.warning("shadow model %s scores %.0f%% of the messages", shadow,
                            100 * self._settings.shadow_share)

    async def _load(self, version: str) -> ServingModel | None:
        loop = asyncio.get_running_loop()
        try:
            path = self._store.version_path(version)
            # Not on the inference executor: loading must not queue behind (or block) serving batches.
            return await loop.run_in_executor(None, load_model, path, self._settings, self._executor)
        except (ModelLoadError, StoreError) as exc:
            self._refuse(version, str(exc))
            return None

    def _refuse(self, version: str, reason: str) -> None:
        metrics.MODEL_SWAPS.labels(result="refused").inc()
        self.state.refused = f"{version}: {reason}"[:500]
        log.error("bundle %s refused, the current model keeps serving: %s", version, reason)
