"""docker-compose.yml, checked offline: no Docker engine here, so the file is validated against the
Compose Specification JSON Schema and its references and wiring are checked by hand."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

from tests.deploy._support import COMPOSE_FILE, REPO, SCHEMAS, compose, interpolate, load_json, load_yaml

TOPICS = {"products", "categories", "drift", "products.dlq"}


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r} (has {sorted(services)})"
    return services[name]


def env(svc: dict[str, Any]) -> dict[str, str]:
    environment = svc.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def bind_mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Bind mounts in long form (short `src:dst[:ro]` entries with a path source are converted)."""
    mounts = []
    named = set(compose().get("volumes") or {})
    for volume in svc.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append(volume)
            continue
        source, target, *mode = volume.split(":")
        if source not in named:
            mounts.append({"source": source, "target": target, "read_only": mode == ["ro"]})
    return mounts


def host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / os.path.expanduser(source)).resolve()


def test_compose_file_matches_the_compose_specification() -> None:
    schema = load_json(SCHEMAS / "compose-spec.json")
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "docker-compose.yml violates the Compose Specification:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_schema_check_is_not_vacuous() -> None:
    # The same validator must reject an obvious mistake (a misspelled service key).
    schema = load_json(SCHEMAS / "compose-spec.json")
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = interpolate(load_yaml(COMPOSE_FILE))
    broken["services"]["worker"]["deploy"]["replica"] = 2
    assert not validator.is_valid(broken)


