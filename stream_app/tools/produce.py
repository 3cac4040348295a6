"""Produce messages to a topic: a product catalog replayed as JSON events, or lines of text (like ``kcat -P``).

The command line is ``python -m stream_app produce`` (stream_app/__main__.py); this module is the library.

Catalog replay (``replay``)
---------------------------
Each row becomes one JSON message, keyed by its product id (or another event field, ``key_field``)::

    {"product_id": "...", "title": "...", "tags": "...", "description": "...", "event_time": "..."}

``description`` and ``event_time`` are present only when mapped and non-empty. ``tags`` is always
present (``""`` when unmapped or empty); ``title`` is ``""`` when empty. Rows are replayed faithfully,
not filtered: an empty title (7 rows of the fashion catalog) reaches the worker, which dead-letters it.

The file is read by ``stream_app.catalog.read_table`` (``.parquet``, ``.csv``, ``.jsonl`` / ``.ndjson``),
the reader the model build uses too.

Column mapping (``ColumnMapping``): event field <- source column. The defaults fit Elo7
(``product_id <- product_id``, ``title <- title``, ``tags <- concatenated_tags``,
``event_time <- creation_date``). A mapping string such as ``"title=productDisplayName,product_id=id"``
overrides fields of the defaults; ``tags=`` (empty) unmaps a field; ``tags=articleType+baseColour``
joins several columns with a space; ``product_id=#row`` uses the 0-based row number.

``event_time`` is converted to ISO-8601 in UTC. Naive timestamps (Elo7's ``creation_date`` carries no
zone) are taken as UTC; an integer between 1000 and 9999 is read as a year (fashion ``year``).

Fashion catalog: ``styles_text.csv`` (productDisplayName) is row-aligned with ``styles.csv`` (id, labels,
year). Replay it with ``join_by_position=styles.csv``: the two files are joined row by row (they must
have the same number of rows), e.g.::

    python -m stream_app produce --file ../shared/datasets/fashion/styles_text.csv \\
        --join-by-position ../shared/datasets/fashion/styles.csv \\
        --columns "product_id=id,title=productDisplayName,tags=articleType+baseColour,event_time=year"

Lines (``produce_lines``)
-------------------------
Each line is one message value, sent as is (its trailing ``\\n`` or ``\\r\\n`` removed; empty lines are
skipped). With ``key_delimiter`` the line is split at the first delimiter, key before and value after
(``kcat -K``); a line without the delimiter is sent without a key. With ``key_field`` the line must be a
JSON object and its ``key_field`` value is the key.

Both sources: ``headers`` go on every message, ``partition`` pins one partition (default: the
partitioner, by key), ``rate`` caps messages per second, ``limit`` caps the count. The producer is
flushed at the end and every delivery report checked: a failed or undelivered message raises
``ReplayError``, which names the topic and the first error. On any error (a bad row or line included)
what is still queued is dropped and the producer destroyed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC
from pathlib import Path
from types import TracebackType

import pandas as pd
from confluent_kafka import KafkaError, Message, Producer

from stream_app.catalog import ELO7_COLUMNS, CatalogError, read_joined, read_table
from stream_app.kafka.config import producer_config
from stream_app.tools.topics import ClientConfig

ROW_NUMBER = "#row"

# One Kafka record header: name, value.
Header = tuple[str, bytes]


class ReplayError(RuntimeError):
    """Bad input (file, column, row, line) or failed delivery; the message names the culprit."""


@dataclass(frozen=True)
class ColumnMapping:
    """Source column for each event field; ``None`` = not mapped. ``a+b`` joins columns. Defaults: Elo7's."""

    product_id: str | None = ELO7_COLUMNS["product_id"]
    title: str | None = ELO7_COLUMNS["title"]
    tags: str | None = ELO7_COLUMNS["tags"]
    description: str | None = None
    event_time: str | None = ELO7_COLUMNS["event_time"]

    @classmethod
    def parse(cls, spec: str, base: ColumnMapping | None = None) -> ColumnMapping:
        """Apply ``"field=column,field=column"`` on top of ``base`` (default: Elo7 mapping)."""
        mapping = base if base is not None else ELO7_DEFAULTS
        updates: dict[str, str | None] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, column = part.partition("=")
            name = name.strip()
            if not sep or name not in EVENT_FIELDS:
                raise ValueError(
                    f"bad column mapping {part!r}: expected FIELD=COLUMN with FIELD in {EVENT_FIELDS}"
                )
            updates[name] = column.strip() or None
        if "product_id" in updates and updates["product_id"] is None:
            raise ValueError("product_id must be mapped (use product_id=#row for the row number)")
        return replace(mapping, **updates)

    def source_columns(self) -> dict[str, list[str]]:
        """Event field -> list of source columns (row number excluded)."""
        out: dict[str, list[str]] = {}
        for f in fields(self):
            spec = getattr(self, f.name)
            if spec and spec != ROW_NUMBER:
                out[f.name] = [c.strip() for c in spec.split("+") if c.strip()]
        return out


