"""Fault injection against the real broker: nothing is lost, the worker never stalls, at least once
with bounded duplicates, and committed offsets never pass an input whose outputs were not acknowledged.

Faults are injected by ``python -m tests.support.fault_launcher`` (the real worker CLI with two seams wrapped:
``FaustPublisher.send`` and ``Pipeline.predict``; see its docstring). Committed offsets are read from
the broker with a confluent-kafka consumer of the worker's group that never joins it (``committed()``
only). Every test prints one JSON line of what it measured (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stream_app.broker import recorded_pid, running_broker
from tests.support.worker_harness import (
    PARTITIONS,
    GroupOffsets,
    TrackedProducer,
    WorkerProcess,
    WorkerTopics,
    elo7_event,
    elo7_rows,
    fault_events,
    metric_values,
    poll_records,
    reading,
    start_faulty_worker,
    start_worker,
    wait_for_keys,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

COMMIT_INTERVAL_S = 2.8  # Faust's broker_commit_interval (default; the app does not change it)
BATCH = 16
IN_FLIGHT = 2
SMALL = {"batch_size": BATCH, "max_batches_in_flight": IN_FLIGHT}


# -- helpers -----------------------------------------------------------------------------------------


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers a test started; any still running at teardown is killed (a failed test leaves none)."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.alive():
            worker.kill()


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    return [elo7_event(r) for r in elo7_rows(n, seed=seed).itertuples()]


def _keys(events: list[dict[str, Any]]) -> set[str]:
    return {str(e["product_id"]) for e in events}


def _report(test: str, **figures: Any) -> None:
    print(json.dumps({"test": test, **figures}, default=str))


def read_topic(broker: str, topic: str, idle: float = 3.0, timeout: float = 90.0,
               partitions: int = PARTITIONS) -> list[dict[str, Any]]:
    """Every record of ``topic`` (JSON values, plus ``_key``), read from the beginning until no record
    came for ``idle`` seconds (after the first fetch had time to happen)."""
    out: list[dict[str, Any]] = []
    started = last = time.monotonic()

    def stop() -> bool:
        now = time.monotonic()
        return now - started >= timeout or (now - last > idle and now - started > max(idle, 4.0))

    for msg in poll_records(reading(broker, [topic], partitions), stop):
        doc = json.loads(msg.value())
        doc["_key"] = msg.key().decode() if msg.key() is not None else None
        out.append(doc)
        last = time.monotonic()
    return out


def _duplicates(records: list[dict[str, Any]]) -> int:
    return len(records) - len({r["_key"] for r in records})


def _keys_of(records: list[dict[str, Any]]) -> set[str]:
    return {r["_key"] for r in records}


def _processed_at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["processed_at"].replace("Z", "+00:00")).timestamp()


def _wait_published(worker: WorkerProcess, topics: WorkerTopics, at_least: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = _progress(worker, topics)
        if seen["published"] >= at_least:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} outputs acknowledged after {timeout}s: {seen}\n{worker.tail()}")


def _progress(worker: WorkerProcess, topics: WorkerTopics) -> dict[str, float]:
    """In flight, consumed and published (categories + dead letters, broker-acknowledged) from /metrics."""
    values = metric_values(worker)
    published = sum(values.get(f'stream_messages_produced_total{{topic="{t}"}}', 0.0)
                    for t in (topics.output, topics.dlq))
    return {"in_flight": values.get("stream_batches_in_flight", 0.0),
            "consumed": values.get("stream_messages_consumed_total", 0.0), "published": published}


def _wait_in_flight(worker: WorkerProcess, topics: WorkerTopics, published_at_least: int,
                    timeout: float = 90.0) -> dict[str, float]:
    """Poll /metrics until ``published_at_least`` outputs were acknowledged and a batch is in flight
    with more consumed than published (work held by the worker); return that snapshot."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = _progress(worker, topics)
        if seen["published"] >= published_at_least and seen["in_flight"] > 0 and seen["consumed"] > seen["published"]:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no work in flight after {published_at_least} outputs within {timeout}s: {seen}")


