"""Raw bytes -> `ProductEvent` or a dead-letter classification, and the dead letter itself. Pure.

Contract:
* `classify(value, max_bytes)` never raises, whatever the bytes. It returns a `Valid` with the
  parsed event, or a `Rejected` naming the `DeadLetterReason`, the error class and a detail that
  names the invalid field (for schema violations). Checks run cheapest first: size, UTF-8, JSON,
  object, schema. JSON is read as RFC 8259 text with Python's usual leniency: a leading UTF-8 BOM is
  skipped, NaN/Infinity literals are accepted, and of duplicate keys the last one wins.
  Speed: ordinary products are parsed by orjson (`_fast_object`), which decides nothing differently:
  it is used only where its result is the reference parser's (``json.loads`` of the UTF-8 text),
  and everything else (a BOM, NaN, an integer beyond 64 bits, deep nesting, invalid UTF-8, any
  refusal) takes the reference path. tests/worker/test_fast_paths.py checks both on the same inputs.
* `dead_letter(...)` builds the DLQ record of any input and any `Rejected`. The record, its Kafka key
  (`dlq_key`) and the record overhead together never exceed ``max_bytes``: the base64 copies of key
  and value are cut (``key_truncated`` / ``value_truncated``, with the original sizes) to fit.
* `dlq_key(key)` is the original key when it is at most `KEY_COPY_BYTES`, else the hex SHA-256 of it
  (a huge key could not be the key of a record that fits; the letter carries its copy).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from stream_app.messages import DeadLetter, DeadLetterError, DeadLetterReason, ProductEvent, SourceRef, b64

DEFAULT_MAX_OUTPUT_BYTES = 1_048_576
# Room kept for the key before the value takes the rest of a letter's budget; also the longest
# original key a dead letter keeps as its Kafka key.
KEY_COPY_BYTES = 4_096
# Kafka's record-batch framing around one record (v2 batch header 61 bytes + record header), rounded up.
RECORD_OVERHEAD_BYTES = 256
_DETAIL_CHARS = 2_000
# Python refuses to convert integer literals over 4,300 digits (CVE-2020-10735) and raises from
# inside json.loads; such a number becomes an infinite float here, which every typed field rejects
# with a clear message and every ignored field may hold.
_MAX_INT_DIGITS = 4_300


@dataclass(frozen=True, slots=True)
class Valid:
    event: ProductEvent


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: DeadLetterReason
    error_class: str
    detail: str
    field: str | None = None

    def error(self) -> DeadLetterError:
        # An exception's text may quote the input: keep it short and serializable (no lone surrogates).
        def text(value: str, limit: int) -> str:
            return value[:limit].encode("utf-8", "replace").decode("utf-8")

        return DeadLetterError(
            reason=self.reason,
            error_class=text(self.error_class, 200) or "Error",
            detail=text(self.detail, _DETAIL_CHARS).strip() or text(self.error_class, 200).strip() or "unknown error",
            field=None if self.field is None else text(self.field, 200),
        )


# The fields `ProductEvent` reads; every other field is ignored whatever it holds.
_TYPED_FIELDS = ("product_id", "title", "tags", "description", "event_time")
# Python's parser raises RecursionError at a nesting depth that depends on the caller's stack (about
# 1,000 minus its depth), orjson at 1,024: inputs with this many brackets or more take the reference path.
_FAST_MAX_BRACKETS = 256


def _fast_object(value: bytes) -> dict[str, Any] | None:
    """orjson's parse of ``value`` when it is a JSON object equal to the reference parser's, else None.

    orjson refuses (and so leaves to the reference path) a UTF-8 BOM, NaN/Infinity, numbers that
    overflow a double, lone surrogate escapes, invalid UTF-8 and nesting over 1,024. What it accepts
    differently: an integer beyond 64 bits becomes a float. Ignored fields may hold anything; a float
    in a field `ProductEvent` reads may have been such an integer, so such objects take the reference
    path too (epoch milliseconds written as a float are rare).
    """
    if value.count(b"[") + value.count(b"{") >= _FAST_MAX_BRACKETS:
        return None
    try:
        obj = orjson.loads(value)
    except Exception:  # noqa: BLE001 - any refusal: the reference parser decides
        return None
    if type(obj) is not dict:  # the "not an object" detail names the type: let the reference parser say it
        return None
    for name in _TYPED_FIELDS:
        field = obj.get(name)
        if type(field) is float or (type(field) is list and any(type(item) is float for item in field)):
            return None
    return obj


def _parse_int(text: str) -> int | float:
    if len(text) <= _MAX_INT_DIGITS:
        return int(text)
    return -math.inf if text.startswith("-") else math.inf


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    details = []
    first_field: str | None = None
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err.get("loc", ()))
        # Union members report one error each (e.g. product_id.str, product_id.int): keep the field.
        field = loc.split(".")[0] if loc else None
        if first_field is None:
            first_field = field
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        details.append(f"{loc or '<root>'}: {msg}")
    return first_field, "; ".join(dict.fromkeys(details))[:_DETAIL_CHARS]


def _describe(exc: BaseException) -> str:
    return (str(exc) or repr(exc))[:_DETAIL_CHARS]


def classify(value: bytes | None, max_bytes: int) -> Valid | Rejected:
    """Validate one raw ``products`` value (see module docstring)."""
    if value is None:
        return Rejected(DeadLetterReason.INVALID_JSON, "EmptyValue", "message has no value (tombstone)")
    if len(value) > max_bytes:
        return Rejected(
            DeadLetterReason.TOO_LARGE,
            "PayloadTooLarge",
            f"value is {len(value)} bytes, over STREAM_MAX_MESSAGE_BYTES={max_bytes}",
        )
    obj: Any = _fast_object(value)
    if obj is None:  # the reference path
        try:
            text = value.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return Rejected(DeadLetterReason.NOT_UTF8, type(exc).__name__, _describe(exc))
        try:
            obj = json.loads(text, parse_int=_parse_int)
        except Exception as exc:  # noqa: BLE001 - JSONDecodeError, RecursionError (nesting), MemoryError...
            return Rejected(DeadLetterReason.INVALID_JSON, type(exc).__name__, _describe(exc)[:500])
    if not isinstance(obj, dict):
        return Rejected(DeadLetterReason.NOT_AN_OBJECT, "TypeError",
                        f"expected a JSON object, got {type(obj).__name__}")
    try:
        return Valid(ProductEvent.model_validate(obj))
    except ValidationError as exc:
        field, detail = _first_error(exc)
        return Rejected(DeadLetterReason.SCHEMA_VIOLATION, "ValidationError", detail, field)
    except Exception as exc:  # noqa: BLE001 - a validator we did not foresee: still this message's fault
        return Rejected(DeadLetterReason.SCHEMA_VIOLATION, type(exc).__name__, _describe(exc))


def _b64_len(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _raw_fitting(b64_chars: int) -> int:
    """Most raw bytes whose base64 takes at most ``b64_chars`` characters."""
    return max(0, b64_chars) // 4 * 3


def dlq_key(key: bytes | None) -> bytes | None:
    """Kafka key of the dead letter of a message with this key (see module docstring)."""
    if key is None or len(key) <= KEY_COPY_BYTES:
        return key
    return hashlib.sha256(key).hexdigest().encode("ascii")


def dead_letter(
    key: bytes | None,
    value: bytes | None,
    rejected: Rejected,
    topic: str,
    partition: int,
    offset: int,
    now: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> DeadLetter:
    """The DLQ record for a rejected message: ``model_dump_json()`` of it plus `dlq_key` of ``key`` plus
    `RECORD_OVERHEAD_BYTES` is at most ``max_bytes``."""
    error = rejected.error()
    empty = DeadLetter(
        key=None if key is None else "",
        value=None if value is None else "",
        key_size=len(key or b""),
        key_truncated=False,
        value_size=len(value or b""),
        value_truncated=False,
        error=error,
        source=SourceRef(topic=topic, partition=partition, offset=offset),
        dead_lettered_at=now or datetime.now(UTC),
    )
    # Everything but the two copies; "false" -> "true" may grow each flag by one character.
    framing = len(dlq_key(key) or b"") + RECORD_OVERHEAD_BYTES
    budget = max_bytes - framing - len(empty.model_dump_json().encode("utf-8")) - 2
    kept_key = key
    if key is not None and _b64_len(len(key)) > budget:
        kept_key = key[: _raw_fitting(min(budget, _b64_len(KEY_COPY_BYTES)))]
    budget -= _b64_len(len(kept_key)) if kept_key is not None else 0
    kept_value = value
    if value is not None and _b64_len(len(value)) > budget:
        kept_value = value[: _raw_fitting(budget)]
    return empty.model_copy(
        update={
            "key": b64(kept_key),
            "value": b64(kept_value),
            "key_truncated": key is not None and kept_key is not None and len(kept_key) < len(key),
            "value_truncated": value is not None and kept_value is not None and len(kept_value) < len(value),
        }
    )


def inference_failure(exc: BaseException) -> Rejected:
    """Classification of a message whose own model call failed."""
    return Rejected(DeadLetterReason.INFERENCE_FAILED, type(exc).__name__, _describe(exc))


def output_too_large(detail: str) -> Rejected:
    """Classification of a message whose output the broker (or the producer's limit) refused as too large."""
    return Rejected(DeadLetterReason.OUTPUT_TOO_LARGE, "MessageSizeTooLargeError", detail[:_DETAIL_CHARS])