ELO7_DEFAULTS = ColumnMapping()
# The fields of a replayed product event (``ProductEvent``'s): what a column can be mapped to, or key a message.
# Wider than ``stream_app.core.text.CANONICAL_FIELDS``, the fields the model's text is built from.
EVENT_FIELDS = tuple(f.name for f in fields(ColumnMapping))


def parse_header(spec: str) -> Header:
    """``"NAME=VALUE"`` -> ``(NAME, VALUE as UTF-8)``; the value may be empty or contain ``=``.

    Raises ``ValueError`` naming ``spec`` when there is no ``=`` or the name is empty.
    """
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise ValueError(f"bad header {spec!r}: expected NAME=VALUE")
    return name, value.encode()


def read_catalog(file: Path, limit: int | None = None, join_by_position: Path | None = None) -> pd.DataFrame:
    """The catalog rows to replay (``stream_app.catalog``); read errors become ``ReplayError``."""
    try:
        if join_by_position is None:
            return read_table(file, limit)
        return read_joined(file, join_by_position, limit)
    except CatalogError as exc:
        raise ReplayError(str(exc)) from exc


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists / arrays
        return False


def _text(value: object) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # ids read as float because of NaN elsewhere in the column
    return str(value).strip()


def _event_time(value: object, file: Path, column: str, row: int) -> str | None:
    if _is_missing(value) or value == "":
        return None
    try:
        text = str(value).strip()
        if text.lstrip("-").isdigit() and 1000 <= int(text) <= 9999:
            stamp = pd.Timestamp(year=int(text), month=1, day=1)
        else:
            stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ReplayError(f"{file}: row {row}, column {column!r}: cannot parse time {value!r}") from exc
    if stamp is pd.NaT:
        return None
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return str(stamp.isoformat())


def check_columns(frame: pd.DataFrame, columns: ColumnMapping, file: Path) -> dict[str, list[str]]:
    """Raise ``ReplayError`` naming the file and every mapped column it lacks; return the sources."""
    sources = columns.source_columns()
    missing = [(field, col) for field, cols in sources.items() for col in cols if col not in frame.columns]
    if missing:
        described = ", ".join(f"{col!r} (for {field})" for field, col in missing)
        raise ReplayError(f"{file}: column {described} not found; available: {list(frame.columns)}")
    return sources


def iter_events(frame: pd.DataFrame, columns: ColumnMapping, file: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``(product_id, event)`` per row. Raises ``ReplayError`` naming a bad row (and column).

    Call ``check_columns`` first: a generator only runs at the first ``next()``.
    """
    sources = check_columns(frame, columns, file)
    data = {col: frame[col].tolist() for cols in sources.values() for col in cols}

    def joined(field: str, i: int) -> str:
        return " ".join(t for t in (_text(data[c][i]) for c in sources.get(field, [])) if t)

    for i in range(len(frame)):
        if columns.product_id == ROW_NUMBER:
            product_id = str(i)
        else:
            product_id = joined("product_id", i)
            if not product_id:
                raise ReplayError(f"{file}: row {i}: empty product id in column {columns.product_id!r}")
        event = {"product_id": product_id, "title": joined("title", i), "tags": joined("tags", i)}
        if "description" in sources and (description := joined("description", i)):
            event["description"] = description
        if "event_time" in sources:
            column = sources["event_time"][0]
            if (stamp := _event_time(data[column][i], file, column, i)) is not None:
                event["event_time"] = stamp
        yield product_id, event


def split_line(line: bytes, number: int, key_delimiter: bytes | None = None,
               key_field: str | None = None) -> tuple[bytes | None, bytes]:
    """``(key, value)`` of one input line (1-based ``number``, for errors); see the module docstring."""
    if key_delimiter is not None:
        key, sep, value = line.partition(key_delimiter)
        return (key, value) if sep else (None, line)
    if key_field is None:
        return None, line
    try:
        document = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplayError(f"line {number}: not JSON, so it has no {key_field!r} for the key: {exc}") from exc
    if not isinstance(document, dict) or document.get(key_field) is None:
        raise ReplayError(f"line {number}: no {key_field!r} field for the key")
    key = document[key_field]
    return (key if isinstance(key, str) else json.dumps(key)).encode(), line


class TokenBucket:
    """Token bucket: ``rate`` tokens per second, bursts up to ``capacity`` (default rate/10, >= 1)."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 messages/s, got {rate}")
        self.rate = rate
        # A small bucket keeps the output smooth instead of one-second bursts.
        self.capacity = capacity if capacity is not None else max(1.0, rate / 10)
        self.tokens = self.capacity
        self.last = time.monotonic()

    def acquire(self, tokens: float = 1.0) -> None:
        """Block until ``tokens`` are available, then take them."""
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= tokens:
                self.tokens -= tokens
                return
            time.sleep((tokens - self.tokens) / self.rate)


