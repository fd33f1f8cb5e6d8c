"""The Faust app: topics, the indexing agent and the HTTP API, wired to a :class:`Runtime`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import faust

from ..clicks import Source
from ..consumers import AlertWriter, DeadLetterWriter
from ..settings import Settings
from .batches import InFlightBatches
from .click_pairs import ClickPairs, PairSink, executor_runner
from .runtime import Runtime

log = logging.getLogger(__name__)


def faust_broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings, runtime: Runtime, bootstrap: str) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=faust_broker_urls(bootstrap),
        store="memory://",  # no Faust tables hold durable state (see README: recovery)
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        producer_acks=-1,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        # Commit often: a restart then replays little (replays are harmless, just work).
        broker_commit_every=settings.batch_size,
        broker_commit_interval=1.0,
        web_enabled=True,
        web_bind=settings.api_host,
        web_host=settings.api_host,
        web_port=settings.api_port,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )

    def raw_topic(name: str) -> faust.TopicT:
        # Bytes in, bytes out: parsing is ours, so a malformed message becomes a dead letter
        # instead of a Faust deserialisation crash.
        return app.topic(
            name, key_serializer="raw", value_serializer="raw", partitions=settings.topic_partitions
        )

    def delivered_sender(topic: faust.TopicT) -> Callable[[bytes | None, bytes], Awaitable[None]]:
        async def send(key: bytes | None, value: bytes) -> None:
            delivered = await topic.send(key=key, value=value)
            await delivered  # resolve only once the broker has it: offsets are acked after this

        return send

    uploads = raw_topic(settings.uploads_topic)
    dlq_writer = DeadLetterWriter(
        delivered_sender(raw_topic(settings.dead_letters_topic)), runtime.ledger
    )
    alert_writer = AlertWriter(delivered_sender(raw_topic(settings.alerts_topic)), runtime.alerts)

    @app.agent(uploads, name="index-uploads")
    async def index_uploads(stream: faust.StreamT) -> None:
        batches = InFlightBatches(
            runtime, dlq_writer, depth=settings.batches_in_flight, alerts=alert_writer
        )
        try:
            async for events in stream.take_events(
                settings.batch_size, within=settings.batch_max_wait
            ):
                await batches.submit(events)
        finally:
            await batches.cancel()

    # --- the click loop: searches + clicks -> training pairs -> files --------------------------
    run_clicks = executor_runner(runtime.clicks_executor)
    pairs_topic = raw_topic(settings.training_pairs_topic)
    click_pairs = ClickPairs(
        runtime.click_join,
        settings.searches_topic,
        delivered_sender(pairs_topic),
        dlq_writer,
        run_clicks,
    )
    # One agent reads both topics: the join's state changes one message at a time, in order.
    searches_and_clicks = app.topic(
        settings.searches_topic,
        settings.clicks_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )

    @app.agent(searches_and_clicks, name="join-clicks")
    async def join_clicks(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            await click_pairs.handle(
                Source(message.topic, message.partition, message.offset, event.value or b"")
            )

    @app.timer(interval=5.0)
    async def click_housekeeping() -> None:
        await click_pairs.housekeeping()

    pair_sink = PairSink(runtime.pair_files, dlq_writer, run_clicks)

    @app.agent(pairs_topic, name="write-training-pairs")
    async def write_training_pairs(stream: faust.StreamT) -> None:
        async for events in stream.take_events(500, within=1.0):
            await pair_sink.write(
                [
                    Source(e.message.topic, e.message.partition, e.message.offset, e.value or b"")
                    for e in events
                ]
            )

    @app.task
    async def backfill() -> None:
        # Re-embeds the catalogue into a rollout candidate whenever there is one (resuming
        # from the registry's cursor after a restart); idle otherwise.
        await runtime.rollout.run()

    from ..api import register_views

    register_views(
        app,
        runtime,
        log_search=delivered_sender(raw_topic(settings.searches_topic)),
        send_click=delivered_sender(raw_topic(settings.clicks_topic)),
    )
    return app
