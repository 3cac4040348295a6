"""``python -m benchmarks.profile_worker``: where the worker spends its time in a throughput run (py-spy).

Usage::

    python -m benchmarks.profile_worker --bundle models/default --broker 127.0.0.1:9092 \\
        [--messages 5000] [--rate 100] [--top 20] [--worker-env STREAM_X=Y ...]

Contract: the broker must be running (``make bench-profile`` starts one). The run creates its own
topics, starts the real worker (`benchmarks.worker.WorkerProcess`, the service defaults as in ``make
bench``), warms it up (``--warmup`` products: group join, model arenas), then starts ``py-spy record
--format raw --threads --nonblocking`` on the worker pid, produces ``--messages`` products as fast as
the broker takes them (a backlog, as in the end-to-end stage of ``make bench``) and stops py-spy
(SIGINT) when every output has arrived. It writes the collapsed stacks
(``bench-results/profile-<timestamp>.txt``, the input of any flame-graph tool) and a summary
(``profile-<timestamp>.json``), and prints, per thread (the event loop, the inference thread, others):
its share of the samples, and the top frames by inclusive time (what the flame graph's widest boxes
are) and by self time. Shares are of the wall-clock samples of the run: ``--rate`` samples per second
per thread while a thread is on the CPU (py-spy leaves idle threads out), so a thread at 60% was busy
60% of the run. Exit code 0, 1 when a stage failed, 2 without broker, bundle or py-spy.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from benchmarks.data import load_products
from benchmarks.e2e import preproduce, rate_from_times
from benchmarks.worker import (
    BenchmarkError,
    BenchTopics,
    OutputCollector,
    WorkerProcess,
    cpu_seconds,
    worker_env,
)
from stream_app.broker import free_port, is_ready
from stream_app.core.bundle import Bundle, BundleError

console = Console(width=None if sys.stdout.isatty() else 160)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python (the venv's), or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (file.py)``: aggregate a function over its lines."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({Path(match['file']).name})"


def thread_role(thread: str, process: str = "") -> str:
    """The worker's threads by name: the event loop (main), Faust's consumer thread, the model's (the
    inference thread, or the model process's main thread: py-spy ``--subprocesses`` names it)."""
    if "model_process" in process:
        return "model process"
    if thread == "MainThread":
        return "event loop"
    if thread.startswith("inference"):
        return "inference"
    if thread.startswith("Thread-"):  # mode's ServiceThread: Faust's aiokafka consumer runs there
        return "consumer thread"
    return "other"


def summarize(raw: str, top: int) -> dict[str, Any]:
    """Collapsed py-spy stacks (``--threads``: the first frame names the thread) -> per-thread tops."""
    stacks: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = process = ""
        if frames and frames[0].startswith("process "):  # --subprocesses: "process PID:"COMMAND LINE""
            process = frames.pop(0)
        if frames and frames[0].startswith("thread ("):  # "thread (TID): NAME"
            thread = frames.pop(0).partition(": ")[2]
        stacks[thread_role(thread, process)][tuple(frame_name(f) for f in frames)] += int(count)
    total = sum(sum(c.values()) for c in stacks.values())
    out: dict[str, Any] = {"samples": total, "threads": {}}
    for role, counter in stacks.items():
        samples = sum(counter.values())
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for frames, n in counter.items():
            for name in set(frames):
                inclusive[name] += n
            if frames:
                own[frames[-1]] += n
        out["threads"][role] = {
            "samples": samples,
            "inclusive": [(name, n) for name, n in inclusive.most_common(top * 3)],
            "self": [(name, n) for name, n in own.most_common(top)],
        }
    return out


# Frames every event-loop stack shares: they say nothing about where the time goes.
_PLUMBING = ("<module>", "run_path", "_run_module_as_main", "_run_code", "main (", "run_forever", "_run_once",
             "_run (events.py)", "run_until_complete", "run (runners.py)", "run (asyncio", "__call__ (core.py)",
             "invoke (core.py)", "main (core.py)", "worker (", "execute_from_commandline", "run_worker",
             "_execute_from_commandline", "start_worker", "run (worker.py)", "run (app.py)", "run_app",
             "run_worker (", "start (", "wrapper (", "new_func", "_main (", "Worker (", "__call__ (main.py)",
             "_bootstrap (threading.py)", "_bootstrap_inner (threading.py)", "Thread.run (threading.py)",
             "WorkerThread.run (threads.py)", "_start_thread (threads.py)", "_worker (thread.py)",
             "_WorkItem.run (thread.py)", "Context.invoke", "Command.invoke", "TyperGroup", "Typer.__call__",
             "Command.__call__", "get_callback")


def interesting(name: str) -> bool:
    return not any(p in name for p in _PLUMBING)


def render(summary: dict[str, Any], wall_s: float, rate: int, top: int) -> Table:
    table = Table(title="worker profile (py-spy): share of the run's wall time")
    table.add_column("thread")
    table.add_column("frame")
    table.add_column("inclusive", justify="right")
    table.add_column("self", justify="right")
    expected = wall_s * rate  # samples of a thread busy for the whole run
    for role in ("event loop", "consumer thread", "inference", "other"):
        info = summary["threads"].get(role)
        if not info:
            continue
        own = dict(info["self"])
        table.add_row(f"[bold]{role}[/bold]", "(busy)", f"{info['samples'] / expected:.0%}", "")
        shown = 0
        for name, n in info["inclusive"]:
            if not interesting(name) or shown >= top:
                continue
            shown += 1
            table.add_row("", name, f"{n / expected:.1%}", f"{own.get(name, 0) / expected:.1%}")
    return table


