"""`ModelProcess`: the real test bundle in a child process, its answers, its failures and its lifetime."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stream_app.core.bundle import Bundle
from stream_app.core.pipeline import Pipeline, Prediction
from stream_app.settings import Settings
from stream_app.worker.inference import CANARY_TEXT, Inference
from stream_app.worker.model_process import ModelProcess, ModelProcessError
from stream_app.worker.serving import ModelLoadError, load_model

TEXTS = ["Vestido de festa longo azul marinho", "", "caneca personalizada 😀 dia dos pais", "x " * 5000,
         "Convite de casamento rústico kraft", "Kit higiene bebê menino azul e branco"]


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` has exited (and been reaped, or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def model(test_bundle: Path) -> Iterator[ModelProcess]:
    process = ModelProcess(test_bundle, threads=1, batch_size=8, canary=CANARY_TEXT)
    process.start()
    yield process
    process.close()


def test_predictions_are_the_in_process_pipelines(model: ModelProcess, test_bundle: Path) -> None:
    in_process = Pipeline(Bundle.load(test_bundle), threads=1, batch_size=8)
    assert model.predict(TEXTS) == in_process.predict(TEXTS)
    assert model.predict([]) == []


def test_a_model_error_is_raised_with_its_reason_and_the_child_keeps_serving(model: ModelProcess) -> None:
    pid = model.pid
    with pytest.raises(ModelProcessError, match=r"the model failed: .*Error"):
        model.predict([None])  # type: ignore[list-item]
    assert model.predict(["caneca"])[0].categories and model.pid == pid and model.starts == 1


def test_a_child_that_dies_mid_call_fails_that_call_and_the_next_call_restarts_it(model: ModelProcess) -> None:
    pid = model.pid
    assert pid is not None
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    with pytest.raises(ModelProcessError, match=r"exited \(code -9\) while scoring 20000 texts"):
        model.predict(TEXTS[:1] * 20000)  # seconds of work: the kill lands during it
    assert len(model.predict(TEXTS)) == len(TEXTS)
    assert model.starts == 2 and model.pid != pid


def test_inference_loses_nothing_when_the_model_process_is_killed_during_a_batch(model: ModelProcess) -> None:
    """The batch fails, `Inference` retries it text by text on a new child: every text gets its prediction,
    none is dead-lettered (the canary passes, so no text is blamed for the crash)."""
    killed: list[int] = []
    crashed: list[ModelProcessError] = []

    def predict(texts: list[str]) -> list[Prediction]:
        if not killed:
            assert model.pid is not None
            killed.append(model.pid)
            threading.Timer(0.3, os.kill, (model.pid, signal.SIGKILL)).start()
            try:
                return model.predict(texts * 4000)[: len(texts)]  # seconds of work: the kill lands during it
            except ModelProcessError as exc:
                crashed.append(exc)
                raise
        return model.predict(texts)

    texts = TEXTS[:5]
    results = asyncio.run(Inference(predict, ThreadPoolExecutor(1))(texts))
    # The batch call itself died (so the per-text retry ran), not an idle child after it.
    assert crashed and "exited (code -9)" in str(crashed[0]) and model.starts == 2
    assert all(isinstance(r, Prediction) for r in results), results
    # Scored one by one (dynamic INT8 quantization scales per call, so a batch of 5 scores a hair apart).
    assert results == [model.predict([text])[0] for text in texts]


def test_a_bundle_the_child_cannot_load_names_the_path_and_the_reason(test_bundle: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-bundle"
    with pytest.raises(ModelProcessError, match=f"could not load {missing}: BundleError"):
        ModelProcess(missing, threads=1, batch_size=8, canary=CANARY_TEXT).start()
    with pytest.raises(ModelLoadError, match=str(missing)):
        load_model(missing, Settings(), ThreadPoolExecutor(1))


def test_load_model_serves_from_a_child_by_default_and_in_process_when_told(test_bundle: Path) -> None:
    executor = ThreadPoolExecutor(1)
    in_child = load_model(test_bundle, Settings(inference_threads=1, model_batch_size=8), executor)
    assert isinstance(in_child.predict.__self__, ModelProcess)  # type: ignore[union-attr]
    in_process = load_model(test_bundle, Settings(inference_threads=1, model_batch_size=8, inference_process=False),
                            executor)
    assert isinstance(in_process.predict.__self__, Pipeline)  # type: ignore[union-attr]
    assert in_child.predict is not None and in_process.predict is not None
    assert in_child.predict(TEXTS) == in_process.predict(TEXTS)


def test_the_child_ends_when_its_model_is_dropped(test_bundle: Path) -> None:
    """A swapped-out model's child exits once nothing uses the model any more."""
    process = ModelProcess(test_bundle, threads=1, batch_size=8, canary=CANARY_TEXT)
    process.start()
    pid = process.pid
    assert pid is not None and not gone(pid, timeout=0.2)
    del process
    gc.collect()
    assert gone(pid)


def test_the_child_ignores_sigint_and_sigterm_which_the_worker_handles(model: ModelProcess) -> None:
    assert model.pid is not None
    os.kill(model.pid, signal.SIGINT)
    os.kill(model.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert len(model.predict(TEXTS)) == len(TEXTS) and model.starts == 1


def test_the_child_exits_when_the_worker_is_killed(test_bundle: Path) -> None:
    """No orphan keeps the model's memory when the worker dies without closing it (SIGKILL, OOM)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pathlib import Path
            from stream_app.worker.model_process import ModelProcess
            process = ModelProcess(Path({str(test_bundle)!r}), threads=1, batch_size=8, canary="warm up")
            process.start()
            print(process.pid, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        assert gone(child), f"model process {child} outlived its worker"
    finally:
        parent.kill()