def _restart_clean_and_check(broker: str, faulty: WorkerProcess, topics: WorkerTopics, keys: set[str],
                             workers: list[WorkerProcess], timeout: float = 150.0
                             ) -> tuple[set[str], list[dict[str, Any]]]:
    """Start a fault-free worker in the same group, wait for every key, stop it cleanly (exit 0);
    return (missing keys, every categories record)."""
    clean = faulty.without_faults() if hasattr(faulty, "without_faults") else faulty
    workers.append(clean)
    clean.start().wait_ready()
    by_key = wait_for_keys(broker, topics.output, keys, timeout=timeout)
    missing = keys - set(by_key)
    code = clean.terminate()
    assert code == 0, f"clean restart exited {code}\n{clean.tail()}"
    return missing, read_topic(broker, topics.output)


# -- 1. commit invariant while publishes hang --------------------------------------------------------


def test_commits_never_pass_an_unacknowledged_output(broker: str, test_bundle: Path, tmp_path: Path,
                                                     workers: list[WorkerProcess]) -> None:
    """Outputs of partition 0 from input offset X on never get a broker acknowledgement. The group's
    committed offset of partition 0 must never exceed X. Acks follow the order batches were taken
    (docs/worker.md), so the other partitions stop committing too and backpressure stalls the worker:
    it must say so on /livez (the orchestrator restarts it), and after a SIGKILL a clean worker
    delivers every product."""
    hang_from = 20
    topics = WorkerTopics.create(broker, "fault-hang")
    worker = start_faulty_worker(broker, topics, test_bundle, tmp_path,
                                 {"send_match": f"0:{hang_from}-", "send_action": "hang"}, **SMALL,
                                 liveness_stall_seconds=3)
    workers.append(worker)
    first, second = _events(240, seed=21), _events(120, seed=22)
    second = [e for e in second if str(e["product_id"]) not in _keys(first)]
    keys = _keys(first) | _keys(second)
    producer = TrackedProducer(broker, topics.input)
    producer.produce(first)
    assert producer.end_offsets().get(0, 0) > hang_from + BATCH, "partition 0 got too few messages to test"
    producer.start_paced(second, rate=12.0)  # ~10 s of more traffic while we watch the commits

    history: list[dict[int, int]] = []
    livez: list[int] = []
    watch_until = time.monotonic() + 15.0
    with GroupOffsets(broker, worker.env["STREAM_GROUP_ID"], topics.input) as offsets:
        while True:
            history.append(offsets.committed())
            ends = producer.end_offsets()
            others_done = all(history[-1][p] >= ends.get(p, 0) for p in range(1, PARTITIONS))
            if time.monotonic() > watch_until and (others_done or time.monotonic() > watch_until + 10.0):
                break
            assert worker.alive(), f"worker exited ({worker.proc.returncode}) while a publish hung\n{worker.tail()}"
            livez.append(worker.get("/livez")[0])
            time.sleep(0.5)
        producer.join()
        final = offsets.committed()
    ends = producer.end_offsets()
    hung = [e for e in fault_events(tmp_path) if e["kind"] == "send_hang"]
    max_p0 = max(h[0] for h in [*history, final])
    figures = {"hang_from_offset": hang_from, "hung_outputs": len(hung), "max_committed_p0": max_p0,
               "final_committed": final, "end_offsets": ends, "polls": len(history)}
    stalled = {p: (final[p], ends.get(p, 0)) for p in range(1, PARTITIONS) if final[p] < ends.get(p, 0)}
    alive_until_kill = worker.alive()
    worker.kill()
    missing, records = _restart_clean_and_check(broker, worker, topics, keys, workers)
    figures.update(other_partitions_stalled=stalled, missing=len(missing), duplicates=_duplicates(records),
                   products=len(keys))
    _report("hang", **figures)
    assert hung and min(e["offset"] for e in hung) == hang_from, f"the hang was not injected at {hang_from}: {hung[:3]}"
    assert alive_until_kill, "the worker exited while a publish hung"
    assert max_p0 <= hang_from, f"partition 0 committed past the first unacknowledged input: {figures}"
    assert any(h[p] > 0 for h in history for p in range(PARTITIONS)), f"nothing was ever committed: {figures}"
    assert 503 in livez, f"the stall was never reported on /livez: {livez}"
    assert not missing, f"{len(missing)} products lost"


