"""Look a topic up before the produce and tail tools use it.

Contract: ``topic_partitions(config, topic)`` returns the sorted partition ids of ``topic`` or raises

* ``BrokerUnavailable`` when no broker of ``config["bootstrap.servers"]`` answers within ``timeout``;
* ``TopicNotFound`` when the cluster answers but has no such topic (or it has no partitions).

Both are ``ClusterError`` and their messages name the brokers and the topic. ``check_target`` adds
the check that a chosen partition exists (``TopicNotFound`` naming it). The lookup never creates
the topic: it asks as a consumer (librdkafka's producer metadata requests let Tansu and Kafka's
``auto.create.topics.enable`` create a missing topic, with the broker's default partition count).
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException

from stream_app.kafka.config import consumer_config

# librdkafka config values are str, int, float or bool (callbacks excluded here).
ClientConfig = Mapping[str, str | int | float | bool]


class ClusterError(RuntimeError):
    """The cluster cannot serve the request; the message names the brokers and the topic."""


class BrokerUnavailable(ClusterError):
    """No broker answered."""


class TopicNotFound(ClusterError):
    """The cluster answered and has no such topic."""


def topic_partitions(config: ClientConfig, topic: str, timeout: float = 10.0) -> list[int]:
    """Sorted partition ids of ``topic`` on the cluster of ``config`` (a ``client_config`` dict)."""
    brokers = config.get("bootstrap.servers", "?")
    # log_level 0: the connection errors librdkafka would print are summed up by the exception below.
    settings = consumer_config(config, None)
    settings.update({"log_level": 0, "allow.auto.create.topics": False})
    consumer = Consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        reason = error.str() if isinstance(error, KafkaError) else str(exc)
        raise BrokerUnavailable(f"broker {brokers} does not answer within {timeout:g} s ({reason})") from exc
    finally:
        consumer.close()
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        reason = found.error.str() if found is not None and found.error is not None else "no partitions"
        raise TopicNotFound(f"topic {topic!r} does not exist on {brokers} ({reason})")
    return sorted(found.partitions)


def check_target(config: ClientConfig, topic: str, partition: int | None = None, timeout: float = 10.0) -> list[int]:
    """The partitions to use: ``[partition]`` when one is chosen, else all of ``topic`` (``topic_partitions``)."""
    partitions = topic_partitions(config, topic, timeout)
    if partition is None:
        return partitions
    if partition not in partitions:
        raise TopicNotFound(f"topic {topic!r} on {config.get('bootstrap.servers', '?')} has no partition {partition} "
                            f"(it has {partitions[0]}..{partitions[-1]})")
    return [partition]