def run(
    bundle: Path = typer.Option(..., "--bundle"),
    broker: str = typer.Option(..., "--broker"),
    messages: int = typer.Option(5000, "--messages"),
    warmup: int = typer.Option(300, "--warmup"),
    rate: int = typer.Option(100, "--rate", help="py-spy samples per second"),
    top: int = typer.Option(20, "--top"),
    threads: int = typer.Option(1, "--threads", help="STREAM_INFERENCE_THREADS (make bench's default)."),
    micro_batch: int = typer.Option(256, "--micro-batch"),
    batch_size: int = typer.Option(8, "--batch-size", help="STREAM_MODEL_BATCH_SIZE (make bench's default)."),
    partitions: int = typer.Option(6, "--partitions"),
    worker_setting: list[str] = typer.Option([], "--worker-env", help="STREAM_X=Y for the worker"),
    out_dir: Path = typer.Option(Path("bench-results"), "--out-dir"),
    label: str = typer.Option("", "--label", help="Free text stored in the JSON (e.g. before/after)."),
    worker_root: Path | None = typer.Option(None, "--worker-root",
                                            help="Run the worker code of another checkout (e.g. `git archive` of "
                                            "an earlier commit) for a before/after comparison."),
    from_json: Path | None = typer.Option(None, "--from-json", help="Only print the table of an earlier run."),
) -> None:
    """Profile the worker with py-spy during a throughput run (see module docstring)."""
    if from_json is not None:
        earlier = json.loads(from_json.read_text())
        summary = summarize(Path(earlier["raw"]).read_text(), top)
        console.print(render(summary, earlier["wall_s"], earlier["rate"], top))
        console.print(f"{earlier.get('label', '')}: end to end {earlier['tps']:.0f} msg/s while sampled")
        return
    spy = py_spy()
    if spy is None:
        console.print("[red]py-spy not found[/red]: pip install -e '.[dev]'")
        raise typer.Exit(2)
    if not is_ready(broker):
        console.print(f"[red]no broker answers at {broker}[/red]")
        raise typer.Exit(2)
    try:
        Bundle.load(bundle)
    except BundleError as exc:
        console.print(f"[red]bad bundle[/red]: {exc}")
        raise typer.Exit(2) from exc
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / f"profile-{stamp}.txt"
    products = load_products(warmup + messages)
    result: dict[str, Any] = {"label": label, "messages": messages, "rate": rate, "worker_env": worker_setting}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        topics = BenchTopics.create(broker, partitions)
        env = worker_env(broker, topics, bundle.resolve(), Path(tmp) / "data", free_port(), micro_batch=micro_batch,
                         model_batch=batch_size, threads=threads, partitions=partitions)
        for item in worker_setting:
            name, _, value = item.partition("=")
            env[name] = value
        worker = WorkerProcess(env, Path(tmp) / "worker.log")
        if worker_root is not None:
            worker.cwd = worker_root.resolve()
            result["worker_root"] = str(worker.cwd)
        collector = OutputCollector(broker, topics.output, partitions)
        spy_proc: subprocess.Popen[bytes] | None = None
        try:
            worker.start()
            preproduce(broker, topics.input, products[:warmup])
            if not collector.wait_for(warmup, 180, worker):
                raise BenchmarkError(f"warm-up: {collector.count()} of {warmup} outputs")
            console.print(f"warm: {warmup} outputs; profiling {messages} messages (py-spy {rate} Hz)")
            spy_proc = subprocess.Popen([spy, "record", "--pid", str(worker.pid), "--rate", str(rate),
                                         "--format", "raw", "--threads", "--subprocesses", "--nonblocking",
                                         "--output", str(raw_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # py-spy attaches
            started = time.time()
            cpu_before = cpu_seconds(worker.pid)
            main_before = cpu_seconds(worker.pid, worker.pid)
            preproduce(broker, topics.input, products[warmup:])
            if not collector.wait_for(warmup + messages, 120 + messages / 10, worker):
                raise BenchmarkError(f"only {collector.count()} of {warmup + messages} outputs")
            wall = time.time() - started
            spy_proc.send_signal(signal.SIGINT)
            _, err = spy_proc.communicate(timeout=60)
            if not raw_path.exists():
                raise BenchmarkError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
            times = sorted(collector.snapshot().values())[warmup:]
            result["tps"] = rate_from_times(times, messages, 1)
            result["wall_s"] = wall
            result["worker_cpu_s"] = cpu_seconds(worker.pid) - cpu_before
            result["event_loop_cpu_s"] = cpu_seconds(worker.pid, worker.pid) - main_before
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - recorded in the result JSON; exits 1
            result["error"] = repr(exc)
            console.print(f"[red]failed[/red]: {exc}")
        finally:
            if spy_proc is not None and spy_proc.poll() is None:
                spy_proc.kill()
            worker.stop()
            collector.close()
    if "error" not in result:
        summary = summarize(raw_path.read_text(), top)
        result["summary"] = summary
        result["raw"] = str(raw_path)
        console.print(render(summary, result["wall_s"], rate, top))
        console.print(f"end to end {result['tps']:.0f} msg/s over {messages} messages while sampled; worker CPU "
                      f"{result['worker_cpu_s'] / messages * 1000:.2f} ms per message, of which the event loop "
                      f"(main thread) {result['event_loop_cpu_s'] / messages * 1000:.2f} ms; "
                      f"collapsed stacks in {raw_path}")
    json_path = out_dir / f"profile-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2))
    console.print(f"summary written to {json_path}")
    if "error" in result:
        raise typer.Exit(1)


def main() -> None:
    typer.run(run)


if __name__ == "__main__":
    main()