# -- 2. publish fails for a while ----------------------------------------------------------------------


def test_publish_failures_stop_the_worker_and_lose_nothing(broker: str, test_bundle: Path, tmp_path: Path,
                                                           workers: list[WorkerProcess]) -> None:
    """After the 60th send every send raises for 4 s. The worker must stop with a non-zero exit (or, if
    it retries, survive and deliver everything); the committed offset of a partition never passes its
    first input whose publish failed; a clean restart delivers every product, and the duplicates are
    at most the first run's outputs of inputs beyond the final commit."""
    topics = WorkerTopics.create(broker, "fault-pubfail")
    worker = start_faulty_worker(broker, topics, test_bundle, tmp_path,
                                 {"send_fail_after": 60, "send_fail_seconds": 4, "send_fail_mode": "raise"}, **SMALL)
    workers.append(worker)
    events = _events(300, seed=23)
    keys = _keys(events)
    producer = TrackedProducer(broker, topics.input)
    producer.produce(events)

    history: list[tuple[float, dict[int, int]]] = []  # (wall time, committed offsets)
    started = time.monotonic()
    with GroupOffsets(broker, worker.env["STREAM_GROUP_ID"], topics.input) as offsets:
        while worker.alive() and time.monotonic() - started < 45.0:
            history.append((time.time(), offsets.committed()))
            injected = fault_events(tmp_path)
            if injected and time.time() - max(e["t"] for e in injected) > 15.0:
                break  # still alive 15 s after the last failure: it retried and survived
            time.sleep(0.5)
        exited_after = round(time.monotonic() - started, 1)
        history.append((time.time(), offsets.committed()))
    failed = [e for e in fault_events(tmp_path) if e["kind"] == "send_raise"]
    assert failed, f"no publish failure was injected\n{worker.tail()}"
    first_failed: dict[int, int] = {}
    for e in failed:
        if e["partition"] is not None:
            first_failed[e["partition"]] = min(first_failed.get(e["partition"], e["offset"]), e["offset"])
    survived = worker.alive()
    # A worker that survives by retrying may commit past a failed input once it was delivered after
    # all; until the last injected failure it may not. A worker that stops may never.
    last_failure = max(e["t"] for e in failed)
    watched = [c for t, c in history if not survived or t <= last_failure]
    max_committed = {p: max(c[p] for c in watched) for p in range(PARTITIONS)}
    final = history[-1][1]
    figures: dict[str, Any] = {"failed_sends": len(failed), "first_failed_offset": first_failed,
                               "max_committed": max_committed, "end_offsets": producer.end_offsets()}
    passed_failure = {p: (max_committed[p], offset) for p, offset in first_failed.items() if max_committed[p] > offset}
    figures["survived"] = survived
    if passed_failure:
        _report("publish_fails", **figures)
    assert not passed_failure, f"committed past a failed publish (committed, first failed offset): {figures}"
    if survived:  # it retries: it must then deliver everything by itself
        by_key = wait_for_keys(broker, topics.output, keys, timeout=120)
        missing = keys - set(by_key)
        assert worker.terminate() == 0, worker.tail()
        records = read_topic(broker, topics.output)
        figures.update(missing=len(missing), duplicates=_duplicates(records))
        _report("publish_fails", **figures)
        assert not missing, f"{len(missing)} products lost"
        return

    code = worker.proc.returncode
    figures.update(exit_code=code, exited_after_s=exited_after)
    assert code != 0, f"the worker exited 0 after failed publishes: {figures}\n{worker.tail()}"
    first_run = read_topic(broker, topics.output)
    beyond_commit = sum(1 for r in first_run if r["source"]["offset"] >= final[r["source"]["partition"]])
    missing, records = _restart_clean_and_check(broker, worker, topics, keys, workers)
    duplicates = _duplicates(records)
    figures.update(first_run_outputs=len(first_run), final_committed=final, missing=len(missing),
                   duplicates=duplicates, duplicate_bound=beyond_commit)
    _report("publish_fails", **figures)
    assert not missing, f"{len(missing)} products lost: {figures}"
    assert duplicates <= beyond_commit, f"more duplicates than outputs beyond the last commit: {figures}"


