"""Run the real worker CLI with faults injected at two seams: ``python -m tests.support.fault_launcher``.

It replaces ``python -m stream_app worker``: it reads the ``FAULT_*`` variables below, wraps

* ``stream_app.worker.transport.FaustPublisher.send(self, topic, key, value)`` (async; awaiting it hands
  the record to the producer and returns an awaitable of the broker acknowledgement), and
* ``stream_app.core.pipeline.Pipeline.predict(self, texts)`` (one prediction per text) and
  ``stream_app.worker.model_process.ModelProcess.predict(self, texts)``, the same call made in the
  model process (the default, STREAM_INFERENCE_PROCESS): whichever the worker serves with,

then calls ``stream_app.__main__.main()`` with argv ``["worker"]``. Nothing else is touched; with no
``FAULT_*`` variable set the worker behaves exactly as ``python -m stream_app worker``.

Publish faults by source input (the ``categories`` and dead-letter values carry ``source.partition``
and ``source.offset``; drift alerts carry none and never match these rules):

``FAULT_SEND_MATCH``   ``P:FROM-TO`` rules separated by commas; ``TO`` may be empty (open end), e.g.
                       ``0:40-`` = partition 0, offsets 40 and later.
``FAULT_SEND_ACTION``  what a matching send does:
                       ``hang``     the record is not handed to the producer and the returned
                                    awaitable never resolves (a broker that never acknowledges);
                       ``delay:S``  sent for real, the acknowledgement resolves S seconds late;
                       ``raise``    awaiting ``send`` raises ``InjectedFault`` (nothing sent);
                       ``fail``     nothing sent; the returned awaitable raises ``InjectedFault``.

Publish faults by time (every send, whatever its topic):

``FAULT_SEND_FAIL_AFTER``    N: sends after the N-th one fail ...
``FAULT_SEND_FAIL_SECONDS``  ... during this many seconds from the first failure (default: forever)
``FAULT_SEND_FAIL_MODE``     ``raise`` (default) or ``fail`` as above.

Model faults (call 1 is the start-up warm-up):

``FAULT_PREDICT_FAIL_AFTER``  N: every call after the N-th raises ``InjectedFault`` (1 = all but the
                              warm-up).
``FAULT_PREDICT_DELAY_S``     sleep this long before every call but the warm-up (slows the model).

``FAULT_EVENTS_PATH``  JSON Lines file: one line per injected fault (kind, topic, source partition
                       and offset when known, wall time), so a test knows exactly what was hit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any


class InjectedFault(RuntimeError):
    """Raised by an injected fault (never by the product code)."""


@dataclass(frozen=True)
class Rule:
    partition: int
    first: int
    last: int | None  # inclusive; None = open end

    def matches(self, partition: int, offset: int) -> bool:
        return partition == self.partition and offset >= self.first and (self.last is None or offset <= self.last)


def parse_rules(text: str) -> list[Rule]:
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, _, span = part.partition(":")
        first, _, last = span.partition("-")
        rules.append(Rule(int(partition), int(first or 0), int(last) if last else None))
    return rules


class Events:
    """Appends one JSON line per injected fault to FAULT_EVENTS_PATH (if set)."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def __call__(self, kind: str, **fields: Any) -> None:
        if not self._path:
            return
        line = json.dumps({"kind": kind, "t": time.time(), **fields})
        with self._lock, open(self._path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _source(value: bytes | None) -> tuple[int, int] | None:
    """(partition, offset) of the input an output came from, if the value says so."""
    try:
        source = json.loads(value or b"").get("source") or {}
        return int(source["partition"]), int(source["offset"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _env_float(env: dict[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    return float(raw) if raw else None


def install(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Wrap the two seams according to ``FAULT_*``; return the settings that were applied."""
    env = dict(os.environ if environ is None else environ)
    applied = {k: v for k, v in env.items() if k.startswith("FAULT_")}
    events = Events(env.get("FAULT_EVENTS_PATH"))

    from stream_app.core.pipeline import Pipeline
    from stream_app.worker.model_process import ModelProcess
    from stream_app.worker.transport import FaustPublisher

    # -- publish ----------------------------------------------------------------------------------
    rules = parse_rules(env.get("FAULT_SEND_MATCH", ""))
    action = env.get("FAULT_SEND_ACTION", "hang").strip()
    fail_after = env.get("FAULT_SEND_FAIL_AFTER", "").strip()
    fail_after_n = int(fail_after) if fail_after else None
    fail_seconds = _env_float(env, "FAULT_SEND_FAIL_SECONDS")
    fail_mode = env.get("FAULT_SEND_FAIL_MODE", "raise").strip()
    if action.split(":")[0] not in {"hang", "delay", "raise", "fail"} or fail_mode not in {"raise", "fail"}:
        raise SystemExit(f"fault launcher: bad FAULT_SEND_ACTION={action!r} or FAULT_SEND_FAIL_MODE={fail_mode!r}")
    sends = itertools.count(1)
    span: dict[str, float] = {}  # "start": monotonic time of the first time-span failure

    original_send = FaustPublisher.send

    def failed_ack(exc: BaseException) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
        return future

    async def send(self: Any, topic: str, key: bytes | None, value: bytes) -> Any:
        n = next(sends)
        source = _source(value)
        where = {"topic": topic, "send": n, "partition": source[0] if source else None,
                 "offset": source[1] if source else None}
        if fail_after_n is not None and n > fail_after_n:
            now = time.monotonic()
            start = span.setdefault("start", now)
            if fail_seconds is None or now - start < fail_seconds:
                events(f"send_{fail_mode}", **where)
                exc = InjectedFault(f"injected publish failure (send #{n} to {topic}, source {source})")
                if fail_mode == "raise":
                    raise exc
                return failed_ack(exc)
        if source is not None and any(rule.matches(*source) for rule in rules):
            kind = action.split(":")[0]
            events(f"send_{kind}", **where)
            if kind == "hang":
                return asyncio.get_running_loop().create_future()  # never resolved, nothing sent
            if kind == "raise":
                raise InjectedFault(f"injected publish failure (send to {topic}, source {source})")
            if kind == "fail":
                return failed_ack(InjectedFault(f"injected broker rejection (send to {topic}, source {source})"))
            delay = float(action.split(":", 1)[1])
            acknowledgement = await original_send(self, topic, key, value)

            async def late() -> Any:
                result = await acknowledgement
                await asyncio.sleep(delay)
                return result

            return asyncio.ensure_future(late())
        return await original_send(self, topic, key, value)

    FaustPublisher.send = send  # type: ignore[method-assign]

    # -- model ------------------------------------------------------------------------------------
    predict_fail_after = env.get("FAULT_PREDICT_FAIL_AFTER", "").strip()
    predict_fail_n = int(predict_fail_after) if predict_fail_after else None
    predict_delay = _env_float(env, "FAULT_PREDICT_DELAY_S")
    calls = itertools.count(1)
    calls_lock = threading.Lock()
    original_predict = Pipeline.predict
    original_process_predict = ModelProcess.predict
    original_start = ModelProcess.start

    def faulty(original: Any, self: Any, texts: Any) -> Any:
        with calls_lock:
            n = next(calls)
        if predict_fail_n is not None and n > predict_fail_n:
            events("predict_raise", call=n, texts=len(texts))
            raise InjectedFault(f"injected model failure (call #{n}, {len(texts)} texts)")
        if predict_delay and n > 1:
            time.sleep(predict_delay)
        return original(self, texts)

    def start(self: Any) -> None:
        # The model process scores the start-up canary itself: that is call 1, the warm-up.
        with calls_lock:
            next(calls)
        original_start(self)

    # The worker's seam is Pipeline.predict with STREAM_INFERENCE_PROCESS=false, ModelProcess.predict
    # (in the worker process, around the child) by default.
    Pipeline.predict = lambda self, texts: faulty(original_predict, self, texts)  # type: ignore[method-assign]
    ModelProcess.predict = lambda self, texts: faulty(original_process_predict, self, texts)  # type: ignore[method-assign]
    ModelProcess.start = start  # type: ignore[method-assign]
    return applied


def main() -> None:
    applied = install()
    print(f"fault launcher: {json.dumps(applied, sort_keys=True)}", file=sys.stderr, flush=True)
    from stream_app.__main__ import main as cli_main

    sys.argv = [sys.argv[0], "worker"]
    cli_main()


if __name__ == "__main__":
    main()
