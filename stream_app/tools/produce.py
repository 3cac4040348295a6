"""Replay a product catalog into Kafka as ``products`` events.

Each row becomes one JSON message, keyed by its product id::

    {"product_id": "...", "title": "...", "tags": "...", "description": "...", "event_time": "..."}

``description`` and ``event_time`` are present only when mapped and non-empty. ``tags`` is always
present (``""`` when unmapped or empty); ``title`` is ``""`` when empty. Rows are replayed faithfully,
not filtered: an empty title (7 rows of the fashion catalog) reaches the worker, which dead-letters it.

Input format by suffix: ``.parquet``, ``.csv``, ``.jsonl`` / ``.ndjson`` (JSON Lines).

Column mapping (``ColumnMapping``): canonical field <- source column. The defaults fit Elo7
(``product_id <- product_id``, ``title <- title``, ``tags <- concatenated_tags``,
``event_time <- creation_date``). A mapping string such as ``"title=productDisplayName,product_id=id"``
overrides fields of the defaults; ``tags=`` (empty) unmaps a field; ``tags=articleType+baseColour``
joins several columns with a space; ``product_id=#row`` uses the 0-based row number.

``event_time`` is converted to ISO-8601 in UTC. Naive timestamps (Elo7's ``creation_date`` carries no
zone) are taken as UTC; an integer between 1000 and 9999 is read as a year (fashion ``year``).

Fashion catalog: ``styles_text.csv`` (productDisplayName) is row-aligned with ``styles.csv`` (id, labels,
year). Replay it with ``join_by_position=styles.csv``: the two files are joined row by row (they must
have the same number of rows), e.g.::

    python -m stream_app.tools.produce ../shared/datasets/fashion/styles_text.csv \\
        --join-by-position ../shared/datasets/fashion/styles.csv \\
        --columns "product_id=id,title=productDisplayName,tags=articleType+baseColour,event_time=year"
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from confluent_kafka import KafkaError, Producer

from stream_app.kafka.config import ConnectionSettings, client_config, producer_config

ROW_NUMBER = "#row"
CANONICAL_FIELDS = ("product_id", "title", "tags", "description", "event_time")


class ReplayError(RuntimeError):
    """Bad input (file, column, row) or failed delivery; the message names the culprit."""


@dataclass(frozen=True)
class ColumnMapping:
    """Source column for each canonical field; ``None`` = not mapped. ``a+b`` joins columns."""

    product_id: str | None = "product_id"
    title: str | None = "title"
    tags: str | None = "concatenated_tags"
    description: str | None = None
    event_time: str | None = "creation_date"

    @classmethod
    def parse(cls, spec: str, base: ColumnMapping | None = None) -> ColumnMapping:
        """Apply ``"field=column,field=column"`` on top of ``base`` (default: Elo7 mapping)."""
        mapping = base if base is not None else ELO7_DEFAULTS
        updates: dict[str, str | None] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, column = part.partition("=")
            name = name.strip()
            if not sep or name not in CANONICAL_FIELDS:
                raise ValueError(
                    f"bad column mapping {part!r}: expected FIELD=COLUMN with FIELD in {CANONICAL_FIELDS}"
                )
            updates[name] = column.strip() or None
        if "product_id" in updates and updates["product_id"] is None:
            raise ValueError("product_id must be mapped (use product_id=#row for the row number)")
        return replace(mapping, **updates)

    def source_columns(self) -> dict[str, list[str]]:
        """Canonical field -> list of source columns (row number excluded)."""
        out: dict[str, list[str]] = {}
        for f in fields(self):
            spec = getattr(self, f.name)
            if spec and spec != ROW_NUMBER:
                out[f.name] = [c.strip() for c in spec.split("+") if c.strip()]
        return out


ELO7_DEFAULTS = ColumnMapping()


def read_catalog(file: Path, limit: int | None = None, join_by_position: Path | None = None) -> pd.DataFrame:
    """Read a catalog by suffix (all values as strings where the format allows)."""
    frame = _read_one(file, limit)
    if join_by_position is not None:
        other = _read_one(join_by_position, limit)
        if len(other) != len(frame):
            raise ReplayError(
                f"{join_by_position} has {len(other)} rows but {file} has {len(frame)}: "
                "a join by position needs row-aligned files"
            )
        # Columns of the main file win on a name clash.
        other = other.drop(columns=[c for c in other.columns if c in frame.columns])
        frame = pd.concat([frame.reset_index(drop=True), other.reset_index(drop=True)], axis=1)
    return frame


def _read_one(file: Path, limit: int | None) -> pd.DataFrame:
    if not file.is_file():
        raise ReplayError(f"catalog file not found: {file}")
    suffix = file.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(file)
            return frame.head(limit) if limit is not None else frame
        if suffix == ".csv":
            return pd.read_csv(file, dtype=str, nrows=limit, keep_default_na=False, na_values=[""])
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(file, lines=True, dtype=False, nrows=limit)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ReplayError(f"cannot read {file}: {exc}") from exc
    raise ReplayError(f"unsupported catalog format {suffix!r} for {file}: use .parquet, .csv or .jsonl")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists / arrays
        return False


def _text(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # ids read as float because of NaN elsewhere in the column
    return str(value).strip()


def _event_time(value: Any, file: Path, column: str, row: int) -> str | None:
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
    return stamp.isoformat()


def check_columns(frame: pd.DataFrame, columns: ColumnMapping, file: Path) -> dict[str, list[str]]:
    """Raise ``ReplayError`` naming the file and every mapped column it lacks; return the sources."""
    sources = columns.source_columns()
    missing = [(field, col) for field, cols in sources.items() for col in cols if col not in frame.columns]
    if missing:
        described = ", ".join(f"{col!r} (for {field})" for field, col in missing)
        raise ReplayError(f"{file}: column {described} not found; available: {list(frame.columns)}")
    return sources


def iter_events(frame: pd.DataFrame, columns: ColumnMapping, file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(key, event)`` per row. Raises ``ReplayError`` naming a bad row (and column).

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
        event: dict[str, Any] = {"product_id": product_id, "title": joined("title", i), "tags": joined("tags", i)}
        if "description" in sources and (description := joined("description", i)):
            event["description"] = description
        if "event_time" in sources:
            column = sources["event_time"][0]
            if (stamp := _event_time(data[column][i], file, column, i)) is not None:
                event["event_time"] = stamp
        yield product_id, event


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


def replay(
    file: Path,
    brokers: str,
    topic: str = "products",
    limit: int | None = None,
    rate: float | None = None,
    columns: ColumnMapping | str = ELO7_DEFAULTS,
    key_field: str = "product_id",
    client_config: Mapping[str, Any] | None = None,
    progress: bool = True,
    join_by_position: Path | None = None,
    flush_timeout: float = 30.0,
) -> int:
    """Produce up to ``limit`` rows of ``file`` to ``topic``; return the number delivered.

    ``rate`` caps messages per second (token bucket); ``None`` = as fast as possible.
    ``key_field`` names the canonical event field used as the message key.
    ``client_config`` is the connection dict of ``stream_app.kafka.config.client_config``; its
    ``bootstrap.servers`` is replaced by ``brokers``. The producer is flushed at the end and every
    delivery report checked: any failed or undelivered message raises ``ReplayError``.
    """
    file = Path(file)
    mapping = ColumnMapping.parse(columns) if isinstance(columns, str) else columns
    if key_field not in CANONICAL_FIELDS:
        raise ValueError(f"key_field must be one of {CANONICAL_FIELDS}, got {key_field!r}")
    frame = read_catalog(file, limit, Path(join_by_position) if join_by_position else None)
    check_columns(frame, mapping, file)  # before any producer exists
    events = iter_events(frame, mapping, file)

    base = dict(client_config or {})
    base["bootstrap.servers"] = brokers
    producer = Producer(producer_config(base))
    bucket = TokenBucket(rate) if rate else None
    errors: list[str] = []
    delivered = 0

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    total = len(frame)
    with _progress(progress, total, f"{file.name} -> {topic}") as advance:
        for key_value, event in events:
            if bucket is not None:
                bucket.acquire()
            key = str(event.get(key_field, key_value))
            value = json.dumps(event, ensure_ascii=False).encode()
            while True:
                try:
                    producer.produce(topic, value=value, key=key.encode(), on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.1)
            producer.poll(0)
            advance()
        remaining = producer.flush(flush_timeout)
    if remaining:
        raise ReplayError(f"{remaining} of {total} messages to {topic!r} not delivered within {flush_timeout} s")
    if errors:
        raise ReplayError(f"{len(errors)} of {total} messages to {topic!r} failed; first error: {errors[0]}")
    return delivered


class _progress:
    """Rich progress bar on stderr, or a no-op."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.description = description

    def __enter__(self) -> Any:
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

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


def main(
    file: Path = typer.Argument(..., help="Catalog: .parquet, .csv or .jsonl"),
    brokers: str | None = typer.Option(None, "--brokers", help="Bootstrap servers (default STREAM_BROKERS)."),
    topic: str = typer.Option("products", "--topic"),
    limit: int | None = typer.Option(None, "--limit", help="Replay at most N rows."),
    rate: float | None = typer.Option(None, "--rate", help="Messages per second (default: unthrottled)."),
    columns: str = typer.Option("", "--columns", help="FIELD=COLUMN,... over the Elo7 defaults."),
    join_by_position: Path | None = typer.Option(None, "--join-by-position", help="Row-aligned second file."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Replay a catalog as JSON product events keyed by product_id."""
    connection = ConnectionSettings.from_env()
    try:
        count = replay(
            file,
            brokers or connection.brokers,
            topic,
            limit=limit,
            rate=rate,
            columns=ColumnMapping.parse(columns),
            client_config=client_config(settings=connection),
            progress=not no_progress,
            join_by_position=join_by_position,
        )
    except (ReplayError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{count} messages delivered to {topic}", err=True)


if __name__ == "__main__":
    sys.exit(typer.run(main))
