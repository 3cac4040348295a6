"""The messages on the service's topics, as pydantic models (the JSON Schemas are generated from these).

Topics and models:
* ``products`` (input)      -> `ProductEvent`: validated from raw JSON; unknown fields are ignored.
* ``categories`` (output)   -> `CategorizedProduct`, keyed by ``product_id``.
* ``drift``                 -> `DriftAlert` (the detectors' alert models), keyed by the alert type.
* ``products.dlq``          -> `DeadLetter`, keyed by the original key.

Contract of `ProductEvent`: ``product_id`` a non-blank string of at most 256 characters or a signed
64-bit integer (not a bool, not a float); ``title`` a string, non-empty after stripping, at most
1,000 characters; ``tags`` a list of at most 1,000 strings or one space-separated string (normalized
to a list of tokens), at most 10,000 characters in all; ``description`` a string of at most 100,000
characters; ``event_time`` an ISO-8601 string or epoch milliseconds, normalized to an aware UTC
datetime between 0001-01-01 and 9999-12-31 UTC (naive ISO times are taken as UTC). Only ``product_id``
and ``title`` are required; other fields are ignored whatever they hold. Strings must be valid
Unicode (no lone surrogates). Validation errors name the field. The limits keep every output record
small (the key is the product id) and are far above real catalogs' (titles of Elo7 and the fashion
catalog stay under 200 characters).
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, field_validator

# Epoch milliseconds accepted for event_time: 1970-01-01 .. 9999-12-31.
_MAX_EPOCH_MS = 253_402_300_799_999
MAX_PRODUCT_ID_CHARS = 256
MAX_TITLE_CHARS = 1_000
MAX_TAGS_CHARS = 10_000
MAX_TAGS = 1_000
MAX_DESCRIPTION_CHARS = 100_000
_INT64 = (-(2**63), 2**63 - 1)


def _unicode(text: str) -> str:
    """``text`` if it is valid Unicode; JSON can escape lone surrogates that no UTF-8 output can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode: lone surrogate {text[exc.start]!r} at character {exc.start}") from None
    return text


class ProductEvent(BaseModel):
    """One product on the ``products`` topic."""

    model_config = ConfigDict(extra="ignore", title="ProductEvent")

    product_id: StrictStr | StrictInt = Field(
        description=f"string (1..{MAX_PRODUCT_ID_CHARS} characters) or signed 64-bit integer product identifier"
    )
    title: StrictStr = Field(
        min_length=1, max_length=MAX_TITLE_CHARS, description="product title; must be non-empty after strip"
    )
    tags: Annotated[list[StrictStr], Field(max_length=MAX_TAGS)] | StrictStr | None = Field(
        None, description="list of tags, or one space-separated string of tags (10,000 characters in all)"
    )
    description: StrictStr | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    event_time: datetime | StrictInt | None = Field(
        None, description="ISO-8601 timestamp or epoch milliseconds (UTC)"
    )

    @field_validator("product_id")
    @classmethod
    def _product_id(cls, value: str | int) -> str | int:
        if isinstance(value, str):
            _unicode(value)
            if not value.strip():
                raise ValueError("must not be empty")
            if len(value) > MAX_PRODUCT_ID_CHARS:
                raise ValueError(f"{len(value)} characters, over the limit of {MAX_PRODUCT_ID_CHARS}")
        elif not _INT64[0] <= value <= _INT64[1]:
            raise ValueError("integer ids must fit in a signed 64-bit integer")
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        stripped = _unicode(value).strip()
        if not stripped:
            raise ValueError("must not be empty or whitespace")
        return stripped

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | str | None) -> list[str] | None:
        if value is None:
            return None
        tokens = value.split() if isinstance(value, str) else [t for tag in value for t in [tag.strip()] if t]
        for token in tokens:
            _unicode(token)
        if sum(len(t) + 1 for t in tokens) - 1 > MAX_TAGS_CHARS:
            raise ValueError(f"more than {MAX_TAGS_CHARS} characters of tags")
        return tokens

    @field_validator("event_time", mode="before")
    @classmethod
    def _event_time(cls, value: object) -> object:
        # Numbers are epoch milliseconds; bools are not numbers here; strings go to pydantic's ISO parser.
        if isinstance(value, bool):
            raise ValueError("must be an ISO-8601 string or epoch milliseconds, not a boolean")
        if isinstance(value, int | float):
            # A JSON integer of more than 4,300 digits arrives as an infinite float (see the parser).
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"epoch milliseconds out of range 0..{_MAX_EPOCH_MS}")
            if not 0 <= value <= _MAX_EPOCH_MS:
                raise ValueError(f"epoch milliseconds {value} out of range 0..{_MAX_EPOCH_MS}")
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            raise ValueError("epoch milliseconds must be a JSON number, not a string")
        return value

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime | int | None) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, int):  # unreachable after the before-validator; keeps the type honest
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise ValueError(f"{value.isoformat()} is outside 0001-01-01..9999-12-31 in UTC") from None

    @property
    def key(self) -> bytes:
        """Kafka key of the outputs: the product id as UTF-8 text."""
        return str(self.product_id).encode("utf-8")

    def text_fields(self) -> dict[str, str | None]:
        """Canonical text fields for `TextTemplate.render` (tags space-joined)."""
        return {
            "title": self.title,
            "tags": " ".join(self.tags) if self.tags else None,
            "description": self.description,
        }


