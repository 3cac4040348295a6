"""The product contract (`stream_app.messages.ProductEvent`): what is accepted and how it is normalized.

What the worker does with the rest (dead-letter classification) is in tests/worker/test_dead_letters.py;
the committed JSON Schemas in tests/test_schemas.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.messages import ProductEvent
from stream_app.schemas import generate
from tests.support.examples import examples

titles = st.text(min_size=1, max_size=40).filter(lambda t: t.strip())
product_ids = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                        st.text(min_size=1, max_size=20).filter(lambda t: t.strip()))
tags = st.one_of(st.none(), st.lists(st.text(max_size=10), max_size=5), st.text(max_size=30))
event_times = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=4_102_444_800_000),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.isoformat()
    ),
)


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pid=product_ids, title=titles, tags=tags, event_time=event_times, extra=st.dictionaries(
    st.sampled_from(["price", "seller_id", "query", "x"]), st.integers(), max_size=2))
def test_valid_products_are_accepted(pid, title, tags, event_time, extra) -> None:
    payload = {"product_id": pid, "title": title, **extra}
    if tags is not None:
        payload["tags"] = tags
    if event_time is not None:
        payload["event_time"] = event_time
    event = ProductEvent.model_validate(json.loads(json.dumps(payload)))
    assert event.product_id == pid and event.title == title.strip()
    assert event.tags is None or all(t and t == t.strip() for t in event.tags)
    assert event.event_time is None or event.event_time.tzinfo is not None
    assert event.key == str(pid).encode()
    # The products schema accepts what the model accepts.
    jsonschema.validate(payload, generate()["products.schema.json"])


def test_event_time_forms() -> None:
    def event_time_of(raw: bytes) -> object:
        return ProductEvent.model_validate(json.loads(raw)).event_time

    ms = event_time_of(b'{"product_id": 1, "title": "x", "event_time": 1700000000000}')
    iso = event_time_of(b'{"product_id": 1, "title": "x", "event_time": "2023-11-14T22:13:20Z"}')
    naive = event_time_of(b'{"product_id": 1, "title": "x", "event_time": "2023-11-14T22:13:20"}')
    assert ms == iso == naive


def test_text_fields_join_tags() -> None:
    event = ProductEvent.model_validate({"product_id": 1, "title": " Caneca ", "tags": ["a", " b c "]})
    assert event.text_fields() == {"title": "Caneca", "tags": "a b c", "description": None}
    event = ProductEvent.model_validate({"product_id": 1, "title": "Caneca", "tags": "  a   b "})
    assert event.text_fields()["tags"] == "a b"
