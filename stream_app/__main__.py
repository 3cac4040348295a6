"""Command line: ``python -m stream_app worker | produce | tail | demo | demo-loop``.

``worker`` reads every setting from STREAM_* variables (docs/architecture.md); a bad one stops it
with exit code 2 and a message naming the variable. ``produce`` (stream_app/tools/produce.py) and
``tail`` (stream_app/tools/tail.py) cover what kcat -P / -C are used for; they default to STREAM_BROKERS
and the topics of the settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # imported lazily at run time: `--help` must not load pydantic settings or Kafka clients
    from stream_app.settings import Settings

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Streaming product categorizer.")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _settings() -> Settings:
    from stream_app.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None


def _connection(settings: Settings) -> dict[str, Any]:
    from stream_app.kafka.config import ConnectionSettings, client_config

    return client_config(settings=ConnectionSettings.from_settings(settings))


@cli.command()
def worker() -> None:
    """Run the Faust worker (settings from STREAM_* environment variables)."""
    settings = _settings()
    from stream_app.worker.run import StartupError, run_worker

    try:
        run_worker(settings)
    except StartupError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def produce(
    file: str | None = typer.Option(None, "--file", "-f", help="Catalog (.parquet, .csv, .jsonl); - = stdin."),
    stdin: bool = typer.Option(False, "--stdin", help="One message per stdin line (like kcat -P); same as --file -."),
    topic: str | None = typer.Option(None, "--topic", "-t", help="Default: STREAM_INPUT_TOPIC."),
    brokers: str | None = typer.Option(None, "--brokers", "-b", help="Default: STREAM_BROKERS."),
    key: str | None = typer.Option(None, "--key", help="Key field: catalog field (default product_id); "
                                   "stdin: a field of each JSON line (default: no key)."),
    key_delimiter: str | None = typer.Option(None, "--key-delimiter", "-K", help="stdin: KEY<delim>VALUE lines."),
    header: list[str] | None = typer.Option(None, "--header", "-H", help="NAME=VALUE on every message; repeatable."),
    partition: int | None = typer.Option(None, "--partition", "-p", min=0, help="Default: by key (partitioner)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Send at most N messages."),
    rate: float | None = typer.Option(None, "--rate", min=0.001, help="Messages per second (default: unthrottled)."),
    columns: str = typer.Option("", "--columns", help="Catalog: FIELD=COLUMN,... over the Elo7 defaults."),
    join_by_position: Path | None = typer.Option(None, "--join-by-position", help="Catalog: row-aligned second file."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Default: when stderr is a terminal."),
) -> None:
    """Send a catalog (JSON product events keyed by product_id) or stdin lines to a topic.

    Exit 2: bad options, broker not answering, topic or partition missing. Exit 1: bad file, row or line,
    or a message not delivered.
    """
    from stream_app.tools.produce import ReplayError, parse_header, produce_lines, replay
    from stream_app.tools.topics import ClusterError, check_target

    if stdin == (file is not None):
        raise _fail("give either --file PATH (a catalog) or --stdin / --file - (lines)")
    catalog = None if stdin or file == "-" else Path(str(file))
    if catalog is None and (columns or join_by_position):
        raise _fail("--columns and --join-by-position apply to a catalog, not to stdin")
    if catalog is not None and key_delimiter is not None:
        raise _fail("--key-delimiter applies to stdin lines, not to a catalog")
    settings = _settings()
    target = topic or settings.input_topic
    connection = _connection(settings)
    connection["bootstrap.servers"] = target_brokers = brokers or settings.brokers
    try:
        headers = [parse_header(spec) for spec in header or []]
        check_target(connection, target, partition)
        if catalog is None:
            count = produce_lines(sys.stdin.buffer, target_brokers, target, key_delimiter=key_delimiter, key_field=key,
                                  headers=headers, partition=partition, limit=limit, rate=rate,
                                  client_config=connection)
        else:
            count = replay(catalog, target_brokers, target, limit=limit, rate=rate,
                           columns=columns, key_field=key or "product_id", client_config=connection,
                           progress=sys.stderr.isatty() if progress is None else progress,
                           join_by_position=join_by_position, headers=headers, partition=partition)
    except (ClusterError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except ReplayError as exc:
        raise _fail(str(exc), 1) from None
    typer.echo(f"{count} messages delivered to {target}", err=True)


@cli.command()
def tail(
    topic: str | None = typer.Option(None, "--topic", "-t", help="Default: STREAM_OUTPUT_TOPIC."),
    brokers: str | None = typer.Option(None, "--brokers", "-b", help="Default: STREAM_BROKERS."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Default: from the end (new messages)."),
    until_end: bool = typer.Option(False, "--until-end", "-e", help="Exit at the end offsets as of the start."),
    count: int | None = typer.Option(None, "--count", "-c", min=1, help="Exit after N messages."),
    fmt: str | None = typer.Option(None, "--format", "-f", help=r"kcat-style: %t %p %o %k %s %h %T %K %S, \n \t "
                                   r"(default: %s\n)."),
    as_json: bool = typer.Option(False, "--json", "-J", help="JSON lines: topic, partition, offset, timestamp, key, "
                                 "value, headers."),
    partition: int | None = typer.Option(None, "--partition", "-p", min=0, help="Read this partition only."),
    group: str | None = typer.Option(None, "--group", "-G", help="Consumer group: resume and commit its offsets."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.1, help="Exit after N idle seconds."),
) -> None:
    """Print a topic's messages (like kcat -C); without --group no consumer group is used.

    Exit 2: bad options, broker not answering, topic or partition missing. Exit 1: a fatal client error.
    """
    from confluent_kafka import KafkaException

    from stream_app.tools.tail import compile_format, json_line
    from stream_app.tools.tail import tail as tail_topic
    from stream_app.tools.topics import ClusterError

    if as_json and fmt is not None:
        raise _fail("choose one of --json and --format")
    settings = _settings()
    target = topic or settings.output_topic
    try:
        render = json_line if as_json else compile_format(r"%s\n" if fmt is None else fmt)
        printed = tail_topic(brokers or settings.brokers, target, sys.stdout.buffer, render,
                             from_beginning=from_beginning, until_end=until_end, count=count, partition=partition,
                             group=group, timeout=timeout, client_config=_connection(settings))
    except (ClusterError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except KafkaException as exc:
        raise _fail(f"reading {target!r}: {exc}", 1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:  # the reader went away (``| head``): a normal end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise typer.Exit(0) from None
    typer.echo(f"{printed} messages from {target}", err=True)


@cli.command()
def demo(
    bundle: Path = typer.Option(Path("models/default"), "--bundle", help="Bundle dir (built quickly if missing)."),
    datasets_dir: Path = typer.Option(Path("../shared/datasets"), "--datasets-dir", exists=True, file_okay=False),
    broker_port: int = typer.Option(9092, "--broker-port", min=1, max=65535),
    elo7_rows: int = typer.Option(300, "--elo7-rows", min=1),
    fashion_rows: int = typer.Option(1000, "--fashion-rows", min=1),
    drift_window: int = typer.Option(200, "--drift-window", min=10),
) -> None:
    """End to end: bundle, broker, worker, replay Elo7 then fashion products, print results and drift."""
    from stream_app.demo import DemoError, run_demo

    try:
        run_demo(bundle, datasets_dir, broker_port, elo7_rows=elo7_rows, fashion_rows=fashion_rows,
                 drift_window=drift_window)
    except DemoError as exc:
        raise _fail(str(exc), 1) from None


@cli.command("demo-loop")
def demo_loop(
    bundle: Path = typer.Option(Path("models/default"), "--bundle", help="Starting bundle (built if missing)."),
    datasets_dir: Path = typer.Option(Path("../shared/datasets"), "--datasets-dir", exists=True, file_okay=False),
    broker_port: int = typer.Option(9092, "--broker-port", min=1, max=65535),
    partitions: int = typer.Option(3, "--partitions", min=1),
    drift_window: int = typer.Option(200, "--drift-window", min=10),
    retrain_after: int = typer.Option(3, "--retrain-after", min=1,
                                      help="Drifting windows in a row before `retrain`."),
    warmup_windows: int = typer.Option(1, "--warmup-windows", min=1, help="Elo7-only windows per partition first."),
    drift_windows: int = typer.Option(4, "--drift-windows", min=1,
                                      help="Windows per partition of each drifting stream."),
    fashion_share: float = typer.Option(0.10, "--fashion-share", min=0.01, max=0.99,
                                        help="Fashion share of the drifting streams."),
    labelled: int = typer.Option(3800, "--labelled", min=1, help="Fashion rows in the operator's labelled batch."),
    retrain_sample: int = typer.Option(4000, "--retrain-sample", min=10, help="retrain --sample N."),
    retrain_mode: str = typer.Option("frozen", "--retrain-mode", help="retrain --mode (frozen: minutes)."),
    heldout_elo7: int = typer.Option(1200, "--heldout-elo7", min=1, help="Elo7 test-side rows of the compare file."),
    heldout_fashion: int = typer.Option(300, "--heldout-fashion", min=1,
                                        help="Unlabelled fashion rows of the compare file."),
    poll_seconds: float = typer.Option(1.0, "--poll-seconds", min=0.1, help="STREAM_BUNDLE_POLL_SECONDS."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Default: .cache/demo-loop/run-*."),
    keep: bool = typer.Option(False, "--keep", help="Keep the work folder (store, candidate, logs)."),
) -> None:
    """The model lifecycle on a live worker: drift alert, retrain, compare, promote, hot swap, fewer alerts."""
    from stream_app.demo import DemoError
    from stream_app.demo_loop import LoopConfig, run_loop

    try:
        run_loop(LoopConfig(
            bundle=bundle, datasets_dir=datasets_dir, broker_port=broker_port, partitions=partitions,
            drift_window=drift_window, retrain_after=retrain_after, warmup_windows=warmup_windows,
            drift_windows=drift_windows, fashion_share=fashion_share, labelled=labelled, retrain_sample=retrain_sample,
            retrain_mode=retrain_mode, heldout_elo7=heldout_elo7, heldout_fashion=heldout_fashion,
            poll_seconds=poll_seconds, workdir=workdir, keep=keep))
    except DemoError as exc:
        raise _fail(str(exc), 1) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
