"""Topic administration: idempotent creation of the service's topics.

``python -m stream_app.kafka.admin create-topics`` creates STREAM_INPUT_TOPIC, STREAM_OUTPUT_TOPIC and
STREAM_DLQ_TOPIC with STREAM_PARTITIONS partitions, STREAM_DRIFT_TOPIC (one partition, as
``Settings.topic_partitions`` says) and STREAM_REPLICATION_FACTOR replicas on STREAM_BROKERS (defaults in
docs/architecture.md). Topics must be
created explicitly: Tansu auto-creates unknown topics with 4 partitions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import typer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin re-exports it without __all__

from stream_app.kafka.config import ConnectionSettings
from stream_app.kafka.config import client_config as build_client_config

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class TopicCreationError(RuntimeError):
    """A topic could not be created (the message names it)."""


def create_topics(
    brokers: str,
    topics: Mapping[str, int],
    replication_factor: int = 1,
    client_config: Mapping[str, Any] | None = None,
    timeout: float = 15.0,
) -> dict[str, bool]:
    """Create ``topics`` (name -> partitions); return name -> True if created, False if it existed.

    Names are checked against Kafka's rule first (``ValueError``).
    Idempotent: an existing topic is fine (its partition count is not changed; Tansu cannot add
    partitions anyway). Any other failure raises ``TopicCreationError`` naming the topic.
    ``client_config`` is the connection dict of ``stream_app.kafka.config.client_config``; its
    ``bootstrap.servers`` is replaced by ``brokers``.
    """
    for name, partitions in topics.items():
        # Kafka's naming rule, checked here because Tansu accepts any name.
        if not _TOPIC_NAME.fullmatch(name):
            raise ValueError(f"topic {name!r}: invalid name (1..249 characters of [a-zA-Z0-9._-])")
        if int(partitions) < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
    if not topics:
        return {}
    config = dict(client_config or {})
    config["bootstrap.servers"] = brokers
    config.setdefault("log_level", 4)  # hide librdkafka's info line about purged events at exit
    admin = AdminClient(config)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=int(p), replication_factor=replication_factor) for name, p in topics.items()],
        request_timeout=timeout,
        operation_timeout=timeout,
    )
    created: dict[str, bool] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created[name] = True
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                created[name] = False
                continue
            raise TopicCreationError(f"could not create topic {name!r} on {brokers}: {exc}") from exc
        except Exception as exc:  # timeouts surface as concurrent.futures.TimeoutError
            raise TopicCreationError(f"could not create topic {name!r} on {brokers}: {exc!r}") from exc
    return created


def _topics_from_environment(partitions: int | None) -> tuple[str, dict[str, int], int, dict[str, Any]]:
    """(brokers, topic -> partitions, replication factor, client config) from STREAM_* variables.

    Read by ``stream_app.settings`` (validation with messages naming the variable, the drift topic
    with one partition).
    """
    from stream_app.settings import load_settings

    settings = load_settings(**({"partitions": partitions} if partitions is not None else {}))
    connection = ConnectionSettings.from_settings(settings)
    return (
        connection.brokers,
        settings.topic_partitions(),
        settings.replication_factor,
        build_client_config(settings=connection),
    )


cli = typer.Typer(add_completion=False, help="Kafka topic administration (reads STREAM_* variables).")


@cli.command("create-topics")
def _create_topics_cmd(
    brokers: str | None = typer.Option(None, "--brokers", help="Overrides STREAM_BROKERS."),
    partitions: int | None = typer.Option(None, "--partitions", help="Overrides STREAM_PARTITIONS."),
) -> None:
    """Create the input, output, drift and DLQ topics (existing ones are left as they are)."""
    try:
        env_brokers, topics, replication, config = _topics_from_environment(partitions)
        target = brokers or env_brokers
        result = create_topics(target, topics, replication, config)
    except (TopicCreationError, ValueError) as exc:  # SettingsError is a ValueError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for name, was_created in result.items():
        state = f"created ({topics[name]} partitions)" if was_created else "already exists"
        typer.echo(f"{name}: {state}")


@cli.callback()
def _main() -> None:
    """Kafka topic administration."""


if __name__ == "__main__":
    cli()
