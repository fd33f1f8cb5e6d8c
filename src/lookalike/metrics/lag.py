"""Consumer lag per partition, computed so that it stays honest on a broker whose end offsets
are wrong.

``lag = end - committed``: the messages of a partition that this consumer group has not
finished (committed), in flight included. ``end`` is what the broker answers to
ListOffsets(latest), raised to what this worker has read (``last read + 1``): a partition is
never behind by less than what was already seen. On Apache Kafka that changes nothing. Tansu
(the local broker of `lookalike up`) answers "base offset of the last record batch + 1", so
while a backlog remains its lag is a lower bound, short by at most the last produced batch less
one record; once the worker has read to the end it is exact (and 0 when caught up).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..utc import utcnow_iso

NOTE = (
    "lag = end - committed, end = max(broker's end offset, last read + 1); a lower bound while "
    "behind on brokers whose end offset is the last batch's base offset + 1 (Tansu)"
)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    #: What the broker answered to ListOffsets(latest) (None: not asked yet, or no answer).
    broker_end_offset: int | None
    #: The last offset this worker read from the partition (None: none since it started).
    last_read: int | None
    #: The offset the group resumes from (None: never committed).
    committed: int | None

    @property
    def end_offset(self) -> int | None:
        seen = self.last_read + 1 if self.last_read is not None else None
        known = [o for o in (self.broker_end_offset, seen) if o is not None]
        return max(known) if known else None

    @property
    def position(self) -> int | None:
        """Where the group stands: committed, else just past what was read."""
        if self.committed is not None:
            return self.committed
        return self.last_read + 1 if self.last_read is not None else None

    @property
    def lag(self) -> int | None:
        end, position = self.end_offset, self.position
        if end is None:
            return None
        return max(0, end - (position or 0))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"end_offset": self.end_offset, "lag": self.lag}


class ConsumerLag:
    """The last measurement (the worker measures every few seconds); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: list[PartitionLag] = []
        self._measured_at: str | None = None
        self._error: str | None = None

    def update(self, partitions: Iterable[PartitionLag]) -> None:
        with self._lock:
            self._partitions = sorted(partitions, key=lambda p: (p.topic, p.partition))
            self._measured_at = utcnow_iso()
            self._error = None

    def failed(self, reason: str) -> None:
        """The last measurement failed: the previous one stays, marked with why."""
        with self._lock:
            self._error = reason

    def partitions(self) -> list[PartitionLag]:
        with self._lock:
            return list(self._partitions)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            partitions = list(self._partitions)
            measured_at, error = self._measured_at, self._error
        by_topic: dict[str, int] = {}
        for p in partitions:
            by_topic[p.topic] = by_topic.get(p.topic, 0) + (p.lag or 0)
        return {
            "partitions": [p.as_dict() for p in partitions],
            "by_topic": by_topic,
            "measured_at": measured_at,
            "error": error,
            "note": NOTE,
        }