# -- 3. the model fails every call -------------------------------------------------------------------


def test_broken_model_stops_the_worker_without_committing(broker: str, test_bundle: Path, tmp_path: Path,
                                                          workers: list[WorkerProcess]) -> None:
    """Every model call after the warm-up raises: the model is broken, not fed poison. The worker must
    exit non-zero within 30 s, commit nothing (not even while stopping), dead-letter nothing and
    publish no category; a clean restart then categorizes every product."""
    bound_s = 30.0
    topics = WorkerTopics.create(broker, "fault-model")
    worker = start_faulty_worker(broker, topics, test_bundle, tmp_path, {"predict_fail_after": 1}, **SMALL)
    workers.append(worker)
    events = _events(100, seed=24)
    keys = _keys(events)
    producer = TrackedProducer(broker, topics.input)
    producer.produce(events)
    ends = producer.end_offsets()
    started = time.monotonic()
    max_committed = dict.fromkeys(range(PARTITIONS), -1)
    with GroupOffsets(broker, worker.env["STREAM_GROUP_ID"], topics.input) as offsets:
        while True:
            alive = worker.alive()  # read before the offsets: the last reading follows the exit
            stopped_after = time.monotonic() - started
            for p, offset in offsets.committed().items():
                max_committed[p] = max(max_committed[p], offset)
            if not alive or stopped_after > bound_s:
                break
            if all(max_committed[p] >= ends.get(p, 0) for p in range(PARTITIONS)):
                break  # everything committed already: no exit to wait for
            time.sleep(0.5)
    if alive:
        worker.kill()
    dlq = read_topic(broker, topics.dlq, idle=2.0)
    categories = read_topic(broker, topics.output, idle=1.0)
    failures = [e for e in fault_events(tmp_path) if e["kind"] == "predict_raise"]
    committed_any = any(o >= 0 for o in max_committed.values())
    missing, _ = _restart_clean_and_check(broker, worker, topics, keys, workers, timeout=30)
    figures = {"exited": not alive, "exit_code": None if alive else worker.proc.returncode,
               "seconds_to_exit": round(stopped_after, 1) if not alive else None,
               "max_committed": max_committed, "end_offsets": ends, "dead_letters": len(dlq),
               "categories": len(categories), "failed_model_calls": len(failures),
               "missing_after_clean_restart": len(missing), "products": len(keys)}
    _report("broken_model", **figures)
    assert failures, "the model fault was not injected"
    assert not committed_any, f"offsets committed for a broken model: {figures}"
    assert not dlq, f"a broken model's messages were dead-lettered: {figures}"
    assert not categories, f"categories published by a broken model: {figures}"
    assert not alive, f"worker still running {bound_s}s after its model broke: {figures}"
    assert worker.proc.returncode != 0, f"worker exited 0 with a broken model: {figures}"
    assert not missing, f"{len(missing)} products lost: {figures}"


# -- 4. SIGKILL mid-batch ------------------------------------------------------------------------------


