"""The infer step: texts of one batch -> one prediction or one `Rejected` per text, off the event loop.

Contract of `Inference.__call__(texts)`:
* One model call per batch on ``executor`` (a single thread: a second concurrent onnxruntime run
  would only compete for the same cores). Results come back in the order of ``texts``.
* If the batch call fails, the texts are retried one by one. A text that fails alone is this
  message's fault *only if the model still works*: after each single failure the step runs the
  canary (a text the model scored at start-up). If the canary fails too, the model is broken and
  the call raises `ModelBroken`: nothing of the batch is dead-lettered, and the worker stops without
  acknowledging it (docs/worker.md). So no input, however many, can make the worker stop, and a
  broken model cannot throw the stream away as dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from stream_app import metrics
from stream_app.core.pipeline import Prediction
from stream_app.worker.dead_letters import Rejected, inference_failure

log = logging.getLogger(__name__)

CANARY_TEXT = "warm up"


class ModelBroken(RuntimeError):
    """The model fails on a text it handled at start-up: a fault of the model, not of the messages."""


class Inference:
    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[Prediction]],
        executor: Executor,
        canary: str = CANARY_TEXT,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self._canary = canary

    async def __call__(self, texts: list[str]) -> list[Prediction | Rejected]:
        if not texts:
            return []
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, texts)

    def _run(self, texts: list[str]) -> list[Prediction | Rejected]:
        started = time.perf_counter()
        try:
            return list(self._checked(texts))
        except Exception as exc:  # noqa: BLE001 - isolate the poison message below
            log.warning("batch inference failed (%r); retrying %d messages one by one", exc, len(texts))
            return [self._one(text) for text in texts]
        finally:
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)

    def _checked(self, texts: list[str]) -> Sequence[Prediction]:
        predictions = self._predict(texts)
        if len(predictions) != len(texts):
            raise RuntimeError(f"model returned {len(predictions)} predictions for {len(texts)} texts")
        return predictions

    def _one(self, text: str) -> Prediction | Rejected:
        try:
            return self._checked([text])[0]
        except Exception as exc:  # noqa: BLE001 - this message's fault unless the canary fails too
            try:
                self._checked([self._canary])
            except Exception as canary_exc:
                raise ModelBroken(
                    f"the model fails on its start-up canary text too ({canary_exc!r}); first failure: {exc!r}"
                ) from canary_exc
            return inference_failure(exc)
