"""Prometheus config and rules, Grafana provisioning and dashboard: parsed and cross-checked with
the compose stack and with the metric names the worker exports."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stream_app import metrics
from tests.deploy._support import (
    COUNTERS,
    GAUGES,
    HISTOGRAMS,
    KNOWN_SERIES,
    METRIC_RE,
    REPO,
    compose,
    load_json,
    load_yaml,
)

PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "product-categorizer.json"


def dashboard() -> dict[str, Any]:
    return load_json(DASHBOARD)


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def check_expression(expr: str) -> list[str]:
    """Problems of a PromQL expression over the worker's metrics (empty when fine)."""
    problems = []
    for name in METRIC_RE.findall(expr):
        if name not in KNOWN_SERIES:
            problems.append(f"unknown metric {name}")
        if name in COUNTERS and not re.search(rf"(rate|increase)\(\s*{name}\b", expr):
            problems.append(f"counter {name} used without rate()/increase()")
        if name.endswith("_bucket") and "histogram_quantile" not in expr:
            problems.append(f"{name} used outside histogram_quantile")
    for histogram in HISTOGRAMS:
        if re.search(rf"\b{histogram}\b(?!_)", expr):
            problems.append(f"histogram {histogram} has no plain series (use _bucket/_sum/_count)")
    if expr.count("(") != expr.count(")"):
        problems.append("unbalanced parentheses")
    return problems


# ---- Prometheus -------------------------------------------------------------------------------


def test_prometheus_scrapes_every_worker_replica_by_dns() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"]), "duplicate job names"
    job = jobs["product-categorizer"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    worker = compose()["services"]["worker"]
    assert sd["names"] == ["worker"], "must be the compose service name (one A record per replica)"
    assert sd["type"] == "A"
    assert str(sd["port"]) == worker["environment"]["STREAM_WEB_PORT"] == "6066"
    assert "6066" in worker["expose"]
    assert "static_configs" not in job, "static targets would miss replicas"


def test_prometheus_rule_files_are_mounted() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    mounts = {m["target"]: m["source"] for m in compose()["services"]["prometheus"]["volumes"] if isinstance(m, dict)}
    for rule_file in config["rule_files"]:
        assert rule_file in mounts, f"{rule_file} is not mounted into the prometheus container"
        assert (REPO / mounts[rule_file]).is_file()


def test_alert_rules_use_known_metrics() -> None:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    seen = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert not check_expression(rule["expr"]), (rule["alert"], check_expression(rule["expr"]))
            seen.add(rule["alert"])
    assert len(seen) >= 4


def test_expression_checker_catches_mistakes() -> None:
    assert check_expression("stream_messages_consumed_total")  # counter without rate
    assert check_expression("rate(stream_messages_consumed[5m])")  # misspelled
    assert check_expression("histogram_quantile(0.5, rate(stream_inference_seconds[5m]))")
    assert not check_expression("sum(rate(stream_messages_consumed_total[1m]))")


# ---- Grafana ----------------------------------------------------------------------------------


def test_datasource_is_provisioned_with_the_uid_the_dashboard_uses() -> None:
    provisioning = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]
    uids = {p["datasource"]["uid"] for p in panels()} | {
        t["datasource"]["uid"] for p in panels() for t in p["targets"]}
    assert uids == {datasource["uid"]}


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provider_file = load_yaml(GRAFANA / "provisioning" / "dashboards" / "product-categorizer.yml")
    (provider,) = provider_file["providers"]
    grafana_mounts = {m["target"]: m["source"] for m in compose()["services"]["grafana"]["volumes"]
                      if isinstance(m, dict)}
    source = grafana_mounts[provider["options"]["path"]]
    assert (REPO / source / DASHBOARD.name).is_file()


def test_dashboard_layout_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("panel_title", [p["title"] for p in load_json(DASHBOARD)["panels"] if p["type"] != "row"])
def test_dashboard_queries_use_known_metrics(panel_title: str) -> None:
    panel = next(p for p in panels() if p["title"] == panel_title)
    for expr in exprs(panel):
        assert not check_expression(expr), f"{panel_title}: {expr}: {check_expression(expr)}"


@pytest.mark.parametrize(
    ("title_pattern", "needed"),
    [
        (r"throughput", ["stream_messages_consumed_total", "stream_messages_produced_total"]),
        (r"end-to-end latency", ["stream_end_to_end_latency_seconds_bucket", "0.5", "0.99"]),
        (r"dead-letter rate by reason", ["stream_dead_letters_total", "by (reason)"]),
        (r"drift distance", ["stream_drift_distance_bucket"]),
        (r"outlier ratio", ["stream_outlier_ratio"]),
        (r"drift alerts by type", ["stream_drift_alerts_total", "by (type)"]),
        (r"consumer lag", ["stream_consumer_lag"]),
        (r"model in service", ["stream_model_info", "model_version"]),
        (r"model swaps", ["stream_model_swaps_total", "by (result)"]),
        (r"shadow agreement", ["stream_shadow_agreement"]),
        (r"shadow cost", ["stream_shadow_seconds_total", "/ sum(rate(stream_shadow_messages_total"]),
        (r"shadow messages and failures", ["stream_shadow_messages_total", "stream_shadow_failures_total"]),
    ],
)
def test_dashboard_has_the_required_panels(title_pattern: str, needed: list[str]) -> None:
    matching = [p for p in panels() if re.search(title_pattern, p["title"], re.IGNORECASE)]
    assert matching, f"no panel titled like {title_pattern!r}"
    text = " ".join(e for p in matching for e in exprs(p))
    for fragment in needed:
        assert fragment in text, f"{title_pattern}: no query uses {fragment!r}"


def test_every_worker_metric_is_on_the_dashboard() -> None:
    used = {name for p in panels() for e in exprs(p) for name in METRIC_RE.findall(e)}
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    expected = COUNTERS | HISTOGRAMS | GAUGES
    assert not expected - bases, f"metrics without a panel: {sorted(expected - bases)}"


def test_dashboard_names_match_the_worker_registry() -> None:
    # Ties the dashboard to the code: every series it queries is one stream_app.metrics exports.
    exported: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            exported.add(f"{family.name}_total")
        elif family.type == "histogram":
            exported |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
        elif family.type == "info":
            exported.add(f"{family.name}_info")
        else:
            exported.add(family.name)
    used = {name for p in panels() for e in exprs(p) for name in METRIC_RE.findall(e)}
    assert used <= exported, f"dashboard queries series the worker does not export: {sorted(used - exported)}"
    assert {n for n in exported if n.startswith("stream_")} == KNOWN_SERIES, "update tests/deploy/_support.py"
