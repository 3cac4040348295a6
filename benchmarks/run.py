"""``python -m benchmarks.run``: every benchmark figure of the service in one run (``make bench``).

Usage::

    python -m benchmarks.run --bundle models/default --broker 127.0.0.1:9092 \\
        [--torch-checkpoint DIR] [--messages 5000] [--naive-messages 500] \\
        [--batch-size 32] [--micro-batch 256] [--quick]

Contract: the broker at ``--broker`` must be running (``make bench`` starts it). The run creates
its own uniquely named topics, starts and stops its own worker and naive-baseline subprocesses
(also on errors and Ctrl-C), prints a rich table and writes every figure, the configuration and
the machine's load to ``bench-results/<timestamp>.json``. Stages, in order:

1. bundle size; 2. model-only (sorted, arrival-order batches, arrival-order windows of
``--micro-batch``, Pipeline.predict on those windows, batch 1);
3. end-to-end throughput of the real worker: started cold on ``--messages`` pre-produced Elo7
products (``end_to_end_cold``: start-up and first-batch figures), then, warm, on the same number
again at once (``end_to_end``, the maximum rate: the steady state, as the model-only reference is
warm); 4. that worker's idle CPU over ``--idle-seconds`` without input;
5. latency at 10%, 50% and 90% of the maximum rate for ``--latency-seconds`` each (p50/p90/p99 of
receive - send and of the worker's own share, processed_at - event_time); 6. worker memory;
7. model-only sorted and windows again (brackets the end-to-end run on this noisy machine);
8. the fetch-wait sweep: one fresh worker per ``--fetch-waits`` value of STREAM_FETCH_MAX_WAIT_MS,
its idle CPU and its latency at half the maximum rate (`benchmarks.scaling`);
9. cores: throughput of warm workers per ``--cores`` configuration (processes x inference threads);
10. shadow: serving throughput with a shadow candidate scoring ``--shadow-share`` of the messages
vs without, side by side (issue 10's target: under 10% lost at a 10% share);
11. the naive PyTorch loop over ``--naive-messages`` of the same products.

``--stages`` picks the optional stages (``variants`` = the model-only thread and model-batch rows,
``latency`` = idle CPU, latency and memory, ``sweep``, ``cores``, ``shadow``, ``naive``); model-only
and end to end always run, e.g. ``--stages shadow`` for the end-to-end ratio and the shadow cost alone.

Batching: ``--batch-size`` is the model batch (texts per onnxruntime call, the worker's
STREAM_MODEL_BATCH_SIZE) and ``--micro-batch`` the messages the worker takes from the stream at
once (STREAM_BATCH_SIZE); the worker sorts each micro-batch by token length and cuts it into model
batches. The model-only *window* pass does exactly that, so it is the reference for the primary
ratio ``e2e_over_model_same_batching``; ``e2e_over_model_sorted`` (whole sample sorted) is an upper
bound no stream reaches.

Nothing is asserted: the targets (end to end >= 0.90 x model-only at the same batching, p99 <= 150 ms
at half the maximum rate, >= 5 x naive) are reported as met or not, in the table and in the JSON's
``targets``. Exit code 0 when every stage ran, 1 when a stage failed (the
JSON still records what was measured and the error).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnxruntime as ort
import typer
from rich.console import Console
from rich.table import Table

from benchmarks.data import ROOT, Product, elo7_path, load_products, render_texts
from benchmarks.e2e import (
    ThroughputResult,
    measure_backlog,
    measure_idle_cpu,
    measure_latency,
    measure_throughput,
    preproduce,
    rate_from_times,
)
from benchmarks.model_only import (
    ReferencePasses,
    measure_model_batches,
    measure_model_only,
    measure_thread_options,
)
from benchmarks.scaling import WorkerGroup, cores, fetch_wait_sweep, shadow_cost
from benchmarks.worker import (
    BenchmarkError,
    BenchTopics,
    OutputCollector,
    WorkerProcess,
    batch_delta,
    die_with_parent,
    preflight,
    process_memory_mb,
    run_command,
    sched_delta,
    thread_sched,
    worker_batch_stats,
    worker_env,
)
from stream_app.broker import free_port
from stream_app.core.store import BundleStore
from stream_app.settings import Settings

E2E_TARGET = 0.90  # end-to-end / model-only at the same batching (the window pass)
STEADY_ROUNDS = 3  # steady end-to-end rounds, each between two model-only window passes
NAIVE_TARGET = 5.0  # end-to-end / naive
LATENCY_TARGET_MS = 150.0  # p99 of receive - send at half the maximum rate
SHADOW_COST_TARGET = 0.10  # serving throughput lost to a shadow candidate at a 10% share
LATENCY_FRACTIONS = (0.1, 0.5, 0.9)  # latency stages, as fractions of the measured maximum rate
FETCH_WAIT_DEFAULT_MS = Settings.model_fields["fetch_max_wait_ms"].default
# Optional stages (``--stages``); model-only and end to end always run: every other figure is relative to them.
STAGES = ("variants", "latency", "sweep", "cores", "shadow", "naive")
# Wide enough for the table when the output is a pipe or a log file (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 150)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def bundle_sizes(path: Path) -> dict[str, float]:
    """File name -> size in MB (10^6 bytes) of every file of the bundle directory."""
    return {p.name: p.stat().st_size / 1e6 for p in sorted(path.iterdir()) if p.is_file()}


def default_checkpoint(bundle: Path) -> Path:
    """``models/default`` -> ``models/default-torch`` (where ``make model`` puts the PyTorch weights)."""
    resolved = bundle.resolve()
    return resolved.with_name(resolved.name + "-torch")


def run_naive(broker: str, topics: BenchTopics, checkpoint: Path, messages: int, threads: int,
              separator: str, partitions: int, workdir: Path) -> dict[str, Any]:
    """Run benchmarks.naive as a subprocess and time its outputs from outside, like the worker's."""
    result_path = workdir / "naive.json"
    log_path = workdir / "naive.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    timeout = 120.0 + messages / 2.0  # generous: the baseline may run at a few messages/s here
    collector = OutputCollector(broker, topics.naive_output, partitions)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.naive", "--broker", broker, "--input-topic", topics.input,
             "--output-topic", topics.naive_output, "--checkpoint", str(checkpoint), "--messages", str(messages),
             "--threads", str(threads), "--separator", separator, "--result", str(result_path),
             "--timeout", str(timeout)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        try:
            deadline = time.monotonic() + timeout + 60
            while collector.count() < messages:
                # It may have exited right after its last output: give the reader a moment.
                if (proc.poll() is not None and collector.count() < messages
                        and not collector.wait_for(messages, 5.0)):
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                    raise BenchmarkError(f"naive baseline exited with {proc.returncode} after "
                                         f"{collector.count()} outputs:\n{tail}")
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"naive baseline: {collector.count()} of {messages} outputs in time")
                time.sleep(0.1)
            proc.wait(60)
            times = list(collector.snapshot().values())
            summary = json.loads(result_path.read_text())
            summary["tps"] = rate_from_times(times, messages, 1)
            summary["outputs"] = {k.decode(): collector.value_json(k).get("top_category") for k in collector.snapshot()}
            return summary
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            collector.close()