def test_every_referenced_file_exists() -> None:
    missing = []
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if build:
            context = host_path(build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (context / dockerfile).is_file():
                missing.append(f"{name}: build {context / dockerfile}")
        for mount in bind_mounts(svc):
            path = host_path(mount["source"])
            # The bundle is a build artifact (`make model` / `make model-quick`), not a repo file.
            if mount["target"] == "/models/default" and not path.exists():
                assert mount["source"].endswith("models/default"), mount
                continue
            if not path.exists():
                missing.append(f"{name}: bind mount {mount['source']} -> {path}")
    assert not missing, "docker-compose.yml refers to missing files:\n  " + "\n  ".join(missing)


def test_kafka_is_a_single_kraft_node_from_the_official_image() -> None:
    kafka = service("kafka")
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin an exact apache/kafka tag, not {tag!r}"
    settings = env(kafka)
    assert set(settings["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in settings)
    assert settings["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{settings['KAFKA_NODE_ID']}@")
    # kafka-storage format needs a base64url UUID (16 bytes).
    assert len(base64.urlsafe_b64decode(settings["CLUSTER_ID"] + "==")) == 16
    assert settings["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert settings["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka


def test_workers_reach_an_advertised_listener() -> None:
    advertised = env(service("kafka"))["KAFKA_ADVERTISED_LISTENERS"]
    endpoints = {listener.split("://", 1)[1] for listener in advertised.split(",")}
    for name in ("worker", "producer"):
        for broker in env(service(name))["STREAM_BROKERS"].split(","):
            assert broker in endpoints, f"{name}: {broker} is not advertised by kafka ({advertised})"


def test_topics_are_created_before_the_workers_start() -> None:
    init = service("kafka-init")
    assert init["image"] == service("kafka")["image"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    init_env = env(init)
    assert set(init_env["TOPICS"].split()) == TOPICS
    worker_env = env(service("worker"))
    assert {worker_env[k] for k in ("STREAM_INPUT_TOPIC", "STREAM_OUTPUT_TOPIC", "STREAM_DRIFT_TOPIC",
                                    "STREAM_DLQ_TOPIC")} == TOPICS
    assert init_env["STREAM_PARTITIONS"] == worker_env["STREAM_PARTITIONS"]
    (script_mount,) = bind_mounts(init)
    assert script_mount["read_only"] is True
    assert script_mount["target"] in init["entrypoint"]
    for name in ("worker", "producer"):
        assert service(name)["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_create_topics_script_is_valid_bash() -> None:
    script = REPO / "deploy" / "kafka" / "create-topics.sh"
    bash = shutil.which("bash")
    assert bash, "bash is needed to syntax-check deploy/kafka/create-topics.sh"
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text(encoding="utf-8")
    assert "--if-not-exists" in text and "set -euo pipefail" in text


def test_create_topics_script_creates_each_topic(tmp_path: Path) -> None:
    # Run the script against a stub kafka-topics.sh that records its calls.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    stub = bin_dir / "kafka-topics.sh"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        'if [[ " $* " == *" --describe "* ]]; then echo "Topic: x	PartitionCount: 2	ReplicationFactor: 1"; fi\n',
        encoding="utf-8",
    )
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", str(REPO / "deploy" / "kafka" / "create-topics.sh")],
        env={"PATH": os.environ["PATH"], "BOOTSTRAP_SERVERS": "kafka:19092", "KAFKA_BIN": str(bin_dir),
             "STREAM_PARTITIONS": "6", "TOPICS": "products drift"},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text(encoding="utf-8").splitlines()
    creates = [c for c in calls if "--create" in c]
    assert len(creates) == 2 and all("--partitions 6" in c and "--bootstrap-server kafka:19092" in c for c in creates)
    # The stub reports 2 partitions: the script grows the topic to 6.
    assert sum("--alter" in c and "--partitions 6" in c for c in calls) == 2


def test_two_workers_in_one_consumer_group() -> None:
    worker = service("worker")
    assert worker.get("deploy", {}).get("replicas", 1) >= 2
    # Replicas cannot share a fixed container name or host port.
    assert "container_name" not in worker
    assert not worker.get("ports"), "a published host port would collide between replicas"
    settings = env(worker)
    assert settings["STREAM_GROUP_ID"]
    assert worker["command"] == ["worker"]
    assert worker["build"]["context"] == "."


def test_worker_mounts_the_bundle_read_only() -> None:
    worker = service("worker")
    bundle_path = env(worker)["STREAM_BUNDLE_PATH"]
    mount = next(m for m in bind_mounts(worker) if m["target"] == bundle_path)
    assert mount["read_only"] is True
    assert worker["read_only"] is True and "/tmp" in worker["tmpfs"]
    assert env(worker)["STREAM_DATA_DIR"].startswith("/tmp/")
    assert worker["cap_drop"] == ["ALL"]


def test_producer_replays_the_sample_catalog() -> None:
    producer = service("producer")
    assert producer["image"] == service("worker")["image"]
    assert producer["command"] == ["produce", "--file", "/data/elo7/products.parquet", "--rate", "50"]
    raw = load_yaml(COMPOSE_FILE)["services"]["producer"]["volumes"]
    assert any(isinstance(v, dict) and v["source"] == "${DATASETS_DIR:-../shared/datasets}" for v in raw)
    (data,) = bind_mounts(producer)
    assert data["target"] == "/data" and data["read_only"] is True
    assert producer["healthcheck"] == {"disable": True}
    catalog = host_path(data["source"]) / "elo7" / "products.parquet"
    assert catalog.is_file(), f"the producer replays {catalog}, which does not exist (set DATASETS_DIR)"


def test_prometheus_and_grafana_get_their_config_read_only() -> None:
    prometheus = {m["target"]: m for m in bind_mounts(service("prometheus"))}
    assert prometheus["/etc/prometheus/prometheus.yml"]["source"] == "./deploy/prometheus/prometheus.yml"
    assert all(m["read_only"] for m in prometheus.values())
    grafana = {m["target"]: m for m in bind_mounts(service("grafana"))}
    assert grafana["/etc/grafana/provisioning"]["source"] == "./deploy/grafana/provisioning"
    assert all(m["read_only"] for m in grafana.values())
    for name in ("prometheus", "grafana"):
        _, _, tag = service(name)["image"].partition(":")
        assert tag and tag != "latest", f"{name}: pin the image tag"
