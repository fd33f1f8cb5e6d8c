"""The Faust app: topics, the indexing agent and the HTTP API, wired to a :class:`Runtime`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import faust
from faust.types import EventT

from ..consumers import DeadLetterWriter
from ..settings import Settings
from .indexing import BatchResult, InboundMessage
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

    @app.agent(uploads, name="index-uploads")
    async def index_uploads(stream: faust.StreamT) -> None:
        # take_events acks (so allows committing) a batch only after this loop body finished
        # with it: an offset is committed only once its image is written or dead-lettered.
        async for events in stream.take_events(settings.batch_size, within=settings.batch_max_wait):
            await handle_upload_batch(events)

    async def handle_upload_batch(events: Sequence[EventT]) -> None:
        started = time.perf_counter()
        messages = [
            InboundMessage(
                value=event.value if isinstance(event.value, bytes) else b"",
                topic=event.message.topic,
                partition=event.message.partition,
                offset=event.message.offset,
            )
            for event in events
        ]
        result = await _process_with_retry(messages)
        new_letters = 0
        for letter in result.dead_letters:
            log.warning(
                "dead letter %s:%d@%d [%s] %s",
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.stage,
                letter.reason,
            )
            new_letters += await dlq_writer.write(letter)
        elapsed = time.perf_counter() - started
        counters = runtime.counters
        counters.events_consumed += len(messages)
        counters.images_indexed += len(result.indexed)
        counters.dead_letters += new_letters
        counters.batches += 1
        counters.last_batch_seconds = elapsed
        stages = " ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        log.info(
            "batch of %d: %d indexed, %d dead-lettered in %.2fs (%.1f images/s; %s)",
            len(messages),
            len(result.indexed),
            len(result.dead_letters),
            elapsed,
            len(messages) / elapsed if elapsed else 0.0,
            stages,
        )

    async def _process_with_retry(messages: list[InboundMessage]) -> BatchResult:
        loop = asyncio.get_running_loop()
        delay = 1.0
        while True:
            try:
                return await loop.run_in_executor(
                    runtime.batch_executor, runtime.pipeline.process, messages
                )
            except Exception as exc:  # infrastructure (Qdrant, disk): retry, keep offsets
                log.error(
                    "indexing batch failed (%s: %s); retrying in %.0fs, offsets not committed",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    from ..api import register_views

    register_views(app, runtime)
    return app
