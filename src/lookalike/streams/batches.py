"""Micro-batches in flight: prepare -> embed -> write, overlapped, committed in order.

While the model embeds batch N, batch N+1 is fetched and decoded and batch N-1 is written to
Qdrant, each stage in its own executor so the event loop stays free. Writes (and dead letters)
happen in arrival order, so a later event for an image always lands after an earlier one. An
event's offset becomes committable only when its batch is written: each event holds one extra
reference on its Kafka message until then (Faust commits a message once every reference to it is
released), so take_events' own ack at the end of the loop body cannot commit it early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from faust.types import EventT

from ..consumers import AlertWriter, DeadLetterWriter
from ..executors import WorkerExecutors, retry_with_backoff, run_in
from ..health import Health
from ..indexing import BatchResult, IndexingPipeline
from ..metrics import Instruments
from .app import consumed
from .counters import Counters

log = logging.getLogger(__name__)

T = TypeVar("T")


class InFlightBatches:
    def __init__(
        self,
        pipeline: IndexingPipeline,
        executors: WorkerExecutors,
        counters: Counters,
        dead_letters: DeadLetterWriter,
        depth: int = 2,
        alerts: AlertWriter | None = None,
        health: Health | None = None,
        max_delay: float = 30.0,
        instruments: Instruments | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.executors = executors
        self.counters = counters
        self.dead_letters = dead_letters
        self.alerts = alerts
        #: Where a failing stage reports itself (GET /ready), and the longest retry pause.
        self.health = health
        self.max_delay = max_delay
        #: Stage durations for /metrics.
        self.instruments = instruments
        self._slots = asyncio.Semaphore(depth)
        self._last_written: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, events: Sequence[EventT]) -> None:
        """Start a batch; waits while ``depth`` batches are already in flight (back-pressure)."""
        for event in events:
            event.message.incref()  # released in _run once written: see module docstring
        await self._slots.acquire()
        previous = self._last_written
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_written = written
        task = asyncio.create_task(self._run(list(events), previous, written))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self) -> None:
        """Stop: unwritten batches are not acked, so they are replayed after a restart."""
        for task in self._tasks:
            task.cancel()
        await self.drain()

    async def _run(
        self,
        events: list[EventT],
        previous: asyncio.Future[None] | None,
        written: asyncio.Future[None],
    ) -> None:
        started = time.perf_counter()
        pipeline, executors = self.pipeline, self.executors
        try:
            messages = [consumed(event) for event in events]
            # Bad input never raises (it becomes dead letters); what raises is the machine's or
            # a service's trouble (memory, Qdrant, the broker): retry, keeping offsets.
            result = await self._retrying(
                "preparing", "index", lambda: run_in(executors.prepare, pipeline.prepare, messages)
            )
            result = await self._retrying(
                "embedding", "encoder", lambda: run_in(executors.model, pipeline.embed, result)
            )
            if previous is not None:
                await asyncio.shield(previous)  # write in arrival order
            result = await self._retrying(
                "writing", "index", lambda: run_in(executors.write, pipeline.write, result)
            )
            new_letters = await self._retrying(
                "dead-lettering", "broker", lambda: self._write_dead_letters(result)
            )
            if result.alerts and self.alerts is not None:
                await self._retrying("alerting", "broker", lambda: self._write_alerts(result))
        finally:
            if not written.done():
                written.set_result(None)
            self._slots.release()
        for event in events:
            event.ack()  # the last reference: the offset may now be committed
        self._record(len(events), result, new_letters, time.perf_counter() - started)

    async def _write_dead_letters(self, result: BatchResult) -> int:
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
            new_letters += await self.dead_letters.write(letter)  # idempotent on retry
        return new_letters

    async def _write_alerts(self, result: BatchResult) -> None:
        assert self.alerts is not None
        for alert in result.alerts:
            if await self.alerts.write(alert):  # idempotent on retry and replay
                log.warning(
                    "category alert %s: image %s of seller %s declared %r looks like %r (%.2f)",
                    alert.alert_id,
                    alert.image_id,
                    alert.seller_id,
                    alert.declared_category,
                    alert.predicted_category,
                    alert.confidence,
                )

    async def _retrying(self, what: str, part: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``part``: what is failing unless the error says (a full disk says "storage")."""
        return await retry_with_backoff(
            f"{what} a batch",
            attempt,
            log,
            kept="its offsets are not committed, nothing is lost",
            max_delay=self.max_delay,
            health=self.health,
            part=part,
        )

    def _record(self, n: int, result: BatchResult, new_letters: int, elapsed: float) -> None:
        counters = self.counters
        counters.events_consumed += n
        counters.images_indexed += len(result.indexed)
        counters.images_updated += len(result.updated)
        counters.images_removed += len(result.removed)
        counters.stale_events += result.stale
        counters.dead_letters += new_letters
        counters.batches += 1
        counters.last_batch_seconds = elapsed
        for outcome, count in result.verdicts.items():
            counters.verdicts[outcome] = counters.verdicts.get(outcome, 0) + count
        if self.instruments is not None:
            self.instruments.observe_batch(elapsed, result.timings, n)
        log.info(
            "batch of %d: %s in %.2fs (%s)",
            n,
            describe_outcomes(result),
            elapsed,
            ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()),
        )


def describe_outcomes(result: BatchResult) -> str:
    """What a batch did, naming only what happened: "30 indexed, 2 dead-lettered"."""
    counts = (
        (len(result.indexed), "indexed"),
        (len(result.updated), "updated"),
        (len(result.removed), "removed"),
        (result.stale, "stale"),
        (len(result.dead_letters), "dead-lettered"),
    )
    said = [f"{count} {what}" for count, what in counts if count]
    return ", ".join(said) or "nothing to do"