def test_sigkill_mid_batch_duplicates_bounded_by_one_commit_interval(broker: str, test_bundle: Path,
                                                                     tmp_path: Path,
                                                                     workers: list[WorkerProcess]) -> None:
    """SIGKILL while batches are in flight: nothing lost; the duplicates after a restart are at most the
    outputs produced in the last (commit interval + 3 s) before the kill (processed_at), since Faust
    commits every broker_commit_interval and an output older than that was committed."""
    topics = WorkerTopics.create(broker, "fault-kill")
    # A slightly slower model: the backlog lasts, so the kill lands with batches in flight.
    worker = start_faulty_worker(broker, topics, test_bundle, tmp_path, {"predict_delay_s": 0.3}, **SMALL)
    workers.append(worker)
    events = _events(800, seed=25)
    keys = _keys(events)
    TrackedProducer(broker, topics.input).produce(events)
    # Let it run well past one bound window, so the bound is smaller than everything it produced.
    _wait_published(worker, topics, 1)
    time.sleep(2 * (COMMIT_INTERVAL_S + 3.0))
    at_kill = _wait_in_flight(worker, topics, 1)
    worker.kill()
    killed_at = time.time()
    before = read_topic(broker, topics.output)
    window = COMMIT_INTERVAL_S + 3.0
    bound = sum(1 for r in before if _processed_at(r) >= killed_at - window)

    missing, records = _restart_clean_and_check(broker, worker, topics, keys, workers)
    duplicates = _duplicates(records)
    _report("sigkill", outputs_before_kill=len(before), at_kill=at_kill,
            duplicates=duplicates, duplicate_bound=bound, bound_window_s=window, missing=len(missing),
            products=len(keys))
    assert len(_keys_of(before)) < len(keys), "the kill came too late to test anything"
    assert bound < len(before), f"the bound ({bound}) covers every output before the kill ({len(before)})"
    assert not missing, f"{len(missing)} products lost"
    assert duplicates <= bound, f"{duplicates} duplicates > {bound} outputs of the last {window}s before the kill"
    # A duplicate has the same key and, apart from products near a tie (INT8 dynamic quantization
    # scales activations per batch), the same decision.
    by_key: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault(record["_key"], []).append(record)
    duplicated = [v for v in by_key.values() if len(v) > 1]
    flipped = [v for v in duplicated if len({r["top_category"] for r in v}) > 1]
    assert len(flipped) <= max(2, 0.05 * len(duplicated)), [[r["categories"][:2] for r in v] for v in flipped]


# -- 5. SIGTERM with work in flight --------------------------------------------------------------------


def test_sigterm_with_batches_in_flight_drains_and_commits(broker: str, test_bundle: Path, tmp_path: Path,
                                                           workers: list[WorkerProcess]) -> None:
    """SIGTERM at a moment /metrics shows a batch in flight (and more consumed than published): the
    worker finishes it, commits, exits 0; a restart finds nothing lost and nothing processed twice."""
    topics = WorkerTopics.create(broker, "fault-term")
    worker = start_faulty_worker(broker, topics, test_bundle, tmp_path, {"predict_delay_s": 0.5}, **SMALL)
    workers.append(worker)
    events = _events(400, seed=26)
    keys = _keys(events)
    TrackedProducer(broker, topics.input).produce(events)
    seen = _wait_in_flight(worker, topics, 60)
    started = time.monotonic()
    code = worker.terminate(timeout=60)
    stop_seconds = time.monotonic() - started
    last_run = worker.log_path.read_text(errors="replace").rsplit("===== start #", 1)[-1]

    missing, records = _restart_clean_and_check(broker, worker, topics, keys, workers)
    duplicates = _duplicates(records)
    _report("sigterm", at_signal=seen, stop_seconds=round(stop_seconds, 2), exit_code=code,
            missing=len(missing), duplicates=duplicates, products=len(keys))
    assert code == 0, f"SIGTERM exit code {code}\n{last_run[-5000:]}"
    assert "Traceback" not in last_run, last_run[-5000:]
    assert not missing, f"{len(missing)} products lost"
    assert duplicates == 0, f"{duplicates} products processed twice after a clean stop"


# -- 6. broker frozen ------------------------------------------------------------------------------------


