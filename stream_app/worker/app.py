"""The Faust adapter: topics, the agent, web views. Thin: the work is in the batch path and `stream_app.core`.

How delivery works (at least once, nothing lost):
1. The input topic uses the raw codec (bytes in, bytes out): Faust decodes nothing, so every
   malformed message reaches `classify` and can be dead-lettered instead of crashing the stream.
2. The agent hands every event to the `Batcher` (accumulate.py), which cuts adaptive micro-batches
   for the `BatchProcessor` (batching.py). Faust acks each event itself when the agent moves on;
   before that, the agent adds one reference to the message (``message.incref()``), so Faust's ack
   only drops its own reference. The final ack, the one that marks the offset committable, is made
   by the commit step in offset order, after the broker acknowledged every output of the message.
3. On SIGTERM, ``App.on_stop`` stops fetching and runs ``Consumer.wait_empty``: it waits until every
   message it handed out is acked (our in-flight batches finish and ack), then commits. On a
   rebalance, the same ``wait_empty`` runs before partitions are given up.
4. If publishing fails or the model is broken, nothing of that batch or any later one is acked; the
   app crashes (non-zero exit) and the messages are redelivered from the last commit after restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import EventT, StreamT
from faust.web import Request, Response, View

from stream_app import metrics
from stream_app.core.store import BundleStore
from stream_app.kafka.config import DEFAULT_SESSION_TIMEOUT_MS
from stream_app.settings import Settings
from stream_app.worker import health
from stream_app.worker.accumulate import Batcher
from stream_app.worker.batching import BatchProcessor, BatchProgress
from stream_app.worker.inference import ModelBroken
from stream_app.worker.outputs import OutputBuilder, Topics
from stream_app.worker.publish import Publish
from stream_app.worker.record import ConsumedRecord
from stream_app.worker.serving import ServingModel
from stream_app.worker.shadow import ShadowScorer
from stream_app.worker.swap import ModelSwapper
from stream_app.worker.transport import FaustPublisher, FetchLimits, WorkerApp

log = logging.getLogger(__name__)

# Tansu holds a group join for about half the session timeout: keep it short (docs/architecture.md).
SESSION_TIMEOUT_S = DEFAULT_SESSION_TIMEOUT_MS / 1000
HEARTBEAT_INTERVAL_S = 1.5
LAG_INTERVAL_S = 5.0


def broker_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust credentials from the security settings (SASL/SCRAM over TLS for MSK)."""
    context = settings.ssl_context()
    if settings.uses_sasl:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism.value,
            ssl_context=context,  # None -> SASL_PLAINTEXT, a context -> SASL_SSL
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


@dataclass
class Runtime:
    """Everything the views and the agent share."""

    settings: Settings
    app: faust.App
    processor: BatchProcessor
    batcher: Batcher
    progress: BatchProgress
    executor: ThreadPoolExecutor
    swapper: ModelSwapper | None = None
    bundle_loaded: bool = True
    broken: str | None = None  # why the worker is stopping (a broken model, a failed publish)

    def waiting(self) -> int:
        """Messages known to wait: held by us, or taken by Faust and not yet acked."""
        count = self.progress.pending_records + self.batcher.pending
        # Faust creates its consumer when the worker boots, before the web server that asks this.
        return count + len(self.app.consumer.unacked)

    def assigned_input_partitions(self) -> int:
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - consumer not started yet
            return 0
        return sum(1 for tp in assignment if tp.topic == self.settings.input_topic)


def _consumed_record(app: faust.App, event: EventT[bytes]) -> ConsumedRecord:
    message = event.message
    # One extra reference: Faust's own ack (when the agent moves on) must not be the final one.
    message.incref()

    def ack() -> None:
        # The final ack marks the offset committable; tell Faust's sensors, as Stream.ack would.
        if event.ack():
            app.sensors.on_message_out(message.tp, message.offset, message)

    return ConsumedRecord(
        key=message.key,
        value=message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp,
        ack=ack,
    )


