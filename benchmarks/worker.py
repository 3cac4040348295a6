"""Run the real worker (``python -m stream_app worker``) as a subprocess, and read its output topic.

Same approach as tests/support/worker_harness.py (STREAM_* environment, unique topics, log to a file), but
with the service's production defaults (batch wait, drift window, inference threads) instead of the
tests' fast settings, and without assertions: the benchmarks raise `BenchmarkError` instead.

Contract:
* `WorkerProcess.start()` launches the worker in its own session; `stop()` sends SIGTERM, waits,
  then SIGKILLs; it is idempotent and safe in ``finally`` blocks. On Linux the worker is also
  killed if the benchmark process dies (PR_SET_PDEATHSIG), so no orphan keeps the cores busy.
* The worker is a process tree: the worker and its model processes (STREAM_INFERENCE_PROCESS).
  `cpu_seconds(pid)` is the CPU time (user + system, all threads, the model processes included) the
  worker used so far, from ``/proc/PID/stat``; `process_memory_mb(pid)` sums their memory;
  `assigned_partitions(port)` reads how many input partitions a worker holds from its ``/readyz``
  (None while it does not answer).
* `thread_sched(pid)` / `sched_delta`: per-thread seconds (the model processes' threads included)
  on a CPU and waiting for one (``/proc/PID/task/TID/schedstat``): tells a worker slowed by other
  processes from a slow worker.
* `worker_batch_stats(port)` reads the micro-batch count, mean size and model seconds from a worker's
  ``/metrics``; `batch_delta` turns two readings into what happened in between.
* `OutputCollector` consumes a topic from the beginning on a background thread (``assign``, no
  group join) and records, for each distinct key, the wall-clock time (``time.time()``) its first
  record was received and that record's value. `pause()` / `resume()` stop and restart its fetching
  (stages that keep several configurations running measure one at a time). `close()` stops the
  thread and closes the consumer.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from rich.console import Console

from stream_app.broker import is_ready
from stream_app.core.bundle import Bundle, BundleError
from stream_app.kafka.admin import create_topics

ROOT = Path(__file__).resolve().parents[1]


class BenchmarkError(RuntimeError):
    """A benchmark stage could not complete (the message says which and why)."""


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL the child when the thread that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@dataclass(frozen=True)
class BenchTopics:
    """Unique topic names for one run (Tansu keeps everything in memory; nothing is reused)."""

    input: str
    output: str
    drift: str
    dlq: str
    naive_output: str

    @classmethod
    def create(cls, broker: str, partitions: int) -> BenchTopics:
        tag = uuid.uuid4().hex[:8]
        topics = cls(f"bench-in-{tag}", f"bench-cat-{tag}", f"bench-drift-{tag}", f"bench-dlq-{tag}",
                     f"bench-naive-cat-{tag}")
        # Explicit creation: Tansu would auto-create unknown topics with 4 partitions.
        create_topics(broker, {topics.input: partitions, topics.output: partitions, topics.drift: 1,
                               topics.dlq: partitions, topics.naive_output: partitions})
        return topics


def preflight(broker: str, bundle: Path, console: Console) -> Bundle:
    """The loaded bundle, or exit 2 with the reason printed: no broker answers, or the bundle is invalid."""
    if not is_ready(broker):
        console.print(f"[red]no broker answers at {broker}[/red] "
                      "(start one: python -m stream_app.broker start --port N)")
        raise typer.Exit(2)
    try:
        return Bundle.load(bundle)
    except BundleError as exc:
        console.print(f"[red]bad bundle[/red]: {exc}")
        raise typer.Exit(2) from exc


def worker_env(broker: str, topics: BenchTopics, bundle: Path, data_dir: Path, web_port: int,
               micro_batch: int, model_batch: int, threads: int, partitions: int) -> dict[str, str]:
    """Environment of the worker: the service defaults, except topics, ports and the knobs under test.

    ``micro_batch`` -> STREAM_BATCH_SIZE (max messages per micro-batch taken from the stream);
    ``model_batch`` -> STREAM_MODEL_BATCH_SIZE (texts per onnxruntime call).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update({
        "STREAM_BROKERS": broker,
        "STREAM_INPUT_TOPIC": topics.input,
        "STREAM_OUTPUT_TOPIC": topics.output,
        "STREAM_DRIFT_TOPIC": topics.drift,
        "STREAM_DLQ_TOPIC": topics.dlq,
        "STREAM_PARTITIONS": str(partitions),
        "STREAM_GROUP_ID": f"bench-worker-{uuid.uuid4().hex[:8]}",
        "STREAM_BUNDLE_PATH": str(bundle),
        "STREAM_BATCH_SIZE": str(micro_batch),
        "STREAM_MODEL_BATCH_SIZE": str(model_batch),
        "STREAM_INFERENCE_THREADS": str(threads),
        "STREAM_DATA_DIR": str(data_dir),
        "STREAM_WEB_PORT": str(web_port),
        "STREAM_WEB_BIND": "127.0.0.1",
        "STREAM_LOG_LEVEL": "warning",  # info logging per batch would cost the worker CPU we measure
        "PYTHONUNBUFFERED": "1",
    })
    return env


