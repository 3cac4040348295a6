"""Command line: ``python -m stream_app worker | produce | tail | demo | demo-loop``.

``worker`` reads every setting from STREAM_* variables (docs/architecture.md); a bad one stops it
with exit code 2 and a message naming the variable. ``produce`` and ``tail`` default to
STREAM_BROKERS and the topics of the settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Streaming product categorizer.")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _settings():  # noqa: ANN202 - typer cannot see return annotations of helpers anyway
    from stream_app.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None


def _connection(settings):  # noqa: ANN001, ANN202
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
    file: Path = typer.Option(..., "--file", exists=True, dir_okay=False, help="Catalog: .parquet, .csv, .jsonl"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Replay at most N rows."),
    rate: float | None = typer.Option(None, "--rate", min=0.001, help="Messages per second (default: unthrottled)."),
    columns: str = typer.Option("", "--columns", help="FIELD=COLUMN,... over the Elo7 defaults."),
    join_by_position: Path | None = typer.Option(None, "--join-by-position", help="Row-aligned second file."),
    brokers: str | None = typer.Option(None, "--brokers", help="Default: STREAM_BROKERS."),
    topic: str | None = typer.Option(None, "--topic", help="Default: STREAM_INPUT_TOPIC."),
) -> None:
    """Replay a catalog into the input topic as JSON product events keyed by product_id."""
    from stream_app.tools.produce import ColumnMapping, ReplayError, replay

    settings = _settings()
    target = topic or settings.input_topic
    try:
        count = replay(
            file, brokers or settings.brokers, target, limit=limit, rate=rate, columns=ColumnMapping.parse(columns),
            client_config=_connection(settings), join_by_position=join_by_position,
        )
    except (ReplayError, ValueError) as exc:
        raise _fail(str(exc), 1) from None
    typer.echo(f"{count} messages delivered to {target}", err=True)


@cli.command()
def tail(
    topic: str = typer.Option(..., "--topic", help="Topic to print (from the beginning)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after N records."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Stop after this many idle seconds."),
    brokers: str | None = typer.Option(None, "--brokers", help="Default: STREAM_BROKERS."),
) -> None:
    """Print a topic's records as JSON lines."""
    from confluent_kafka import KafkaException

    from stream_app.tools.tail import tail as tail_topic

    settings = _settings()
    try:
        count = tail_topic(brokers or settings.brokers, topic, limit=limit, timeout=timeout,
                           client_config=_connection(settings))
    except KafkaException as exc:
        raise _fail(f"reading {topic!r}: {exc}", 1) from None
    typer.echo(f"{count} records from {topic}", err=True)


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
    retrain_after: int = typer.Option(3, "--retrain-after", min=1, help="Drifting windows in a row before `retrain`."),
    warmup_windows: int = typer.Option(1, "--warmup-windows", min=1, help="Elo7-only windows per partition first."),
    drift_windows: int = typer.Option(4, "--drift-windows", min=1, help="Windows per partition of each drifting stream."),
    fashion_share: float = typer.Option(0.10, "--fashion-share", min=0.01, max=0.99, help="Fashion share of the drifting streams."),
    labelled: int = typer.Option(3800, "--labelled", min=1, help="Fashion rows in the operator's labelled batch."),
    retrain_sample: int = typer.Option(4000, "--retrain-sample", min=10, help="retrain --sample N."),
    retrain_mode: str = typer.Option("frozen", "--retrain-mode", help="retrain --mode (frozen: minutes)."),
    heldout_elo7: int = typer.Option(1200, "--heldout-elo7", min=1, help="Elo7 test-side rows of the compare file."),
    heldout_fashion: int = typer.Option(300, "--heldout-fashion", min=1, help="Unlabelled fashion rows of the compare file."),
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
    sys.exit(main())
