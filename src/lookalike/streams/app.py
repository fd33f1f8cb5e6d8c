"""The Faust app: topics, the indexing agent and the HTTP API, wired to a :class:`Runtime`."""

from __future__ import annotations

import logging

import faust

from ..consumers import AlertWriter, DeadLetterWriter
from ..settings import Settings
from .batches import InFlightBatches
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
    uploads = app.topic(
        settings.uploads_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    dead_letters = app.topic(
        settings.dead_letters_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        delivered = await dead_letters.send(key=key, value=value)
        await delivered  # resolve only once the broker has it: the offset is acked after this

    dlq_writer = DeadLetterWriter(send_dead_letter, runtime.ledger)
    alerts = app.topic(
        settings.alerts_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )

    async def send_alert(key: bytes | None, value: bytes) -> None:
        delivered = await alerts.send(key=key, value=value)
        await delivered

    alert_writer = AlertWriter(send_alert, runtime.alerts)

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

    from ..api import register_views

    register_views(app, runtime)
    return app