@dataclass
class WorkerProcess:
    """One worker subprocess; stdout and stderr go to ``log_path``."""

    env: dict[str, str]
    log_path: Path
    cwd: Path = ROOT  # another checkout of the repository runs that checkout's worker code
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_app", "worker"], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchmarkError("worker not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise `BenchmarkError` with the log tail if the worker has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchmarkError(f"worker exited with code {self.proc.returncode}; log tail:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the worker drains and commits), SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the worker and its model processes: the serving model's and a shadow's)."""
    children: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return [pid, *children]


def process_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) in MiB, from /proc/PID/status, summed over ``pid``
    and its children (the sum of the peaks bounds the peak of the sum); ``processes`` says how many."""
    out: dict[str, float] = {"VmRSS": 0.0, "VmHWM": 0.0, "processes": 0}
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue  # a model process that just exited
        out["processes"] += 1
        for line in lines:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] += int(value.split()[0]) / 1024  # kB -> MiB
    return out


def _stat_fields(path: str) -> list[str]:
    stat = Path(path).read_text()
    return stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds so far of ``pid``, its live children (the model processes) and its
    reaped children (a swapped-out model's), from /proc/PID/stat; with ``tid``, of that thread of
    ``pid`` only (/proc/PID/task/TID/stat; the main thread's tid is the pid)."""
    if tid is not None:
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14-15
    fields = _stat_fields(f"/proc/{pid}/stat")
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime: fields 14-17 of proc(5)
    for child in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            child_fields = _stat_fields(f"/proc/{child}/stat")
            ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_sched(pid: int) -> dict[int, tuple[float, float]]:
    """Per thread of ``pid`` and of its children: (seconds on a CPU, seconds runnable but waiting for a
    CPU), from schedstat."""
    out: dict[int, tuple[float, float]] = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{member}/task"):
                try:
                    run, wait, _ = Path(f"/proc/{member}/task/{tid}/schedstat").read_text().split()
                except (OSError, ValueError):
                    continue
                out[int(tid)] = (int(run) / 1e9, int(wait) / 1e9)
    return out


def sched_delta(pid: int, before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]],
                seconds: float) -> dict[str, dict[str, float]]:
    """Shares of ``seconds`` that the busiest thread other than the worker's main thread (the model: the
    model process's main thread, or the inference thread with STREAM_INFERENCE_PROCESS=false) and the main
    thread (the event loop) spent on a CPU and waiting for one: a thread waiting for a CPU is slowed by
    other processes."""
    deltas = {tid: (a[0] - before.get(tid, (0.0, 0.0))[0], a[1] - before.get(tid, (0.0, 0.0))[1])
              for tid, a in after.items()}
    out: dict[str, dict[str, float]] = {}
    others = {tid: d for tid, d in deltas.items() if tid != pid}
    if others:
        busiest = max(others, key=lambda tid: others[tid][0])
        out["inference"] = {"on_cpu": others[busiest][0] / seconds, "waiting_for_cpu": others[busiest][1] / seconds}
    if pid in deltas:
        out["event_loop"] = {"on_cpu": deltas[pid][0] / seconds, "waiting_for_cpu": deltas[pid][1] / seconds}
    return out


_ASSIGNED = re.compile(r"(\d+) input partition")


def assigned_partitions(port: int) -> int | None:
    """Input partitions the worker on ``port`` holds (its /readyz detail); None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            detail = json.loads(response.read()).get("detail", "")
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", "")
    except (OSError, ValueError):
        return None
    if "rebalancing" in detail:
        return 0
    match = _ASSIGNED.search(detail)
    return int(match.group(1)) if match else 0


def worker_counters(port: int, names: Sequence[str]) -> dict[str, float]:
    """The unlabelled samples ``names`` from the worker's /metrics (best effort: {} if unavailable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            values[name] = float(value.split()[0])
    return values


