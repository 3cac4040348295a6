"""The Kafka client helpers (`stream_app.kafka`): client and consumer config from settings, topic admin."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka.admin import AdminClient

from stream_app.broker import free_port
from stream_app.kafka.admin import TopicCreationError, create_topics
from stream_app.kafka.config import ConnectionSettings, client_config, consumer_config
from stream_app.settings import Settings


def test_client_config_sasl_ssl_and_errors() -> None:
    config = client_config(
        "b1:9096,b2:9096",
        security_protocol="sasl_ssl",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile="/etc/ca.pem",
    )
    assert config == {
        "bootstrap.servers": "b1:9096,b2:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert client_config("b:9092") == {"bootstrap.servers": "b:9092", "security.protocol": "PLAINTEXT"}
    with pytest.raises(ValueError, match="STREAM_SASL_USERNAME"):
        client_config("b:9092", security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ValueError, match="STREAM_SECURITY_PROTOCOL"):
        client_config("b:9092", security_protocol="TLS")
    consumer = consumer_config(config, "g")
    assert consumer["session.timeout.ms"] == 6000 and consumer["enable.auto.commit"] is False
    assert consumer["group.id"] == "g" and consumer["auto.offset.reset"] == "earliest"
    assert consumer_config({}, None)["group.id"] != consumer_config({}, None)["group.id"]


def test_connection_settings_from_env_and_settings() -> None:
    env = {"STREAM_BROKERS": "k:1", "STREAM_SECURITY_PROTOCOL": "SSL", "STREAM_SSL_CAFILE": "/ca"}
    assert client_config(settings=ConnectionSettings.from_env(env)) == {
        "bootstrap.servers": "k:1",
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca",
    }
    settings = Settings(brokers="k:1,k:2", security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    config = client_config(settings=ConnectionSettings.from_settings(settings))
    assert config["security.protocol"] == "SASL_PLAINTEXT" and config["sasl.mechanism"] == "SCRAM-SHA-512"


@pytest.mark.broker
def test_create_topics_is_idempotent(broker: str) -> None:
    name = f"admin-{os.getpid()}-{time.monotonic_ns()}"
    assert create_topics(broker, {name: 3}) == {name: True}
    assert create_topics(broker, {name: 5}) == {name: False}  # existing: fine, unchanged
    metadata = AdminClient({"bootstrap.servers": broker}).list_topics(name, timeout=10)
    assert len(metadata.topics[name].partitions) == 3
    with pytest.raises(ValueError, match="'bad topic!'"):
        create_topics(broker, {"bad topic!": 1})


def test_create_topics_unreachable_names_the_topic() -> None:
    with pytest.raises(TopicCreationError, match="'orders'"):
        create_topics(f"127.0.0.1:{free_port()}", {"orders": 1}, timeout=2.0)
