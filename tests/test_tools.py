"""The produce and tail tools (`stream_app.tools`: library and ``python -m stream_app produce|tail``)
against the real broker; record rendering and parsing.

The Kafka client config and topic admin (`stream_app.kafka`) are in tests/test_kafka.py.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Message, Producer
from typer.testing import CliRunner

from stream_app.__main__ import cli
from stream_app.messages import ProductEvent
from stream_app.tools.produce import (
    ColumnMapping,
    ReplayError,
    TokenBucket,
    parse_header,
    produce_lines,
    replay,
    split_line,
)
from stream_app.tools.tail import compile_format, end_offsets, json_line, record_to_dict, tail
from stream_app.tools.topics import BrokerUnavailable, TopicNotFound, topic_partitions

REPO = Path(__file__).resolve().parents[1]
DATASETS = (REPO / os.environ.get("DATASETS_DIR", "../shared/datasets")).resolve()
ELO7 = DATASETS / "elo7" / "products.parquet"
STYLES = DATASETS / "fashion" / "styles.csv"
STYLES_TEXT = DATASETS / "fashion" / "styles_text.csv"
FASHION_COLUMNS = "product_id=id,title=productDisplayName,tags=articleType+baseColour,event_time=year"
RECORD_KEYS = {"topic", "partition", "offset", "key", "timestamp", "value", "headers"}

needs_data = pytest.mark.skipif(not ELO7.exists() or not STYLES.exists(), reason=f"datasets not at {DATASETS}")


def read_back(broker: str, topic: str, limit: int | None = None) -> list[dict]:
    """Every record of ``topic`` as it is now (from the beginning until the end), JSON-decoded."""
    out = io.BytesIO()
    count = tail(broker, topic, out, json_line, from_beginning=True, until_end=True, count=limit, timeout=20)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == len(lines)
    return lines


def run_cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """``python -m stream_app ARGS`` in process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, list(args), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


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
            styles["id"], names["productDisplayName"], styles["articleType"], styles["baseColour"], styles["year"],
            strict=True,
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
    columns = "product_id=#row,title=productDisplayName,tags=,event_time="
    assert replay(STYLES_TEXT, broker, topic, limit=20, columns=columns, progress=False) == 20
    records = read_back(broker, topic)
    assert [r["key"] for r in records] == [str(i) for i in range(20)]  # one partition: order kept
    assert all(r["value"]["tags"] == "" and "event_time" not in r["value"] for r in records)
    for r in records:
        ProductEvent.model_validate(r["value"])


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
    producer.produce(topic, key=b"t", value=b"\xff not utf-8")
    assert producer.flush(10) == 0
    del producer  # destroy now: a live client would reconnect-spam once the broker is gone
    records = read_back(broker, topic)
    assert [r["offset"] for r in records] == [0, 1, 2, 3]
    assert records[0]["value"] == {"x": 1} and "value_base64" not in records[0]
    assert records[1]["value"] == "\x00\x01not json" and "value_base64" not in records[1]  # UTF-8 text as is
    assert records[1]["key"] == "//4=" and records[1]["key_base64"] is True
    assert records[2]["key"] is None and records[2]["value"] is None and records[2]["headers"] == []
    assert records[3]["value"] == "/yBub3QgdXRmLTg=" and records[3]["value_base64"] is True
    assert len(read_back(broker, topic, limit=2)) == 2


@pytest.mark.broker
def test_tail_unknown_topic_raises(broker: str) -> None:
    with pytest.raises(TopicNotFound, match="'no-such-topic-4b1f' does not exist"):
        tail(broker, "no-such-topic-4b1f", io.BytesIO(), timeout=1.0)


# -- the produce / tail command lines on the broker ----------------------------------------------


@pytest.fixture
def keyed_topic(broker: str, unique_topics: Callable[..., list[str]]) -> str:
    """A 3-partition topic holding 5 records sent by ``produce --stdin`` (partitions pinned with -p)."""
    (topic,) = unique_topics("cli", partitions=3)
    code, _, err = run_cli("produce", "--stdin", "-b", broker, "-t", topic, "-K", ":", "-p", "2",
                           "-H", "source=test", "-H", "trace=a=b",
                           stdin='k1:{"title": "Caneca"}\nk2:plain text\n\nno delimiter\n')
    assert code == 0, err
    assert "3 messages delivered" in err
    code, _, err = run_cli("produce", "--file", "-", "-b", broker, "-t", topic, "-p", "0", "--key", "product_id",
                           stdin='{"product_id": "p1", "title": "Vaso"}\r\n{"product_id": 7, "title": "Laço"}\n')
    assert code == 0, err
    return topic