def test_frozen_broker_neither_loses_nor_restarts(test_bundle: Path, tmp_path: Path,
                                                  workers: list[WorkerProcess]) -> None:
    """A private broker is SIGSTOPped for 30 s mid-stream (more products are produced meanwhile, held
    by the producer), then SIGCONTed: every product is categorized and the worker process is the same
    one, alive throughout (it neither exited nor restarted)."""
    freeze_s = 30.0
    with running_broker() as private:
        broker_pid = recorded_pid(int(private.rpartition(":")[2]))
        assert broker_pid is not None, "private broker pid unknown"
        topics = WorkerTopics.create(private, "fault-freeze")
        worker = start_worker(private, topics, test_bundle, tmp_path, **SMALL)
        workers.append(worker)
        pid = worker.proc.pid
        first, second = _events(200, seed=27), _events(200, seed=28)
        second = [e for e in second if str(e["product_id"]) not in _keys(first)]
        keys = _keys(first) | _keys(second)
        producer = TrackedProducer(private, topics.input)
        producer.produce(first)
        _wait_published(worker, topics, 50)
        frozen_at = time.monotonic()
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            producer.start_paced(second, rate=20.0)  # queued in the producer while the broker is frozen
            while time.monotonic() - frozen_at < freeze_s:
                assert worker.alive(), f"worker exited ({worker.proc.returncode}) while the broker was frozen"
                time.sleep(0.5)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        resumed = time.monotonic()
        producer.join(timeout=120)
        by_key = wait_for_keys(private, topics.output, keys, timeout=150)
        recovered_s = time.monotonic() - resumed
        missing = keys - set(by_key)
        same = worker.alive() and worker.proc.pid == pid and worker.starts == 1
        duplicates = sum(len(v) - 1 for v in by_key.values())
        code = worker.terminate()
        _report("broker_frozen", freeze_s=freeze_s, seconds_to_all_outputs_after_resume=round(recovered_s, 1),
                missing=len(missing), duplicates=duplicates, same_worker_process=same, exit_code=code,
                products=len(keys))
        assert not missing, f"{len(missing)} products lost after the freeze\n{worker.tail()}"
        assert same, f"the worker did not survive the freeze\n{worker.tail()}"
        assert code == 0, f"exit code {code} after the freeze\n{worker.tail()}"


# -- 7. rebalance ------------------------------------------------------------------------------------------


def test_rebalance_mid_stream_duplicates_bounded(broker: str, test_bundle: Path, tmp_path: Path,
                                                 workers: list[WorkerProcess]) -> None:
    """A second worker joins the group while products flow. Nothing is lost and the duplicates are at
    most one commit interval of throughput (the most outputs in any commit-interval window) plus the
    in-flight batches of the revoked partitions (max_batches_in_flight x batch_size): that is what an
    uncommitted revoked partition can hand over; a revocation that drains and commits gives 0."""
    topics = WorkerTopics.create(broker, "fault-rebalance")
    first = start_worker(broker, topics, test_bundle, tmp_path / "a", **SMALL)
    workers.append(first)
    events = _events(500, seed=29)
    keys = _keys(events)
    producer = TrackedProducer(broker, topics.input).start_paced(events, rate=20.0)
    _wait_published(first, topics, 40)
    second = start_worker(broker, topics, test_bundle, tmp_path / "b", ready=False,
                          group_id=first.env["STREAM_GROUP_ID"], **SMALL)
    workers.append(second)
    second.wait_ready(timeout=90)
    produced_when_joined = len(producer.placed)
    producer.join(timeout=120)
    by_key = wait_for_keys(broker, topics.output, keys, timeout=150)
    missing = keys - set(by_key)
    consumed = [metric_values(w).get("stream_messages_consumed_total", 0.0) for w in (first, second)]
    codes = [first.terminate(), second.terminate()]
    records = read_topic(broker, topics.output)
    duplicates = _duplicates(records)
    stamps = sorted(_processed_at(r) for r in records)
    peak, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] < t - COMMIT_INTERVAL_S:
            j += 1
        peak = max(peak, i - j + 1)
    bound = peak + IN_FLIGHT * BATCH
    _report("rebalance", produced_when_second_ready=produced_when_joined, products=len(keys),
            consumed_per_worker=consumed, missing=len(missing), duplicates=duplicates, duplicate_bound=bound,
            peak_outputs_per_commit_interval=peak, exit_codes=codes)
    assert produced_when_joined < len(keys), "the stream ended before the second worker joined"
    assert not missing, f"{len(missing)} products lost"
    assert all(c > 0 for c in consumed), f"the second worker took no partition: {consumed}"
    assert duplicates <= bound, f"{duplicates} duplicates > bound {bound}"
    assert codes == [0, 0], f"exit codes {codes}"


# -- the launcher itself (in process, no broker) -----------------------------------------------------------


