"""Replay and tail against the real broker; config and admin helpers."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer

from stream_app.kafka.admin import TopicCreationError, create_topics
from stream_app.kafka.config import ConnectionSettings, client_config, consumer_config
from stream_app.tools.produce import ColumnMapping, ReplayError, TokenBucket, replay
from stream_app.tools.tail import tail

REPO = Path(__file__).resolve().parents[1]
DATASETS = (REPO / os.environ.get("DATASETS_DIR", "../shared/datasets")).resolve()
ELO7 = DATASETS / "elo7" / "products.parquet"
STYLES = DATASETS / "fashion" / "styles.csv"
STYLES_TEXT = DATASETS / "fashion" / "styles_text.csv"
FASHION_COLUMNS = "product_id=id,title=productDisplayName,tags=articleType+baseColour,event_time=year"
RECORD_KEYS = {"topic", "partition", "offset", "key", "timestamp", "value"}

needs_data = pytest.mark.skipif(not ELO7.exists() or not STYLES.exists(), reason=f"datasets not at {DATASETS}")


def read_back(broker: str, topic: str, limit: int | None = None, timeout: float = 1.0) -> list[dict]:
    out = io.StringIO()
    count = tail(broker, topic, limit=limit, timeout=timeout, out=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == len(lines)
    return lines


# -- replay + tail on the broker -----------------------------------------------------------------


@pytest.mark.broker
@needs_data
def test_replay_elo7_then_tail(broker: str, unique_topics) -> None:
    (topic,) = unique_topics("elo7", partitions=3)
    assert replay(ELO7, broker, topic, limit=300, progress=False) == 300

    records = read_back(broker, topic)
    assert len(records) == 300
    source = pd.read_parquet(ELO7).head(300)
    assert all(set(r) == RECORD_KEYS for r in records)
    assert {r["topic"] for r in records} == {topic}
    assert {r["partition"] for r in records} <= {0, 1, 2}
    # Keyed by product id; duplicates of a product (one row per search click) share a partition.
    assert sorted(r["key"] for r in records) == sorted(source["product_id"].astype(str))
    partition_of: dict[str, int] = {}
    for r in records:
        assert partition_of.setdefault(r["key"], r["partition"]) == r["partition"]
        assert r["value"]["product_id"] == r["key"]
        assert set(r["value"]) <= {"product_id", "title", "tags", "description", "event_time"}
        assert isinstance(r["timestamp"], int)
    # Mapping and time conversion: row 0 of the catalog, found by its partition order.
    first = source.iloc[0]
    match = next(r["value"] for r in records if r["key"] == str(first["product_id"]))
    assert match["title"] == first["title"]
    assert match["tags"] == first["concatenated_tags"]
    assert match["event_time"] == pd.Timestamp(first["creation_date"], tz="UTC").isoformat()
    # Offsets per partition are dense from 0: nothing lost, nothing duplicated.
    for partition in {r["partition"] for r in records}:
        offsets = sorted(r["offset"] for r in records if r["partition"] == partition)
        assert offsets == list(range(len(offsets)))


@pytest.mark.broker
@needs_data
def test_replay_fashion_joined_by_position(broker: str, unique_topics) -> None:
    (topic,) = unique_topics("fashion", partitions=2)
    sent = replay(
        STYLES_TEXT, broker, topic, limit=50, columns=FASHION_COLUMNS, join_by_position=STYLES, progress=False
    )
    assert sent == 50
    records = read_back(broker, topic)
    styles = pd.read_csv(STYLES, dtype=str, nrows=50)
    names = pd.read_csv(STYLES_TEXT, dtype=str, nrows=50)
    expected = {
        pid: (title, f"{article} {colour}", year)
        for pid, title, article, colour, year in zip(
            styles["id"], names["productDisplayName"], styles["articleType"], styles["baseColour"], styles["year"]
        )
    }
    assert len(records) == 50 and {r["key"] for r in records} == set(expected)
    for r in records:
        title, tags, year = expected[r["key"]]
        assert r["value"]["title"] == title
        assert r["value"]["tags"] == tags
        assert r["value"]["event_time"] == f"{year}-01-01T00:00:00+00:00"


@pytest.mark.broker
@needs_data
def test_replay_row_number_ids_and_product_event_contract(broker: str, unique_topics) -> None:
    (topic,) = unique_topics("rows", partitions=1)
    assert replay(STYLES_TEXT, broker, topic, limit=20, columns="product_id=#row,title=productDisplayName,tags=,event_time=", progress=False) == 20
    records = read_back(broker, topic)
    assert [r["key"] for r in records] == [str(i) for i in range(20)]  # one partition: order kept
    assert all(r["value"]["tags"] == "" and "event_time" not in r["value"] for r in records)
    messages = pytest.importorskip("stream_app.messages")
    for r in records:
        messages.ProductEvent.model_validate(r["value"])


@pytest.mark.broker
@needs_data
def test_rate_limit_is_applied(broker: str, unique_topics) -> None:
    (topic,) = unique_topics("rate", partitions=1)
    started = time.monotonic()
    assert replay(ELO7, broker, topic, limit=30, rate=50.0, progress=False) == 30
    # 30 messages at 50/s with a 5-token burst: at least (30 - 5) / 50 = 0.5 s.
    assert time.monotonic() - started >= 0.45


@pytest.mark.broker
def test_tail_limit_and_non_json_values(broker: str, unique_topics) -> None:
    (topic,) = unique_topics("raw", partitions=1)
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(topic, key=b"a", value=b'{"x": 1}')
    producer.produce(topic, key=b"\xff\xfe", value=b"\x00\x01not json")
    producer.produce(topic, key=None, value=None)
    assert producer.flush(10) == 0
    del producer  # destroy now: a live client would reconnect-spam once the broker is gone
    records = read_back(broker, topic)
    assert [r["offset"] for r in records] == [0, 1, 2]
    assert records[0]["value"] == {"x": 1} and "value_base64" not in records[0]
    assert records[1]["value"] == "AAFub3QganNvbg==" and records[1]["value_base64"] is True
    assert records[1]["key"] == "//4=" and records[1]["key_base64"] is True
    assert records[2]["key"] is None and records[2]["value"] is None
    assert len(read_back(broker, topic, limit=2)) == 2


@pytest.mark.broker
def test_tail_unknown_topic_raises(broker: str) -> None:
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException, match="no-such-topic"):
        tail(broker, "no-such-topic-4b1f", timeout=1.0, out=io.StringIO())


# -- errors that name the file / column -----------------------------------------------------------


@needs_data
def test_bad_column_name_is_a_clear_error() -> None:
    with pytest.raises(ReplayError, match=r"styles_text\.csv.*'productName' \(for title\)"):
        replay(STYLES_TEXT, "127.0.0.1:1", "unused", limit=5, columns="title=productName,product_id=#row", progress=False)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(ReplayError, match=f"not found: {missing}"):
        replay(missing, "127.0.0.1:1", "unused", progress=False)


def test_unsupported_suffix_and_bad_times(tmp_path: Path) -> None:
    odd = tmp_path / "catalog.xlsx"
    odd.write_text("x")
    with pytest.raises(ReplayError, match="unsupported catalog format '.xlsx'"):
        replay(odd, "127.0.0.1:1", "unused", progress=False)
    lines = tmp_path / "catalog.jsonl"
    lines.write_text('{"id": 1, "name": "a", "when": "2020-01-01"}\n{"id": 2, "name": "b", "when": "yesterday"}\n')
    with pytest.raises(ReplayError, match=r"catalog\.jsonl: row 1, column 'when'"):
        replay(lines, "127.0.0.1:1", "unused", columns="product_id=id,title=name,tags=,event_time=when", progress=False)


def test_column_mapping_parse() -> None:
    mapping = ColumnMapping.parse("title=productDisplayName,product_id=id")
    assert (mapping.product_id, mapping.title, mapping.tags) == ("id", "productDisplayName", "concatenated_tags")
    assert ColumnMapping.parse("tags=").tags is None
    with pytest.raises(ValueError, match="'colour=x'"):
        ColumnMapping.parse("colour=x")
    with pytest.raises(ValueError, match="product_id must be mapped"):
        ColumnMapping.parse("product_id=")


def test_token_bucket_paces() -> None:
    bucket = TokenBucket(rate=200.0, capacity=1.0)
    started = time.monotonic()
    for _ in range(41):
        bucket.acquire()
    assert 0.18 <= time.monotonic() - started < 1.0  # 40 tokens beyond the first at 200/s


# -- config and admin -----------------------------------------------------------------------------


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
    settings_module = pytest.importorskip("stream_app.settings")
    settings = settings_module.Settings(brokers="k:1,k:2", security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    config = client_config(settings=ConnectionSettings.from_settings(settings))
    assert config["security.protocol"] == "SASL_PLAINTEXT" and config["sasl.mechanism"] == "SCRAM-SHA-512"


@pytest.mark.broker
def test_create_topics_is_idempotent(broker: str) -> None:
    from confluent_kafka.admin import AdminClient

    name = f"admin-{os.getpid()}-{time.monotonic_ns()}"
    assert create_topics(broker, {name: 3}) == {name: True}
    assert create_topics(broker, {name: 5}) == {name: False}  # existing: fine, unchanged
    metadata = AdminClient({"bootstrap.servers": broker}).list_topics(name, timeout=10)
    assert len(metadata.topics[name].partitions) == 3
    with pytest.raises(ValueError, match="'bad topic!'"):
        create_topics(broker, {"bad topic!": 1})


def test_create_topics_unreachable_names_the_topic() -> None:
    from stream_app.broker import free_port

    with pytest.raises(TopicCreationError, match="'orders'"):
        create_topics(f"127.0.0.1:{free_port()}", {"orders": 1}, timeout=2.0)
