"""The bundle's `Pipeline` in a child process, so the model's Python does not share the worker's GIL.

Why: in one process the inference thread gives the GIL back at every onnxruntime call and waits for
it at every return (a micro-batch of 256 is ~30 calls) while the event loop and Faust's consumer
thread hold it; on this machine it slept on the GIL 7-9% of its time under a backlog
(docs/benchmarks.md, "The GIL"). In a child process the model has an interpreter of its own and the
worker's inference thread only waits on a socket.

Contract of `ModelProcess`:
* ``start()`` starts the child (``python -m stream_app.worker.model_process``: a fresh interpreter,
  no copy of the parent's threads, sockets or main module; requests and replies are pickled over a
  socket pair), which loads the bundle (checksums) and scores the canary text; it returns once the child
  is ready, or raises `ModelProcessError` with the child's reason (or its exit code) after at most
  ``start_timeout`` seconds.
* ``predict(texts)`` returns ``Pipeline.predict(texts)`` as computed by the child: one `Prediction`
  per text, in order. One call at a time (a lock; the worker calls it from its single inference
  thread). An exception of the model in the child is raised here as `ModelProcessError` naming it;
  the child keeps serving. If the child dies (a crash of onnxruntime on some input, the OOM killer),
  the call raises `ModelProcessError` with the exit code, and the next call starts a new child first:
  `Inference` then retries the texts one by one and dead-letters only a text that kills the model
  while the canary still passes (worker/inference.py), so no input stops the worker this way either.
* ``close()`` ends the child (idempotent). It is also called when the object is garbage-collected: a
  swapped-out model's child exits once the last batch that uses it is done. The child exits by
  itself when the worker dies (end of file on its socket), and ignores SIGINT/SIGTERM, which the
  worker handles (drain, commit) and which a terminal or a container runtime may send to the whole
  process group.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from stream_app.core.pipeline import Prediction

log = logging.getLogger(__name__)


class ModelProcessError(RuntimeError):
    """The model process failed a call, could not start, or died; the message says which."""


def _serve(conn: Connection, bundle_path: str, threads: int, batch_size: int, canary: str, log_level: str) -> None:
    """The child: load, report ready (or why not), then answer ``texts`` with predictions until EOF.
    Trusted input only: it unpickles what its parent sends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="[%(asctime)s] %(levelname)s %(name)s[model]: %(message)s")
    try:
        import faiss

        from stream_app.core.bundle import Bundle
        from stream_app.core.pipeline import Pipeline

        faiss.omp_set_num_threads(1)  # see worker/run.py: the search is microseconds, OpenMP only spins
        pipeline = Pipeline(Bundle.load(bundle_path), threads=threads, batch_size=batch_size)
        pipeline.predict([canary])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names the bundle
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed the socket or died
        try:
            reply: tuple[str, Any] = ("ok", pipeline.predict(texts))
        except Exception as exc:  # noqa: BLE001 - the parent decides whose fault it is (Inference)
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _end(process: subprocess.Popen[bytes], conn: Connection) -> None:
    """Close the socket (the child exits on EOF) and reap the child; kill it if it does not go."""
    conn.close()
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5.0)


class ModelProcess:
    def __init__(self, bundle_path: Path, threads: int, batch_size: int, canary: str,
                 start_timeout: float = 300.0) -> None:
        self._args = (str(bundle_path), threads, batch_size, canary)
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, ModelProcess] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        with self._lock:
            self._ensure_started()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        with self._lock:
            self._ensure_started()
            assert self._conn is not None and self._process is not None
            try:
                self._conn.send(list(texts))
                status, payload = self._conn.recv()
            except (EOFError, OSError) as exc:
                code = self._stop_child()
                raise ModelProcessError(f"the model process exited (code {code}) while scoring {len(texts)} "
                                        f"texts") from exc
            if status != "ok":
                raise ModelProcessError(f"the model failed: {payload}")
            predictions: list[Prediction] = payload
            return predictions

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    # -- the child ---------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop_child()
        ours, theirs = socket.socketpair()
        options = json.dumps([*self._args, logging.getLevelName(log.getEffectiveLevel())])
        with ours, theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), options],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
            parent = Connection(ours.detach())
        # Our copy of the child's end is closed above: EOF here when the child exits.
        self.starts += 1
        self._conn, self._process = parent, process
        self._finalizer = weakref.finalize(self, _end, process, parent)
        if not parent.poll(self._start_timeout):
            code = self._stop_child()
            raise ModelProcessError(f"the model process did not start in {self._start_timeout:.0f} s (code {code})")
        try:
            status, payload = parent.recv()
        except (EOFError, OSError) as exc:
            code = self._stop_child()
            raise ModelProcessError(f"the model process exited (code {code}) while loading {self._args[0]}") from exc
        if status != "ready":
            self._stop_child()
            raise ModelProcessError(f"the model process could not load {self._args[0]}: {payload}")
        (log.warning if self.starts > 1 else log.info)("model process %s serves %s (start %d)", process.pid,
                                                       self._args[0], self.starts)

    def _stop_child(self) -> int | None:
        """End the current child, if any; its exit code (None if it had to be killed or never ran)."""
        process, finalizer = self._process, self._finalizer
        self._process = self._conn = self._finalizer = None
        if process is None or finalizer is None:
            return None
        finalizer()  # runs _end once
        return process.returncode


def main(argv: Sequence[str]) -> None:
    """Entry point of the child: ``python -m stream_app.worker.model_process FD OPTIONS_JSON``."""
    fd, options = int(argv[0]), json.loads(argv[1])
    _serve(Connection(fd), *options)


if __name__ == "__main__":
    main(sys.argv[1:])
