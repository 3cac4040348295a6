"""Prometheus metrics of the worker, in one registry (served at GET /metrics by the Faust web server).

The names are a contract with the Grafana dashboard: change them only together with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_CONSUMED = Counter(
    "stream_messages_consumed_total", "Messages taken from the input topic", registry=REGISTRY
)
MESSAGES_PRODUCED = Counter(
    "stream_messages_produced_total", "Messages acknowledged by the broker, per topic", ["topic"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "stream_dead_letters_total", "Messages sent to the dead-letter topic, per reason", ["reason"], registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "stream_batch_size",
    "Messages per micro-batch (valid and invalid)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "stream_inference_seconds",
    "Wall time of one model call (one batch)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
END_TO_END_LATENCY = Histogram(
    "stream_end_to_end_latency_seconds",
    "Event time (or broker timestamp when the event has none) to output acknowledged",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
    registry=REGISTRY,
)
DRIFT_DISTANCE = Histogram(
    "stream_drift_distance",
    "Cosine distance of each message's embedding to its nearest centroid",
    buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0, 2.0),
    registry=REGISTRY,
)
OUTLIER_RATIO = Gauge("stream_outlier_ratio", "Share of outliers in the last complete window", registry=REGISTRY)
DRIFT_ALERTS = Counter(
    "stream_drift_alerts_total",
    "Drift records published, per type and recommendation (investigate, retrain, resolved)",
    ["type", "recommendation"], registry=REGISTRY,
)
BATCHES_IN_FLIGHT = Gauge("stream_batches_in_flight", "Batches taken but not yet acknowledged", registry=REGISTRY)
DLQ_RATIO = Gauge("stream_dlq_ratio", "Share of the last complete window that went to the DLQ", registry=REGISTRY)
MODEL_INFO = Info("stream_model", "The serving bundle", registry=REGISTRY)  # exposed as stream_model_info
MODEL_SWAPS = Counter(
    "stream_model_swaps_total", "Bundle changes seen in the store, per result (swapped, refused)", ["result"],
    registry=REGISTRY,
)
SHADOW_MESSAGES = Counter("stream_shadow_messages_total", "Messages scored by the shadow model", registry=REGISTRY)
SHADOW_SECONDS = Counter("stream_shadow_seconds_total", "Model seconds spent by the shadow", registry=REGISTRY)
SHADOW_FAILURES = Counter(
    "stream_shadow_failures_total", "Shadow model calls or summaries that failed", registry=REGISTRY
)
SHADOW_AGREEMENT = Gauge(
    "stream_shadow_agreement", "Top-1 agreement of shadow and serving model over the last window", registry=REGISTRY
)
CONSUMER_LAG = Gauge(
    "stream_consumer_lag",
    "High watermark minus next offset to read, per input partition (best effort: wrong on Tansu)",
    ["partition"],
    registry=REGISTRY,
)


def set_model_info(model_version: str, encoder: str, labels: Sequence[str]) -> None:
    MODEL_INFO.info({"model_version": model_version, "encoder": encoder, "labels": ",".join(labels)})


def render() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
