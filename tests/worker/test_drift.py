"""Drift records a pager can deduplicate: offset-aligned windows per partition, deterministic ids,
replays that re-send the same ids, resolutions, and the drift topic's JSON Schema.

Everything goes through the worker's `DriftTracker` (the interface the batch path calls), with a
duck-typed bundle and the real `Settings`. The id function itself is in tests/core/test_drift_alerts.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from stream_app import metrics
from stream_app.core.drift import CategoryMixAlert, DriftResolved, EmbeddingDriftAlert, alert_id, critical_count
from stream_app.messages import ProductEvent, drift_alert_adapter
from stream_app.schemas import SCHEMA_DIR
from stream_app.settings import Settings
from stream_app.worker.drift import AlertRecord, DriftTracker

W = 100
C = critical_count(W, 0.01, 1e-6)  # outliers that decide an embedding_drift window (9)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LABELS = ["a", "b", "c"]
CALIBRATION = SimpleNamespace(tau=0.4, quantile=0.99, centroid_share=[1 / 8] * 8, category_share=[0.5, 0.3, 0.2],
                              n_calibration=1000)
CLEAN_TOPS = [0] * 5 + [1] * 3 + [2] * 2  # every 10 aligned offsets match the reference mix exactly
BOTH = {"embedding_drift", "category_mix"}


def make_tracker(worker_id: str = "pod-a", model: str = "v1", group: str = "g", topic: str = "products",
                 **settings: Any) -> DriftTracker:
    bundle = SimpleNamespace(version=model, manifest=SimpleNamespace(drift=CALIBRATION, labels=LABELS))
    return DriftTracker.for_bundle(bundle, Settings(group_id=group, input_topic=topic, worker_id=worker_id,
                                                    drift_window=W, **settings))


def drifting(offset: int) -> str:
    return "drift"


def by_block(*kinds: str) -> Callable[[int], str]:
    """Kind of each offset from the kind of its block: "drift", "clean" or "dead"."""
    return lambda offset: kinds[offset // W]


def feed(tracker: DriftTracker, partition: int, offsets: Iterable[int], kind: Callable[[int], str]) -> list[dict]:
    """Feed messages; return the published records (JSON) with the offset that produced them as ``_at``."""
    out = []
    for offset in offsets:
        out += [dict(json.loads(r.value), _at=offset) for r in observe(tracker, partition, offset, kind(offset))]
    return out


def observe(tracker: DriftTracker, partition: int, offset: int, kind: str) -> list[AlertRecord]:
    at = T0 + timedelta(seconds=offset)
    if kind == "dead":
        return tracker.observe(partition, offset, at)
    outlier = kind == "drift"
    prediction = SimpleNamespace(
        top_index=0 if outlier else CLEAN_TOPS[offset % 10],
        drift=SimpleNamespace(distance=0.9 if outlier else 0.1, nearest_centroid=offset % 8, outlier=outlier),
    )
    event = ProductEvent(product_id=f"{partition}-{offset}", title="x", event_time=at)
    return tracker.observe(partition, offset, at, prediction, event)


def keyed(records: list[dict]) -> dict[tuple[str, str, int, int], dict]:
    """Records by (status, type, partition, window start); fails on a duplicate."""
    out: dict[tuple[str, str, int, int], dict] = {}
    for r in records:
        key = (r["status"], r["type"], r["partition"], r["window"]["start_offset"])
        assert key not in out, f"two records for {key}"
        out[key] = r
    return out


# -- the ids records carry ------------------------------------------------------------------------


def test_records_carry_the_id_of_their_window_whatever_the_worker() -> None:
    a = keyed(feed(make_tracker("pod-a"), 3, range(2 * W), drifting))
    b = keyed(feed(make_tracker("pod-b-replacement"), 3, range(2 * W), drifting))
    assert set(a) == set(b) == {("firing", t, 3, s) for t in BOTH for s in (0, W)}
    for key, record in a.items():
        _, kind, partition, start = key
        assert record["alert_id"] == b[key]["alert_id"] == alert_id("firing", kind, "v1", "g", "products",
                                                                     partition, start, start + W)
        assert (record["worker_id"], b[key]["worker_id"]) == ("pod-a", "pod-b-replacement")
        assert (record["group_id"], record["topic"], record["model_version"]) == ("g", "products", "v1")
        assert (record["window"]["start_offset"], record["window"]["end_offset"]) == (start, start + W)
    # Another model version, group, topic or partition: other ids for the same offsets.
    others = [feed(make_tracker(model="v2"), 3, range(W), drifting),
              feed(make_tracker(group="g2"), 3, range(W), drifting),
              feed(make_tracker(topic="products2"), 3, range(W), drifting),
              feed(make_tracker(), 4, range(W), drifting)]
    ids = {r["alert_id"] for r in a.values()}
    for records in others:
        assert len(records) == 2 and not ids & {r["alert_id"] for r in records}


# -- windows aligned to offsets, replay ---------------------------------------------------------------


def test_embedding_alert_fires_when_decided_category_at_window_end() -> None:
    records = feed(make_tracker(), 0, range(W), drifting)
    assert [(r["type"], r["_at"]) for r in records] == [("embedding_drift", C - 1), ("category_mix", W - 1)]
    embedding, mix = records
    assert embedding["n"] == embedding["outliers"] == C and embedding["window"]["last_offset"] == C - 1
    assert embedding["thresholds"] == {"tau": 0.4, "expected_rate": pytest.approx(0.01), "alpha": 1e-6,
                                       "window_size": W, "critical_count": C}
    assert mix["n"] == W and mix["window"]["last_offset"] == W - 1
    assert mix["thresholds"]["degrees_of_freedom"] == mix["degrees_of_freedom"] == 2
    assert mix["thresholds"]["window_size"] == W and mix["thresholds"]["alpha"] == 1e-6
    assert mix["chi_square"] >= mix["thresholds"]["critical_chi_square"] > 0
    assert all(r["status"] == "firing" and r["recommendation"] == "investigate" for r in records)


@pytest.mark.parametrize(("resume_at", "replayed"), [(150, {200, 300}), (200, {200, 300}), (250, {300})])
def test_replay_after_a_crash_resends_the_same_ids_and_skips_the_partial_block(
    resume_at: int, replayed: set[int]
) -> None:
    kind = by_block("clean", "drift", "drift", "drift")
    # Worker A consumes up to 349 and is SIGKILLed; its last commit was at ``resume_at``.
    before = keyed(feed(make_tracker("pod-a"), 0, range(350), kind))
    assert set(before) == ({("firing", t, 0, s) for t in BOTH for s in (100, 200)}
                           | {("firing", "embedding_drift", 0, 300)})
    # The replacement pod resumes there.
    after = keyed(feed(make_tracker("pod-b"), 0, range(resume_at, 400), kind))
    assert {start for *_, start in after} == replayed  # nothing for the block it resumed in the middle of
    assert set(after) == {("firing", t, 0, s) for t in BOTH for s in replayed}
    for key, record in after.items():
        if key in before:  # re-sent: same id, same window, same evidence
            old = before[key]
            assert record["alert_id"] == old["alert_id"]
            same = ("window", "n", "p_value", "thresholds", "outliers", "outlier_sample", "top_moved_centroids",
                    "chi_square", "categories", "_at")
            assert {k: record.get(k) for k in same} == {k: old.get(k) for k in same}
            assert record["worker_id"] == "pod-b" and old["worker_id"] == "pod-a"


def test_a_jump_back_abandons_the_open_window_and_recomputes_whole_blocks() -> None:
    tracker = make_tracker()
    first = feed(tracker, 0, range(150), drifting)
    again = feed(tracker, 0, range(120, 300), drifting)  # replayed from 120 within the same process
    assert [(r["type"], r["window"]["start_offset"]) for r in first] == [
        ("embedding_drift", 0), ("category_mix", 0), ("embedding_drift", 100)]
    # [100, 200) is not judged again (it restarted in its middle); [200, 300) is, in full.
    assert [(r["type"], r["window"]["start_offset"], r["n"]) for r in again] == [
        ("embedding_drift", 200, C), ("category_mix", 200, W)]


def test_a_jump_forward_keeps_the_open_window_or_closes_it_and_skips_to_the_next_block() -> None:
    tracker = make_tracker()

    def kind(offset: int) -> str:
        return "drift" if 60 <= offset < 100 or 200 <= offset < 300 or offset >= 400 else "clean"

    assert feed(tracker, 0, range(0, 40), kind) == []
    # A hole inside [0, 100) (offsets consumed elsewhere): the window is kept, the hole brings nothing.
    records = feed(tracker, 0, range(60, 140), kind)
    assert [(r["type"], r["_at"]) for r in records] == [("embedding_drift", 60 + C - 1)]
    assert records[0]["window"]["observed"] == 40 + C and records[0]["window"]["start_offset"] == 0
    # Partition away, back at 260: [100, 200) closes with the 40 messages it saw (too few to be clean),
    # [200, 300) is skipped although it drifts, [300, 400) is a full clean window and resolves.
    records = feed(tracker, 0, range(260, 400), kind)
    assert [(r["status"], r["type"], r["_at"]) for r in records] == [("resolved", "embedding_drift", 399)]
    records = feed(tracker, 0, range(400, 500), kind)
    assert [(r["type"], r["window"]["start_offset"]) for r in records] == [
        ("embedding_drift", 400), ("category_mix", 400)]
    assert records[0]["consecutive_windows"] == 1


def test_windows_judged_again_in_the_same_process_do_not_count_twice() -> None:
    tracker = make_tracker()
    kind = by_block("drift", "drift", "clean", "clean")
    first = feed(tracker, 0, range(2 * W), kind)
    assert [r["consecutive_windows"] for r in first] == [1, 1, 2, 2]
    # Replayed from 0 (a seek back): the same alerts again, same ids, the streak is not inflated.
    again = feed(tracker, 0, range(2 * W), kind)
    assert [r["alert_id"] for r in again] == [r["alert_id"] for r in first]
    assert all(r["consecutive_windows"] <= 2 and r["recommendation"] == "investigate" for r in again)
    assert [r["status"] for r in feed(tracker, 0, range(2 * W, 3 * W), kind)] == ["resolved", "resolved"]
    # Replayed from 100: [100, 200) drifts again and [200, 300) is clean again, but the episode is
    # already resolved: no second resolution, then or at the next clean window.
    assert [r["status"] for r in feed(tracker, 0, range(W, 4 * W), kind)] == ["firing", "firing"]
    # An earlier clean window judged again does not resolve a later alert.
    tracker = make_tracker()
    kind = by_block("drift", "clean", "drift")
    statuses = [r["status"] for r in feed(tracker, 0, range(3 * W), kind)]
    assert statuses == ["firing"] * 2 + ["resolved"] * 2 + ["firing"] * 2
    assert feed(tracker, 0, range(W, 2 * W), kind) == []


def test_dead_letters_occupy_offsets_without_observations() -> None:
    tracker = make_tracker()
    # [0, 100): 40 drifting messages then 60 dead letters; the window closes on its last offset (a dead letter).
    records = feed(tracker, 0, range(W), lambda o: "drift" if o < 40 else "dead")
    assert [(r["type"], r["_at"]) for r in records] == [("embedding_drift", C - 1), ("category_mix", W - 1)]
    mix = records[1]
    assert mix["n"] == 40 and mix["window"]["observed"] == 40 and mix["window"]["dead_letters"] == 60
    # Mostly dead letters is no proof of health: such a window does not resolve the alert ...
    assert feed(tracker, 0, range(W, 2 * W), lambda o: "clean" if o < 140 else "dead") == []
    # ... a clean window with enough observations does.
    resolved = feed(tracker, 0, range(2 * W, 3 * W), lambda o: "clean")
    assert sorted(r["type"] for r in resolved) == sorted(BOTH) and all(r["status"] == "resolved" for r in resolved)


def test_observe_takes_a_whole_message_or_none() -> None:
    tracker = make_tracker()
    with pytest.raises(ValueError, match="both prediction and event"):
        tracker.observe(0, 0, T0, SimpleNamespace(top_index=0, drift=None))


# -- resolved ---------------------------------------------------------------------------------------


def test_resolved_follows_the_first_clean_window_and_names_the_last_firing_alert() -> None:
    kind = by_block("drift", "drift", "clean", "clean", "drift")
    tracker = make_tracker()
    records = feed(tracker, 5, range(5 * W), kind)
    assert [(r["status"], r["type"], r["window"]["start_offset"]) for r in records] == [
        ("firing", "embedding_drift", 0), ("firing", "category_mix", 0),
        ("firing", "embedding_drift", 100), ("firing", "category_mix", 100),
        ("resolved", "embedding_drift", 200), ("resolved", "category_mix", 200),  # once: not again at 300
        ("firing", "embedding_drift", 400), ("firing", "category_mix", 400),
    ]
    firing = keyed(records)
    for kind_ in BOTH:
        resolved = firing[("resolved", kind_, 5, 200)]
        assert resolved["_at"] == 299  # at the end of the clean window
        assert resolved["resolves"] == firing[("firing", kind_, 5, 100)]["alert_id"]  # the last firing one
        assert resolved["drifted_windows"] == 2 and resolved["n"] == W
        assert resolved["alert_id"] == alert_id("resolved", kind_, "v1", "g", "products", 5, 200, 300)
        assert resolved["alert_id"] not in {r["alert_id"] for r in records if r["status"] == "firing"}
        assert firing[("firing", kind_, 5, 400)]["consecutive_windows"] == 1  # the streak restarted
    assert firing[("resolved", "embedding_drift", 5, 200)]["statistic"] == 0
    assert firing[("resolved", "category_mix", 5, 200)]["statistic"] == pytest.approx(0.0)


def test_resolution_replayed_after_a_crash_has_the_same_ids() -> None:
    kind = by_block("drift", "drift", "clean")
    a = keyed(feed(make_tracker("pod-a"), 0, range(3 * W), kind))
    b = keyed(feed(make_tracker("pod-b"), 0, range(W, 3 * W), kind))  # resumed at the start of [100, 200)
    for kind_ in BOTH:
        key = ("resolved", kind_, 0, 200)
        assert (b[key]["alert_id"], b[key]["resolves"]) == (a[key]["alert_id"], a[key]["resolves"])
        assert b[key]["drifted_windows"] == 1 and a[key]["drifted_windows"] == 2  # the body may differ


def test_tracker_records_for_the_batch_path() -> None:
    tracker = make_tracker()
    records = [r for o in range(2 * W) for r in observe(tracker, 0, o, "drift" if o < W else "clean")]
    assert [(r.key, r.type, r.recommendation) for r in records] == [
        (b"embedding_drift", "embedding_drift", "investigate"), (b"category_mix", "category_mix", "investigate"),
        (b"embedding_drift", "embedding_drift", "resolved"), (b"category_mix", "category_mix", "resolved"),
    ]
    adapter = drift_alert_adapter()
    assert [type(adapter.validate_json(r.value)) for r in records] == [
        EmbeddingDriftAlert, CategoryMixAlert, DriftResolved, DriftResolved]


# -- partitions -------------------------------------------------------------------------------------


def test_partitions_have_their_own_windows_and_streaks() -> None:
    tracker = make_tracker()
    p0 = by_block("drift", "drift", "drift", "drift")
    p1 = by_block("clean", "clean", "clean", "drift")
    records: list[dict] = []
    for offset in range(4 * W):  # interleaved, as one worker holding both partitions consumes them
        records += feed(tracker, 0, [offset], p0)
        records += feed(tracker, 1, [offset], p1)
        if offset >= 50:  # partition 2 is first seen at offset 50, mid-block: skipped until 100
            records += feed(tracker, 2, [offset], drifting)
    got = keyed(records)
    assert {k for k in got if k[2] == 0} == {("firing", t, 0, s) for t in BOTH for s in (0, 100, 200, 300)}
    assert {k for k in got if k[2] == 1} == {("firing", t, 1, 300) for t in BOTH}
    assert {k for k in got if k[2] == 2} == {("firing", t, 2, s) for t in BOTH for s in (100, 200, 300)}
    assert [got[("firing", "category_mix", 0, s)]["recommendation"] for s in (0, 100, 200, 300)] == [
        "investigate", "investigate", "retrain", "retrain"]
    assert got[("firing", "category_mix", 1, 300)]["consecutive_windows"] == 1  # partition 0's streak is not its
    assert got[("firing", "category_mix", 1, 300)]["recommendation"] == "investigate"
    assert got[("firing", "category_mix", 1, 300)]["window"]["observed"] == W  # partition 1's messages only


# -- schema and gauges ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drift_schema() -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / "drift.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_the_json_schema_validates_every_kind_of_record(drift_schema: Draft202012Validator) -> None:
    records = feed(make_tracker(), 0, range(2 * W), by_block("drift", "clean"))
    assert {(r["status"], r["type"]) for r in records} == {(s, t) for s in ("firing", "resolved") for t in BOTH}
    for record in records:
        doc = {k: v for k, v in record.items() if not k.startswith("_")}
        drift_schema.validate(doc)
        for field in ("alert_id", "status", "window", "thresholds", "partition", "worker_id"):
            broken = {k: v for k, v in doc.items() if k != field}
            with pytest.raises(ValidationError):
                drift_schema.validate(broken)
    resolved = next(r for r in records if r["status"] == "resolved")
    with pytest.raises(ValidationError):
        drift_schema.validate({k: v for k, v in resolved.items() if k not in ("resolves", "_at")})
    with pytest.raises(ValidationError):
        drift_schema.validate({**{k: v for k, v in resolved.items() if k != "_at"}, "status": "firing"})


def test_gauges_count_every_consumed_message() -> None:
    tracker = make_tracker(dlq_alert_ratio=0.5)
    # W inputs: 25 dead letters and 75 predictions, some of them outliers.
    for offset in range(W):
        kind = "dead" if offset % 4 == 0 else ("drift" if offset % 5 == 1 else "clean")
        observe(tracker, 0, offset, kind)
    assert metrics.DLQ_RATIO._value.get() == pytest.approx(0.25)  # noqa: SLF001
    # The outlier gauge waits for W predictions.
    for offset in range(W, W + 25):
        observe(tracker, 0, offset, "clean")
    predictions = [o for o in range(W + 25) if o % 4 != 0 or o >= W]
    outliers = [o for o in predictions if o < W and o % 5 == 1]
    assert len(predictions) == W
    assert metrics.OUTLIER_RATIO._value.get() == pytest.approx(len(outliers) / W)  # noqa: SLF001