def top1_agreement(worker_tops: dict[str, str], naive_tops: dict[str, str]) -> float | None:
    """Share of products where the naive loop and the worker agree on the top category."""
    common = [k for k in naive_tops if k in worker_tops]
    return sum(worker_tops[k] == naive_tops[k] for k in common) / len(common) if common else None


def startup_bias_bound(n: int, micro_batch: int) -> float:
    """Worst-case relative overestimate of the end-to-end texts/s (see benchmarks.e2e).

    The clock starts at the ``micro_batch``-th output. If the worker's first micro-batch was smaller
    (its first take closes on STREAM_BATCH_MAX_WAIT_MS), that output lies inside a later burst whose
    outputs were all computed before the clock started: up to ``micro_batch`` of the ``n - b``
    counted outputs, so the figure can read up to ``(n - b) / (n - 2b) - 1`` high.
    """
    b = max(1, min(micro_batch, n - 1))
    return (n - b) / (n - 2 * b) - 1 if n > 2 * b else float("inf")


def fmt(value: object, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def verdict(met: bool | None) -> str:
    if met is None:
        return "not judged"
    return "[green]met[/green]" if met else "[red]NOT met[/red]"


def judge_targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met (None: not measured)."""
    targets: dict[str, dict[str, Any]] = {}
    ratios = r.get("ratios", {})
    e2e = r.get("end_to_end")
    ratio = ratios.get("e2e_over_model_same_batching")
    targets["e2e_over_model_same_batching"] = {
        "target": f">= {E2E_TARGET}", "value": ratio,
        "met": None if ratio is None or e2e is None else ratio >= E2E_TARGET}
    half = next((x for x in r.get("latency_levels", []) if x.get("fraction_of_max") == 0.5), None)
    p99 = half["receive_p99_ms"] if half else None
    targets["latency_p99_at_half_rate_ms"] = {
        "target": f"<= {LATENCY_TARGET_MS:.0f}", "value": p99, "met": None if p99 is None else p99 <= LATENCY_TARGET_MS}
    sweep = r.get("fetch_wait_sweep") or []
    default = next((x for x in sweep if x["fetch_max_wait_ms"] == FETCH_WAIT_DEFAULT_MS), None)
    if default is not None:
        meeting = [x for x in sweep if x["latency"]["receive_p99_ms"] <= LATENCY_TARGET_MS]
        cheapest = min(meeting, key=lambda x: x["idle"]["core_share"]) if meeting else None
        # "without burning idle CPU": the default meets the latency target and, of the values that
        # do, burns the least idle CPU (within 0.5% of a core: the resolution of 10 s of /proc ticks here).
        ok = (default in meeting and cheapest is not None
              and default["idle"]["core_share"] <= cheapest["idle"]["core_share"] + 0.005)
        targets["fetch_wait_default"] = {
            "target": f"STREAM_FETCH_MAX_WAIT_MS default meets p99 <= {LATENCY_TARGET_MS:.0f} ms at half rate with "
                      "the least idle CPU of the values that do",
            "value": FETCH_WAIT_DEFAULT_MS, "met": ok,
            "meeting_target": [x["fetch_max_wait_ms"] for x in meeting]}
    shadow = r.get("shadow")
    if shadow is not None:
        targets["shadow_cost"] = {"target": f"< {SHADOW_COST_TARGET:.0%} at a {shadow['share']:.0%} share",
                                  "value": shadow["cost"], "met": shadow["cost"] < SHADOW_COST_TARGET}
    naive = ratios.get("e2e_over_naive")
    targets["e2e_over_naive"] = {"target": f">= {NAIVE_TARGET:.0f}", "value": naive,
                                 "met": None if naive is None else naive >= NAIVE_TARGET}
    return targets


def _busy_note(lat: dict[str, Any]) -> str:
    """Why a latency is what it is: batch sizes, how busy the model was, and whether the model's thread (the
    model process's main thread) ran or waited for a CPU taken by other processes."""
    note = ""
    wb = lat.get("worker_batches")
    if isinstance(wb, list):  # rounds: the first round's
        wb = next((x for x in wb if x), None)
    if wb:
        note += (f"; batches of {wb['mean_batch_size']:.1f} messages, {wb.get('mean_inference_ms', 0):.0f} ms of model "
                 f"each, model busy {wb.get('model_busy_share', 0):.0%}")
    threads = lat.get("worker_threads")
    if isinstance(threads, list):
        threads = next((x for x in threads if x), None)
    if threads and "inference" in threads:
        t = threads["inference"]
        note += f"; the model's thread on a CPU {t['on_cpu']:.0%}, waiting for one {t['waiting_for_cpu']:.0%}"
    if lat.get("load_avg_1m") is not None:
        note += f"; load {lat['load_avg_1m']:.1f}"
    return note


def _ms3(lat: dict[str, Any], kind: str) -> str:
    return f"{lat[f'{kind}_p50_ms']:.0f} / {lat[f'{kind}_p90_ms']:.0f} / {lat[f'{kind}_p99_ms']:.0f} ms"


def render_table(r: dict[str, Any]) -> Table:
    table = Table(title=f"benchmarks: bundle {r['config']['bundle']} ({r['bundle']['version']})", show_lines=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("note")
    targets = r.get("targets", {})
    size = r["bundle"]
    table.add_row("bundle size", f"{size['total_mb']:.1f} MB", "",
                  ", ".join(f"{k} {v:.1f}" for k, v in size["files_mb"].items()))
    cfg = r["config"]
    mb, micro = cfg["batch_size"], cfg["micro_batch"]
    m = r.get("model_only")
    if m:
        table.add_row(f"model-only, whole sample sorted, batches of {mb}", f"{fmt(m['sorted_tps'])} texts/s", "",
                      f"upper bound no stream reaches; {m['texts']} Elo7 texts, mean {m['mean_tokens']:.1f} "
                      f"tokens, {m['threads']} threads")
        table.add_row(f"model-only, arrival-order batches of {mb}", f"{fmt(m['arrival_tps'])} texts/s", "",
                      f"the pre-change worker's batching; length sorting buys x{m['bucketing_gain']:.2f}")
        table.add_row(f"model-only, arrival-order windows of {m['window']}", f"{fmt(m['window_tps'])} texts/s", "",
                      f"the worker's batching: each window sorted into batches of {m['batch_size']}; "
                      f"x{m['window_over_sorted']:.2f} of sorted")
        table.add_row(f"Pipeline.predict, arrival-order windows of {m['window']}",
                      f"{fmt(m['pipeline_window_tps'])} texts/s", "",
                      "tokenize + model + decode + centroids, in process")
        table.add_row("model-only, batch 1 latency", f"p50 {m['batch1_p50_ms']:.1f} ms", "",
                      f"p99 {m['batch1_p99_ms']:.1f} ms")
    batches_by = {(b["model_batch"], b.get("cut", "fixed"), b["window"]): b["tps"]
                  for b in r.get("model_only_batches") or []}
    for mbatch, cut in sorted({k[:2] for k in batches_by}, key=lambda k: (k[0], k[1] != "planned")):
        cells = ", ".join(f"windows of {w}: {fmt(batches_by[(mbatch, cut, w)])}"
                          for w in sorted({k[2] for k in batches_by}))
        calls = f"calls of at most {mbatch}, planned" if cut == "planned" else f"a call every {mbatch} texts"
        table.add_row(f"model-only, {calls} ({cfg['threads']} thread(s))", "texts/s", "", cells)
    for t in r.get("model_only_threads") or []:
        table.add_row(f"model-only, windows of {micro}: {t['threads']} onnxruntime thread(s)"
                      f"{', spinning' if t['spinning'] else ', no spinning'}", f"{fmt(t['tps'])} texts/s", "",
                      f"{t['cpu_ms_per_text']:.2f} CPU ms per text (all threads); rounds "
                      f"{', '.join(fmt(x) for x in t['rounds_tps'])}")
    e = r.get("end_to_end")
    if e:
        table.add_row("end to end (worker + broker), steady = the maximum rate", f"{fmt(e['tps'])} texts/s", "",
                      f"median of the steady rounds: {e['messages']} products at once to the warm worker, "
                      "timed from the broker's ack of the backlog to the last output")
        steady_rounds = r.get("end_to_end_rounds") or []
        if steady_rounds:
            table.add_row("  steady rounds", f"{len(steady_rounds)}", "",
                          "; ".join(f"{fmt(x['tps'])} texts/s vs windows {fmt(x['window_tps'])}: {x['ratio']:.3f}"
                                    for x in steady_rounds))
        cold = r.get("end_to_end_cold")
        if cold:
            table.add_row("end to end, cold worker", f"{fmt(cold['tps'])} texts/s", "",
                          f"the worker started on a backlog of {cold['messages']}: first output "
                          f"{cold['startup_s']:.1f} s after launch; the first micro-batch excluded")
            bias = startup_bias_bound(cold["messages"], micro)
            if bias > 0.02:
                table.add_row("  [yellow]caution[/yellow]", f"<= +{bias:.0%}" if bias < 10 else "unbounded", "",
                              f"if the first micro-batch was partial, the clock starts inside a later burst and the "
                              f"cold figure reads high by up to this (N = {cold['messages']}, micro-batch {micro}); "
                              "use N >> micro-batch")
        ratios = r["ratios"]
        ratio = ratios.get("e2e_over_model_same_batching")
        if ratio is not None:
            t = targets.get("e2e_over_model_same_batching", {})
            table.add_row("  / model-only, same batching (primary)", f"[bold]{ratio:.2f}[/bold]",
                          f">= {E2E_TARGET}: {verdict(t.get('met'))}",
                          f"windows of {micro} -> calls of <= {mb}: {fmt(ratios['model_same_batching_reference'])} "
                          "texts/s; the median of the steady rounds, each against the mean of the window passes "
                          "before and after it")
        ratio = ratios.get("e2e_over_model_sorted")
        if ratio is not None:
            table.add_row("  / model-only sorted (secondary)", f"{ratio:.2f}", "",
                          f"vs the sorted upper bound: {fmt(ratios['model_sorted_reference'])} texts/s "
                          "= mean of the first model-only pass and one after the steady rounds")
        if ratios.get("e2e_over_model_arrival") is not None:
            table.add_row(f"  / model-only arrival batches of {mb}", f"{ratios['e2e_over_model_arrival']:.2f}", "",
                          "vs the pre-change worker's batching")
        batches = r.get("worker_batches")
        if batches:
            inference = ""
            if batches.get("inference_s_total"):
                rate = batches["mean_batch_size"] * batches["batches"] / batches["inference_s_total"]
                inference = f"; its model calls: {rate:,.0f} texts/s"
            table.add_row("  worker micro-batches", f"mean {batches['mean_batch_size']:.1f}", "",
                          f"{batches['batches']:.0f} batches (STREAM_BATCH_SIZE {micro}, "
                          f"STREAM_MODEL_BATCH_SIZE {mb}){inference}")
    idle = r.get("worker_idle_cpu")
    if idle:
        table.add_row("worker idle CPU (no input)", f"{idle['core_share']:.1%} of a core", "",
                      f"{idle['cpu_s']:.2f} CPU s over {idle['seconds']:.0f} s (/proc/PID/stat), "
                      f"STREAM_FETCH_MAX_WAIT_MS {FETCH_WAIT_DEFAULT_MS} (default)")
    for lat in r.get("latency_levels", []):
        fraction = lat.get("fraction_of_max") or 0
        target = ""
        if fraction == 0.5:
            target = f"p99 <= {LATENCY_TARGET_MS:.0f} ms: {verdict(targets['latency_p99_at_half_rate_ms']['met'])}"
        table.add_row(f"latency at {fraction:.0%} of max ({lat['achieved_rate']:.0f} msg/s), p50/p90/p99",
                      _ms3(lat, "receive"), target,
                      f"receive - send; max {lat['receive_max_ms']:.0f} ms; {lat['received']}/{lat['sent']} "
                      f"received in {lat['duration_s']:.0f} s")
        busy = _busy_note(lat)
        table.add_row("  worker's share (processed_at - event_time)", _ms3(lat, "processed"), "",
                      f"send -> the worker stamps its output (before publish + ack and the reader's fetch){busy}")
    mem = r.get("worker_memory_mb")
    if mem:
        table.add_row("worker memory", f"RSS {mem['VmRSS']:.0f} MiB", "", f"peak (VmHWM) {mem['VmHWM']:.0f} MiB")
    sweep = r.get("fetch_wait_sweep")
    if sweep:
        for x in sweep:
            wait = x["fetch_max_wait_ms"]
            default = " (default)" if wait == FETCH_WAIT_DEFAULT_MS else ""
            idle = x["idle"]
            table.add_row(f"STREAM_FETCH_MAX_WAIT_MS={wait}{default}: idle CPU", f"{idle['core_share']:.1%} of a core",
                          "", f"{idle['cpu_s']:.2f} CPU s in the same {idle['seconds']:.0f} s for every value")
            for fraction, lat in sorted(x.get("latency_by_fraction", {"0.5": x["latency"]}).items()):
                met = lat["receive_p99_ms"] <= LATENCY_TARGET_MS
                target = f"p99 <= {LATENCY_TARGET_MS:.0f} ms: {verdict(met)}" if float(fraction) == 0.5 else ""
                level = f"{float(fraction):.0%} of max ({lat['achieved_rate']:.0f} msg/s)"
                table.add_row(f"  latency at {level}, p50/p90/p99",
                              _ms3(lat, "receive"), target,
                              f"worker's share {_ms3(lat, 'processed')}; p99 per round "
                              f"{' / '.join(fmt(v) for v in lat.get('rounds_receive_p99_ms', []))} ms{_busy_note(lat)}")
        t = targets.get("fetch_wait_default")
        if t:
            table.add_row(f"  default STREAM_FETCH_MAX_WAIT_MS={FETCH_WAIT_DEFAULT_MS}", "",
                          verdict(t["met"]), "meets the latency target with the least idle CPU of "
                          f"the values that do (those meeting it: {t['meeting_target'] or 'none'})")
    core_runs = r.get("cores")
    if core_runs:
        base = next((c for c in core_runs if c["processes"] == 1 and c["threads"] == 1), None)
        for c in core_runs:
            rel = f"x{c['tps'] / base['tps']:.2f} of 1 x 1" if base else ""
            table.add_row(f"cores: {c['processes']} worker process(es) x {c['threads']} inference thread(s)",
                          f"{fmt(c['tps'])} texts/s", "",
                          f"{rel}; {c['messages']} products to warm workers sharing {cfg['partitions']} partitions;"
                          f" rounds {', '.join(fmt(x) for x in c.get('rounds_tps', []))} texts/s")
        cap = r.get("capacity")
        if cap:
            table.add_row("  capacity per vCPU", f"{fmt(cap['msgs_per_vcpu'])} msg/s", "",
                          f"best configuration ({cap['best']}) / {cap['vcpus']} vCPUs of this shared machine")
    sh = r.get("shadow")
    if sh:
        table.add_row(f"shadow candidate at a {sh['share']:.0%} share: serving cost", f"{sh['cost']:.1%}",
                      f"< {SHADOW_COST_TARGET:.0%}: {verdict(targets['shadow_cost']['met'])}",
                      f"{fmt(sh['shadow_tps'])} vs {fmt(sh['plain_tps'])} texts/s without; rounds "
                      f"{', '.join(fmt(x) for x in sh['rounds_tps']['shadow'])} vs "
                      f"{', '.join(fmt(x) for x in sh['rounds_tps']['plain'])}; the shadow scored "
                      f"{sh['shadowed_share']:.1%} of the messages, {sh['shadow_model_s_per_message'] * 1e3:.2f} ms "
                      f"of model each; {sh['failures']:.0f} failures")
    n = r.get("naive")
    if n:
        table.add_row("naive PyTorch loop", f"{fmt(n['tps'], ',.1f')} texts/s", "",
                      f"{n['messages']} messages, 1 per pipeline call, ack per message; "
                      f"RSS {n['memory_mb'].get('VmRSS', 0):.0f} MiB")
        ratio = r["ratios"].get("e2e_over_naive")
        if ratio is not None:
            agree = r["ratios"].get("top1_agreement_naive_vs_worker")
            table.add_row("  end to end / naive", f"x{ratio:.1f}",
                          f">= x{NAIVE_TARGET:.0f}: {verdict(targets['e2e_over_naive']['met'])}",
                          f"top-1 agreement with the worker {fmt(agree, '.1%')}")
    elif r.get("naive_skipped"):
        table.add_row("naive PyTorch loop", "skipped", "", r["naive_skipped"])
    for stage, error in r.get("errors", {}).items():
        table.add_row(f"[red]{stage} failed[/red]", "", "", error.splitlines()[-1][:120])
    return table


def parse_cores(text: str) -> list[tuple[int, int]]:
    """``"1x1,1x2,2x1"`` -> [(processes, threads), ...]."""
    out = []
    for part in text.split(","):
        processes, _, threads = part.strip().partition("x")
        out.append((int(processes), int(threads)))
    return out


def run(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle directory (models/default)."),
    broker: str = typer.Option(..., "--broker", help="HOST:PORT of a running broker."),
    torch_checkpoint: Path | None = typer.Option(
        None, "--torch-checkpoint", help="PyTorch weights for the naive baseline (default: BUNDLE-torch)."),
    messages: int | None = typer.Option(None, "--messages", help="End-to-end messages (default 5000, quick 600)."),
    naive_messages: int | None = typer.Option(None, "--naive-messages", help="Naive messages (default 500, quick 60)."),
    latency_seconds: float | None = typer.Option(None, "--latency-seconds",
                                                 help="Each latency stage (default 20 s, quick 5)."),
    idle_seconds: float | None = typer.Option(None, "--idle-seconds", help="Idle CPU window (default 10 s, quick 5)."),
    fetch_waits: str = typer.Option("1500,100,20", "--fetch-waits",
                                    help="STREAM_FETCH_MAX_WAIT_MS values compared side by side ('' skips)."),
    fetch_wait_fractions: str = typer.Option("0.1,0.5", "--fetch-wait-fractions",
                                             help="Rates of the fetch-wait sweep, as fractions of the maximum."),
    cores_configs: str = typer.Option("1x1,1x2,2x1", "--cores",
                                      help="PROCESSESxTHREADS configurations compared side by side ('' skips)."),
    cores_messages: int | None = typer.Option(None, "--cores-messages",
                                              help="Products per cores configuration (default 3000, quick 400)."),
    threads: int = typer.Option(1, "--threads",
                                help="onnxruntime and torch threads (worker's STREAM_INFERENCE_THREADS); 1 = the "
                                "chart's default, one thread per vCPU (docs/deployment.md, capacity)."),
    rounds_option: int | None = typer.Option(None, "--rounds", min=1,
                                             help="Alternating rounds of the fetch-wait and cores stages "
                                             "(default 2, quick 1)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1,
                                   help="Model batch: texts per onnxruntime call (worker's STREAM_MODEL_BATCH_SIZE); "
                                   "8 = the chart's default (docs/benchmarks.md, model batches)."),
    micro_batch: int = typer.Option(256, "--micro-batch", min=1,
                                    help="Max messages per micro-batch taken from the stream "
                                    "(worker's STREAM_BATCH_SIZE)."),
    partitions: int = typer.Option(6, "--partitions", help="Partitions of the benchmark topics (service default 6)."),
    no_naive: bool = typer.Option(False, "--no-naive", help="Skip the naive baseline."),
    stages_option: str = typer.Option("all", "--stages",
                                      help=f"Optional stages to run, comma-separated, of {','.join(STAGES)} "
                                           "(model-only and end to end always run); 'all' runs every one."),
    shadow_share: float = typer.Option(0.1, "--shadow-share", min=0.0, max=1.0,
                                       help="Share of the messages the shadow candidate scores (shadow stage)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: small N, short durations."),
    out_dir: Path = typer.Option(Path("bench-results"), "--out-dir"),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Model-only vs end to end vs naive, latency, fetch wait and cores, on the same Elo7 texts, in one run."""
    n = messages or (600 if quick else 5000)
    m = naive_messages or (60 if quick else 500)
    duration = latency_seconds or (5.0 if quick else 20.0)
    idle_s = idle_seconds or (5.0 if quick else 10.0)
    n_cores = cores_messages or (400 if quick else 3000)
    wanted = (set(STAGES) if stages_option.strip() == "all"
              else {x.strip() for x in stages_option.split(",") if x.strip()})
    if wanted - set(STAGES):
        console.print(f"[red]unknown stage(s)[/red] {sorted(wanted - set(STAGES))}: choose from {','.join(STAGES)}")
        raise typer.Exit(2)
    if no_naive:
        wanted.discard("naive")
    waits = [int(w) for w in fetch_waits.split(",") if w.strip()] if "sweep" in wanted else []
    fetch_fractions = [float(f) for f in fetch_wait_fractions.split(",") if f.strip()]
    configs = parse_cores(cores_configs) if cores_configs.strip() and "cores" in wanted else []
    warmup = 200
    rounds = 1 if quick else 2
    stage_rounds = rounds_option or rounds
    checkpoint = torch_checkpoint or default_checkpoint(bundle)
    loaded = preflight(broker, bundle, console)
    r: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "config": {"bundle": str(bundle), "broker": broker, "torch_checkpoint": str(checkpoint), "messages": n,
                   "naive_messages": m, "latency_seconds": duration, "idle_seconds": idle_s,
                   "latency_fractions": list(LATENCY_FRACTIONS), "fetch_waits_ms": waits,
                   "fetch_wait_fractions": fetch_fractions,
                   "fetch_wait_default_ms": FETCH_WAIT_DEFAULT_MS, "cores": configs, "cores_messages": n_cores,
                   "threads": threads, "stage_rounds": stage_rounds, "batch_size": batch_size,
                   "micro_batch": micro_batch, "partitions": partitions, "quick": quick, "seed": seed,
                   "stages": sorted(wanted), "shadow_share": shadow_share,
                   "dataset": str(elo7_path())},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__,
                    "git_commit": _git_commit(), "load_avg_start": os.getloadavg()},
        "ratios": {},
        "errors": {},
    }
    files = bundle_sizes(bundle)
    r["bundle"] = {"version": loaded.version, "files_mb": files, "total_mb": sum(files.values())}
    products = load_products(max(n, m, warmup + n_cores), seed=seed)
    texts = render_texts(loaded.manifest.text, products[:n])
    worker_tops: dict[str, str] = {}
    stage = "model_only"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        try:
            console.print(f"[bold]model-only[/bold]: {len(texts)} texts, {rounds} round(s)")
            r["model_only"] = measure_model_only(loaded, texts, threads, batch_size, rounds,
                                                 batch1_samples=50 if quick else 200,
                                                 micro_batch=micro_batch).to_json()
            stage = "model_only_threads"
            if "variants" in wanted:
                console.print("[bold]model-only threads[/bold]: 1 vs 2 onnxruntime threads, spinning or not")
                r["model_only_threads"] = measure_thread_options(loaded, texts[: 512 if quick else 1024],
                                                                 batch_size, micro_batch, rounds=1 if quick else 3)
                stage = "model_only_batches"
                console.print("[bold]model-only model batches[/bold]: STREAM_MODEL_BATCH_SIZE 8 / 16 / 32 by window, "
                              "planned or fixed cut")
                r["model_only_batches"] = measure_model_batches(loaded, texts[:512], threads,
                                                                rounds=1 if quick else 2)

            stage = "end_to_end"
            topics = BenchTopics.create(broker, partitions)
            r["topics"] = asdict(topics)
            console.print(f"[bold]end to end[/bold]: pre-producing {n} products to {topics.input}")
            r["preproduce_s"] = preproduce(broker, topics.input, products[:n])
            collector = OutputCollector(broker, topics.output, partitions)
            port = free_port()
            env = worker_env(broker, topics, bundle.resolve(), workdir / "data", port, micro_batch=micro_batch,
                             model_batch=batch_size, threads=threads, partitions=partitions)
            worker = WorkerProcess(env, workdir / "worker.log")
            try:
                started = time.time()
                worker.start()
                cold = measure_throughput(collector, worker, started, n, micro_batch, timeout=180.0 + n / 10)
                r["end_to_end_cold"] = asdict(cold)
                # The primary figure is the steady state, as the model-only reference is warm: the same
                # worker, now warm, gets the same products again under fresh keys, in rounds, each round
                # between two model-only window passes in this process (the worker idles meanwhile), so
                # every ratio compares seconds of the machine that lie together.
                stage = "end_to_end_steady"
                e2e_rounds = 1 if quick else STEADY_ROUNDS
                console.print(f"[bold]end to end, steady[/bold]: {e2e_rounds} x {n} products at once to the warm "
                              "worker, each round between two model-only window passes")
                references = ReferencePasses(loaded, texts, threads, batch_size, micro_batch)
                windows = [references.window_tps()]
                rounds_out: list[dict[str, float]] = []
                for rnd in range(e2e_rounds):
                    batch = [Product(f"{p.product_id}-s{rnd}", p.title, p.tags) for p in products[:n]]
                    steady = measure_backlog(broker, topics.input, collector, [worker], batch, timeout=180.0 + n / 10)
                    windows.append(references.window_tps())
                    bracket = (windows[-2] + windows[-1]) / 2
                    rounds_out.append({"tps": steady["tps"], "seconds": steady["seconds"], "window_tps": bracket,
                                       "ratio": steady["tps"] / bracket})
                r["end_to_end_rounds"] = rounds_out
                middle = sorted(rounds_out, key=lambda x: x["ratio"])[len(rounds_out) // 2]  # the median round
                r["model_only"]["sorted_tps_after_e2e"] = references.sorted_tps()
                throughput = ThroughputResult(n, statistics.median(x["tps"] for x in rounds_out), middle["seconds"],
                                              cold.startup_s)
                r["end_to_end"] = asdict(throughput)
                r["worker_batches"] = worker_batch_stats(port)
                worker_tops = {k.decode(): collector.value_json(k)["top_category"] for k in collector.snapshot()}

                if "latency" in wanted:
                    stage = "idle_cpu"
                    console.print(f"[bold]idle CPU[/bold]: {idle_s:.0f} s without input")
                    time.sleep(3.0)  # the last commit and metadata refreshes after the backlog
                    r["worker_idle_cpu"] = measure_idle_cpu([worker], idle_s)

                    stage = "latency"
                    r["latency_levels"] = []
                    for fraction in LATENCY_FRACTIONS:
                        rate = throughput.tps * fraction
                        console.print(f"[bold]latency[/bold]: {fraction:.0%} of max = {rate:.0f} msg/s "
                                      f"for {duration:.0f} s")
                        stats_before, sched_before = worker_batch_stats(port), thread_sched(worker.pid)
                        level = measure_latency(broker, topics.input, collector, worker, products[:n], rate, duration,
                                                prefix=f"lat{int(fraction * 100)}", fraction_of_max=fraction).to_json()
                        level["worker_batches"] = batch_delta(stats_before, worker_batch_stats(port),
                                                              level["duration_s"])
                        level["worker_threads"] = sched_delta(worker.pid, sched_before, thread_sched(worker.pid),
                                                              level["duration_s"])
                        level["load_avg_1m"] = os.getloadavg()[0]
                        r["latency_levels"].append(level)
                    r["latency"] = next(x for x in r["latency_levels"] if x["fraction_of_max"] == 0.5)
                r["worker_memory_mb"] = process_memory_mb(worker.pid)
            finally:
                r["worker_exit_code"] = worker.stop()
                collector.close()
                if "worker_memory_mb" not in r:  # a stage failed before the end: keep the evidence
                    r["worker_log_tail"] = worker.tail()

            reference = (r["model_only"]["sorted_tps"] + r["model_only"]["sorted_tps_after_e2e"]) / 2
            r["ratios"]["model_same_batching_reference"] = middle["window_tps"]
            r["ratios"]["e2e_over_model_same_batching"] = middle["ratio"]  # primary, vs E2E_TARGET
            r["ratios"]["model_sorted_reference"] = reference
            r["ratios"]["e2e_over_model_sorted"] = throughput.tps / reference
            r["ratios"]["e2e_over_model_arrival"] = throughput.tps / r["model_only"]["arrival_tps"]

            base = WorkerGroup(broker, bundle.resolve(), workdir, partitions, micro_batch, batch_size, threads)
            if waits:
                stage = "fetch_wait_sweep"
                rate = throughput.tps * 0.5
                console.print(f"[bold]fetch wait[/bold]: {waits} ms, idle {idle_s:.0f} s + {rate:.0f} msg/s for "
                              f"{duration:.0f} s each")
                r["fetch_wait_sweep"] = fetch_wait_sweep(base, waits, products[:n], warmup, throughput.tps,
                                                         fetch_fractions, duration, idle_s, rounds=stage_rounds)
            if configs:
                stage = "cores"
                console.print(f"[bold]cores[/bold]: {configs} (processes x threads), {n_cores} products each")
                r["cores"] = cores(base, configs, products[: warmup + n_cores], warmup, timeout=180.0 + n_cores / 5,
                                   rounds=stage_rounds)
                best = max(r["cores"], key=lambda c: c["tps"])
                vcpus = os.cpu_count() or 1
                r["capacity"] = {"best": f"{best['processes']} x {best['threads']}", "best_tps": best["tps"],
                                 "vcpus": vcpus, "msgs_per_vcpu": best["tps"] / vcpus}
            if "shadow" in wanted:
                stage = "shadow"
                # A store serving the bundle; the shadow is a second session of the same version (the cost
                # of a candidate of the same architecture; a distinct version would only change its name).
                store = BundleStore(workdir / "store")
                version = store.add(bundle)
                store.promote(version)
                console.print(f"[bold]shadow[/bold]: {shadow_share:.0%} shadow share vs none, {n_cores} products each")
                r["shadow"] = shadow_cost(base, store.root, version, shadow_share, products[: warmup + n_cores],
                                          warmup, timeout=180.0 + n_cores / 5, rounds=stage_rounds)

            stage = "naive"
            if "naive" not in wanted:
                r["naive_skipped"] = "--no-naive" if no_naive else f"not in --stages {stages_option}"
            elif not (checkpoint / "categorizer_head.pt").is_file():
                r["naive_skipped"] = f"no PyTorch checkpoint at {checkpoint} (export train --torch-checkpoint)"
            else:
                console.print(f"[bold]naive baseline[/bold]: {m} messages, PyTorch, {threads} threads")
                naive = run_naive(broker, topics, checkpoint, m, threads, loaded.manifest.text.separator,
                                  partitions, workdir)
                naive_tops = naive.pop("outputs")
                r["naive"] = naive
                r["ratios"]["e2e_over_naive"] = throughput.tps / naive["tps"]
                r["ratios"]["top1_agreement_naive_vs_worker"] = top1_agreement(worker_tops, naive_tops)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - any failure is recorded in the JSON, then exit 1
            r["errors"][stage] = "".join(traceback.format_exception_only(exc)).strip()
            console.print(f"[red]stage {stage} failed[/red]: {exc}")
            if not isinstance(exc, BenchmarkError | KeyboardInterrupt):
                console.print(traceback.format_exc())
    r["targets"] = judge_targets(r)
    r["machine"]["load_avg_end"] = os.getloadavg()
    r["finished_at"] = datetime.now(UTC).isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out_path.write_text(json.dumps(r, indent=2, ensure_ascii=False, default=str))
    console.print(render_table(r))
    console.print(f"results written to {out_path}")
    if r["errors"]:
        raise typer.Exit(1)


def main() -> None:
    run_command(run)


if __name__ == "__main__":
    main()
