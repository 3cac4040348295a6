"""Raw bytes -> `ProductEvent` or a dead-letter classification. Pure: no Kafka, no Faust.

Contract: `classify(value, max_bytes)` never raises. It returns a `Valid` with the parsed event, or a
`Rejected` naming the `DeadLetterReason`, the error class and a detail that names the invalid field
(for schema violations). Checks run cheapest first: size, UTF-8, JSON, object, schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from stream_app.messages import DeadLetter, DeadLetterError, DeadLetterReason, ProductEvent, SourceRef, b64

# A too-large payload cannot be copied whole into the DLQ (it would exceed the same size limits);
# keep a prefix that is enough to identify it.
TRUNCATED_VALUE_BYTES = 64 * 1024


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
        return DeadLetterError(reason=self.reason, error_class=self.error_class, detail=self.detail, field=self.field)


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
    return first_field, "; ".join(dict.fromkeys(details))[:2000]


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
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(DeadLetterReason.NOT_UTF8, type(exc).__name__, str(exc))
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Rejected(DeadLetterReason.INVALID_JSON, type(exc).__name__, str(exc)[:500])
    if not isinstance(obj, dict):
        return Rejected(DeadLetterReason.NOT_AN_OBJECT, "TypeError", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return Valid(ProductEvent.model_validate(obj))
    except ValidationError as exc:
        field, detail = _first_error(exc)
        return Rejected(DeadLetterReason.SCHEMA_VIOLATION, "ValidationError", detail, field)


def dead_letter(
    key: bytes | None,
    value: bytes | None,
    rejected: Rejected,
    topic: str,
    partition: int,
    offset: int,
    now: datetime | None = None,
) -> DeadLetter:
    """The DLQ record for a rejected message (original key/value base64; too-large values truncated)."""
    size = len(value) if value is not None else 0
    truncated = value is not None and rejected.reason is DeadLetterReason.TOO_LARGE and size > TRUNCATED_VALUE_BYTES
    kept = value[:TRUNCATED_VALUE_BYTES] if truncated and value is not None else value
    return DeadLetter(
        key=b64(key),
        value=b64(kept),
        value_size=size,
        value_truncated=truncated,
        error=rejected.error(),
        source=SourceRef(topic=topic, partition=partition, offset=offset),
        dead_lettered_at=now or datetime.now(UTC),
    )


def inference_failure(exc: BaseException) -> Rejected:
    """Classification of a message whose own model call failed."""
    return Rejected(DeadLetterReason.INFERENCE_FAILED, type(exc).__name__, str(exc)[:2000] or repr(exc))
