"""Drift alert ids (`stream_app.core.drift.alerts.alert_id`): deterministic, and changed by every
identifying field, so that a pager can deduplicate records re-sent after a crash.

The ids the worker's records carry (windows, replays, resolutions) are checked in tests/worker/test_drift.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.core.drift import alert_id

W = 100
ID_ARGS = ("firing", "embedding_drift", "v1", "g", "products", 0, 100, 200)


def test_alert_id_is_a_deterministic_hex_digest() -> None:
    first = alert_id(*ID_ARGS)
    assert first == alert_id(*ID_ARGS)
    assert len(first) == 32 and int(first, 16) >= 0


@pytest.mark.parametrize(("index", "other"), [
    (0, "resolved"), (1, "category_mix"), (2, "v2"), (3, "g2"), (4, "products2"), (5, 1), (6, 0), (7, 300),
])
def test_alert_id_changes_with_every_identifying_field(index: int, other: Any) -> None:
    args = list(ID_ARGS)
    args[index] = other
    assert alert_id(*args) != alert_id(*ID_ARGS)


def test_alert_id_is_not_fooled_by_separators() -> None:
    # Fields are encoded as a JSON list: moving text between group and topic changes the id.
    assert alert_id("firing", "category_mix", "v1", "a|b", "c", 0, 0, W) != alert_id(
        "firing", "category_mix", "v1", "a", "b|c", 0, 0, W)
