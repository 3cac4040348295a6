r"""Print the records of a topic, like ``kcat -C``.

The command line is ``python -m stream_app tail`` (stream_app/__main__.py); this module is the library.

Where reading starts
--------------------
From the end by default (only records produced after the start), or from the beginning. Without a
group every partition (or the one asked for) is assigned directly: no group join, nothing committed.
With a group the consumer subscribes, resumes the group's committed offsets (partitions without one
start at the beginning or the end, as asked) and commits what it printed.

End offsets
-----------
``until_end`` stops once every partition reached its end offset as of the start (``kcat -e``); the
default start "from the end" is the same offset. ``ListOffsets(latest)`` gives it on Kafka, but Tansu
0.6 answers with the base offset of the partition's last batch + 1, a lower bound. ``end_offsets``
therefore reads from one record before that answer: the high watermark of a Fetch response is exact on
both brokers.

Output
------
A ``Render`` turns one record into bytes:

* ``compile_format(spec)``: kcat's format tokens ``%t`` topic, ``%p`` partition, ``%o`` offset, ``%k``
  key, ``%s`` value, ``%h`` headers (``name=value,...``), ``%T`` timestamp (ms, -1 if none), ``%K`` /
  ``%S`` key / value size (-1 if null), ``%%``; escapes ``\n``, ``\t``, ``\r``, ``\\``. Keys and values
  are written as raw bytes (a null one as nothing).
* ``json_line``: one JSON object per line (``record_to_dict``)::

      {"topic": "t", "partition": 0, "offset": 12, "timestamp": 1700000000000, "key": "k",
       "value": {...}, "headers": [["name", "value"]]}

  ``value`` is the parsed JSON when the payload is UTF-8 JSON, else the UTF-8 text; bytes that are not
  UTF-8 are given as base64 with ``"value_base64": true``. Same for ``key`` / ``"key_base64": true``
  (a key is never parsed as JSON). ``timestamp`` is null when the broker gave none. ``headers`` keeps
  the order and repeats of the record's headers; a value that is not UTF-8 has its bad bytes escaped
  as ``\xNN``.

Errors: ``ClusterError`` (``stream_app.tools.topics``) when the broker does not answer, the topic or
the partition does not exist, or the topic disappears while reading; ``ValueError`` for a bad argument.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from stream_app.kafka.config import consumer_config
from stream_app.tools.topics import ClientConfig, ClusterError, TopicNotFound, check_target

JSONValue = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None
Render = Callable[[Message], bytes]

# librdkafka's public name for "the fetch reached the end of the partition" starts with an underscore.
PARTITION_EOF = KafkaError._PARTITION_EOF  # noqa: SLF001
# Output is flushed at least this often, so a live tail shows up promptly while a bulk dump stays buffered.
FLUSH_EVERY_SECONDS = 0.2


# -- output ---------------------------------------------------------------------------------------


def _where(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed record (the client's types allow None; -1 stands for it)."""
    partition, offset = msg.partition(), msg.offset()
    return -1 if partition is None else partition, -1 if offset is None else offset


def _header_pairs(msg: Message) -> list[tuple[str, bytes | None]]:
    """The record's headers in order, values as bytes (the client may hand str or a dict)."""
    headers = msg.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(name, raw.encode() if isinstance(raw, str) else raw) for name, raw in items]


