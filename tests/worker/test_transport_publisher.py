"""FaustPublisher: the producer's and the broker's 'too large' refusals become RecordTooLarge; others propagate."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from stream_app.worker.publish import RecordTooLarge
from stream_app.worker.transport import FaustPublisher
from tests.worker.fakes import settled_future


class _Topic:
    def __init__(self, at_send: BaseException | None = None, at_ack: BaseException | None = None) -> None:
        self.at_send, self.at_ack = at_send, at_ack

    async def send(self, **_: Any) -> Any:
        if self.at_send is not None:
            raise self.at_send
        return settled_future(self.at_ack)


def _wrapped(exc: BaseException) -> ProducerSendError:
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        return wrapped


def _deliver(topic: _Topic) -> Any:
    async def scenario() -> Any:
        delivery = await FaustPublisher({"t": topic}).send("t", b"k", b"v")  # type: ignore[dict-item]
        return await delivery

    return asyncio.run(scenario())


def test_the_producers_size_check_becomes_record_too_large() -> None:
    with pytest.raises(RecordTooLarge):
        _deliver(_Topic(at_send=_wrapped(MessageSizeTooLargeError("The message is 2000000 bytes"))))


def test_the_brokers_refusal_becomes_record_too_large() -> None:
    with pytest.raises(RecordTooLarge):
        _deliver(_Topic(at_ack=MessageSizeTooLargeError()))


def test_other_errors_propagate() -> None:
    with pytest.raises(ProducerSendError):
        _deliver(_Topic(at_send=_wrapped(KafkaTimeoutError())))
    with pytest.raises(KafkaTimeoutError):
        _deliver(_Topic(at_ack=KafkaTimeoutError()))
    assert _deliver(_Topic()) == "metadata"