def worker_batch_stats(port: int) -> dict[str, float] | None:
    """Mean micro-batch size from the worker's /metrics (best effort; None if unavailable)."""
    values = worker_counters(port, ("stream_batch_size_sum", "stream_batch_size_count",
                                    "stream_inference_seconds_sum", "stream_inference_seconds_count"))
    if not values.get("stream_batch_size_count"):
        return None
    out = {"batches": values["stream_batch_size_count"],
           "mean_batch_size": values["stream_batch_size_sum"] / values["stream_batch_size_count"]}
    if values.get("stream_inference_seconds_count"):
        out["inference_s_total"] = values["stream_inference_seconds_sum"]
    return out


def batch_delta(before: dict[str, float] | None, after: dict[str, float] | None,
                seconds: float) -> dict[str, float] | None:
    """Micro-batches between two `worker_batch_stats` readings: count, mean size, model busy share."""
    if not before or not after or after["batches"] <= before["batches"]:
        return None
    batches = after["batches"] - before["batches"]
    messages = after["mean_batch_size"] * after["batches"] - before["mean_batch_size"] * before["batches"]
    out = {"batches": batches, "mean_batch_size": messages / batches}
    if "inference_s_total" in after and "inference_s_total" in before:
        busy = after["inference_s_total"] - before["inference_s_total"]
        out["mean_inference_ms"] = busy / batches * 1000
        out["model_busy_share"] = busy / seconds  # of the stage's production time (drain included: an upper bound)
    return out


class OutputCollector:
    """Background reader of one topic: first receive time and first value per distinct key."""

    def __init__(self, broker: str, topic: str, partitions: int) -> None:
        self.topic = topic
        self.first_seen: dict[bytes, float] = {}
        self.values: dict[bytes, bytes] = {}
        self.records = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the main thread compares key sets while this thread inserts
        self._consumer = Consumer({
            "bootstrap.servers": broker,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",  # never joins: assign() below
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,  # small: receive times feed the latency figures
        })
        self._partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        self._consumer.assign(self._partitions)
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"collect-{topic}", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Stop fetching until `resume` (nothing is lost: the reader resumes where it was). Several
        readers polling with a 10 ms fetch wait are real load on a 2-core machine and its broker."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def _run(self) -> None:
        paused = False
        try:
            while not self._stop.is_set():
                if self._paused.is_set() != paused:
                    paused = self._paused.is_set()
                    assigned = self._consumer.assignment()
                    (self._consumer.pause if paused else self._consumer.resume)(assigned)
                msg = self._consumer.poll(0.1)
                if msg is None:
                    continue
                now = time.time()  # per message: poll returns as soon as one is there
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - confluent-kafka's public name
                        self.error = str(msg.error())
                    continue
                self.records += 1
                key = msg.key() or b""
                if key not in self.first_seen:
                    with self._lock:
                        self.first_seen[key] = now
                        self.values[key] = msg.value()
        except Exception as exc:  # noqa: BLE001 - reported by wait_for, never silently lost
            self.error = repr(exc)

    def count(self) -> int:
        return len(self.first_seen)

    def wait_for(self, keys: int | set[bytes], timeout: float, worker: WorkerProcess | None = None) -> bool:
        """Block until ``keys`` distinct keys (a count, or a set that must all arrive) were seen.

        Returns False on timeout; raises `BenchmarkError` if the reader failed or the worker died.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise BenchmarkError(f"reading {self.topic}: {self.error}")
            if worker is not None:
                worker.check_alive()
            with self._lock:
                done = self.count() >= keys if isinstance(keys, int) else keys <= self.first_seen.keys()
            if done:
                return True
            time.sleep(0.05)
        return False

    def snapshot(self) -> dict[bytes, float]:
        """Copy of key -> first receive time."""
        with self._lock:
            return dict(self.first_seen)

    def value_json(self, key: bytes) -> dict[str, Any]:
        with self._lock:
            return json.loads(self.values[key])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._consumer.close()


def run_command(command: Callable[..., None]) -> None:
    """Run a typer command with SIGTERM (a CI timeout, `kill`) taking the Ctrl-C path, so the command's
    cleanup runs: its subprocesses are stopped and its partial JSON written."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    typer.run(command)
