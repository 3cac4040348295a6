"""Output records of one input: the ``categories`` message or the dead letter, as bytes ready to send.

Contract: every `Output` built here serializes to at most ``max_output_bytes`` (STREAM_MAX_OUTPUT_BYTES):
a categories message is small by construction (ProductEvent bounds the product id; a few categories),
and is checked anyway; a dead letter cuts its copies of key and value to fit (`dead_letters`).

Speed: a ``categories`` record is written by orjson straight from the prediction, byte for byte what
``CategorizedProduct(...).model_dump_json()`` writes (tests/worker/test_fast_paths.py compares
them); a record the model would refuse (a NaN or out-of-range score...) is built by the model
itself, which raises as it always did. Dead letters (rare) still go through their pydantic model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_app import metrics
from stream_app.core.pipeline import Prediction
from stream_app.messages import CategorizedProduct, CategoryOut, DriftOut, ProductEvent, SourceRef
from stream_app.worker.dead_letters import (
    Rejected,
    dead_letter,
    dlq_key,
    output_too_large,
)
from stream_app.worker.record import ConsumedRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Topics:
    output: str
    drift: str
    dlq: str


@dataclass(frozen=True, slots=True)
class Output:
    """One record to send. ``origin`` is the input's event time (or broker timestamp) for the latency metric."""

    topic: str
    key: bytes | None
    value: bytes
    what: str  # "categories", "dead_letter:<reason>" or "alert:<type>": for logs and fallbacks
    origin: float | None = None


class OutputBuilder:
    def __init__(self, topics: Topics, max_output_bytes: int) -> None:
        self.topics = topics
        self.max_output_bytes = max_output_bytes

    def categorized(
        self, record: ConsumedRecord, event: ProductEvent, prediction: Prediction, model_version: str
    ) -> Output:
        """The ``categories`` record; raises ValueError when it cannot be built (e.g. NaN scores)."""
        drift = prediction.drift
        processed_at = _utcnow()
        value = _categorized_json(record, event, prediction, model_version, processed_at)
        if value is None:  # the model refuses it: let the model say why (it raises)
            value = _validated_json(record, event, prediction, model_version, processed_at)
        if len(value) > self.max_output_bytes:
            raise ValueError(f"categories record is {len(value)} bytes, over STREAM_MAX_OUTPUT_BYTES")
        metrics.DRIFT_DISTANCE.observe(float(drift.distance))
        # event_time is a datetime after validation (epoch milliseconds are converted; messages.py)
        origin = event.event_time.timestamp() if isinstance(event.event_time, datetime) else record.timestamp
        return Output(self.topics.output, event.key, value, "categories", origin)

    def dead_letter(self, record: ConsumedRecord, rejected: Rejected, max_bytes: int | None = None) -> Output:
        letter = dead_letter(record.key, record.value, rejected, record.topic, record.partition, record.offset,
                             max_bytes=max_bytes or self.max_output_bytes)
        metrics.DEAD_LETTERS.labels(reason=rejected.reason.value).inc()
        log.info("dead letter %s:%d@%d reason=%s %s", record.topic, record.partition, record.offset,
                 rejected.reason.value, rejected.detail[:200])
        return Output(self.topics.dlq, dlq_key(record.key), letter.model_dump_json().encode("utf-8"),
                      f"dead_letter:{rejected.reason.value}")

    def refused(self, record: ConsumedRecord, output: Output, error: BaseException, max_bytes: int) -> Output:
        """A small dead letter replacing an output that the producer or the broker refused as too large."""
        detail = f"{output.what} record of {len(output.value)} bytes refused as too large: {error}"
        return self.dead_letter(record, output_too_large(detail), max_bytes)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _validated_json(record: ConsumedRecord, event: ProductEvent, prediction: Prediction, model_version: str,
                    processed_at: datetime) -> bytes:
    """The ``categories`` record through its pydantic model (raises what the model refuses)."""
    drift = prediction.drift
    message = CategorizedProduct(
        product_id=event.product_id,
        categories=[CategoryOut(name=c.name, score=float(c.score), above_threshold=bool(c.above_threshold))
                    for c in prediction.categories],
        top_category=prediction.top_category,
        model_version=model_version,
        drift=DriftOut(distance=float(drift.distance), nearest_centroid=int(drift.nearest_centroid),
                       outlier=bool(drift.outlier)),
        event_time=event.event_time,
        processed_at=processed_at,
        source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
    )
    return message.model_dump_json().encode("utf-8")


def _categorized_json(record: ConsumedRecord, event: ProductEvent, prediction: Prediction, model_version: str,
                      processed_at: datetime) -> bytes | None:
    """`_validated_json`'s bytes written directly, or None when `CategorizedProduct` would refuse a value.

    The checks are the model's constraints (messages.py); keys in the model's field order, compact
    separators, floats in shortest round-trip form and UTC datetimes with a ``Z``, as pydantic writes them.
    """
    categories: list[dict[str, Any]]  # JSON objects for orjson: str, float and bool values
    try:
        categories = [{"name": c.name, "score": float(c.score), "above_threshold": bool(c.above_threshold)}
                      for c in prediction.categories]
        drift = prediction.drift
        distance, nearest = float(drift.distance), int(drift.nearest_centroid)
        product_id, event_time = event.product_id, event.event_time
    except Exception:  # noqa: BLE001 - the model path raises the same error
        return None
    if not (categories and all(type(c["name"]) is str and 0.0 <= c["score"] <= 1.0 for c in categories)
            and 0.0 <= distance <= 2.0 and nearest >= 0 and record.partition >= 0 and record.offset >= 0
            and type(record.topic) is str and type(model_version) is str
            and type(product_id) in (str, int) and (event_time is None or type(event_time) is datetime)):
        return None
    try:
        return orjson.dumps({
            "product_id": product_id,
            "categories": categories,
            "top_category": categories[0]["name"],
            "model_version": model_version,
            "drift": {"distance": distance, "nearest_centroid": nearest, "outlier": bool(drift.outlier)},
            "event_time": event_time,
            "processed_at": processed_at,
            "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        }, option=orjson.OPT_UTC_Z)
    except (TypeError, ValueError):  # e.g. a time zone orjson does not know: the model path writes it
        return None