@pytest.mark.broker
def test_produce_stdin_then_tail_json(broker: str, keyed_topic: str) -> None:
    code, out, err = run_cli("tail", "-b", broker, "-t", keyed_topic, "--from-beginning", "--until-end", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert all(set(r) == RECORD_KEYS and isinstance(r["timestamp"], int) for r in records)
    headers = [["source", "test"], ["trace", "a=b"]]  # "=" in a value: split at the first one only
    got = sorted(([r["partition"], r["offset"], r["key"], r["value"], r["headers"]] for r in records), key=str)
    assert got == [
        [0, 0, "p1", {"product_id": "p1", "title": "Vaso"}, []],  # \r\n line end removed
        [0, 1, "7", {"product_id": 7, "title": "Laço"}, []],  # a JSON number key becomes its text
        [2, 0, "k1", {"title": "Caneca"}, headers],
        [2, 1, "k2", "plain text", headers],
        [2, 2, None, "no delimiter", headers],  # the empty line was skipped
    ]
    assert {r["topic"] for r in records} == {keyed_topic}
    assert err.strip() == f"5 messages from {keyed_topic}"


@pytest.mark.broker
def test_tail_format_string_and_partition(broker: str, keyed_topic: str) -> None:
    code, out, _ = run_cli("tail", "-b", broker, "-t", keyed_topic, "--from-beginning", "-e", "-p", "2",
                           "--format", r"%t|%p|%o|%k|%s|%h|%K|%S\t%%\n")
    assert code == 0
    assert out == (f"{keyed_topic}|2|0|k1|{{\"title\": \"Caneca\"}}|source=test,trace=a=b|2|19\t%\n"
                   f"{keyed_topic}|2|1|k2|plain text|source=test,trace=a=b|2|10\t%\n"
                   f"{keyed_topic}|2|2||no delimiter|source=test,trace=a=b|-1|12\t%\n")
    # Default output: the value alone per line (kcat's %s\n); --count stops early.
    code, out, _ = run_cli("tail", "-b", broker, "-t", keyed_topic, "--from-beginning", "-p", "0", "-c", "1")
    assert (code, out) == (0, '{"product_id": "p1", "title": "Vaso"}\n')


@pytest.mark.broker
def test_tail_from_the_end_prints_only_new_records(broker: str, unique_topics: Callable[..., list[str]]) -> None:
    (topic,) = unique_topics("end", partitions=2)
    # One batch of 30 records: Tansu then answers "latest" with 1 (last batch base + 1), not 30.
    assert produce_lines([b"old-%d" % i for i in range(30)], broker, topic, partition=0) == 30
    assert end_offsets({"bootstrap.servers": broker}, topic, [0, 1]) == {0: (0, 30), 1: (0, 0)}
    assert run_cli("tail", "-b", broker, "-t", topic, "-e") == (0, "", f"0 messages from {topic}\n")

    out = io.BytesIO()
    reader = threading.Thread(target=tail, args=(broker, topic, out, compile_format(r"%o %s\n")),
                              kwargs={"count": 1, "timeout": 30})
    reader.start()
    # Keep sending until the reader got one: whenever it started, what it prints must be new.
    for i in range(30):
        if not reader.is_alive():
            break
        produce_lines([b"new-%d" % i], broker, topic, partition=0)
        reader.join(1.0)
    reader.join(5)
    assert not reader.is_alive()
    offset, value = out.getvalue().decode().split()
    assert int(offset) >= 30 and value.startswith("new-")


@pytest.mark.broker
def test_tail_group_resumes_where_it_stopped(broker: str, unique_topics: Callable[..., list[str]]) -> None:
    (topic,) = unique_topics("group", partitions=1)
    produce_lines([b"m%d" % i for i in range(5)], broker, topic)
    group = f"tail-test-{topic}"
    first = run_cli("tail", "-b", broker, "-t", topic, "-G", group, "--from-beginning", "-c", "2")
    assert first[:2] == (0, "m0\nm1\n")
    assert run_cli("tail", "-b", broker, "-t", topic, "-G", group, "-e")[:2] == (0, "m2\nm3\nm4\n")


@pytest.mark.broker
def test_missing_topic_exits_2_naming_it(broker: str) -> None:
    code, out, err = run_cli("tail", "-b", broker, "-t", "no-such-topic-7c2e", "--from-beginning", "-e")
    assert (code, out) == (2, "")
    assert "topic 'no-such-topic-7c2e' does not exist" in err
    # produce refuses too, and does not create the topic (a producer's metadata request would).
    code, _, err = run_cli("produce", "--stdin", "-b", broker, "-t", "no-such-topic-7c2e", stdin="x\n")
    assert code == 2 and "topic 'no-such-topic-7c2e' does not exist" in err
    with pytest.raises(TopicNotFound):
        topic_partitions({"bootstrap.servers": broker}, "no-such-topic-7c2e")


@pytest.mark.broker
def test_bad_partition_and_options_exit_2(broker: str, keyed_topic: str) -> None:
    code, _, err = run_cli("tail", "-b", broker, "-t", keyed_topic, "-p", "3", "-e")
    assert code == 2 and "has no partition 3 (it has 0..2)" in err
    assert run_cli("tail", "-b", broker, "-t", keyed_topic, "--json", "--format", "%s")[0] == 2
    assert run_cli("tail", "-b", broker, "-t", keyed_topic, "-G", "g", "-p", "0")[0] == 2
    code, _, err = run_cli("tail", "-b", broker, "-t", keyed_topic, "-e", "--format", "%q")
    assert code == 2 and "unknown token %q" in err
    assert run_cli("produce", "-b", broker, "-t", keyed_topic)[0] == 2  # neither --file nor --stdin
    code, _, err = run_cli("produce", "--stdin", "-b", broker, "-t", keyed_topic, "-H", "novalue", stdin="x\n")
    assert code == 2 and "bad header 'novalue'" in err


@pytest.mark.broker
def test_produce_catalog_with_key_and_headers(broker: str, unique_topics: Callable[..., list[str]],
                                              tmp_path: Path) -> None:
    (topic,) = unique_topics("catalog", partitions=2)
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame({"sku": ["a1", "b2", "c3"], "name": ["Caneca", "Vaso", "Laço"], "kind": ["x", "y", "x"]}).to_csv(
        catalog, index=False)
    code, _, err = run_cli("produce", "--file", str(catalog), "-b", broker, "-t", topic, "--no-progress",
                           "--columns", "product_id=sku,title=name,tags=kind,event_time=", "--key", "title",
                           "-H", "batch=1", "--limit", "2")
    assert code == 0, err
    records = read_back(broker, topic)
    assert sorted((r["key"], r["value"]["product_id"], r["value"]["tags"]) for r in records) == [
        ("Caneca", "a1", "x"), ("Vaso", "b2", "y")]
    assert all(r["headers"] == [["batch", "1"]] for r in records)
    code, _, err = run_cli("produce", "--file", str(tmp_path / "nope.csv"), "-b", broker, "-t", topic)
    assert code == 1 and "nope.csv: no such file" in err


# -- rendering and parsing, no broker -----------------------------------------------------------------


def _message(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None,
             timestamp: tuple[int, int] = (1, 1700000000000)) -> Message:
    return Message(topic="t", partition=1, offset=5, key=key, value=value, headers=headers, timestamp=timestamp)


def test_format_tokens_and_escapes() -> None:
    msg = _message(b"k", b"v\xff", [("a", b"1"), ("b", None)])
    rendered = compile_format(r"%t %p %o %k %s %h %T %K %S %%\t\\\r\n")(msg)
    assert rendered == b"t 1 5 k v\xff a=1,b= 1700000000000 1 2 %\t\\\r\n"
    assert compile_format("%k|%s|%h|%T|%K")(_message(None, None, timestamp=(0, -1))) == b"|||-1|-1"
    cases = (("%", "ends with a lone"), ("x\\", "ends with a lone"), ("%z", "unknown token %z"),
             (r"\q", r"unknown escape \\q"))
    for bad, reason in cases:
        with pytest.raises(ValueError, match=reason):
            compile_format(bad)


def test_record_to_dict_shape() -> None:
    record = record_to_dict(_message(b"k", b'{"a": [1]}', [("h", b"x"), ("h", b"\xff")]))
    assert record == {"topic": "t", "partition": 1, "offset": 5, "timestamp": 1700000000000, "key": "k",
                      "value": {"a": [1]}, "headers": [["h", "x"], ["h", "\\xff"]]}
    assert json.loads(json_line(_message(None, b"42 apples")))["value"] == "42 apples"


def test_split_line_and_headers() -> None:
    assert split_line(b"k:v:w", 1, b":") == (b"k", b"v:w")
    assert split_line(b"v", 1, b":") == (None, b"v")
    assert split_line(b'{"id": "x"}', 1, key_field="id") == (b"x", b'{"id": "x"}')
    with pytest.raises(ReplayError, match="line 3: no 'id' field"):
        split_line(b'{"other": 1}', 3, key_field="id")
    with pytest.raises(ReplayError, match="line 4: not JSON"):
        split_line(b"plain", 4, key_field="id")
    assert parse_header("a=b=c") == ("a", b"b=c") and parse_header("empty=") == ("empty", b"")
    with pytest.raises(ValueError, match="'=v'"):
        parse_header("=v")


def test_unreachable_broker_is_named() -> None:
    from stream_app.broker import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable, match=f"broker {address} does not answer"):
        topic_partitions({"bootstrap.servers": address}, "products", timeout=1.0)


# -- errors that name the file / column -----------------------------------------------------------


@needs_data
def test_bad_column_name_is_a_clear_error() -> None:
    with pytest.raises(ReplayError, match=r"styles_text\.csv.*'productName' \(for title\)"):
        replay(STYLES_TEXT, "127.0.0.1:1", "unused", limit=5, columns="title=productName,product_id=#row",
               progress=False)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(ReplayError, match=f"{missing}: no such file"):
        replay(missing, "127.0.0.1:1", "unused", progress=False)


def test_unsupported_suffix_and_bad_times(tmp_path: Path) -> None:
    odd = tmp_path / "catalog.xlsx"
    odd.write_text("x")
    with pytest.raises(ReplayError, match=r"catalog\.xlsx: unsupported file type '\.xlsx'"):
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
