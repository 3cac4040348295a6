"""Shared helpers of the deploy tests (no conftest: these tests need none of the project fixtures)."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CHART_DIR = REPO / "helm" / "product-categorizer"
COMPOSE_FILE = REPO / "docker-compose.yml"

# The metric names the worker exports (stream_app/metrics.py), by Prometheus type.
COUNTERS = {
    "stream_messages_consumed_total",
    "stream_messages_produced_total",
    "stream_dead_letters_total",
    "stream_drift_alerts_total",
    "stream_model_swaps_total",
    "stream_shadow_messages_total",
    "stream_shadow_seconds_total",
    "stream_shadow_failures_total",
}
HISTOGRAMS = {
    "stream_batch_size",
    "stream_inference_seconds",
    "stream_end_to_end_latency_seconds",
    "stream_drift_distance",
}
GAUGES = {"stream_outlier_ratio", "stream_batches_in_flight", "stream_dlq_ratio", "stream_consumer_lag",
          "stream_model_info", "stream_shadow_agreement"}
KNOWN_SERIES = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
METRIC_RE = re.compile(r"\bstream_[a-z0-9_]+")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default} and $$ over a parsed document."""
    env = dict(os.environ) if env is None else env
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        found = env.get(name)
        return found if found else (default or "")

    return _INTERPOLATION.sub(repl, value)


@lru_cache(maxsize=1)
def compose() -> dict[str, Any]:
    """docker-compose.yml with the variables interpolated from the environment (as `docker compose` does)."""
    return interpolate(load_yaml(COMPOSE_FILE))


def flatten_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a values tree (an empty map or list is a leaf)."""
    keys: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys.extend(flatten_keys(value, path + "."))
        else:
            keys.append(path)
    return keys
