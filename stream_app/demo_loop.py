"""``make run-loop``: the model lifecycle closed on a live stream, with no worker restart.

drift alert -> the operator labels the sample -> retrain -> compare -> promote -> the worker swaps
models between micro-batches -> the same kind of stream stops alerting. Steps (`run_loop`):

1. A bundle (``--bundle``, built quickly like ``make run`` when missing), the local broker (reused
   when one answers on the port), a bundle store in a work folder (``.cache/demo-loop/run-*``) with
   that bundle added and promoted, fresh topics, and one worker subprocess (``python -m stream_app
   worker``) serving the store (``STREAM_BUNDLE_STORE``, a short poll interval, a small drift window).
2. Elo7 products the bundle never trained on (the validation and test sides of its product-id split,
   as ``make run`` picks them), then a drifting stream: the same kind of Elo7 products with English
   fashion products mixed in (``--fashion-share``). Products are printed briefly, drift alerts as
   they arrive.
3. The trigger is the first alert whose recommendation is ``retrain`` (an ``embedding_drift`` alert
   after ``--retrain-after`` drifting windows in a row of one partition). When the drifting stream
   ends without one, at least ``--retrain-after`` ``embedding_drift`` alerts are taken instead, and
   the summary says so. The rest of the stream is scored first, then the operator "labels the
   sample": the products the alerts name (fashion ones as the new category ``Moda``, Elo7 ones with
   their own category), every fashion product of the drifting stream, and more fashion rows of the
   same catalog up to ``--labelled``. That file goes to ``python -m export retrain`` (the serving
   bundle's recipe, ``--mode frozen``, ``--sample N``), then ``python -m export compare`` on a
   held-out file of both kinds (Elo7 rows on the test side of the split, fashion rows in no labelled
   batch; ``--split all``), then ``python -m export promote`` when the verdict is promote.
4. The worker's ``/readyz`` names the new version (same process, counters not reset), then a second
   drifting stream (the same Elo7 rows, fashion rows nobody labelled) is replayed and the alerts per
   1,000 messages before and after are compared, with the share of fashion products now categorized
   as ``Moda``.
5. Everything is stopped (worker SIGTERM: drain and commit; the broker when the loop started it) and a
   summary printed.

Events are keyed by product id but placed round-robin over the partitions, so every partition gets
the same mix and every phase fills whole drift windows (phase sizes are multiples of partitions x
window): the windows before and after the swap hold the same numbers of messages of the same kinds.

stream_app never imports ``export`` or torch: the lifecycle steps run as ``python -m export ...``
subprocesses, as an operator would run them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from stream_app.broker import free_port
from stream_app.core.splits import SplitSpec, side_of
from stream_app.demo import DemoError, broker_on, console, ensure_bundle, worker_process

if TYPE_CHECKING:
    from stream_app.core.store import BundleStore

ROOT = Path(__file__).resolve().parents[1]
NEW_CATEGORY = "Moda"
FASHION_PREFIX = "fashion-"
CATALOG_COLUMNS = ["product_id", "title", "concatenated_tags", "category"]  # the Elo7 recipe's columns


@dataclass
class LoopConfig:
    bundle: Path = Path("models/default")
    datasets_dir: Path = Path("../shared/datasets")
    broker_port: int = 9092
    brokers: str | None = None  # an already running broker ("host:port"): used as is, never stopped
    partitions: int = 3
    drift_window: int = 200
    retrain_after: int = 3  # STREAM_DRIFT_RETRAIN_AFTER
    warmup_windows: int = 1  # Elo7-only windows per partition before the drift
    drift_windows: int = 4  # windows per partition of each drifting stream
    fashion_share: float = 0.10
    labelled: int = 3800  # fashion rows in the operator's labelled batch
    retrain_sample: int = 4000
    retrain_mode: str = "frozen"
    heldout_elo7: int = 1200
    heldout_fashion: int = 300
    speed_rounds: int = 1  # compare --speed-rounds (0: no texts/s figure)
    poll_seconds: float = 1.0
    workdir: Path | None = None
    keep: bool = False
    show: int = 6  # products printed per phase
    seed: int = 7
    phase_timeout: float = 300.0


@dataclass
class Phase:
    name: str
    messages: int = 0
    elo7: int = 0
    fashion: int = 0
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # product_id -> last output
    alerts: list[dict[str, Any]] = field(default_factory=list)  # firing and resolved records
    truth: dict[str, str] = field(default_factory=dict)  # Elo7 product_id -> its category
    titles: dict[str, str] = field(default_factory=dict)

    def firing(self, kind: str, version: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a.get("status") == "firing" and a.get("type") == kind
                and (version is None or a.get("model_version") == version)]

    def stats(self, version: str | None) -> dict[str, Any]:
        docs = [d for d in self.outputs.values() if version is None or d.get("model_version") == version]
        fashion = [d for d in docs if str(d["product_id"]).startswith(FASHION_PREFIX)]
        elo7 = [d for d in docs if not str(d["product_id"]).startswith(FASHION_PREFIX)]

        def share(rows: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> float | None:
            return None if not rows else sum(map(test, rows)) / len(rows)

        per_1000 = 1000 / self.messages if self.messages else 0.0
        return {
            "messages": self.messages, "outputs": len(docs), "elo7": len(elo7), "fashion": len(fashion),
            "embedding_drift": len(self.firing("embedding_drift", version)),
            "embedding_drift_per_1000": round(len(self.firing("embedding_drift", version)) * per_1000, 2),
            "category_mix": len(self.firing("category_mix", version)),
            "sequential": len(self.firing("embedding_drift_sequential", version)),
            "retrain_recommendations": sum(a.get("recommendation") == "retrain" for a in self.alerts
                                           if version is None or a.get("model_version") == version),
            "fashion_outlier_share": share(fashion, lambda d: bool(d["drift"]["outlier"])),
            "elo7_outlier_share": share(elo7, lambda d: bool(d["drift"]["outlier"])),
            "fashion_as_new_category": share(fashion, lambda d: d["top_category"] == NEW_CATEGORY),
            "elo7_accuracy": share(elo7, lambda d: d["top_category"] == self.truth.get(str(d["product_id"]))),
            "versions": sorted({d.get("model_version") for d in docs}),
        }


@dataclass
class LoopResult:
    serving_before: str = ""
    candidate: str | None = None
    serving_after: str | None = None
    trigger: str = ""
    retrain_recommended: bool = False
    verdict: str | None = None
    promoted: bool = False
    swapped: bool = False
    worker_pid: int = 0
    worker_pid_after: int = 0
    worker_starts: int = 0
    worker_alive_after_swap: bool = False
    worker_exit: int | None = None
    consumed_total: float | None = None
    swaps_total: float | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    warmup: dict[str, Any] = field(default_factory=dict)
    compare: dict[str, Any] = field(default_factory=dict)
    labelled_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    workdir: Path | None = None


# -- data ------------------------------------------------------------------------------------------


def elo7_pool(bundle: Path, datasets_dir: Path) -> pd.DataFrame:
    """Distinct Elo7 products with their side of the bundle's product-id split (``side``)."""
    frame = pd.read_parquet(datasets_dir / "elo7" / "products.parquet", columns=CATALOG_COLUMNS)
    frame = frame.drop_duplicates("product_id").reset_index(drop=True)
    training = json.loads((bundle / "manifest.json").read_text())["training"]
    split = training["split"]
    spec = SplitSpec(seed=int(split["seed"]), validation=float(split["validation"]), test=float(split["test"]))
    frame["side"] = frame["product_id"].astype(str).map(lambda g: side_of(g, spec))
    frame["product_id"] = frame["product_id"].astype(str)
    frame["concatenated_tags"] = frame["concatenated_tags"].fillna("")
    return frame