class CategoryOut(BaseModel):
    name: str
    score: float = Field(ge=0, le=1)
    above_threshold: bool = Field(
        description="score >= the category's calibrated threshold; false only for a top category that is a best guess"
    )


class DriftOut(BaseModel):
    distance: float = Field(ge=0, le=2, description="cosine distance to the nearest centroid")
    nearest_centroid: int = Field(ge=0)
    outlier: bool = Field(description="distance > tau of the bundle's calibration")


class SourceRef(BaseModel):
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class CategorizedProduct(BaseModel):
    """One categorized product on the ``categories`` topic (key: product_id)."""

    model_config = ConfigDict(title="CategorizedProduct")

    product_id: str | int
    categories: list[CategoryOut] = Field(min_length=1, description="ranked, best first")
    top_category: str
    model_version: str = Field(description="bundle_version of the bundle that scored it")
    drift: DriftOut
    event_time: datetime | None = None
    processed_at: datetime
    source: SourceRef


class DeadLetterReason(StrEnum):
    """Why a message went to the dead-letter topic."""

    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"
    INFERENCE_FAILED = "inference_failed"
    OUTPUT_TOO_LARGE = "output_too_large"


class DeadLetterError(BaseModel):
    reason: DeadLetterReason
    error_class: str = Field(description="Python exception class (e.g. ValidationError, JSONDecodeError)")
    detail: str = Field(description="human-readable message; names the field for schema violations")
    field: str | None = Field(None, description="dotted path of the first invalid field, if any")


class DeadLetter(BaseModel):
    """A message the worker could not categorize, with everything needed to replay it."""

    model_config = ConfigDict(title="DeadLetter")

    key: str | None = Field(description="original key, base64 (null when the message had none)")
    value: str | None = Field(description="original value, base64 (null for a tombstone)")
    key_size: int = Field(0, ge=0, description="original key size in bytes")
    key_truncated: bool = Field(
        False, description="true when `key` holds only the first bytes (the record must fit the output limit)"
    )
    value_size: int = Field(ge=0, description="original value size in bytes")
    value_truncated: bool = Field(
        False, description="true when `value` holds only the first bytes (the record must fit the output limit)"
    )
    error: DeadLetterError
    source: SourceRef
    dead_lettered_at: datetime

    def original_value(self) -> bytes | None:
        return None if self.value is None else base64.b64decode(self.value)

    def original_key(self) -> bytes | None:
        return None if self.key is None else base64.b64decode(self.key)


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def drift_alert_adapter() -> TypeAdapter[Any]:
    """TypeAdapter of the ``drift`` topic's messages (one union of the detectors' record models).

    ``status: "firing"``: ``EmbeddingDriftAlert`` / ``CategoryMixAlert`` / ``SequentialDriftAlert``;
    ``status: "resolved"``: ``DriftResolved``. Every record names its window (input topic, partition,
    offsets) and carries a deterministic ``alert_id`` to deduplicate re-sent records (see
    ``stream_app.core.drift.alerts``).
    """
    from stream_app.core.drift.alerts import CategoryMixAlert, DriftResolved, EmbeddingDriftAlert, SequentialDriftAlert

    drift_alert: Any = Annotated[EmbeddingDriftAlert | CategoryMixAlert | SequentialDriftAlert | DriftResolved,
                                 Field(title="DriftAlert")]  # a runtime type form, which mypy cannot check
    return TypeAdapter(drift_alert)
