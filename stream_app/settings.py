"""Worker settings from the environment (prefix ``STREAM_``), validated at start-up.

Contract: `load_settings()` returns a valid `Settings` or raises `SettingsError` whose message names
the offending environment variable (``STREAM_BATCH_SIZE: ...``). Names and defaults are the table in
docs/architecture.md; keep the two in step.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "STREAM_"


class SettingsError(ValueError):
    """A setting that stops start-up; the message names the environment variable(s)."""


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    PLAIN = "PLAIN"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


class Settings(BaseSettings):
    """Every knob of the worker. Field ``x`` is read from ``STREAM_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, case_sensitive=False)

    brokers: str = Field("127.0.0.1:9092", description="comma-separated bootstrap servers host:port")
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    sasl_username: str | None = None
    sasl_password: str | None = Field(None, repr=False)
    ssl_cafile: Path | None = None

    input_topic: str = "products"
    output_topic: str = "categories"
    drift_topic: str = "drift"
    dlq_topic: str = "products.dlq"
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    group_id: str = Field("product-categorizer", min_length=1)

    bundle_path: Path = Path("models/default")
    # A bundle store (stream_app/core/store.py): the worker serves its pointer's version and swaps
    # models between micro-batches when the pointer changes; STREAM_BUNDLE_PATH is then unused.
    bundle_store: Path | None = None
    bundle_poll_seconds: float = Field(5.0, gt=0, le=3600, description="how often the store pointer is read")
    # A candidate scored beside the serving model on a share of the messages (off the serving path):
    # a version in the store, or the store's shadow pointer when unset.
    shadow_version: str | None = None
    shadow_share: float = Field(0.1, ge=0, le=1, description="share of valid messages the shadow scores")
    shadow_window: int = Field(1000, ge=10, le=10_000_000, description="shadowed messages per summary record")
    shadow_topic: str = "shadow"
    batch_size: int = Field(256, ge=1, le=4096, description="max messages per micro-batch")
    # Most texts per onnxruntime call. A micro-batch is sorted by token length and cut into calls of
    # at most this many, fewer where padding would cost more than a call (core.model.plan_batches).
    model_batch_size: int = Field(32, ge=1, le=1024, description="most texts per model call")
    # 0: a batch leaves as soon as the model is idle; more trades latency for fuller batches.
    batch_max_wait_ms: int = Field(0, ge=0, le=60_000, description="linger for more messages while the model is idle")
    # How long the broker may hold a fetch when no data is there (Faust hard-codes 1500).
    fetch_max_wait_ms: int = Field(100, ge=1, le=60_000)
    max_batches_in_flight: int = Field(2, ge=1, le=64)
    inference_threads: int = Field(2, ge=1, le=256)
    # The model runs in a child process (worker/model_process.py): in the worker's own process its
    # Python shares the GIL with the event loop and lost 7-9% of the model's speed waiting for it.
    inference_process: bool = Field(True, description="run the model in a child process")
    max_message_bytes: int = Field(1_000_000, ge=64, le=100_000_000, description="larger inputs are dead-lettered")
    # Kafka's default message.max.bytes (and MSK's): no output record may exceed it.
    max_output_bytes: int = Field(1_048_576, ge=16_384, le=100_000_000, description="largest record the worker sends")
    # Memory is bounded in bytes, not messages: input bytes held by the worker (accumulating and in
    # flight) never exceed this (one message over it is still taken alone); see docs/worker.md.
    max_bytes_in_flight: int = Field(32 * 1_048_576, ge=1_048_576, le=8 * 1024**3)
    stream_buffer_messages: int = Field(32, ge=1, le=100_000, description="Faust's stream buffer, in messages")
    fetch_max_bytes: int = Field(8 * 1_048_576, ge=65_536, le=1024**3, description="bytes per fetch response")
    worker_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=255,
                           description="names this worker in alerts (default: the host name, the pod in k8s)")

    drift_window: int = Field(500, ge=10, le=10_000_000)
    drift_alpha: float = Field(1e-6, gt=0, lt=1)
    drift_retrain_after: int = Field(3, ge=1, le=1000)
    category_mix_alpha: float = Field(1e-6, gt=0, lt=1)
    dlq_alert_ratio: float = Field(0.2, ge=0, le=1)

    web_port: int = Field(6066, ge=1, le=65535)
    web_bind: str = "0.0.0.0"
    liveness_stall_seconds: float = Field(60.0, gt=0)
    data_dir: Path = Path("/tmp/stream_app")
    log_level: LogLevel = LogLevel.INFO

    @field_validator("brokers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            raise ValueError("at least one host:port is required")
        for part in parts:
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{part!r} is not host:port")
        return ",".join(parts)

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:  # mode="before": the raw input, any type
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("input_topic", "output_topic", "drift_topic", "dlq_topic", "shadow_topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        # Kafka's own rule: 1..249 chars of [a-zA-Z0-9._-].
        if not 0 < len(value) < 250 or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in value):
            raise ValueError(f"{value!r} is not a valid Kafka topic name ([a-zA-Z0-9._-], 1..249 chars)")
        return value

    @field_validator("ssl_cafile")
    @classmethod
    def _cafile(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.security_protocol in (SecurityProtocol.SASL_SSL, SecurityProtocol.SASL_PLAINTEXT):
            missing = [_env_name(f) for f in ("sasl_username", "sasl_password") if not getattr(self, f)]
            if missing:
                raise ValueError(
                    f"{', '.join(missing)} required when STREAM_SECURITY_PROTOCOL={self.security_protocol.value}"
                )
        topics = [self.input_topic, self.output_topic, self.drift_topic, self.dlq_topic, self.shadow_topic]
        if len(set(topics)) != len(topics):
            raise ValueError(
                "STREAM_INPUT_TOPIC, STREAM_OUTPUT_TOPIC, STREAM_DRIFT_TOPIC, STREAM_DLQ_TOPIC and "
                f"STREAM_SHADOW_TOPIC must differ (got {topics})"
            )
        if self.bundle_store is not None and not self.bundle_store.is_dir():
            raise ValueError(f"STREAM_BUNDLE_STORE={self.bundle_store} is not a directory")
        if self.shadow_version is not None and self.bundle_store is None:
            raise ValueError("STREAM_SHADOW_VERSION names a version of STREAM_BUNDLE_STORE, which is not set")
        return self

    # -- derived -----------------------------------------------------------------------------------

    @property
    def broker_list(self) -> list[str]:
        return self.brokers.split(",")

    @property
    def batch_max_wait_s(self) -> float:
        return self.batch_max_wait_ms / 1000.0

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in (SecurityProtocol.SASL_SSL, SecurityProtocol.SASL_PLAINTEXT)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Client TLS context (system CAs plus STREAM_SSL_CAFILE), or None without TLS."""
        if not self.uses_tls:
            return None
        return ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )

    def topic_partitions(self) -> dict[str, int]:
        """Topics the worker creates at start-up, with their partition counts."""
        topics = {
            self.input_topic: self.partitions,
            self.output_topic: self.partitions,
            self.drift_topic: 1,  # a handful of alerts; one partition keeps them in order
            self.dlq_topic: self.partitions,
        }
        if self.bundle_store is not None or self.shadow_version is not None:
            topics[self.shadow_topic] = 1  # one summary record per shadow window
        return topics


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(x) for x in error.get("loc", ()) if x is not None]
    msg = str(error.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if loc:
        value = error.get("input")
        shown = "" if value is None or isinstance(value, dict) or "password" in loc[0] else f" (got {value!r})"
        return f"{_env_name(loc[0])}: {msg}{shown}"
    return msg


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings from the environment; `overrides` win (used by tests and the CLI)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError("invalid settings: " + "; ".join(_describe(e) for e in exc.errors())) from None
