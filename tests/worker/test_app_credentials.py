"""The worker's Faust broker credentials (`stream_app.worker.app.broker_credentials`) from the security settings."""

from __future__ import annotations

import os

import faust
import pytest

from stream_app.settings import load_settings
from stream_app.worker.app import broker_credentials


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)


def test_faust_credentials_from_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert broker_credentials(load_settings()) is None
    creds = broker_credentials(load_settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                             sasl_username="u", sasl_password="p"))
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    plain = broker_credentials(load_settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p"))
    assert plain.protocol.value == "SASL_PLAINTEXT"
    assert isinstance(broker_credentials(load_settings(security_protocol="SSL")), faust.SSLCredentials)
