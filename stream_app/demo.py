"""``make run``: the whole service on one machine, from an empty broker to drift alerts.

Steps: build a quick (frozen) bundle if the directory is missing, start Tansu (or reuse one that
answers on the port), create the topics, start ``python -m stream_app worker`` as a subprocess,
replay Elo7 products (rows outside the bundle's training split when the manifest records the split)
and print one line per categorized product, replay fashion products and print the drift alerts,
then stop the worker (SIGTERM: drain and commit) and the broker if the demo started it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console

from stream_app.broker import free_port
from stream_app.core.splits import SplitSpec, side_of

if TYPE_CHECKING:
    from confluent_kafka import Consumer

console = Console(highlight=False, soft_wrap=True)  # one line per product, even when piped


class DemoError(RuntimeError):
    """The demo cannot continue; the message says why."""


def ensure_bundle(bundle: Path, datasets_dir: Path) -> None:
    """Build the quick bundle (`make model-quick`'s recipe) when `bundle` has none.

    The frozen build fits the TF-IDF branch on every training row and the head and drift centroids
    on the bundle encoder's embeddings of a sample of 8,192 of them (README, "Build times")."""
    if (bundle / "manifest.json").is_file():
        console.print(f"[bold]bundle[/]: {bundle}")
        return
    data = datasets_dir / "elo7" / "products.parquet"
    console.print(f"[bold]bundle[/]: {bundle} is missing; building the quick frozen one "
                  "(1-2 minutes on 2 idle cores; `make model` builds the fine-tuned one)...")
    cmd = [sys.executable, "-m", "export", "train", "--data", str(data), "--out", str(bundle), "--mode", "frozen"]
    started = time.monotonic()
    if subprocess.run(cmd).returncode != 0:  # inherits stdout: the build prints its progress
        raise DemoError(f"bundle build failed: {' '.join(cmd)}")
    console.print(f"[bold]bundle[/]: built in {time.monotonic() - started:.0f} s")


def elo7_sample(bundle: Path, datasets_dir: Path, rows: int) -> pd.DataFrame:
    """Distinct Elo7 products, preferring the bundle's test split (not seen in training)."""
    frame = pd.read_parquet(datasets_dir / "elo7" / "products.parquet").drop_duplicates("product_id")
    try:
        training = json.loads((bundle / "manifest.json").read_text())["training"]
        split = training["split"]
        spec = SplitSpec(seed=int(split["seed"]), validation=float(split["validation"]), test=float(split["test"]))
        sides = frame["product_id"].astype(str).map(lambda g: side_of(g, spec))
        held_out = frame[sides == "test"]
        if len(held_out) >= rows:
            frame = held_out
    except (KeyError, TypeError, ValueError, OSError):
        pass  # no split recorded: any rows will do for a demo
    return frame.sample(n=min(rows, len(frame)), random_state=11)


@contextmanager
def broker_on(port: int) -> Iterator[tuple[str, bool]]:
    from stream_app.broker import is_ready, start, stop

    address = f"127.0.0.1:{port}"
    reused = is_ready(address, timeout=1.0)
    if not reused:
        start(port)
    console.print(f"[bold]broker[/]: {address}" + (" (already running, reused)" if reused else " (Tansu started)"))
    try:
        yield address, reused
    finally:
        if not reused:
            stop(port)
            console.print("[bold]broker[/]: stopped")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except Exception:  # noqa: BLE001 - not up yet
        return 0


@contextmanager
def worker_process(env: dict[str, str], log_path: Path, web_port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "stream_app", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _get(f"http://127.0.0.1:{web_port}/readyz") != 200:
            if proc.poll() is not None:
                raise DemoError(f"worker exited with {proc.returncode}; log: {log_path}")
            if time.monotonic() > deadline:
                raise DemoError(f"worker not ready after 120 s; log: {log_path}")
            time.sleep(0.5)
        console.print(f"[bold]worker[/]: ready (pid {proc.pid}, metrics http://127.0.0.1:{web_port}/metrics, "
                      f"log {log_path})")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        console.print(f"[bold]worker[/]: stopped (exit {proc.returncode})")


def _consumer(brokers: str, topic: str) -> Consumer:
    from confluent_kafka import Consumer

    from stream_app.kafka.config import consumer_config

    consumer = Consumer(consumer_config({"bootstrap.servers": brokers}, None))
    consumer.subscribe([topic])
    return consumer


def _poll_json(consumer: Consumer, until: float) -> Iterator[dict[str, Any]]:
    while time.monotonic() < until:
        msg = consumer.poll(0.3)
        if msg is None or msg.error():
            continue
        value = msg.value()
        if value is not None:  # the worker writes no tombstones; skip one rather than crash on it
            yield json.loads(value)


def run_demo(bundle: Path, datasets_dir: Path, broker_port: int, *, elo7_rows: int = 300, fashion_rows: int = 1000,
             drift_window: int = 200) -> None:
    from stream_app.kafka.admin import create_topics
    from stream_app.tools.produce import replay

    datasets_dir = datasets_dir.resolve()
    started = time.monotonic()  # `make run` measures "first categorized product" from here (README)
    ensure_bundle(bundle, datasets_dir)
    with broker_on(broker_port) as (brokers, reused), tempfile.TemporaryDirectory(prefix="stream-demo-") as tmp:
        suffix = f"-demo-{uuid.uuid4().hex[:6]}" if reused else ""
        topics = {"input": "products" + suffix, "output": "categories" + suffix, "drift": "drift" + suffix,
                  "dlq": "products.dlq" + suffix}
        create_topics(brokers, {topics["input"]: 6, topics["output"]: 6, topics["drift"]: 1, topics["dlq"]: 6})
        web_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
        env.update({
            "STREAM_BROKERS": brokers, "STREAM_BUNDLE_PATH": str(bundle.resolve()), "STREAM_WEB_PORT": str(web_port),
            "STREAM_INPUT_TOPIC": topics["input"], "STREAM_OUTPUT_TOPIC": topics["output"],
            "STREAM_DRIFT_TOPIC": topics["drift"], "STREAM_DLQ_TOPIC": topics["dlq"],
            "STREAM_DRIFT_WINDOW": str(drift_window), "STREAM_GROUP_ID": f"demo-{uuid.uuid4().hex[:6]}",
            "STREAM_DATA_DIR": str(Path(tmp) / "data"), "STREAM_BATCH_MAX_WAIT_MS": "20",
        })
        log_path = Path(tmp).parent / f"stream-demo-worker-{os.getpid()}.log"
        with worker_process(env, log_path, web_port):
            categories = _consumer(brokers, topics["output"])
            drift = _consumer(brokers, topics["drift"])
            try:
                # 1. In-distribution products: print each result as it arrives.
                sample = elo7_sample(bundle, datasets_dir, elo7_rows)
                elo7_file = Path(tmp) / "elo7.parquet"
                sample.to_parquet(elo7_file)
                titles = dict(zip(sample["product_id"].astype(str), sample["title"], strict=True))
                truth = dict(zip(sample["product_id"].astype(str), sample["category"], strict=True))
                sent = replay(elo7_file, brokers, topics["input"], progress=False)
                console.rule(f"{sent} Elo7 products replayed")
                console.print(f"{'product_id':>10}  {'title':<42} {'top category':<20} {'score':>5}  {'dist':>5}")
                seen: set[str] = set()
                correct = 0
                for doc in _poll_json(categories, time.monotonic() + 120):
                    pid = str(doc["product_id"])
                    if pid in seen:
                        continue
                    seen.add(pid)
                    top = doc["categories"][0]
                    ok = doc["top_category"] == truth.get(pid)
                    correct += ok
                    mark = "[green]✓[/]" if ok else "[red]✗[/]"
                    outlier = " [yellow]outlier[/]" if doc["drift"]["outlier"] else ""
                    console.print(
                        f"{pid:>10}  {titles.get(pid, '')[:42]:<42} {doc['top_category'][:20]:<20} "
                        f"{top['score']:5.2f}  {doc['drift']['distance']:5.3f} {mark}{outlier}"
                    )
                    if len(seen) == 1:
                        console.print(f"[dim](first product categorized {time.monotonic() - started:.0f} s after "
                                      "the demo started)[/]")
                    if len(seen) >= sent:
                        break
                console.print(f"[bold]{len(seen)}/{sent} categorized, top-1 accuracy {correct / max(1, len(seen)):.3f}")
                for alert in _poll_json(drift, time.monotonic() + 2):
                    console.print(f"[yellow]alert during the Elo7 replay:[/] {alert['type']}")

                # 2. A different catalog: English fashion products. Expect embedding drift.
                fashion = datasets_dir / "fashion"
                sent = replay(fashion / "styles_text.csv", brokers, topics["input"], limit=fashion_rows,
                              columns="product_id=id,title=productDisplayName,tags=articleType+baseColour,event_time=",
                              join_by_position=fashion / "styles.csv", progress=False)
                console.rule(f"{sent} fashion products replayed (out of distribution)")
                alerts = 0
                for alert in _poll_json(drift, time.monotonic() + 90):
                    alerts += 1
                    _print_alert(alert)
                    if alert["type"] == "embedding_drift" and alerts >= 1:
                        # Let the other alerts of the same windows arrive, then stop.
                        for more in _poll_json(drift, time.monotonic() + 5):
                            _print_alert(more)
                        break
                if not alerts:
                    console.print("[red]no drift alert within 90 s[/]")
            finally:
                categories.close()
                drift.close()
        console.rule("done")


def _print_alert(alert: dict[str, Any]) -> None:
    kind = alert.get("type")
    if alert.get("status") == "resolved":
        console.print(f"[bold green]RESOLVED[/] {kind} on partition {alert.get('partition')}: "
                      f"ends alert {alert.get('resolves')}")
        return
    if kind == "embedding_drift":
        detail = (f"{alert['outliers']}/{alert['n']} outliers (expected {alert['expected']:.1f}, "
                  f"critical {alert['critical_count']}), p={alert['p_value']:.2e}")
    elif kind == "category_mix":
        top = alert["categories"][0]
        detail = (f"chi2={alert['chi_square']:.1f} p={alert['p_value']:.2e}; most off: {top['name']} "
                  f"{top['share']:.0%} vs {top['reference_share']:.0%}")
    else:
        detail = json.dumps(alert)[:200]
    console.print(f"[bold red]DRIFT[/] {kind}: {detail}; recommendation={alert.get('recommendation')} "
                  f"(window #{alert.get('consecutive_windows')} in a row)")
    with suppress(Exception):
        sample = ", ".join(alert.get("outlier_sample", [])[:5])
        if sample:
            console.print(f"      outlier sample: {sample}")
