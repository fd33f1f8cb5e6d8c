"""Measures consumer lag every few seconds for ``/stats`` and ``/metrics``: the partitions
this worker is assigned, the broker's end offsets (one ListOffsets request), the last offset
read of each (Faust's monitor) and the group's committed offsets. The arithmetic, and what it
means on a broker whose end offsets are wrong, is in :mod:`lookalike.metrics.lag`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import faust

from ..metrics import ConsumerLag, PartitionLag

log = logging.getLogger(__name__)


class LagProbe:
    INTERVAL = 5.0
    TIMEOUT = 5.0

    def __init__(self, app: faust.App, topics: Iterable[str], lag: ConsumerLag) -> None:
        self.app = app
        self.topics = set(topics)
        self.lag = lag
        self._failing = False

    async def measure(self) -> None:
        try:
            consumer = self.app.consumer
            assigned = sorted(
                (tp for tp in consumer.assignment() if tp.topic in self.topics),
                key=lambda tp: (tp.topic, tp.partition),
            )
            ends = (
                await asyncio.wait_for(consumer.highwaters(*assigned), self.TIMEOUT)
                if assigned
                else {}
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker away, or the consumer not started yet
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.lag.failed(reason)
            if not self._failing:
                log.debug("cannot measure consumer lag: %s", reason)
            self._failing = True
            return
        self._failing = False
        # Faust keeps the group's committed offsets here (read at assignment, updated on every
        # commit); it has no public accessor for them.
        committed = getattr(consumer, "_committed_offset", {})
        read = self.app.monitor.tp_read_offsets
        self.lag.update(
            PartitionLag(
                topic=tp.topic,
                partition=tp.partition,
                broker_end_offset=ends.get(tp),
                last_read=read.get(tp),
                committed=committed.get(tp),
            )
            for tp in assigned
        )