def test_launcher_injects_exactly_what_it_is_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The two seams, each fault kind, and nothing when no rule matches (so a fault test that passes
    is not passing because its fault never fired). In process, with a fake Faust topic."""
    import asyncio

    from stream_app.core.pipeline import Pipeline
    from stream_app.worker.model_process import ModelProcess
    from stream_app.worker.transport import FaustPublisher
    from tests.support import fault_launcher as launcher

    real_send = FaustPublisher.send
    monkeypatch.setattr(FaustPublisher, "send", real_send)  # monkeypatch restores it after the test
    monkeypatch.setattr(Pipeline, "predict", lambda self, texts: [f"p:{t}" for t in texts])
    monkeypatch.setattr(ModelProcess, "predict", lambda self, texts: [f"m:{t}" for t in texts])
    monkeypatch.setattr(ModelProcess, "start", lambda self: None)

    class Topic:
        def __init__(self) -> None:
            self.sent = 0

        async def send(self, key: Any, value: bytes, force: bool) -> Any:
            self.sent += 1
            future = asyncio.get_running_loop().create_future()
            future.set_result("ack")
            return future

    loop = asyncio.new_event_loop()

    def send(publisher: Any, partition: int, offset: int) -> Any:
        value = json.dumps({"source": {"partition": partition, "offset": offset}}).encode()
        return loop.run_until_complete(publisher.send("out", b"k", value))

    def settle(awaitable: Any, timeout: float) -> str:
        try:
            return f"ok:{loop.run_until_complete(asyncio.wait_for(awaitable, timeout))}"
        except TimeoutError:
            return "timeout"
        except launcher.InjectedFault:
            return "fault"

    events = str(tmp_path / "faults.jsonl")
    try:
        for action, expected in [("hang", "timeout"), ("delay:0.3", "ok:ack"), ("fail", "fault")]:
            FaustPublisher.send = real_send
            launcher.install({"FAULT_SEND_MATCH": "0:5-6,2:9-", "FAULT_SEND_ACTION": action,
                              "FAULT_EVENTS_PATH": events})
            topic = Topic()
            publisher = FaustPublisher({"out": topic})
            started = time.monotonic()
            assert settle(send(publisher, 0, 6), 0.2 if action == "hang" else 2.0) == expected, action
            if action.startswith("delay"):
                assert time.monotonic() - started >= 0.29
            for partition, offset in [(0, 4), (0, 7), (1, 6)]:  # outside every rule: untouched
                assert settle(send(publisher, partition, offset), 2.0) == "ok:ack"
            assert topic.sent == (4 if action.startswith("delay") else 3), action

        FaustPublisher.send = real_send
        launcher.install({"FAULT_SEND_MATCH": "2:9-", "FAULT_SEND_ACTION": "raise"})
        with pytest.raises(launcher.InjectedFault):
            send(FaustPublisher({"out": Topic()}), 2, 10)

        FaustPublisher.send = real_send
        launcher.install({"FAULT_SEND_FAIL_AFTER": "2", "FAULT_SEND_FAIL_SECONDS": "0.3"})
        publisher = FaustPublisher({"out": Topic()})
        outcomes = []
        for i in range(5):
            try:
                outcomes.append(settle(send(publisher, 1, i), 2.0))
            except launcher.InjectedFault:
                outcomes.append("raised")
            if i == 3:
                time.sleep(0.35)  # the failure span (0.3 s from the first failure) is over
        assert outcomes == ["ok:ack", "ok:ack", "raised", "raised", "ok:ack"], outcomes
    finally:
        loop.close()

    launcher.install({"FAULT_PREDICT_FAIL_AFTER": "1"})
    assert Pipeline.predict(None, ["warm up"]) == ["p:warm up"]  # call 1: the warm-up passes
    with pytest.raises(launcher.InjectedFault):
        Pipeline.predict(None, ["a", "b"])
    launcher.install({"FAULT_PREDICT_FAIL_AFTER": "1"})  # the same rule at the model process's seam
    ModelProcess.start(None)  # type: ignore[arg-type]  # its start-up canary is call 1, the warm-up
    with pytest.raises(launcher.InjectedFault):
        ModelProcess.predict(None, ["a"])  # type: ignore[arg-type]
    assert [e["kind"] for e in fault_events(tmp_path)] == ["send_hang", "send_delay", "send_fail"]
