"""Print the records of a topic as JSON lines.

One line per record::

    {"topic": "...", "partition": 0, "offset": 12, "key": "...", "timestamp": 1700000000000, "value": {...}}

``value`` is the parsed JSON when the payload is UTF-8 JSON; otherwise it is the base64 of the raw
bytes and the line carries ``"value_base64": true``. Same for ``key`` / ``"key_base64": true`` when the
key is not UTF-8. ``timestamp`` is milliseconds since the epoch (``null`` if the broker gave none).

Reading starts from the beginning with a fresh consumer group by default: Tansu answers "latest"
offset queries wrongly, so ``auto.offset.reset=latest`` cannot be trusted there. Nothing is committed.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import typer
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from stream_app.kafka.config import ConnectionSettings, client_config, consumer_config


def record_to_dict(msg: Message) -> dict[str, Any]:
    """The JSON-line shape of one consumed record (see module docstring)."""
    out: dict[str, Any] = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
    key = msg.key()
    if key is None:
        out["key"] = None
    else:
        try:
            out["key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            out["key"] = base64.b64encode(key).decode("ascii")
            out["key_base64"] = True
    ts_type, ts = msg.timestamp()
    out["timestamp"] = ts if ts_type != 0 and ts >= 0 else None  # 0 = TIMESTAMP_NOT_AVAILABLE
    value = msg.value()
    if value is None:
        out["value"] = None
    else:
        try:
            out["value"] = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            out["value"] = base64.b64encode(value).decode("ascii")
            out["value_base64"] = True
    return out


def tail(
    brokers: str,
    topic: str,
    limit: int | None = None,
    timeout: float = 10.0,
    out: TextIO = sys.stdout,
    from_beginning: bool = True,
    group_id: str | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> int:
    """Print records of ``topic`` as JSON lines to ``out``; return how many were printed.

    Stops after ``limit`` records, or when ``timeout`` seconds pass without a new record.
    ``group_id=None`` (default): all partitions are assigned directly from the beginning (or the
    end if ``from_beginning`` is False, which Tansu gets wrong), no group join. With a ``group_id``
    the consumer subscribes and resumes that group's committed offsets; the idle clock then starts
    at the assignment, so the join (up to max(timeout, 30) s) does not eat the wait.
    Offsets are never committed. Raises ``KafkaException`` for an unknown topic or a fatal error.
    """
    base = dict(client_config or {})
    base["bootstrap.servers"] = brokers
    consumer = Consumer(consumer_config(base, group_id, from_beginning=from_beginning))
    assigned = False

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        nonlocal assigned, last_activity
        assigned = True
        last_activity = time.monotonic()

    if group_id is None:
        # No group to resume: assign every partition directly, which skips the group join
        # (Tansu holds joins for ~half the session timeout).
        metadata = consumer.list_topics(topic, timeout=max(timeout, 5.0))
        topic_meta = metadata.topics.get(topic)
        if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
            consumer.close()
            reason = topic_meta.error if topic_meta is not None and topic_meta.error else "no partitions"
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic!r}: {reason}"))
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(topic_meta.partitions)])
        assigned = True
    else:
        consumer.subscribe([topic], on_assign=on_assign)
    last_activity = time.monotonic()
    # Before the first assignment the wait covers a group join (a few session timeouts at most).
    join_deadline = last_activity + max(timeout, 30.0)
    count = 0
    try:
        while limit is None or count < limit:
            now = time.monotonic()
            remaining = timeout - (now - last_activity) if assigned else join_deadline - now
            if remaining <= 0:
                break
            msg = consumer.poll(min(remaining, 0.5))
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise KafkaException(error)
                continue  # transient (e.g. a broker reconnect): librdkafka retries
            out.write(json.dumps(record_to_dict(msg), ensure_ascii=False) + "\n")
            count += 1
            last_activity = time.monotonic()
        out.flush()
    finally:
        consumer.close()
    return count


def main(
    topic: str = typer.Argument("products"),
    brokers: str | None = typer.Option(None, "--brokers", help="Bootstrap servers (default STREAM_BROKERS)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Stop after N records."),
    timeout: float = typer.Option(10.0, "--timeout", help="Stop after this many idle seconds."),
    group_id: str | None = typer.Option(None, "--group-id", help="Default: a fresh random group."),
) -> None:
    """Print a topic's records as JSON lines (from the beginning)."""
    connection = ConnectionSettings.from_env()
    try:
        count = tail(
            brokers or connection.brokers,
            topic,
            limit=limit,
            timeout=timeout,
            group_id=group_id,
            client_config=client_config(settings=connection),
        )
    except KafkaException as exc:
        typer.echo(f"error reading {topic!r}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{count} records from {topic}", err=True)


if __name__ == "__main__":
    typer.run(main)