def fashion_pool(datasets_dir: Path) -> pd.DataFrame:
    """The fashion catalog (styles.csv and styles_text.csv are row-aligned) in the Elo7 recipe's columns."""
    styles = pd.read_csv(datasets_dir / "fashion" / "styles.csv", on_bad_lines="skip",
                         usecols=["id", "masterCategory", "articleType", "baseColour"])
    text = pd.read_csv(datasets_dir / "fashion" / "styles_text.csv")
    if len(styles) != len(text):
        raise DemoError(f"{datasets_dir / 'fashion'}: styles.csv and styles_text.csv are not row-aligned")
    frame = pd.concat([styles.reset_index(drop=True), text.reset_index(drop=True)], axis=1)
    frame = frame[frame["productDisplayName"].fillna("").str.strip() != ""]
    tags = frame["articleType"].fillna("").astype(str) + " " + frame["baseColour"].fillna("").astype(str)
    return pd.DataFrame({
        "product_id": FASHION_PREFIX + frame["id"].astype(str), "title": frame["productDisplayName"].astype(str),
        "concatenated_tags": tags.str.strip(), "category": NEW_CATEGORY,
        "master_category": frame["masterCategory"].astype(str),
    }).reset_index(drop=True)


def _take(frame: pd.DataFrame, n: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if n > len(frame):
        raise DemoError(f"not enough {what}: {n} wanted, {len(frame)} available (use smaller sizes)")
    return frame.iloc[:n], frame.iloc[n:]


def mix(elo7: pd.DataFrame, fashion: pd.DataFrame, seed: int) -> pd.DataFrame:
    both = pd.concat([elo7, fashion], ignore_index=True)
    return both.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def events_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.itertuples(index=False):
        pid = str(row.product_id)
        out.append({"product_id": pid if pid.startswith(FASHION_PREFIX) else int(pid), "title": str(row.title),
                    "tags": str(row.concatenated_tags)})
    return out


# -- Kafka -----------------------------------------------------------------------------------------


def produce_round_robin(brokers: str, topic: str, events: list[dict[str, Any]], partitions: int) -> int:
    """Events keyed by product_id, event i to partition i % partitions; every delivery checked."""
    from confluent_kafka import Producer

    from stream_app.kafka.config import producer_config

    producer = Producer(producer_config({"bootstrap.servers": brokers}))
    errors: list[str] = []
    for i, event in enumerate(events):
        producer.produce(topic, key=str(event["product_id"]).encode(), value=json.dumps(event).encode(),
                         partition=i % partitions, on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        producer.poll(0)
    if producer.flush(30) != 0 or errors:
        raise DemoError(f"replay into {topic} failed: {errors[:3] or 'undelivered messages'}")
    return len(events)


class Tap:
    """Reads `categories` and `drift` from the beginning; files each record under the current phase."""

    def __init__(self, brokers: str, output: str, drift: str, partitions: int, out: Console, show: int) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from stream_app.kafka.config import consumer_config

        self._output, self._drift = output, drift
        self._consumer = Consumer(consumer_config({"bootstrap.servers": brokers}, None))
        self._consumer.assign([TopicPartition(output, p, OFFSET_BEGINNING) for p in range(partitions)]
                              + [TopicPartition(drift, 0, OFFSET_BEGINNING)])
        self.out = out
        self.show = show
        self.phase: Phase | None = None
        self.on_alert: Callable[[dict[str, Any]], None] | None = None

    def close(self) -> None:
        self._consumer.close()

    def pump(self, seconds: float, done: Callable[[], bool] = lambda: False) -> bool:
        """Read for up to ``seconds``; True as soon as ``done()``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done():
                return True
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            value = msg.value()
            if value is None:  # the worker writes no tombstones
                continue
            doc = json.loads(value)
            phase = self.phase
            if phase is None:
                continue
            if msg.topic() == self._drift:
                phase.alerts.append(doc)
                print_alert(self.out, doc)
                if self.on_alert is not None:
                    self.on_alert(doc)
                continue
            pid = str(doc["product_id"])
            new = pid not in phase.outputs
            phase.outputs[pid] = doc
            if new and len(phase.outputs) <= self.show:
                print_product(self.out, doc, phase.titles.get(pid, ""), phase.truth.get(pid))
            elif new and len(phase.outputs) == self.show + 1:
                self.out.print("  ... (the other products of this phase are counted, not printed)")
        return done()


def print_product(out: Console, doc: dict[str, Any], title: str, truth: str | None) -> None:
    pid = str(doc["product_id"])
    top = doc["categories"][0]
    mark = "" if truth is None else (" [green]✓[/]" if doc["top_category"] == truth else f" [red]✗ ({truth})[/]")
    outlier = " [yellow]outlier[/]" if doc["drift"]["outlier"] else ""
    out.print(f"  {pid:>14}  {title[:40]:<40} {doc['top_category'][:20]:<20} {top['score']:5.2f}  "
              f"dist {doc['drift']['distance']:5.3f}  model {doc['model_version'][:8]}{mark}{outlier}")


def alert_sample(alert: dict[str, Any]) -> list[str]:
    """The product ids an alert names (window alerts: ``outlier_sample``; the CUSUM alert: its sample field)."""
    sample = alert.get("outlier_sample") or alert.get("flagged_sample") or []
    return [str(x) for x in sample] if isinstance(sample, list) else []


def print_alert(out: Console, alert: dict[str, Any]) -> None:
    kind = alert.get("type")
    window = alert.get("window") or {}
    where = f"p{alert.get('partition')} [{window.get('start_offset')},{window.get('end_offset')})"
    head = f"alert_id {str(alert.get('alert_id'))[:12]}  {where}  model {str(alert.get('model_version'))[:8]}"
    if alert.get("status") == "resolved":
        out.print(f"  [bold green]RESOLVED[/] {kind}  {head}  ends {str(alert.get('resolves'))[:12]}")
        return
    try:  # the detail is a courtesy: a record of another shape still prints its type, id and recommendation
        if kind == "embedding_drift":
            detail = f"{alert['outliers']}/{alert['n']} outliers (critical {alert['critical_count']})"
        elif kind == "category_mix":
            top = (alert.get("categories") or [{}])[0]
            detail = (f"chi2 {alert['chi_square']:.0f}; most off: {top.get('name')} "
                      f"{top.get('share', 0):.0%} vs {top.get('reference_share', 0):.0%}")
        elif kind == "embedding_drift_sequential":
            far = alert.get("outliers", alert.get("flagged"))
            detail = f"CUSUM: {far}/{alert['n']} far messages since offset {alert.get('run_start_offset')}"
        else:
            detail = ""
    except (KeyError, TypeError, ValueError, IndexError):
        detail = ""
    color = "bold red" if alert.get("recommendation") == "retrain" else "red"
    out.print(f"  [{color}]ALERT[/] {kind}  {head}  {detail}  recommendation={alert.get('recommendation')}")
    sample = alert_sample(alert)
    if sample:
        out.print(f"        outlier_sample: {', '.join(sample[:6])}" + (" ..." if len(sample) > 6 else ""))


def _http_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            doc = json.loads(response.read())
    except Exception as exc:  # noqa: BLE001 - 503 bodies and connection errors alike: not (yet) usable
        return {"error": str(exc)}
    return doc if isinstance(doc, dict) else {"error": f"expected a JSON object, got {type(doc).__name__}"}


def _metric(url: str, sample: str) -> float | None:
    """One sample of ``/metrics`` by its exact name and labels, e.g. ``stream_model_swaps_total{result="swapped"}``."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            for line in response.read().decode().splitlines():
                head, _, value = line.rpartition(" ")
                if head == sample:
                    return float(value)
    except Exception:  # noqa: BLE001 - the worker is gone: no figure
        return None
    return None


# -- lifecycle steps (subprocesses: stream_app never imports export or torch) ----------------------


def _run(cmd: list[str], log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        result = subprocess.run(cmd, check=False, cwd=ROOT, stdout=subprocess.PIPE, stderr=handle, text=True,
                                timeout=timeout)
        handle.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise DemoError(f"{' '.join(cmd[2:5])} failed (exit {result.returncode}); log {log}:\n{tail}")
    return result


def checkpoint_beside(bundle: Path) -> Path | None:
    """``BUNDLE-torch`` when it holds this bundle's PyTorch weights (same labels, same training result)."""
    folder = bundle.with_name(bundle.name + "-torch")
    try:
        meta = json.loads((folder / "labels.json").read_text())
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    same = meta.get("labels") == manifest.get("labels") and \
        meta.get("training", {}).get("result") == manifest.get("training", {}).get("result")
    return folder if same else None


def print_compare(out: Console, report: dict[str, Any]) -> None:
    a, b = report["a"], report["b"]
    table = Table(title=f"compare: A {a['bundle_version'][:12]} (serving) vs B {b['bundle_version'][:12]} (candidate), "
                        f"{report['rows']} held-out rows ({report['split']})")
    for col in ("", "A", "B"):
        table.add_column(col, justify="right" if col else "left")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("accuracy", lambda s: f"{s['accuracy']:.4f}"), ("macro-F1", lambda s: f"{s['macro_f1']:.4f}"),
        ("micro-F1", lambda s: f"{s['micro_f1']:.4f}"), ("tau", lambda s: f"{s['drift']['tau']:.3f}"),
        ("outlier rate (expected)",
         lambda s: f"{s['drift']['outlier_rate']:.3f} ({s['drift']['expected_outlier_rate']:.2f})"
         + (" stale" if s["drift"]["stale"] else "")),
        ("bundle MB", lambda s: f"{s['size_bytes'] / 1e6:.1f}"),
        ("texts/s", lambda s: "-" if s.get("texts_per_second") is None else f"{s['texts_per_second']:.0f}"),
    ]
    for name, cell in rows:
        table.add_row(name, cell(a), cell(b))
    for label, m in report["per_category"].items():
        table.add_row(f"F1 {label} ({m['support']})", "-" if m["a_f1"] is None else f"{m['a_f1']:.3f}",
                      "-" if m["b_f1"] is None else f"{m['b_f1']:.3f}")
    out.print(table)
    d = report["macro_f1_difference"]
    if d.get("ci95"):
        out.print(f"macro-F1 B - A {d['difference']:+.4f}, 95% interval [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
    out.print(f"verdict: [bold]{report['verdict'].upper()}[/]: {report['reason']}")


# -- the loop --------------------------------------------------------------------------------------


def run_loop(config: LoopConfig, out: Console = console) -> LoopResult:
    started = time.monotonic()
    cfg = config
    result = LoopResult()
    datasets_dir = cfg.datasets_dir.resolve()
    bundle = cfg.bundle.resolve()
    block = cfg.partitions * cfg.drift_window  # messages that fill one window of every partition
    n_warmup, n_drift = block * cfg.warmup_windows, block * cfg.drift_windows
    n_fashion = round(n_drift * cfg.fashion_share)
    if cfg.retrain_mode not in ("frozen", "finetune"):
        raise DemoError(f"--retrain-mode {cfg.retrain_mode!r}: use frozen or finetune")
    if not 0 < cfg.fashion_share < 1:
        raise DemoError("--fashion-share must be in (0, 1)")

    ensure_bundle(bundle, datasets_dir)
    run_name = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    workdir = cfg.workdir or ROOT / ".cache" / "demo-loop" / run_name
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    result.workdir = workdir
    failed = True
    try:
        _loop(cfg, out, result, bundle, datasets_dir, workdir, n_warmup, n_drift, n_fashion, started)
        failed = False
    finally:
        if failed or cfg.keep:
            out.print(f"[bold]work folder kept[/]: {workdir} (store, candidate, logs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _loop(cfg: LoopConfig, out: Console, result: LoopResult, bundle: Path, datasets_dir: Path, workdir: Path,
          n_warmup: int, n_drift: int, n_fashion: int, started: float) -> None:
    from stream_app.core.store import BundleStore
    from stream_app.kafka.admin import create_topics

    # Data, split once and disjointly (seeded): which rows go where is decided before anything runs.
    pool = elo7_pool(bundle, datasets_dir).sample(frac=1.0, random_state=cfg.seed)
    heldout_elo7, _ = _take(pool[pool["side"] == "test"], cfg.heldout_elo7, "Elo7 test-side rows")
    unseen = pool[(pool["side"] != "train") & ~pool["product_id"].isin(heldout_elo7["product_id"])]
    warmup_rows, rest = _take(unseen, n_warmup, "Elo7 rows outside the training split")
    stream_elo7, _ = _take(rest, n_drift - n_fashion, "Elo7 rows outside the training split")
    fashion = fashion_pool(datasets_dir).sample(frac=1.0, random_state=cfg.seed)
    drift1_fashion, fashion = _take(fashion, n_fashion, "fashion rows")
    drift2_fashion, fashion = _take(fashion, n_fashion, "fashion rows")
    heldout_fashion, fashion = _take(fashion, cfg.heldout_fashion, "fashion rows")
    truth = {**dict(zip(pool["product_id"], pool["category"], strict=True))}

    store = BundleStore(workdir / "store")
    result.serving_before = store.add(bundle)
    store.promote(result.serving_before)
    serving_path = store.version_path(result.serving_before)
    out.print(f"[bold]store[/]: {store.root} serving {result.serving_before} (added from {bundle})")

    with ExitStack() as stack:
        if cfg.brokers:
            brokers = cfg.brokers
            out.print(f"[bold]broker[/]: {brokers} (given)")
        else:
            brokers, _ = stack.enter_context(broker_on(cfg.broker_port))
        tag = uuid.uuid4().hex[:6]
        topics = {"input": f"loop-products-{tag}", "output": f"loop-categories-{tag}", "drift": f"loop-drift-{tag}",
                  "dlq": f"loop-dlq-{tag}", "shadow": f"loop-shadow-{tag}"}
        create_topics(brokers, {topics["input"]: cfg.partitions, topics["output"]: cfg.partitions, topics["drift"]: 1,
                                topics["dlq"]: cfg.partitions, topics["shadow"]: 1})
        web_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
        env.update({
            "STREAM_BROKERS": brokers, "STREAM_BUNDLE_STORE": str(store.root),
            "STREAM_BUNDLE_POLL_SECONDS": str(cfg.poll_seconds), "STREAM_WEB_PORT": str(web_port),
            "STREAM_INPUT_TOPIC": topics["input"], "STREAM_OUTPUT_TOPIC": topics["output"],
            "STREAM_DRIFT_TOPIC": topics["drift"], "STREAM_DLQ_TOPIC": topics["dlq"],
            "STREAM_SHADOW_TOPIC": topics["shadow"], "STREAM_PARTITIONS": str(cfg.partitions),
            "STREAM_DRIFT_WINDOW": str(cfg.drift_window), "STREAM_DRIFT_RETRAIN_AFTER": str(cfg.retrain_after),
            "STREAM_GROUP_ID": f"loop-{tag}", "STREAM_DATA_DIR": str(workdir / "worker-data"),
            "STREAM_BATCH_MAX_WAIT_MS": "20", "PYTHONUNBUFFERED": "1",
        })
        out.print(f"[bold]topics[/]: {', '.join(topics.values())} ({cfg.partitions} partitions; drift window "
                  f"{cfg.drift_window}, retrain after {cfg.retrain_after} drifting windows in a row)")
        proc = stack.enter_context(worker_process(env, workdir / "worker.log", web_port))
        result.worker_pid, result.worker_starts = proc.pid, 1
        readyz = f"http://127.0.0.1:{web_port}/readyz"
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        tap = Tap(brokers, topics["output"], topics["drift"], cfg.partitions, out, cfg.show)
        stack.callback(tap.close)

        def replay(phase: Phase, frame: pd.DataFrame) -> None:
            phase.truth = {pid: truth[pid] for pid in frame["product_id"] if pid in truth}
            phase.titles = dict(zip(frame["product_id"], frame["title"], strict=True))
            phase.elo7 = int((~frame["product_id"].str.startswith(FASHION_PREFIX)).sum())
            phase.fashion = len(frame) - phase.elo7
            tap.pump(1.0)  # records of the previous phase that are still on their way
            tap.phase = phase
            phase.messages = produce_round_robin(brokers, topics["input"], events_of(frame), cfg.partitions)
            out.rule(phase.name)
            out.print(f"{phase.messages} products replayed ({phase.elo7} Elo7, {phase.fashion} fashion), "
                      f"{phase.messages // cfg.partitions} per partition")

        def scored(phase: Phase, expected: set[str], what: str) -> None:
            def done() -> bool:
                return expected <= phase.outputs.keys()

            if not tap.pump(cfg.phase_timeout, done):
                missing = len(expected - phase.outputs.keys())
                raise DemoError(f"{what}: {missing} of {len(expected)} products not categorized in "
                                f"{cfg.phase_timeout:.0f} s; worker log {workdir / 'worker.log'}")
            tap.pump(2.0)  # alerts published with the last batches

        # 2a. In-distribution: Elo7 products only.
        warmup = Phase("Elo7 products (in distribution)")
        replay(warmup, warmup_rows)
        scored(warmup, set(warmup_rows["product_id"]), "Elo7 replay")
        result.warmup = warmup.stats(None)
        out.print(_phase_line(result.warmup))

        # 2b. The drifting stream, until a retrain recommendation (the stream is scored to its end).
        stream1 = mix(stream_elo7, drift1_fashion, cfg.seed)
        before = Phase("drifting stream: Elo7 + fashion")
        trigger: dict[str, Any] = {}

        def on_alert(alert: dict[str, Any]) -> None:
            if not trigger and alert.get("status") == "firing" and alert.get("recommendation") == "retrain":
                trigger.update(alert)
                out.print(f"  [bold]-> retrain recommended[/] (alert {str(alert['alert_id'])[:12]}, {alert['type']}, "
                          f"{alert.get('consecutive_windows')} drifting windows in a row): the operator labels the "
                          "sample once the stream is scored")

        tap.on_alert = on_alert
        replay(before, stream1)
        scored(before, set(stream1["product_id"]), "drifting stream")
        tap.on_alert = None
        result.before = before.stats(result.serving_before)
        out.print(_phase_line(result.before))
        embedding = before.firing("embedding_drift")
        if trigger:
            result.retrain_recommended = True
            result.trigger = (f"the first retrain recommendation (alert {str(trigger['alert_id'])[:12]}, "
                              f"{trigger['type']})")
        elif len(embedding) >= cfg.retrain_after:
            result.trigger = (f"{len(embedding)} embedding_drift alerts (no retrain recommendation came: "
                              f"fewer than {cfg.retrain_after} drifting windows in a row in one partition)")
        else:
            raise DemoError(f"the drifting stream raised {len(embedding)} embedding_drift alert(s) and no retrain "
                            "recommendation; raise --fashion-share or --drift-windows")
        out.print(f"[bold]trigger[/]: {result.trigger}")

        # 3. Label the sample, retrain, compare, promote.
        out.rule("label the sample -> retrain -> compare -> promote")
        named = {pid for a in before.alerts if a.get("status") == "firing" for pid in alert_sample(a)}
        named_fashion = [p for p in named if p.startswith(FASHION_PREFIX)]
        named_elo7 = pool[pool["product_id"].isin([p for p in named if not p.startswith(FASHION_PREFIX)])]
        stream_fashion = drift1_fashion.assign(named=drift1_fashion["product_id"].isin(named_fashion))
        stream_fashion = stream_fashion.sort_values("named", ascending=False).drop(columns="named")
        extra_fashion, fashion = _take(fashion, max(0, cfg.labelled - len(stream_fashion)), "fashion rows")
        labelled_fashion = pd.concat([stream_fashion, extra_fashion]).iloc[:max(cfg.labelled, len(named_fashion))]
        labelled = pd.concat([labelled_fashion[CATALOG_COLUMNS], named_elo7[CATALOG_COLUMNS]], ignore_index=True)
        labelled_file = workdir / "labelled.csv"
        labelled.to_csv(labelled_file, index=False)
        result.labelled_rows = {"named_by_alerts": len(named), "named_fashion": len(named_fashion),
                                "named_elo7": len(named_elo7), "stream_fashion": len(stream_fashion),
                                "more_fashion": len(labelled_fashion) - min(len(stream_fashion), len(labelled_fashion)),
                                "rows": len(labelled)}
        out.print(f"labelled batch {labelled_file}: {len(named)} products named by the alerts ({len(named_fashion)} "
                  f"fashion, {len(named_elo7)} Elo7 labelled with their own category), "
                  f"{len(labelled_fashion) - result.labelled_rows['more_fashion']} fashion products of the stream "
                  f"(the named ones among them), {result.labelled_rows['more_fashion']} more fashion rows of the same "
                  f"catalog: {len(labelled)} rows, fashion as the new category {NEW_CATEGORY!r}")
        heldout = pd.concat([heldout_elo7[CATALOG_COLUMNS], heldout_fashion[CATALOG_COLUMNS]], ignore_index=True)
        heldout_file = workdir / "heldout.csv"
        heldout.to_csv(heldout_file, index=False)

        log = workdir / "lifecycle.log"
        candidate = workdir / "candidate"
        cmd = [sys.executable, "-m", "export", "retrain", "--from", str(serving_path), "--data", str(labelled_file),
               "--out", str(candidate), "--sample", str(cfg.retrain_sample), "--mode", cfg.retrain_mode]
        checkpoint = checkpoint_beside(bundle)
        if checkpoint is not None:
            cmd += ["--torch-checkpoint", str(checkpoint)]
        out.print(f"$ python -m export retrain --from {serving_path} --data {labelled_file.name} "
                  f"--out {candidate.name} --sample {cfg.retrain_sample} --mode {cfg.retrain_mode}"
                  + (f" --torch-checkpoint {checkpoint}" if checkpoint else "") + "   (log: lifecycle.log)")
        t0 = time.monotonic()
        retrained = _run(cmd, log, timeout=1800)
        result.seconds["retrain"] = round(time.monotonic() - t0, 1)
        manifest = json.loads((candidate / "manifest.json").read_text())
        result.candidate = manifest["bundle_version"]
        note = next((line for line in retrained.stdout.splitlines() if line.startswith("candidate ")), "")
        out.print(f"retrained in {result.seconds['retrain']:.0f} s: {note or result.candidate}; labels "
                  f"{manifest['labels']}")

        cmd = [sys.executable, "-m", "export", "compare", str(serving_path), str(candidate),
               "--data", str(heldout_file), "--split", "all", "--speed-rounds", str(cfg.speed_rounds), "--json"]
        out.print(f"$ python -m export compare {serving_path} {candidate.name} --data {heldout_file.name} "
                  "--split all --json")
        t0 = time.monotonic()
        compared = _run(cmd, log, timeout=900)
        result.seconds["compare"] = round(time.monotonic() - t0, 1)
        report = json.loads(compared.stdout.strip().splitlines()[-1])
        result.compare = {"verdict": report["verdict"], "reason": report["reason"], "rows": report["rows"],
                          "a_macro_f1": report["a"]["macro_f1"], "b_macro_f1": report["b"]["macro_f1"],
                          "difference": report["macro_f1_difference"]}
        result.verdict = report["verdict"]
        print_compare(out, report)
        if report["verdict"] == "promote":
            _promote_and_replay(cfg, out, result, store, candidate, log, proc, readyz, metrics_url, replay, scored,
                                stream_elo7, drift2_fashion, workdir)
        else:
            out.print("[yellow]verdict keep: the candidate is not promoted; no swap, no second stream[/]")
    # 5. Stopped (worker_process sent SIGTERM and waited; broker_on stopped the broker it started).
    result.worker_exit = proc.returncode
    result.seconds["total"] = round(time.monotonic() - started, 1)
    print_summary(out, result, cfg)


def _promote_and_replay(cfg: LoopConfig, out: Console, result: LoopResult, store: BundleStore, candidate: Path,
                        log: Path, proc: subprocess.Popen[bytes], readyz: str, metrics_url: str,
                        replay: Callable[[Phase, pd.DataFrame], None], scored: Callable[[Phase, set[str], str], None],
                        stream_elo7: pd.DataFrame, drift2_fashion: pd.DataFrame, workdir: Path) -> None:
    cmd = [sys.executable, "-m", "export", "promote", "--store", str(store.root), "--from", str(candidate)]
    out.print(f"$ python -m export promote --store {store.root} --from {candidate.name}")
    promoted = _run(cmd, log, timeout=300)
    out.print(promoted.stdout.strip())
    result.promoted = store.serving_version() == result.candidate

    # 4. The worker swaps (same process), then the same kind of stream again.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        state = _http_json(readyz)
        if state.get("model_version") == result.candidate:
            break
        if proc.poll() is not None:
            raise DemoError(f"the worker exited ({proc.returncode}) before swapping; log {workdir / 'worker.log'}")
        time.sleep(0.2)
    else:
        raise DemoError(f"the worker did not swap to {result.candidate} in 120 s: {_http_json(readyz)}")
    result.seconds["swap"] = round(time.monotonic() - t0, 1)
    result.swapped = True
    result.serving_after = state["model_version"]
    result.worker_alive_after_swap = proc.poll() is None
    result.worker_pid_after = proc.pid
    out.print(f"[bold]worker swapped[/] {result.serving_before[:12]} -> {result.serving_after[:12]} "
              f"{result.seconds['swap']:.1f} s after the promote; /readyz {json.dumps(state)}; pid {proc.pid}, "
              f"{'still the same process' if result.worker_alive_after_swap else 'NOT running'}")

    stream2 = mix(stream_elo7, drift2_fashion, cfg.seed + 1)
    after = Phase("after the swap: the same Elo7 products, fashion products nobody labelled")
    replay(after, stream2)
    scored(after, set(stream2["product_id"]), "drifting stream after the swap")
    result.after = after.stats(result.candidate)
    out.print(_phase_line(result.after))
    result.consumed_total = _metric(metrics_url, "stream_messages_consumed_total")
    result.swaps_total = _metric(metrics_url, 'stream_model_swaps_total{result="swapped"}')
    result.worker_pid_after = proc.pid if proc.poll() is None else -1


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}" if x >= 0.1 or x == 0 else f"{x:.1%}"


def _phase_line(s: dict[str, Any]) -> str:
    return (f"[bold]{s['outputs']} categorized[/]: embedding_drift alerts {s['embedding_drift']} "
            f"({s['embedding_drift_per_1000']:.1f} per 1,000 messages), category_mix {s['category_mix']}, "
            f"sequential {s['sequential']}; outliers: fashion {_pct(s['fashion_outlier_share'])}, Elo7 "
            f"{_pct(s['elo7_outlier_share'])}; Elo7 top-1 accuracy {_pct(s['elo7_accuracy'])}; fashion as "
            f"{NEW_CATEGORY} {_pct(s['fashion_as_new_category'])}")


def print_summary(out: Console, r: LoopResult, cfg: LoopConfig) -> None:
    out.rule("summary")
    table = Table(title=f"the same kind of stream ({round(cfg.fashion_share * 100)}% fashion, {cfg.partitions} "
                        f"partitions x {cfg.drift_windows} windows of {cfg.drift_window}) before and after the swap")
    table.add_column("")
    table.add_column(f"before ({r.serving_before[:12]})", justify="right")
    table.add_column(f"after ({(r.serving_after or '-')[:12]})", justify="right")
    b, a = r.before, r.after or {}

    def cell(s: dict[str, Any], key: str, fmt: Callable[[Any], str] = str) -> str:
        return "-" if s.get(key) is None else fmt(s[key])

    table.add_row("messages", cell(b, "messages"), cell(a, "messages"))
    table.add_row("embedding_drift alerts", cell(b, "embedding_drift"), cell(a, "embedding_drift"))
    table.add_row("  per 1,000 messages", cell(b, "embedding_drift_per_1000", lambda x: f"{x:.1f}"),
                  cell(a, "embedding_drift_per_1000", lambda x: f"{x:.1f}"))
    table.add_row("category_mix alerts", cell(b, "category_mix"), cell(a, "category_mix"))
    table.add_row("sequential (CUSUM) alerts", cell(b, "sequential"), cell(a, "sequential"))
    table.add_row("retrain recommendations (any type)", cell(b, "retrain_recommendations"),
                  cell(a, "retrain_recommendations"))
    table.add_row("fashion products flagged outlier", cell(b, "fashion_outlier_share", _pct),
                  cell(a, "fashion_outlier_share", _pct))
    table.add_row("Elo7 products flagged outlier", cell(b, "elo7_outlier_share", _pct),
                  cell(a, "elo7_outlier_share", _pct))
    table.add_row(f"fashion categorized {NEW_CATEGORY}", cell(b, "fashion_as_new_category", _pct),
                  cell(a, "fashion_as_new_category", _pct))
    table.add_row("Elo7 top-1 accuracy", cell(b, "elo7_accuracy", _pct), cell(a, "elo7_accuracy", _pct))
    out.print(table)
    c = r.compare
    d = c.get("difference") or {}
    ci = d.get("ci95") or [float("nan"), float("nan")]
    out.print(f"trigger: {r.trigger}")
    out.print(f"compare on {c.get('rows')} held-out rows: macro-F1 {c.get('a_macro_f1', 0):.3f} -> "
              f"{c.get('b_macro_f1', 0):.3f} ({d.get('difference', 0):+.3f}, 95% [{ci[0]:+.3f}, {ci[1]:+.3f}]); "
              f"verdict {str(r.verdict).upper()}; promoted {r.promoted}")
    out.print(f"versions: serving {r.serving_before} -> {r.serving_after or '(unchanged)'}")
    if r.swapped:
        out.print(f"worker: pid {r.worker_pid} before, {r.worker_pid_after} after the swap, started once "
                  f"(messages consumed {r.consumed_total and int(r.consumed_total)}, swaps "
                  f"{r.swaps_total and int(r.swaps_total)}); exit {r.worker_exit} on SIGTERM")
    else:
        out.print(f"worker: pid {r.worker_pid}, not swapped; exit {r.worker_exit} on SIGTERM")
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items() if k != "total")
    out.print(f"time: {r.seconds.get('total', 0):.0f} s in all ({seconds})")


__all__ = ["LoopConfig", "LoopResult", "elo7_pool", "fashion_pool", "run_loop"]
