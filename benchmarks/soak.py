"""``python -m benchmarks.soak``: is the worker's memory bounded in bytes? (``make soak``)

Usage::

    python -m benchmarks.soak --bundle models/default --broker 127.0.0.1:9092 \\
        [--messages 1000000] [--flood 300] [--flood-bytes 900000] [--flood-interleave 10] \\
        [--ahead 10000] [--warmup 10000] [--settle 10] [--partitions 6] [--worker-env STREAM_X=VALUE ...]

Contract: the broker at ``--broker`` must be running (``make soak`` starts and stops it). The run
creates its own uniquely named topics (``soak-in-<tag>`` etc., created explicitly) and a unique
consumer group, starts the real worker (``python -m stream_app worker``, service defaults through
`benchmarks.worker.worker_env`, plus any ``--worker-env`` overrides) and stops it with SIGTERM at
the end (also on errors, Ctrl-C and SIGTERM). Three phases, one worker process:

1. **steady**: ``--messages`` Elo7 product events (title, concatenated_tags, creation_date as
   ``event_time``; the catalog's distinct products cycled in a seeded order, ``product_id`` =
   ``<row id>-<i>`` so every message is unique), ~1% malformed (every 100th message: invalid JSON
   or a missing title, alternately), so the dead-letter path is soaked too. They are produced in
   chunks that keep at most ``--ahead`` messages not yet accounted for: the worker always has a
   backlog, and this process never holds the run in memory (Tansu keeps every message it is sent:
   its RSS grew ~1.7 KB per message, input and output together, in a short run: ~1.7 GB a million).
2. **flood**: ``--flood`` messages of ``--flood-bytes`` (~900 KB, under the worker's default
   STREAM_MAX_MESSAGE_BYTES of 1,000,000): valid JSON products whose title or description is that
   much real Elo7 text, or that stay within the input schema's limits and carry the rest in a
   field the worker ignores (the three in turn), every 10th one invalid at that size (invalid
   JSON / no title, alternately), each followed by ``--flood-interleave`` normal products. They are
   produced as fast as the broker takes them (the producer's own queue is capped at 64 MB), so the
   worker faces a backlog of large messages: the case a bound in messages instead of bytes fails.
3. **settle**: ``--settle`` seconds (10) without input, still sampled: does RSS come back down?

Every second it samples the worker's VmRSS/VmHWM (``/proc/PID/status``), its
``stream_messages_consumed_total`` (``/metrics``) and the number of input messages accounted for.
"Accounted for" = distinct source (partition, offset) of the input topic seen on the categories or
the dead-letter topic, read back from the beginning by one confluent-kafka consumer (``assign``, no
group); the offsets are kept in one bit array per partition, so the check costs ~1 bit a message.

Figures: start RSS (first sample once ``--warmup`` messages are accounted for), peak and end RSS of
the steady phase, the least-squares slope of RSS against messages accounted for over the steady
part (after the first 10% of ``--messages``) in MB per 100k messages, the flood's peak RSS and its
rise over the steady peak (the flood's VmHWM counts when it tops the steady one, so a peak between
two samples is not missed), and the messages/s of each phase. MB here = MiB (2^20 bytes).

Checks: every delivered message accounted for (none lost), the worker alive throughout with the
same pid (and the same process start time), its exit code after SIGTERM. One JSON file
``bench-results/soak-<timestamp>.json`` (configuration, figures, checks, every sample) and a table.
Exit code 0 when the checks pass, 1 when a message was lost, the worker died or a stage failed,
2 when no broker answers or the bundle is invalid. Memory figures are reported, not judged.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from benchmarks.data import elo7_path
from benchmarks.run import _git_commit
from benchmarks.worker import (
    BenchmarkError,
    BenchTopics,
    WorkerProcess,
    preflight,
    process_memory_mb,
    run_command,
    worker_env,
)
from stream_app.broker import free_port, recorded_pid
from stream_app.kafka.admin import create_topics
from stream_app.kafka.config import client_config, consumer_config, producer_config
from stream_app.settings import Settings

try:  # the input schema's cap on a description (older trees have none: 100,000 characters is plenty)
    from stream_app.messages import MAX_DESCRIPTION_CHARS
except ImportError:
    MAX_DESCRIPTION_CHARS = 100_000

console = Console(width=None if sys.stdout.isatty() else 150)

# The worker settings that bound its memory in bytes (stream_app/settings.py); recorded with each run.
BYTE_SETTINGS = ("max_bytes_in_flight", "stream_buffer_messages", "fetch_max_bytes", "max_message_bytes")
MALFORMED_EVERY = 100  # one message in 100 is malformed (~1%)
FLOOD_INVALID_EVERY = 10  # one large message in 10 is invalid
# Bytes handed to the producer but not yet acknowledged: above this, read outputs and sample instead
# of producing (the flood would otherwise block in produce() and leave gaps in the samples).
MAX_UNSETTLED_BYTES = 16 * 1_048_576


# -- events ----------------------------------------------------------------------------------------


class EventSource:
    """Product events built from the Elo7 catalog: normal ones and ~900 KB ones, unique keys.

    ``index`` counts every message produced across both phases; it makes the keys unique.
    """

    def __init__(self, path: Path, seed: int, flood_bytes: int) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"Elo7 catalog not found at {path} (set DATASETS_DIR)")
        frame = pd.read_parquet(path, columns=["product_id", "title", "concatenated_tags", "creation_date"])
        frame = frame[frame["title"].fillna("").str.strip() != ""].drop_duplicates("product_id")
        frame = frame.sample(frac=1.0, random_state=seed)
        self.rows: list[tuple[int, str, str, str]] = [
            (int(pid), " ".join(str(title).split()), tags if isinstance(tags, str) else "", str(created))
            for pid, title, tags, created in zip(frame["product_id"], frame["title"], frame["concatenated_tags"],
                                                 frame["creation_date"], strict=True)
        ]
        self.index = 0
        self.malformed = 0  # normal-size messages made malformed on purpose (each must be a dead letter)
        self.large_keys: set[bytes] = set()  # keys of the flood's large messages (their outcome is reported)
        self.flood_bytes = flood_bytes
        # ~flood_bytes of real text (titles and tags, repeated): sliced per message with a moving start.
        corpus = " ".join(f"{title} {tags}" for _, title, tags, _ in self.rows[:5000])
        self._big = (corpus + " ") * (2 * flood_bytes // max(1, len(corpus)) + 2)  # >= 2 x flood_bytes chars

    def _next_row(self) -> tuple[str, tuple[int, str, str, str]]:
        row = self.rows[self.index % len(self.rows)]
        key = f"{row[0]}-{self.index}"
        self.index += 1
        return key, row

    def normal(self) -> tuple[bytes, bytes]:
        """One product event; every ``MALFORMED_EVERY``-th is malformed (invalid JSON or no title)."""
        i = self.index
        key, (_, title, tags, created) = self._next_row()
        event: dict[str, Any] = {"product_id": key, "title": title, "tags": tags, "event_time": created}
        if i % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            self.malformed += 1
            if (i // MALFORMED_EVERY) % 2:
                del event["title"]  # schema violation
            else:
                text = json.dumps(event, ensure_ascii=False)
                return key.encode(), text[: len(text) // 2].encode()  # truncated (still UTF-8): invalid JSON
        return key.encode(), json.dumps(event, ensure_ascii=False).encode()

    def _text(self, nbytes: int, shift: int) -> str:
        start = (shift * 7919) % max(1, len(self._big) - nbytes)
        text = self._big[start : start + nbytes]  # nbytes characters: at least nbytes bytes
        encoded = text.encode()[:nbytes]
        return encoded.decode(errors="ignore").strip()  # cut on a character boundary

    def large(self, j: int) -> tuple[bytes, bytes]:
        """The ``j``-th flood message: ~``flood_bytes`` bytes of JSON, invalid when ``j % 10 == 9``.

        The valid ones rotate: the whole size in the title, in the description, or a product within
        the input schema's limits (description of MAX_DESCRIPTION_CHARS) carrying the rest in a field
        the worker ignores (``details``), which must be categorized. Whether the first two are
        categorized or dead-lettered is the worker's decision (its schema caps a title's and a
        description's length): the reader reports the outcome of each.
        """
        key, (_, title, tags, created) = self._next_row()
        self.large_keys.add(key.encode())
        event: dict[str, Any] = {"product_id": key, "title": title, "tags": tags, "event_time": created}
        overhead = len(json.dumps(event, ensure_ascii=False).encode()) + 32
        invalid = j % FLOOD_INVALID_EVERY == FLOOD_INVALID_EVERY - 1
        if invalid:
            if (j // FLOOD_INVALID_EVERY) % 2:  # no title, ~900 KB description: schema violation
                del event["title"]
                event["description"] = self._text(self.flood_bytes - overhead, j)
                return key.encode(), json.dumps(event, ensure_ascii=False).encode()
            # ~900 KB that is not JSON (an unterminated string)
            raw = json.dumps(event, ensure_ascii=False).encode()[:-1] + b', "description": "'
            return key.encode(), raw + self._text(self.flood_bytes - len(raw), j).encode()
        if j % 3 == 0:
            event["title"] = self._text(self.flood_bytes - overhead, j)
        elif j % 3 == 1:
            event["description"] = self._text(self.flood_bytes - overhead, j)
        else:
            room = self.flood_bytes - overhead - 16
            event["description"] = self._text(min(MAX_DESCRIPTION_CHARS, room), j)[:MAX_DESCRIPTION_CHARS]
            event["details"] = self._text(max(0, room - len(event["description"].encode())), j + 1)
        return key.encode(), json.dumps(event, ensure_ascii=False).encode()


def flood_events(source: EventSource, flood: int, interleave: int) -> Iterator[tuple[bytes, bytes, bool]]:
    """(key, value, is_large): each large message followed by ``interleave`` normal ones."""
    for j in range(flood):
        key, value = source.large(j)
        yield key, value, True
        for _ in range(interleave):
            key, value = source.normal()
            yield key, value, False


# -- producing and accounting ----------------------------------------------------------------------


class SoakProducer:
    """confluent-kafka producer with batching; counts deliveries per partition, keeps failures."""

    def __init__(self, broker: str) -> None:
        self._producer = Producer(producer_config(client_config(broker), **{
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.kbytes": 65_536,  # 64 MB of unsent messages at most (the flood)
            "queue.buffering.max.messages": 100_000,
            "message.max.bytes": 2_000_000,
        }))
        self.produced = 0
        self.produced_bytes = 0
        self.delivered = 0
        self.settled_bytes = 0  # value bytes delivered or failed
        self.errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self.settled_bytes += len(msg)  # the value length
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered += 1

    @property
    def unsettled_bytes(self) -> int:
        """Value bytes handed to the producer and not yet acknowledged (or failed) by the broker."""
        return self.produced_bytes - self.settled_bytes

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.produced += 1
        self.produced_bytes += len(value)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)


class OffsetSet:
    """Distinct (partition, offset) pairs of the input topic, one bit each."""

    def __init__(self) -> None:
        self._bits: dict[int, bytearray] = {}
        self.distinct = 0
        self.duplicates = 0

    def add(self, partition: int, offset: int) -> bool:
        bits = self._bits.setdefault(partition, bytearray())
        byte, bit = divmod(offset, 8)
        if byte >= len(bits):
            bits.extend(b"\0" * max(byte + 1 - len(bits), 65_536))
        if bits[byte] >> bit & 1:
            self.duplicates += 1
            return False
        bits[byte] |= 1 << bit
        self.distinct += 1
        return True


EXPECTED_DLQ_REASONS = ("invalid_json", "schema_violation")  # what the run's malformed messages are
MAX_UNEXPECTED_KEPT = 20


def _dead_letter_example(doc: dict[str, Any]) -> dict[str, object]:
    """The error, the source and the start of the original value of one dead letter."""
    value = doc.get("value")
    try:
        head = base64.b64decode(value)[:300].decode("utf-8", "replace") if value else None
    except (ValueError, TypeError):
        head = None
    return {"error": doc.get("error"), "source": doc.get("source"), "value_size": doc.get("value_size"),
            "value_head": head}


class OutputReader:
    """Reads the categories and dead-letter topics from the beginning; accounts for input offsets."""

    def __init__(self, broker: str, topics: BenchTopics, partitions: int, large_keys: set[bytes]) -> None:
        self.topics = topics
        self.large_keys = large_keys
        self.large_outcomes: Counter[str] = Counter()  # "categorized" or "dead letter: <reason>"
        self.seen = OffsetSet()
        self.outputs = 0  # categories records (duplicates included)
        self.dead_letters = 0  # distinct input offsets that came out as dead letters
        self.dlq_reasons: Counter[str] = Counter()
        # Dead letters the run did not cause on purpose (malformed input is invalid_json or
        # schema_violation): kept with their error, so a finding says what failed.
        self.unexpected: list[dict[str, object]] = []
        self.foreign = 0  # records whose source is not the input topic (none expected)
        self._consumer = Consumer(consumer_config(client_config(broker), **{
            "fetch.wait.max.ms": 100,  # Tansu holds a fetch until this timeout
            "queued.max.messages.kbytes": 32_768,
            "log_level": 4,
        }))
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                               for t in (topics.output, topics.dlq) for p in range(partitions)])

    def poll(self, timeout: float) -> int:
        """Read what is there (waiting up to ``timeout`` s for the first record); returns records read."""
        messages = self._consumer.consume(num_messages=2000, timeout=timeout)
        for msg in messages:
            if msg.error():
                # confluent_kafka's public name for librdkafka's internal code (the underscore is theirs)
                if msg.error().code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - public constant
                    continue
                raise BenchmarkError(f"reading {msg.topic()}: {msg.error()}")
            doc = json.loads(msg.value())
            source = doc.get("source") or {}
            if source.get("topic") != self.topics.input:
                self.foreign += 1
                continue
            new = self.seen.add(int(source["partition"]), int(source["offset"]))
            if msg.topic() == self.topics.dlq:
                reason = str((doc.get("error") or {}).get("reason"))
                if new:
                    self.dead_letters += 1
                    self.dlq_reasons[reason] += 1
                    if reason not in EXPECTED_DLQ_REASONS and len(self.unexpected) < MAX_UNEXPECTED_KEPT:
                        self.unexpected.append(_dead_letter_example(doc))
                outcome = f"dead letter: {reason}"
            else:
                self.outputs += 1
                outcome = "categorized"
            if new and msg.key() in self.large_keys:
                self.large_outcomes[outcome] += 1
        return len(messages)

    @property
    def accounted(self) -> int:
        return self.seen.distinct

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


# -- sampling --------------------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """Process start time (clock ticks since boot, /proc/PID/stat field 22): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def scrape_counter(port: int, name: str, timeout: float = 2.0) -> float | None:
    """Sum of every series of counter ``name`` on the worker's /metrics (None if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return None
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[-1])
            found = True
    return total if found else None


@dataclass
class Sample:
    t: float  # seconds since the worker was started
    phase: str
    produced: int
    accounted: int
    rss_mb: float | None
    hwm_mb: float | None
    consumed_metric: float | None  # the worker's stream_messages_consumed_total
    broker_rss_mb: float | None = None  # Tansu's VmRSS, when it was started by stream_app.broker here


@dataclass
class PhaseResult:
    name: str
    messages: int  # produced in this phase
    bytes: int  # value bytes produced in this phase
    seconds: float  # phase start -> its last message accounted for
    messages_per_s: float
    started_at: float  # seconds since the worker was started
    extra: dict[str, Any] = field(default_factory=dict)


class Soak:
    """One soak run: the worker, the producer, the reader and the samples."""

    def __init__(self, broker: str, topics: BenchTopics, worker: WorkerProcess, web_port: int,
                 partitions: int, report_every: float, stall_timeout: float, large_keys: set[bytes]) -> None:
        self.topics = topics
        self.worker = worker
        self.web_port = web_port
        self.producer = SoakProducer(broker)
        self.reader = OutputReader(broker, topics, partitions, large_keys)
        self.samples: list[Sample] = []
        self.report_every = report_every
        self.stall_timeout = stall_timeout
        self.t0 = time.monotonic()
        self.pid = worker.pid
        self.pid_start_ticks = start_ticks(worker.pid)
        host, _, port = broker.rpartition(":")
        self.broker_pid = recorded_pid(int(port)) if host in ("127.0.0.1", "localhost") and port.isdigit() else None
        self._next_sample = 0.0
        self._next_report = 0.0
        self._last_progress = time.monotonic()
        self._last_accounted = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def check_worker(self) -> None:
        self.worker.check_alive()
        if start_ticks(self.pid) != self.pid_start_ticks:
            raise BenchmarkError(f"worker pid {self.pid} is no longer the process that was started")

    def sample(self, phase: str) -> None:
        self.check_worker()
        try:
            mem = process_memory_mb(self.pid)
        except OSError:
            mem = {}
        broker_rss = None
        if self.broker_pid is not None:
            with contextlib.suppress(OSError):
                broker_rss = process_memory_mb(self.broker_pid).get("VmRSS")
        self.samples.append(Sample(round(self.now(), 3), phase, self.producer.produced, self.reader.accounted,
                                   mem.get("VmRSS"), mem.get("VmHWM"),
                                   scrape_counter(self.web_port, "stream_messages_consumed_total"), broker_rss))

    def _tick(self, phase: str, total: int) -> None:
        now = self.now()
        if now >= self._next_sample:
            self._next_sample = now + 1.0
            self.sample(phase)
            if self.reader.accounted > self._last_accounted:
                self._last_accounted = self.reader.accounted
                self._last_progress = time.monotonic()
            elif time.monotonic() - self._last_progress > self.stall_timeout:
                raise BenchmarkError(
                    f"{phase}: no message accounted for in {self.stall_timeout:.0f} s "
                    f"({self.reader.accounted:,} of {self.producer.delivered:,} delivered); worker log tail:\n"
                    f"{self.worker.tail()}")
        if now >= self._next_report:
            self._next_report = now + self.report_every
            s = self.samples[-1]
            rate = self._recent_rate()
            console.print(
                f"[{now:7.0f} s] {phase:6} produced {self.producer.produced:>10,}  accounted {s.accounted:>10,}"
                f"  (dead letters {self.reader.dead_letters:,})  target {total:,}  RSS {fmt(s.rss_mb, '.1f')} MB"
                f"  {fmt(rate, ',.0f')} msg/s", highlight=False)

    def _recent_rate(self, window: float = 30.0) -> float | None:
        if len(self.samples) < 2:
            return None
        last = self.samples[-1]
        first = next((s for s in self.samples if s.t >= last.t - window), self.samples[0])
        return (last.accounted - first.accounted) / (last.t - first.t) if last.t > first.t else None

    def run_phase(self, phase: str, events: Iterator[tuple[bytes, bytes, bool]], total: int,
                  ahead: int | None) -> PhaseResult:
        """Produce ``total`` events (at most ``ahead`` unaccounted for, None = no limit) and wait
        until every delivered message of the run is accounted for."""
        start = self.now()
        produced_before = self.producer.produced
        bytes_before = self.producer.produced_bytes
        large = 0
        self._last_progress = time.monotonic()
        exhausted = False
        while True:
            budget = 2000  # produce in chunks, then read outputs and sample
            while not exhausted and budget > 0 and self.producer.unsettled_bytes < MAX_UNSETTLED_BYTES and (
                    ahead is None or self.producer.produced - self.reader.accounted < ahead):
                try:
                    key, value, is_large = next(events)
                except StopIteration:
                    exhausted = True
                    break
                self.producer.produce(self.topics.input, key, value)
                large += is_large
                budget -= 1
            self.producer.poll()
            self.reader.poll(0.0 if budget == 0 else 0.2)
            self._tick(phase, produced_before + total)
            if self.producer.errors:
                raise BenchmarkError(f"{phase}: {len(self.producer.errors)} deliveries failed: "
                                     f"{self.producer.errors[:2]}")
            if (exhausted and self.producer.delivered == self.producer.produced
                    and self.reader.accounted >= self.producer.delivered):
                break
        self.sample(phase)
        seconds = self.now() - start
        messages = self.producer.produced - produced_before
        return PhaseResult(phase, messages, self.producer.produced_bytes - bytes_before, seconds,
                           messages / seconds if seconds > 0 else float("nan"), round(start, 3),
                           {"large_messages": large} if large else {})

    def settle(self, seconds: float) -> None:
        """Keep sampling (and reading outputs) for ``seconds`` after the last phase: does RSS come back?"""
        end = self.now() + seconds
        while self.now() < end:
            self.producer.poll()
            self.reader.poll(0.2)
            if self.now() >= self._next_sample:
                self._next_sample = self.now() + 1.0
                self.sample("settle")

    def close(self) -> None:
        self.reader.close()
        with contextlib.suppress(Exception):  # called in a finally block: never mask the first error
            self.producer.flush(10)


# -- figures ---------------------------------------------------------------------------------------


def steady_figures(samples: list[Sample], messages: int, warmup: int, start_offset: int = 0) -> dict[str, Any]:
    """Start/peak/end RSS and the slope (MB per 100k messages) of the steady phase's samples."""
    rss = [s for s in samples if s.rss_mb is not None]
    if not rss:
        return {}
    warm = next((s for s in rss if s.accounted - start_offset >= warmup), rss[-1])
    fit = [s for s in rss if s.accounted - start_offset >= max(1, messages // 10)]
    slope = float("nan")
    if len(fit) >= 3 and fit[-1].accounted > fit[0].accounted:
        x = np.array([s.accounted for s in fit], dtype=float)
        y = np.array([s.rss_mb for s in fit], dtype=float)
        slope = float(np.polyfit(x, y, 1)[0]) * 100_000
    steady_rate = float("nan")
    if len(fit) >= 2 and fit[-1].t > fit[0].t:
        steady_rate = (fit[-1].accounted - fit[0].accounted) / (fit[-1].t - fit[0].t)
    return {
        "start_rss_mb": warm.rss_mb, "start_at_messages": warm.accounted - start_offset,
        "peak_rss_mb": max(s.rss_mb for s in rss), "end_rss_mb": rss[-1].rss_mb,
        "hwm_mb": rss[-1].hwm_mb, "slope_mb_per_100k": slope, "fit_samples": len(fit),
        "fit_from_messages": fit[0].accounted - start_offset if fit else None,
        "steady_messages_per_s": steady_rate,
    }


def fmt(value: float | None, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def render_table(r: dict[str, Any]) -> Table:
    cfg = r["config"]
    table = Table(title=f"soak: bundle {cfg['bundle']}, {cfg['messages']:,} messages + flood of {cfg['flood']} "
                        f"x {cfg['flood_bytes'] / 1e3:.0f} KB")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note")
    steady = r.get("steady") or {}
    if steady:
        table.add_row("steady: RSS at start", f"{fmt(steady.get('start_rss_mb'), '.1f')} MB",
                      f"after {fmt(steady.get('start_at_messages'), ',')} messages (warm-up)")
        table.add_row("steady: peak RSS", f"{fmt(steady.get('peak_rss_mb'), '.1f')} MB", "")
        table.add_row("steady: end RSS", f"{fmt(steady.get('end_rss_mb'), '.1f')} MB",
                      f"VmHWM {fmt(steady.get('hwm_mb'), '.1f')} MB")
        table.add_row("steady: slope", f"{fmt(steady.get('slope_mb_per_100k'), '+.2f')} MB/100k msgs",
                      f"least squares over {steady.get('fit_samples')} samples from message "
                      f"{fmt(steady.get('fit_from_messages'), ',')}")
        table.add_row("steady: throughput", f"{fmt(steady.get('messages_per_s'), ',.0f')} msg/s",
                      f"{steady['messages']:,} messages in {steady['seconds']:.0f} s (start-up included); "
                      f"{fmt(steady.get('steady_messages_per_s'), ',.0f')} msg/s over the fitted part")
    flood = r.get("flood") or {}
    if flood:
        table.add_row("flood: peak RSS", f"{fmt(flood.get('peak_rss_mb'), '.1f')} MB",
                      f"rise over the steady peak {fmt(flood.get('rise_over_steady_peak_mb'), '+.1f')} MB")
        table.add_row("flood: end RSS", f"{fmt(flood.get('end_rss_mb'), '.1f')} MB",
                      f"VmHWM {fmt(flood.get('hwm_mb'), '.1f')} MB")
        table.add_row("flood: throughput", f"{fmt(flood.get('messages_per_s'), ',.0f')} msg/s",
                      f"{flood['messages']:,} messages ({flood.get('large_messages', 0)} large), "
                      f"{flood['bytes'] / 1e6:,.0f} MB in {flood['seconds']:.0f} s "
                      f"= {flood['bytes'] / 1e6 / flood['seconds']:.1f} MB/s" if flood.get("seconds") else "")
    settled = r.get("settle") or {}
    if settled:
        table.add_row("idle after the flood: RSS", f"{fmt(settled.get('end_rss_mb'), '.1f')} MB",
                      f"after {settled['seconds']:.0f} s without input")
    acc = r.get("accounting") or {}
    if acc:
        table.add_row("accounted for", f"{acc['accounted']:,} / {acc['delivered']:,}",
                      f"categories {acc['categories_records']:,} records, dead letters {acc['dead_letters']:,} "
                      f"({acc['malformed_produced']:,} malformed on purpose; {acc['dlq_reasons']}), "
                      f"duplicates {acc['duplicates']:,}")
        for example in acc.get("unexpected_dead_letters", [])[:5]:
            error = example.get("error") or {}
            table.add_row("  [yellow]unexpected dead letter[/yellow]", str(error.get("reason")),
                          f"{str(error.get('detail'))[:200]}; source {example.get('source')}")
        if acc.get("large_produced"):
            table.add_row("  large messages", f"{sum(acc['large_outcomes'].values()):,} / {acc['large_produced']:,}",
                          ", ".join(f"{k} {v:,}" for k, v in sorted(acc["large_outcomes"].items())))
    if r.get("broker_rss_mb"):
        b = r["broker_rss_mb"]
        table.add_row("broker (Tansu) RSS", f"{b['end']:,.0f} MB",
                      f"from {b['start']:,.0f} MB: it keeps every message in memory")
    checks = r.get("checks") or {}
    for name, ok in checks.items():
        table.add_row(f"check: {name}", "[green]ok[/green]" if ok else "[red]FAILED[/red]", "")
    w = r.get("worker") or {}
    if w:
        ending = ("exit code after SIGTERM" if w.get("alive_at_end") else "[red]exited on its own[/red], code")
        table.add_row("worker", f"pid {w.get('pid')}", f"{ending} {w.get('exit_code')}; "
                      + ", ".join(f"{k} {fmt(v, ',')}" for k, v in w.get("byte_settings", {}).items()))
    for stage, error in r.get("errors", {}).items():
        lines = error.splitlines()
        table.add_row(f"[red]{stage} failed[/red]", "", "\n".join(dict.fromkeys([lines[0][:140], lines[-1][:140]])))
    return table


def byte_settings(env: dict[str, str]) -> dict[str, int]:
    """The effective value of each memory-bounding setting: the worker's env, else the field default."""
    out = {}
    for name in BYTE_SETTINGS:
        variable = f"STREAM_{name.upper()}"
        info = Settings.model_fields.get(name)
        default = info.default if info is not None else None
        value = env.get(variable, default)
        out[variable] = int(value) if value is not None else None
    return out


def run(
    bundle: Path = typer.Option(Path("models/default"), "--bundle", help="Bundle directory."),
    broker: str = typer.Option("127.0.0.1:9092", "--broker", help="HOST:PORT of a running broker."),
    messages: int = typer.Option(1_000_000, "--messages", min=1, help="Steady phase: normal product events."),
    flood: int = typer.Option(300, "--flood", min=0, help="Flood phase: messages of --flood-bytes."),
    flood_bytes: int = typer.Option(900_000, "--flood-bytes", min=1000,
                                    help="Size of each large message (the worker's default limit is 1,000,000)."),
    flood_interleave: int = typer.Option(10, "--flood-interleave", min=0,
                                         help="Normal products produced after each large one."),
    ahead: int = typer.Option(10_000, "--ahead", min=1,
                              help="Steady phase: at most this many messages produced but not yet accounted for."),
    warmup: int = typer.Option(10_000, "--warmup", min=0, help="Start RSS is taken after this many messages."),
    partitions: int = typer.Option(6, "--partitions", help="Partitions of the soak topics (service default 6)."),
    threads: int = typer.Option(2, "--threads", help="Worker's STREAM_INFERENCE_THREADS."),
    batch_size: int = typer.Option(32, "--batch-size", help="Worker's STREAM_MODEL_BATCH_SIZE."),
    micro_batch: int = typer.Option(256, "--micro-batch", help="Worker's STREAM_BATCH_SIZE."),
    worker_env_overrides: list[str] = typer.Option([], "--worker-env",
                                                   help="Extra worker setting NAME=VALUE (repeatable), e.g. "
                                                   "STREAM_MAX_BYTES_IN_FLIGHT=33554432."),
    settle: float = typer.Option(10.0, "--settle", min=0,
                                 help="Seconds of idle sampling after the flood (does RSS come back down?)."),
    report_every: float = typer.Option(10.0, "--report-every", help="Seconds between progress lines."),
    stall_timeout: float = typer.Option(300.0, "--stall-timeout",
                                        help="Fail when no message is accounted for during this many seconds."),
    out_dir: Path = typer.Option(Path("bench-results"), "--out-dir"),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Soak the real worker with Elo7 products, then a flood of ~900 KB messages; sample its RSS."""
    warmup = min(warmup, messages // 2)
    loaded = preflight(broker, bundle, console)
    overrides: dict[str, str] = {}
    for item in worker_env_overrides:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("STREAM_"):
            console.print(f"[red]--worker-env expects STREAM_NAME=VALUE, got {item!r}[/red]")
            raise typer.Exit(2)
        overrides[name] = value

    r: dict[str, Any] = {
        "kind": "soak",
        "started_at": datetime.now(UTC).isoformat(),
        "config": {"bundle": str(bundle), "bundle_version": loaded.version, "broker": broker, "messages": messages,
                   "flood": flood, "flood_bytes": flood_bytes, "flood_interleave": flood_interleave,
                   "ahead": ahead, "warmup": warmup, "settle": settle, "partitions": partitions, "threads": threads,
                   "batch_size": batch_size, "micro_batch": micro_batch, "worker_env_overrides": overrides,
                   "seed": seed, "dataset": str(elo7_path()), "malformed_every": MALFORMED_EVERY,
                   "flood_invalid_every": FLOOD_INVALID_EVERY},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "git_commit": _git_commit(),
                    "load_avg_start": os.getloadavg()},
        "errors": {},
    }
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = "setup"
    soak: Soak | None = None
    worker: WorkerProcess | None = None
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        try:
            source = EventSource(elo7_path(), seed, flood_bytes)
            tag = uuid.uuid4().hex[:8]
            topics = BenchTopics(f"soak-in-{tag}", f"soak-cat-{tag}", f"soak-drift-{tag}", f"soak-dlq-{tag}",
                                 naive_output="")  # no naive baseline in the soak: never created
            # Explicit creation: Tansu would auto-create unknown topics with 4 partitions.
            create_topics(broker, {topics.input: partitions, topics.output: partitions, topics.drift: 1,
                                   topics.dlq: partitions})
            r["topics"] = {k: v for k, v in asdict(topics).items() if v}
            port = free_port()
            env = worker_env(broker, topics, bundle.resolve(), workdir / "data", port, micro_batch=micro_batch,
                             model_batch=batch_size, threads=threads, partitions=partitions)
            env["STREAM_GROUP_ID"] = f"soak-worker-{tag}"
            env.update(overrides)
            r["worker"] = {"group_id": env["STREAM_GROUP_ID"], "byte_settings": byte_settings(env)}
            worker = WorkerProcess(env, workdir / "worker.log").start()
            r["worker"]["pid"] = worker.pid
            console.print(f"worker pid {worker.pid} on {topics.input} ({partitions} partitions), "
                          f"group {env['STREAM_GROUP_ID']}; {r['worker']['byte_settings']}", highlight=False)
            soak = Soak(broker, topics, worker, port, partitions, report_every, stall_timeout, source.large_keys)

            stage = "steady"
            console.print(f"[bold]steady[/bold]: {messages:,} Elo7 products (1 in {MALFORMED_EVERY} malformed), "
                          f"at most {ahead:,} ahead of the worker")
            steady_events = ((*source.normal(), False) for _ in range(messages))
            phase = soak.run_phase("steady", steady_events, messages, ahead)
            steady_samples = [s for s in soak.samples if s.phase == "steady"]
            r["steady"] = ({k: v for k, v in asdict(phase).items() if k != "extra"}
                           | steady_figures(steady_samples, messages, warmup))
            if flood:
                stage = "flood"
                total = flood * (1 + flood_interleave)
                console.print(f"[bold]flood[/bold]: {flood} messages of ~{flood_bytes / 1e3:.0f} KB "
                              f"(1 in {FLOOD_INVALID_EVERY} invalid), each followed by {flood_interleave} "
                              f"normal ones ({total:,} messages)")
                before = len(soak.samples)
                phase = soak.run_phase("flood", flood_events(source, flood, flood_interleave), total, None)
                r["flood"] = asdict(phase)
                r["flood"] |= r["flood"].pop("extra")
                rss = [s for s in soak.samples[before:] if s.rss_mb is not None]
                if rss:
                    peak = max(s.rss_mb for s in rss)
                    # A peak between two samples still shows in VmHWM once it tops the steady phase's.
                    if (rss[-1].hwm_mb or 0) > (r["steady"].get("hwm_mb") or float("inf")):
                        peak = max(peak, rss[-1].hwm_mb)
                    r["flood"].update({"peak_rss_mb": peak, "end_rss_mb": rss[-1].rss_mb, "hwm_mb": rss[-1].hwm_mb,
                                       "rise_over_steady_peak_mb": peak - r["steady"].get("peak_rss_mb", peak)})
            if settle > 0:
                stage = "settle"
                soak.settle(settle)
                rss = [s for s in soak.samples if s.phase == "settle" and s.rss_mb is not None]
                if rss:
                    r["settle"] = {"seconds": settle, "end_rss_mb": rss[-1].rss_mb, "hwm_mb": rss[-1].hwm_mb}
            stage = "end"
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - recorded per stage in the report; exits 1
            r["errors"][stage] = "".join(traceback.format_exception_only(exc)).strip()
            console.print(f"[red]stage {stage} failed[/red]: {exc}")
            if not isinstance(exc, BenchmarkError | KeyboardInterrupt):
                console.print(traceback.format_exc())
        finally:
            alive_at_end = worker is not None and worker.alive()
            same_process = (soak is not None and worker is not None
                            and start_ticks(worker.pid) == soak.pid_start_ticks)
            if worker is not None:
                r["worker"]["alive_at_end"] = alive_at_end
                r["worker"]["exit_code"] = worker.stop(timeout=60.0)
                if r["errors"] or r["worker"]["exit_code"] not in (0, None):
                    r["worker"]["log_tail"] = worker.tail()
            if soak is not None:
                soak.close()
                reader, producer = soak.reader, soak.producer
                r["accounting"] = {
                    "produced": producer.produced, "delivered": producer.delivered,
                    "delivery_errors": len(producer.errors), "accounted": reader.accounted,
                    "lost": producer.delivered - reader.accounted, "categories_records": reader.outputs,
                    "dead_letters": reader.dead_letters, "malformed_produced": source.malformed,
                    "large_produced": len(source.large_keys), "dlq_reasons": dict(reader.dlq_reasons),
                    "large_outcomes": dict(reader.large_outcomes), "duplicates": reader.seen.duplicates,
                    "unexpected_dead_letters": reader.unexpected,
                    "foreign_records": reader.foreign,
                }
                r["checks"] = {
                    "no message lost": producer.produced > 0 and not producer.errors
                    and reader.accounted == producer.delivered == producer.produced,
                    "worker alive throughout, same pid": alive_at_end and same_process,
                    "worker exit 0 after SIGTERM": r["worker"].get("exit_code") == 0,
                }
                r["samples"] = [asdict(s) for s in soak.samples]
                if r["errors"] or not all(r["checks"].values()):  # keep the whole worker log as evidence
                    log_copy = out_dir / f"soak-{stamp}.worker.log"
                    with contextlib.suppress(OSError):
                        log_copy.write_bytes(worker.log_path.read_bytes())
                        r["worker"]["log"] = str(log_copy)
                broker_rss = [s.broker_rss_mb for s in soak.samples if s.broker_rss_mb is not None]
                if broker_rss:
                    r["broker_rss_mb"] = {"start": broker_rss[0], "end": broker_rss[-1], "peak": max(broker_rss)}
    r["bench_process_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r["machine"]["load_avg_end"] = os.getloadavg()
    r["finished_at"] = datetime.now(UTC).isoformat()
    out_path = out_dir / f"soak-{stamp}.json"
    out_path.write_text(json.dumps(r, indent=2, ensure_ascii=False, default=str))
    console.print(render_table(r))
    console.print(f"results written to {out_path}")
    checks = r.get("checks", {})
    if r["errors"] or not checks.get("no message lost") or not checks.get("worker alive throughout, same pid"):
        raise typer.Exit(1)


def main() -> None:
    run_command(run)


if __name__ == "__main__":
    main()
