"""Settings: defaults match docs/architecture.md; every bad value stops start-up naming its variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream_app.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.brokers == "127.0.0.1:9092"
    assert s.security_protocol.value == "PLAINTEXT" and s.sasl_mechanism.value == "SCRAM-SHA-512"
    topics = (s.input_topic, s.output_topic, s.drift_topic, s.dlq_topic)
    assert topics == ("products", "categories", "drift", "products.dlq")
    assert (s.partitions, s.replication_factor, s.group_id) == (6, 1, "product-categorizer")
    assert (s.batch_size, s.model_batch_size, s.batch_max_wait_ms, s.max_batches_in_flight, s.inference_threads) == (
        256, 32, 0, 2, 2)
    assert s.max_message_bytes == 1_000_000 and s.max_output_bytes == 1_048_576
    assert (s.max_bytes_in_flight, s.stream_buffer_messages, s.fetch_max_bytes, s.fetch_max_wait_ms) == (
        32 * 1_048_576, 32, 8 * 1_048_576, 100)
    assert (s.drift_window, s.drift_alpha, s.drift_retrain_after, s.category_mix_alpha) == (500, 1e-6, 3, 1e-6)
    assert s.dlq_alert_ratio == 0.2 and s.web_port == 6066 and s.web_bind == "0.0.0.0"
    assert s.liveness_stall_seconds == 60 and str(s.data_dir) == "/tmp/stream_app" and s.log_level.value == "info"


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_BROKERS", "a:1, b:2")
    monkeypatch.setenv("STREAM_BATCH_SIZE", "8")
    monkeypatch.setenv("STREAM_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("STREAM_SASL_USERNAME", "u")
    monkeypatch.setenv("STREAM_SASL_PASSWORD", "p")
    s = load_settings()
    assert s.broker_list == ["a:1", "b:2"] and s.batch_size == 8
    assert s.uses_sasl and s.uses_tls and s.ssl_context() is not None
    assert "sasl_password" not in repr(s)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAM_BROKERS", "no-port"),
        ("STREAM_BROKERS", ""),
        ("STREAM_BATCH_SIZE", "0"),
        ("STREAM_BATCH_SIZE", "many"),
        ("STREAM_BATCH_MAX_WAIT_MS", "-5"),
        ("STREAM_MAX_BATCHES_IN_FLIGHT", "0"),
        ("STREAM_PARTITIONS", "0"),
        ("STREAM_SECURITY_PROTOCOL", "TLS"),
        ("STREAM_SASL_MECHANISM", "GSSAPI"),
        ("STREAM_SSL_CAFILE", "/nonexistent/ca.pem"),
        ("STREAM_DRIFT_WINDOW", "1"),
        ("STREAM_DRIFT_ALPHA", "1.5"),
        ("STREAM_DLQ_ALERT_RATIO", "2"),
        ("STREAM_WEB_PORT", "70000"),
        ("STREAM_INPUT_TOPIC", "bad topic!"),
        ("STREAM_LOG_LEVEL", "chatty"),
        ("STREAM_LIVENESS_STALL_SECONDS", "0"),
    ],
)
def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert variable in str(info.value)


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAM_SASL_USERNAME", "svc")
    with pytest.raises(SettingsError, match="STREAM_SASL_PASSWORD"):
        load_settings()


def test_topics_must_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_OUTPUT_TOPIC", "products")
    with pytest.raises(SettingsError, match="STREAM_OUTPUT_TOPIC"):
        load_settings()


def test_password_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAM_SASL_USERNAME", "svc")
    monkeypatch.setenv("STREAM_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("STREAM_BATCH_SIZE", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(Settings(batch_size=1))


def test_worker_cli_refuses_bad_setting() -> None:
    env = {"PATH": "/usr/bin:/bin", "STREAM_BATCH_SIZE": "zero"}
    proc = subprocess.run([sys.executable, "-m", "stream_app", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "STREAM_BATCH_SIZE" in proc.stderr


def test_worker_cli_refuses_missing_bundle(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "STREAM_BUNDLE_PATH": str(tmp_path / "nope"), "STREAM_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "stream_app", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "STREAM_BUNDLE_PATH" in proc.stderr and "does not exist" in proc.stderr