def build_app(settings: Settings, model: ServingModel, executor: ThreadPoolExecutor) -> Runtime:
    """Create the Faust app with its agent, timers and views (does not start it). ``executor`` is the
    single inference thread ``model`` runs on (hot-swapped models and the shadow use it too)."""
    app = WorkerApp(
        settings.group_id,
        fetch_limits=FetchLimits(max_wait_ms=settings.fetch_max_wait_ms, max_bytes=settings.fetch_max_bytes),
        broker=[f"kafka://{b}" for b in settings.broker_list],
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",  # exactly_once needs transactions: Tansu lacks them
        producer_acks=-1,
        # The producer refuses (client side) any record over the output limit; the publish step
        # turns that refusal into a dead letter instead of a crash.
        producer_max_request_size=settings.max_output_bytes,
        # Memory in bytes (docs/worker.md): per-partition fetch, whole fetch, Faust's buffer.
        consumer_max_fetch_size=max(settings.max_message_bytes + 65_536, 1_048_576),
        stream_buffer_maxsize=settings.stream_buffer_messages,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,  # no extra "__assignor-__leader" topic to create
        store="memory://",
        datadir=str(settings.data_dir),
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_router_enabled=False,  # no tables: /router and /table would only expose internals
        web_tables_enabled=False,
        autodiscover=False,
    )

    input_topic = app.topic(settings.input_topic, partitions=settings.partitions, key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw")
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in (settings.output_topic, settings.drift_topic, settings.dlq_topic, settings.shadow_topic)
    }
    publisher = FaustPublisher(outputs, app)
    progress = BatchProgress()
    builder = OutputBuilder(
        Topics(output=settings.output_topic, drift=settings.drift_topic, dlq=settings.dlq_topic),
        settings.max_output_bytes,
    )
    runtime: Runtime

    async def on_fatal(exc: BaseException) -> None:
        if runtime.broken is None:
            runtime.broken = f"{type(exc).__name__}: {exc}"[:500]
            if isinstance(exc, ModelBroken):
                log.critical("the model is broken; stopping without acknowledging anything more: %s", exc)
            await app.crash(exc)

    processor = BatchProcessor(
        model=model,
        outputs=builder,
        publish=Publish(publisher, builder.refused),
        max_in_flight=settings.max_batches_in_flight,
        max_message_bytes=settings.max_message_bytes,
        on_fatal=on_fatal,
        progress=progress,
    )
    batcher = Batcher(processor, settings.batch_size, settings.max_bytes_in_flight, settings.batch_max_wait_s)
    runtime = Runtime(settings=settings, app=app, processor=processor, batcher=batcher, progress=progress,
                      executor=executor)
    metrics.set_model_info(model.version, model.encoder, model.labels)

    async def send_shadow(key: bytes, value: bytes) -> None:
        await (await publisher.send(settings.shadow_topic, key, value))

    def make_shadow(candidate: ServingModel) -> ShadowScorer:
        # The shadow scores in windows as large as the serving micro-batches (module docstring of shadow.py).
        return ShadowScorer(candidate, settings.shadow_share, settings.shadow_window, executor, send_shadow,
                            settings.worker_id, batch=settings.batch_size)

    if settings.bundle_store is not None:
        runtime.swapper = ModelSwapper(BundleStore(settings.bundle_store), settings, executor, processor, make_shadow)

        async def follow_the_store() -> None:
            assert runtime.swapper is not None
            try:
                await runtime.swapper.poll()
            except Exception:  # a store hiccup must not stop serving
                log.exception("reading the bundle store failed; the current model keeps serving")

        async def first_poll() -> None:  # a shadow named at start-up, without waiting a poll interval
            assert runtime.swapper is not None
            runtime.swapper.state.stamp = None
            await runtime.swapper.poll()

        # Timers and tasks are registered by call rather than as decorators: Faust types `App.timer` and
        # `App.task` as returning a bare Callable, which would leave the decorated functions untyped.
        app.timer(settings.bundle_poll_seconds, name="bundle_store")(follow_the_store)
        app.task(first_poll)

    # Wraps each input message as a ConsumedRecord and hands it to the batcher (the batch path categorizes).
    # The Faust agent keeps its name, "categorize", which logs show.
    @app.agent(input_topic, name="categorize")
    async def feed_batcher(stream: StreamT[bytes]) -> None:
        try:
            async for event in stream.events():
                record = _consumed_record(app, event)  # holds the message: only the commit step's ack releases it
                if processor.failed:
                    # Stopping: take nothing more. Skipping the message instead would let Faust's own
                    # ack release it, and a new group would commit past the failed batch.
                    await asyncio.Event().wait()
                await batcher.add(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an agent that dies silently would stall the partitions
            log.exception("categorize agent crashed")
            await app.crash(exc)
            raise

    lag_partitions: set[str] = set()

    async def consumer_lag() -> None:
        """Best effort: high watermark - next offset to read. Tansu's high watermarks are wrong."""
        try:
            consumer = app.consumer
            if not isinstance(consumer, FaustConsumer):
                return
            held: set[str] = set()
            for tp in consumer.assignment():
                if tp.topic != settings.input_topic:
                    continue
                # Typed int by Faust; aiokafka returns None until the partition's first fetch.
                high = cast("int | None", consumer.highwater(tp))
                # The last offset handed to the streams, which Faust also resets on a seek and drops on a
                # revocation. No public API gives it: `Consumer.position` is the fetch position (ahead by
                # the prefetched buffer) and a sensor's `on_message_in` sees no seek or rebalance.
                read = consumer._read_offset.get(tp)  # noqa: SLF001 - see above: no public equivalent
                if high is None:
                    continue
                position = (read + 1) if read is not None else 0
                metrics.CONSUMER_LAG.labels(partition=str(tp.partition)).set(max(0, high - position))
                held.add(str(tp.partition))
            for partition in lag_partitions - held:  # given away in a rebalance: drop the stale series
                metrics.CONSUMER_LAG.remove(partition)
            lag_partitions.clear()
            lag_partitions.update(held)
        except Exception as exc:  # noqa: BLE001 - never let a metric kill the worker
            log.debug("lag gauge not updated: %r", exc)

    app.timer(LAG_INTERVAL_S)(consumer_lag)

    @app.page("/metrics")
    async def metrics_view(web: View, request: Request) -> Response:
        body, content_type = metrics.render()
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/livez")
    async def livez(web: View, request: Request) -> Response:
        verdict = health.liveness(
            time.monotonic(), progress.last_progress, runtime.waiting(), settings.liveness_stall_seconds
        )
        return web.json({"status": "ok" if verdict.ok else "stalled", "detail": verdict.detail}, status=verdict.status)

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        verdict = health.readiness(runtime.bundle_loaded, runtime.assigned_input_partitions(), app.rebalancing,
                                   runtime.broken)
        shadow = processor.shadow
        body = {
            "status": "ready" if verdict.ok else "not_ready",
            "detail": verdict.detail,
            "model_version": processor.model.version,
            "shadow_version": shadow.version if shadow is not None else None,
            "refused_bundle": runtime.swapper.state.refused if runtime.swapper is not None else None,
        }
        return web.json(body, status=verdict.status)

    # mode types receivers as `SignalHandlerT`, which mypy finds no function compatible with (not even one
    # with its exact signature, `(sender, *args, signal: BaseSignalT, **kwargs)`): hence the ignore.
    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _drain(app: faust.App, *_args: Any, **_kwargs: Any) -> None:
        # wait_empty already waited for acked messages; this catches batches that were still sending.
        await processor.drain()
        if processor.shadow is not None:
            await processor.shadow.drain()
        executor.shutdown(wait=False, cancel_futures=True)

    return runtime
