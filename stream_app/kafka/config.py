"""Build confluent-kafka (librdkafka) configuration dicts from the STREAM_* connection settings.

Only the connection part lives here (brokers, security protocol, SASL, TLS CA); the callers add
their role-specific keys. Values come either from explicit arguments or from the environment
(``ConnectionSettings.from_env``), with the names and defaults of docs/architecture.md.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotation: the clients (produce, tail, admin) need not load the worker's settings
    from stream_app.settings import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
# Tansu holds group joins for about half the session timeout: 6 s keeps the first fetch ~3 s away.
DEFAULT_SESSION_TIMEOUT_MS = 6000


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach the cluster. ``brokers`` is a comma-separated bootstrap list."""

    brokers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConnectionSettings:
        """Read STREAM_BROKERS, STREAM_SECURITY_PROTOCOL, STREAM_SASL_*, STREAM_SSL_CAFILE."""
        env = os.environ if environ is None else environ
        return cls(
            brokers=env.get("STREAM_BROKERS", cls.brokers),
            security_protocol=env.get("STREAM_SECURITY_PROTOCOL", cls.security_protocol),
            sasl_mechanism=env.get("STREAM_SASL_MECHANISM", cls.sasl_mechanism),
            sasl_username=env.get("STREAM_SASL_USERNAME") or None,
            sasl_password=env.get("STREAM_SASL_PASSWORD") or None,
            ssl_cafile=env.get("STREAM_SSL_CAFILE") or None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionSettings:
        """From the worker's validated settings (enum members unwrapped to their Kafka names)."""
        return cls(
            brokers=settings.brokers,
            security_protocol=settings.security_protocol.value,
            sasl_mechanism=settings.sasl_mechanism.value,
            sasl_username=settings.sasl_username,
            sasl_password=settings.sasl_password,
            ssl_cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        )

def client_config(
    brokers: str | None = None,
    *,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str = "SCRAM-SHA-512",
    sasl_username: str | None = None,
    sasl_password: str | None = None,
    ssl_cafile: str | None = None,
    settings: ConnectionSettings | None = None,
) -> dict[str, Any]:
    """Common librdkafka settings for producers, consumers and admin clients.

    Pass either the individual values or a ``ConnectionSettings``. Raises ``ValueError`` naming the
    setting when the protocol or mechanism is unknown, or SASL is selected without credentials.
    """
    if settings is None:
        settings = ConnectionSettings(
            brokers=brokers or ConnectionSettings.brokers,
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            ssl_cafile=ssl_cafile,
        )
    protocol = settings.security_protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"STREAM_SECURITY_PROTOCOL must be one of {SECURITY_PROTOCOLS}, got {protocol!r}")
    if not settings.brokers.strip():
        raise ValueError("STREAM_BROKERS is empty")
    config: dict[str, Any] = {
        "bootstrap.servers": settings.brokers,
        "security.protocol": protocol,
    }
    if protocol.startswith("SASL"):
        mechanism = settings.sasl_mechanism.upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(f"STREAM_SASL_MECHANISM must be one of {SASL_MECHANISMS}, got {mechanism!r}")
        if not settings.sasl_username or not settings.sasl_password:
            raise ValueError(
                f"security protocol {protocol} needs STREAM_SASL_USERNAME and STREAM_SASL_PASSWORD"
            )
        config["sasl.mechanism"] = mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = settings.sasl_password
    if protocol.endswith("SSL") and settings.ssl_cafile:
        config["ssl.ca.location"] = settings.ssl_cafile
    return config


def producer_config(base: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Producer settings on top of ``client_config``.

    Idempotence stays off: Tansu rejects InitProducerId. ``acks=all`` keeps delivery reports honest
    on a real cluster; ``linger.ms`` batches replays.
    """
    config = dict(base)
    config.update({"acks": "all", "enable.idempotence": False, "linger.ms": 5})
    config.update(overrides)
    return config


def consumer_config(
    base: Mapping[str, Any],
    group_id: str | None = None,
    *,
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    enable_auto_commit: bool = False,
    from_beginning: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Consumer settings on top of ``client_config``.

    ``group_id=None`` gives a fresh random group, so reads start from ``auto.offset.reset``.
    ``from_beginning`` maps to ``auto.offset.reset=earliest``; "latest" is unreliable on Tansu
    (wrong ListOffsets answers), so tools read from the beginning with a fresh group.
    ``session.timeout.ms`` defaults to 6000 because Tansu holds a join for ~half the session timeout.
    Extra librdkafka keys go in ``overrides`` (dots as in librdkafka, passed via ``**{"a.b": 1}``).
    """
    config = dict(base)
    config.update(
        {
            "group.id": group_id or f"stream-app-{uuid.uuid4().hex[:12]}",
            "session.timeout.ms": session_timeout_ms,
            # librdkafka requires heartbeat < session timeout; a third is the usual ratio.
            "heartbeat.interval.ms": max(100, session_timeout_ms // 3),
            "enable.auto.commit": enable_auto_commit,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
        }
    )
    config.update(overrides)
    return config
