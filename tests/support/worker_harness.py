"""Helpers to run the real worker (``python -m stream_app worker``) as a subprocess and talk to it.

Everything goes through the real broker with confluent-kafka clients; topics are unique per use.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from stream_app.broker import free_port
from stream_app.kafka.admin import create_topics
from tests.fixtures.bundle import DATASETS_DIR, ELO7, FASHION_STYLES, FASHION_TEXT, ROOT  # noqa: F401 - re-exported

PARTITIONS = 3


@dataclass(frozen=True)
class WorkerTopics:
    input: str
    output: str
    drift: str
    dlq: str

    @classmethod
    def create(cls, broker: str, prefix: str, partitions: int = PARTITIONS) -> WorkerTopics:
        tag = uuid.uuid4().hex[:8]
        topics = cls(f"{prefix}-in-{tag}", f"{prefix}-cat-{tag}", f"{prefix}-drift-{tag}", f"{prefix}-dlq-{tag}")
        create_topics(broker, {topics.input: partitions, topics.output: partitions, topics.drift: 1,
                               topics.dlq: partitions})
        return topics


# Every worker subprocess a test started: a test that fails before stopping its worker must not
# leave it running (it has its own session, so it would outlive pytest).
_RUNNING: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftover_workers() -> None:
    for proc in _RUNNING:
        if proc.poll() is None:
            proc.kill()


@dataclass
class WorkerProcess:
    """One worker subprocess; its output goes to ``log_path``."""

    env: dict[str, str]
    log_path: Path
    web_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Any = field(default=None, repr=False)

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start #{self.starts + 1} =====\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_app", "worker"], cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        _RUNNING.append(self.proc)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def model_processes(self) -> list[int]:
        """Pids of the worker's live model processes (children running stream_app.worker.model_process)."""
        assert self.proc is not None
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                    state = Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0]
                    if b"stream_app.worker.model_process" in cmdline and state != "Z":
                        pids.append(int(child))
        return pids

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"worker exited ({self.proc.returncode if self.proc else None}):\n{self.tail()}")
            try:
                if self.get("/readyz", timeout=2.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def worker_env(broker: str, topics: WorkerTopics, bundle: Path, data_dir: Path, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update(
        {
            "STREAM_BROKERS": broker,
            "STREAM_INPUT_TOPIC": topics.input,
            "STREAM_OUTPUT_TOPIC": topics.output,
            "STREAM_DRIFT_TOPIC": topics.drift,
            "STREAM_DLQ_TOPIC": topics.dlq,
            "STREAM_PARTITIONS": str(PARTITIONS),
            "STREAM_GROUP_ID": f"test-worker-{uuid.uuid4().hex[:8]}",
            "STREAM_BUNDLE_PATH": str(bundle),
            "STREAM_BATCH_SIZE": "32",
            "STREAM_BATCH_MAX_WAIT_MS": "20",
            "STREAM_INFERENCE_THREADS": "1",
            "STREAM_DRIFT_WINDOW": "200",
            "STREAM_DATA_DIR": str(data_dir),
            "STREAM_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"STREAM_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


def start_worker(broker: str, topics: WorkerTopics, bundle: Path, workdir: Path, ready: bool = True,
                 **overrides: Any) -> WorkerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = worker_env(broker, topics, bundle, workdir / "data", web_port=port, **overrides)
    worker = WorkerProcess(env=env, log_path=workdir / "worker.log", web_port=port).start()
    if ready:
        worker.wait_ready()
    return worker


# -- data ------------------------------------------------------------------------------------------


def elo7_rows(n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` Elo7 rows with distinct product ids (the catalog repeats ids: one row per search click)."""
    frame = pd.read_parquet(ELO7, columns=["product_id", "title", "concatenated_tags", "creation_date", "category"])
    frame = frame.drop_duplicates("product_id").sample(n=n, random_state=seed)
    return frame.reset_index(drop=True)


def fashion_rows(n: int, seed: int = 7) -> pd.DataFrame:
    styles = pd.read_csv(FASHION_STYLES, on_bad_lines="skip", usecols=["id", "articleType", "baseColour"])
    text = pd.read_csv(FASHION_TEXT)
    assert len(styles) == len(text), "fashion files must be row-aligned"
    frame = pd.concat([styles.reset_index(drop=True), text.reset_index(drop=True)], axis=1)
    frame = frame.dropna(subset=["productDisplayName"]).sample(n=n, random_state=seed)
    return frame.reset_index(drop=True)


def elo7_event(row: Any) -> dict[str, Any]:
    return {"product_id": int(row.product_id), "title": str(row.title),
            "tags": str(row.concatenated_tags) if isinstance(row.concatenated_tags, str) else "",
            "event_time": str(row.creation_date)}


def fashion_event(row: Any) -> dict[str, Any]:
    tags = " ".join(str(x) for x in (row.articleType, row.baseColour) if isinstance(x, str))
    return {"product_id": f"fashion-{int(row.id)}", "title": str(row.productDisplayName), "tags": tags}


# -- Kafka -----------------------------------------------------------------------------------------


def produce(broker: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "enable.idempotence": False, "acks": "all"})
    errors: list[str] = []
    count = 0
    for key, value in messages:
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0, "undelivered messages"
    assert not errors, errors[:3]
    return count


def produce_events(broker: str, topic: str, events: Iterable[dict[str, Any]]) -> int:
    return produce(broker, topic, ((str(e["product_id"]).encode(), json.dumps(e).encode()) for e in events))


def reading(broker: str, topics: Iterable[str], partitions: int, **config: Any) -> Consumer:
    """A consumer assigned to every partition of ``topics`` from the beginning (no group join)."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"harness-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "session.timeout.ms": 6000, **config})
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
    return consumer


def poll_records(consumer: Consumer, stop: Callable[[], bool]) -> Iterator[Any]:
    """The records ``consumer`` polls until ``stop()`` is true (asked before every poll), skipping
    end-of-partition events; any other consumer error fails the test. Closes the consumer at the end."""
    try:
        while not stop():
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                # confluent_kafka's public name for librdkafka's internal code (the underscore is theirs)
                if msg.error().code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - public constant
                    continue
                raise AssertionError(f"consume {msg.topic()}: {msg.error()}")
            yield msg
    finally:
        consumer.close()


def iter_topic(broker: str, topic: str, timeout: float, partitions: int) -> Iterator[Any]:
    """Every record of ``topic`` from the beginning until ``timeout`` passes (generator; close it)."""
    deadline = time.monotonic() + timeout
    yield from poll_records(reading(broker, [topic], partitions), lambda: time.monotonic() >= deadline)


def collect_json(broker: str, topic: str, *, until: int | None = None, key_count: bool = False,
                 timeout: float = 60.0, partitions: int = PARTITIONS,
                 idle: float | None = None) -> list[dict[str, Any]]:
    """JSON values of ``topic``; stops once ``until`` records (or distinct keys when ``key_count``) arrived,
    after ``idle`` seconds without a record (when given), or at ``timeout``."""
    out: list[dict[str, Any]] = []
    keys: set[bytes] = set()
    last = time.monotonic()
    gen = iter_topic(broker, topic, timeout, partitions)
    try:
        for msg in gen:
            doc = json.loads(msg.value())
            doc["_key"] = msg.key().decode() if msg.key() is not None else None
            doc["_partition"] = msg.partition()
            out.append(doc)
            keys.add(msg.key())
            last = time.monotonic()
            done = len(keys) if key_count else len(out)
            if until is not None and done >= until:
                break
            if idle is not None and time.monotonic() - last > idle:
                break
    finally:
        gen.close()
    return out


def wait_for_keys(broker: str, topic: str, expected: set[str], timeout: float = 120.0,
                  partitions: int = PARTITIONS) -> dict[str, list[dict[str, Any]]]:
    """Records by key until every ``expected`` key has arrived (or timeout)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    gen = iter_topic(broker, topic, timeout, partitions)
    try:
        for msg in gen:
            key = msg.key().decode()
            doc = json.loads(msg.value())
            by_key.setdefault(key, []).append(doc)
            if expected <= by_key.keys():
                break
    finally:
        gen.close()
    return by_key


# -- fault injection, commits, metrics (tests/e2e/test_faults.py) ----------------------------------------

FAULT_LAUNCHER = ("-m", "tests.support.fault_launcher")


@dataclass
class LaunchedWorkerProcess(WorkerProcess):
    """A `WorkerProcess` started with ``python -m tests.support.fault_launcher`` (the real worker CLI with the
    ``FAULT_*`` faults of its env injected) instead of ``python -m stream_app worker``."""

    module_args: tuple[str, ...] = FAULT_LAUNCHER

    def start(self) -> LaunchedWorkerProcess:
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== start #{self.starts + 1} ({' '.join(self.module_args)}) =====\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen([sys.executable, *self.module_args], cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        _RUNNING.append(self.proc)
        return self

    def without_faults(self) -> WorkerProcess:
        """A plain worker (``python -m stream_app worker``) with the same settings, group, port and log."""
        env = {k: v for k, v in self.env.items() if not k.startswith("FAULT_")}
        return WorkerProcess(env=env, log_path=self.log_path, web_port=self.web_port, starts=self.starts)


def start_faulty_worker(broker: str, topics: WorkerTopics, bundle: Path, workdir: Path,
                        faults: dict[str, Any], ready: bool = True, **overrides: Any) -> LaunchedWorkerProcess:
    """Like `start_worker`, through the fault launcher; ``faults`` are ``FAULT_*`` variables (the prefix
    may be omitted: ``{"send_match": "0:40-"}``). Injected faults are logged to ``workdir/faults.jsonl``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = worker_env(broker, topics, bundle, workdir / "data", web_port=port, **overrides)
    env["FAULT_EVENTS_PATH"] = str(workdir / "faults.jsonl")
    for name, value in faults.items():
        key = name.upper() if name.upper().startswith("FAULT_") else f"FAULT_{name.upper()}"
        env[key] = str(value)
    worker = LaunchedWorkerProcess(env=env, log_path=workdir / "worker.log", web_port=port).start()
    if ready:
        worker.wait_ready()
    return worker


def fault_events(workdir: Path) -> list[dict[str, Any]]:
    """The faults the launcher injected (one dict per fault), oldest first."""
    path = workdir / "faults.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class GroupOffsets:
    """Committed offsets of a consumer group, read from the broker without joining the group
    (only ``committed()`` is called: no subscribe, no poll, so no rebalance is triggered)."""

    def __init__(self, broker: str, group: str, topic: str, partitions: int = PARTITIONS) -> None:
        self.topic = topic
        self.partitions = partitions
        self._consumer = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})

    def committed(self, timeout: float = 10.0) -> dict[int, int]:
        """Partition -> committed offset (the next offset to read; -1 when none was committed)."""
        tps = self._consumer.committed([TopicPartition(self.topic, p) for p in range(self.partitions)],
                                       timeout=timeout)
        return {tp.partition: (tp.offset if tp.offset >= 0 else -1) for tp in tps}

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> GroupOffsets:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def metric_values(worker: WorkerProcess, timeout: float = 5.0) -> dict[str, float]:
    """``/metrics`` as ``{"name{labels}": value}`` (samples only, comments skipped)."""
    status, body = worker.get("/metrics", timeout=timeout)
    assert status == 200, (status, body[:200])
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class TrackedProducer:
    """Produces JSON events keyed by product_id and records where each landed ((partition, offset) per
    key, from the delivery reports). ``start_paced`` produces from a thread at a given rate."""

    def __init__(self, broker: str, topic: str) -> None:
        self.topic = topic
        self._producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "enable.idempotence": False,
                                   "acks": "all"})
        self.placed: dict[str, tuple[int, int]] = {}
        self.errors: list[str] = []
        self._thread: Any = None
        self._stop = False

    def _delivered(self, err: Any, msg: Any) -> None:
        if err:
            self.errors.append(str(err))
        else:
            self.placed[msg.key().decode()] = (msg.partition(), msg.offset())

    def produce(self, events: Iterable[dict[str, Any]]) -> int:
        count = 0
        for event in events:
            self._producer.produce(self.topic, key=str(event["product_id"]).encode(), value=json.dumps(event).encode(),
                                   on_delivery=self._delivered)
            self._producer.poll(0)
            count += 1
        self.flush()
        return count

    def flush(self) -> None:
        assert self._producer.flush(30) == 0, "undelivered messages"
        assert not self.errors, self.errors[:3]

    def start_paced(self, events: Iterable[dict[str, Any]], rate: float) -> TrackedProducer:
        import threading

        def run() -> None:
            started = time.monotonic()
            for i, event in enumerate(events):
                if self._stop:
                    break
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._producer.produce(self.topic, key=str(event["product_id"]).encode(),
                                       value=json.dumps(event).encode(), on_delivery=self._delivered)
                self._producer.poll(0)
            self._producer.flush(30)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 120.0, stop: bool = False) -> None:
        """Wait for the paced thread (``stop=True``: stop producing first)."""
        self._stop = stop
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "paced producer did not finish"
        self.flush()

    def end_offsets(self) -> dict[int, int]:
        """Partition -> one past the last offset produced (0 when nothing went there)."""
        ends: dict[int, int] = {}
        for partition, offset in self.placed.values():
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        return ends