class _Sender:
    """One producer with paced sends, delivery accounting and a checked final flush (both sources)."""

    def __init__(self, brokers: str, topic: str, client_config: ClientConfig | None, rate: float | None,
                 headers: Sequence[Header], partition: int | None) -> None:
        base = dict(client_config or {})
        base["bootstrap.servers"] = brokers
        self.producer = Producer(producer_config(base))
        self.topic = topic
        self.bucket = TokenBucket(rate) if rate else None
        # The client's type for headers: a list of (name, str | bytes | None).
        self.headers: list[tuple[str, str | bytes | None]] | None = list(headers) or None
        # confluent-kafka takes -1 for "let the partitioner choose".
        self.partition = -1 if partition is None else partition
        self.sent = 0
        self.delivered = 0
        self.errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered += 1

    def send(self, key: bytes | None, value: bytes) -> None:
        """Queue one message (blocking while the rate cap or the local queue says wait)."""
        if self.bucket is not None:
            self.bucket.acquire()
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, partition=self.partition,
                                      headers=self.headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
        self.producer.poll(0)
        self.sent += 1

    def finish(self, flush_timeout: float) -> int:
        """Flush; return the number delivered or raise ``ReplayError`` if any message was not."""
        remaining = self.producer.flush(flush_timeout)
        if remaining:
            raise ReplayError(
                f"{remaining} of {self.sent} messages to {self.topic!r} not delivered within {flush_timeout} s"
            )
        if self.errors:
            raise ReplayError(
                f"{len(self.errors)} of {self.sent} messages to {self.topic!r} failed; first error: {self.errors[0]}"
            )
        return self.delivered

    def close(self) -> None:
        """Drop what is still queued and destroy the producer (after an error: no background retries)."""
        self.producer.purge()
        self.producer.flush(0)
        del self.producer  # the last reference: librdkafka stops reconnecting now, not at exit


def replay(
    file: Path,
    brokers: str,
    topic: str = "products",
    limit: int | None = None,
    rate: float | None = None,
    columns: ColumnMapping | str = ELO7_DEFAULTS,
    key_field: str = "product_id",
    client_config: ClientConfig | None = None,
    progress: bool = True,
    join_by_position: Path | None = None,
    flush_timeout: float = 30.0,
    headers: Sequence[Header] = (),
    partition: int | None = None,
) -> int:
    """Produce up to ``limit`` rows of ``file`` to ``topic`` as product events; return the number delivered.

    ``rate`` caps messages per second (token bucket); ``None`` = as fast as possible.
    ``key_field`` names the event field used as the message key.
    ``client_config`` is the connection dict of ``stream_app.kafka.config.client_config``; its
    ``bootstrap.servers`` is replaced by ``brokers``. ``progress`` draws a rich bar on stderr.
    Raises ``ValueError`` for a bad argument, ``ReplayError`` for a bad file, row or delivery.
    """
    file = Path(file)
    mapping = ColumnMapping.parse(columns) if isinstance(columns, str) else columns
    if key_field not in EVENT_FIELDS:
        raise ValueError(f"key_field must be one of {EVENT_FIELDS}, got {key_field!r}")
    frame = read_catalog(file, limit, Path(join_by_position) if join_by_position else None)
    check_columns(frame, mapping, file)  # before any producer exists
    sender = _Sender(brokers, topic, client_config, rate, headers, partition)
    try:
        with _ReplayProgressBar(progress, len(frame), f"{file.name} -> {topic}") as advance:
            for product_id, event in iter_events(frame, mapping, file):
                key = event.get(key_field, product_id)
                sender.send(key.encode(), json.dumps(event, ensure_ascii=False).encode())
                advance()
            return sender.finish(flush_timeout)
    finally:
        sender.close()


def produce_lines(
    lines: Iterable[bytes],
    brokers: str,
    topic: str,
    *,
    key_delimiter: str | None = None,
    key_field: str | None = None,
    headers: Sequence[Header] = (),
    partition: int | None = None,
    limit: int | None = None,
    rate: float | None = None,
    client_config: ClientConfig | None = None,
    flush_timeout: float = 30.0,
) -> int:
    """Produce one message per non-empty line of ``lines`` (e.g. ``sys.stdin.buffer``); return the number delivered.

    Lines are consumed lazily, so an endless pipe streams. Keys as in the module docstring
    (``key_delimiter`` and ``key_field`` exclude each other: ``ValueError``). ``ReplayError`` names a
    line without its key field, or reports failed deliveries.
    """
    if key_delimiter is not None and key_field is not None:
        raise ValueError("choose one of key_delimiter and key_field")
    if key_delimiter == "":
        raise ValueError("key_delimiter must not be empty")
    delimiter = key_delimiter.encode() if key_delimiter is not None else None
    sender = _Sender(brokers, topic, client_config, rate, headers, partition)
    try:
        for number, raw in enumerate(lines, start=1):
            line = raw.removesuffix(b"\n").removesuffix(b"\r")
            if not line:
                continue
            sender.send(*split_line(line, number, delimiter, key_field))
            if limit is not None and sender.sent >= limit:
                break  # before reading on: an interactive stdin would otherwise wait for one more line
        return sender.finish(flush_timeout)
    finally:
        sender.close()


class _ReplayProgressBar:
    """Rich progress bar on stderr, or a no-op; entering gives the ``advance()`` callable."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.description = description

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.enabled:
            self.bar.__exit__(kind, exc, traceback)
