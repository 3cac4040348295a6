"""`make run`'s helpers that need no broker."""

from __future__ import annotations

import json
import time

from stream_app.demo import _poll_json


class _Message:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value


class _Consumer:
    def __init__(self, messages: list[_Message]) -> None:
        self._messages = messages

    def poll(self, timeout: float) -> _Message | None:
        return self._messages.pop(0) if self._messages else None


def test_poll_json_skips_a_tombstone() -> None:
    """A record with no value (a tombstone) is skipped; json.loads(None) used to crash the demo."""
    consumer = _Consumer([_Message(None), _Message(json.dumps({"product_id": "1"}).encode())])
    docs = _poll_json(consumer, time.monotonic() + 0.5)
    assert next(docs) == {"product_id": "1"}