def _text_or_base64(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def record_to_dict(msg: Message) -> dict[str, JSONValue]:
    """The JSON-line shape of one consumed record (see the module docstring)."""
    ts_type, ts = msg.timestamp()
    partition, offset = _where(msg)
    out: dict[str, JSONValue] = {
        "topic": msg.topic(),
        "partition": partition,
        "offset": offset,
        "timestamp": ts if ts_type != TIMESTAMP_NOT_AVAILABLE and ts >= 0 else None,
        "key": None,
        "value": None,
    }
    key = msg.key()
    if key is not None:
        out["key"], is_base64 = _text_or_base64(key)
        if is_base64:
            out["key_base64"] = True
    value = msg.value()
    if value is not None:
        text, is_base64 = _text_or_base64(value)
        if is_base64:
            out["value"], out["value_base64"] = text, True
        else:
            try:
                out["value"] = json.loads(text)
            except json.JSONDecodeError:
                out["value"] = text
    out["headers"] = [
        [name, None if raw is None else raw.decode("utf-8", errors="backslashreplace")]
        for name, raw in _header_pairs(msg)
    ]
    return out


def json_line(msg: Message) -> bytes:
    """``record_to_dict`` as one UTF-8 JSON line."""
    return json.dumps(record_to_dict(msg), ensure_ascii=False).encode() + b"\n"


def _headers_csv(msg: Message) -> bytes:
    return b",".join(name.encode() + b"=" + (raw or b"") for name, raw in _header_pairs(msg))


def _size(data: bytes | None) -> bytes:
    return str(-1 if data is None else len(data)).encode()


_TOKENS: dict[str, Render] = {
    "t": lambda m: (m.topic() or "").encode(),
    "p": lambda m: str(_where(m)[0]).encode(),
    "o": lambda m: str(_where(m)[1]).encode(),
    "k": lambda m: m.key() or b"",
    "s": lambda m: m.value() or b"",
    "h": _headers_csv,
    "T": lambda m: str(m.timestamp()[1] if m.timestamp()[0] != TIMESTAMP_NOT_AVAILABLE else -1).encode(),
    "K": lambda m: _size(m.key()),
    "S": lambda m: _size(m.value()),
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def compile_format(spec: str) -> Render:
    """A renderer for a kcat-style format string (tokens in the module docstring).

    Raises ``ValueError`` naming an unknown ``%x`` token or ``\\x`` escape, or a dangling ``%`` / ``\\``.
    """
    parts: list[bytes | Render] = []
    literal: list[str] = []
    i = 0
    while i < len(spec):
        char = spec[i]
        if char not in "%\\":
            literal.append(char)
            i += 1
            continue
        if i + 1 == len(spec):
            raise ValueError(f"format {spec!r} ends with a lone {char!r}")
        nxt = spec[i + 1]
        if char == "\\":
            if nxt not in _ESCAPES:
                raise ValueError(f"format {spec!r}: unknown escape \\{nxt} (use \\n, \\t, \\r or \\\\)")
            literal.append(_ESCAPES[nxt])
        elif nxt == "%":
            literal.append("%")
        elif nxt in _TOKENS:
            if literal:
                parts.append("".join(literal).encode())
                literal = []
            parts.append(_TOKENS[nxt])
        else:
            raise ValueError(f"format {spec!r}: unknown token %{nxt} (use %{', %'.join(_TOKENS)} or %%)")
        i += 2
    if literal:
        parts.append("".join(literal).encode())

    def render(msg: Message) -> bytes:
        return b"".join(part if isinstance(part, bytes) else part(msg) for part in parts)

    return render


# -- offsets --------------------------------------------------------------------------------------


def end_offsets(config: ClientConfig, topic: str, partitions: list[int],
                timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Partition -> ``(first offset, end offset)`` now; the end is the offset the next record will get.

    Exact on Kafka and on Tansu (see the module docstring). Raises ``ClusterError`` when a partition's
    fetch does not answer within ``timeout``.
    """
    probe = Consumer(consumer_config(config, None, **{"enable.partition.eof": True}))
    try:
        bounds: dict[int, tuple[int, int]] = {}
        pending: dict[int, int] = {}  # partition -> reported end, for non-empty partitions
        for partition in partitions:
            low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
            bounds[partition] = (low, high)
            if high > low:
                pending[partition] = high
        probe.assign([TopicPartition(topic, p, high - 1) for p, high in pending.items()])
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"topic {topic!r}: no fetch answer for partitions {sorted(pending)} "
                                   f"within {timeout:g} s")
            msg = probe.poll(min(remaining, 0.5))
            if msg is None:
                continue
            partition, offset = _where(msg)
            error = msg.error()
            if partition not in pending or (error is not None and error.code() != PARTITION_EOF):
                continue  # done already, or a transient error librdkafka retries
            if error is None:
                # The first fetch answer already updated the cached high watermark.
                end = max(offset + 1, probe.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1])
            else:
                end = offset
            bounds[partition] = (bounds[partition][0], max(end, pending.pop(partition)))
        return bounds
    finally:
        probe.close()


# -- tail -----------------------------------------------------------------------------------------


@dataclass
class _ReadState:
    """Partitions held, those at their end (``until_end``), records printed, time of the last activity."""

    held: set[int] = field(default_factory=set)
    at_end: set[int] = field(default_factory=set)
    ever_assigned: bool = False
    printed: int = 0
    last_activity: float = field(default_factory=time.monotonic)


def tail(
    brokers: str,
    topic: str,
    out: BinaryIO,
    render: Render = json_line,
    *,
    from_beginning: bool = False,
    until_end: bool = False,
    count: int | None = None,
    partition: int | None = None,
    group: str | None = None,
    timeout: float | None = None,
    client_config: ClientConfig | None = None,
    lookup_timeout: float = 10.0,
) -> int:
    """Write the records of ``topic`` to ``out`` through ``render``; return how many were written.

    Stops after ``count`` records, when every partition reached its end as of the start (``until_end``),
    after ``timeout`` seconds without a record (``None``: never), or on ``KeyboardInterrupt`` (raised
    on to the caller after the consumer is closed). ``partition`` reads that partition only (not with a
    ``group``). ``client_config`` is the connection dict of ``stream_app.kafka.config.client_config``;
    its ``bootstrap.servers`` is replaced by ``brokers``. ``lookup_timeout`` bounds the metadata and
    offset queries. Raises ``ClusterError`` or ``ValueError`` (module docstring).
    """
    if group is not None and partition is not None:
        raise ValueError("a partition cannot be chosen with a group (the group assigns partitions)")
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    base = dict(client_config or {})
    base["bootstrap.servers"] = brokers
    partitions = check_target(base, topic, partition, lookup_timeout)
    # The start "from the end" and the stop "until the end" both need exact end offsets.
    bounds = end_offsets(base, topic, partitions, lookup_timeout) if until_end or not from_beginning else {}
    state = _ReadState()

    def start_of(p: int) -> int:
        """Offset where partition ``p`` starts when there is no committed offset to resume."""
        return (bounds[p][0] if p in bounds else OFFSET_BEGINNING) if from_beginning else bounds[p][1]

    if until_end and group is None:
        state.at_end = {p for p in partitions if start_of(p) >= bounds[p][1]}
        if state.at_end >= set(partitions):
            return 0  # nothing to read: do not even connect a consumer

    extra: dict[str, bool] = {"enable.partition.eof": until_end}
    if group is None:
        consumer = Consumer(consumer_config(base, None, from_beginning=from_beginning, **extra))
        consumer.assign([TopicPartition(topic, p, start_of(p)) for p in partitions])
        state.held, state.ever_assigned = set(partitions), True
    else:
        consumer = Consumer(consumer_config(base, group, from_beginning=from_beginning, enable_auto_commit=True,
                                            **extra))

        def on_assign(c: Consumer, assigned: list[TopicPartition]) -> None:
            # Partitions the group never committed start as asked: auto.offset.reset=latest is wrong on Tansu.
            committed = c.committed(assigned, timeout=lookup_timeout)
            for tp in committed:
                if tp.offset < 0:
                    tp.offset = start_of(tp.partition)
                if until_end and tp.offset >= bounds[tp.partition][1]:
                    state.at_end.add(tp.partition)
                elif until_end:
                    state.at_end.discard(tp.partition)
            c.assign(committed)
            state.held |= {tp.partition for tp in committed}
            state.ever_assigned = True
            state.last_activity = time.monotonic()  # the idle timeout does not count the group join

        def on_revoke(c: Consumer, revoked: list[TopicPartition]) -> None:
            state.held -= {tp.partition for tp in revoked}

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        _read(consumer, topic, out, render, state, until_end, count, timeout, bounds)
    finally:
        try:
            out.flush()
        finally:  # a closed pipe (``| head``) must not leave the consumer open
            consumer.close()
    return state.printed


def _read(consumer: Consumer, topic: str, out: BinaryIO, render: Render, state: _ReadState, until_end: bool,
          count: int | None, timeout: float | None, bounds: dict[int, tuple[int, int]]) -> None:
    last_flush = time.monotonic()
    while count is None or state.printed < count:
        if until_end and state.ever_assigned and state.held <= state.at_end:
            return
        now = time.monotonic()
        if timeout is not None and now - state.last_activity >= timeout:
            return
        if now - last_flush >= FLUSH_EVERY_SECONDS:
            out.flush()
            last_flush = now
        msg = consumer.poll(FLUSH_EVERY_SECONDS)
        if msg is None:
            continue
        partition, offset = _where(msg)
        error = msg.error()
        if error is not None:
            if error.code() == PARTITION_EOF:
                state.at_end.add(partition)  # the end now is at or past the end as of the start
            elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFound(f"topic {topic!r}: {error.str()}")
            elif error.fatal():
                raise KafkaException(error)
            continue  # transient (e.g. a broker reconnect): librdkafka retries
        out.write(render(msg))
        state.printed += 1
        state.last_activity = time.monotonic()
        if until_end and offset + 1 >= bounds[partition][1]:
            state.at_end.add(partition)
