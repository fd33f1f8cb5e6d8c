"""Per-image event clocks and tombstones: which event is newer, and what the index holds.

Ordering rule (per image id): an event's clock is the tuple
``(sequence or -1, occurred_at in microseconds, event_id)``, compared left to right. So a
producer that numbers its events per image gets that order; without sequences, event time
decides; an event with a sequence is newer than any without; and the event id makes the order
total, so every worker (and every replay) reaches the same answer. An event is applied only if
its clock is >= the clock the index holds for the image (equal = the same event replayed:
re-applying it is harmless); older events are ignored.

The latest applied clock of every image, live or removed, is kept in a small vector-less
Qdrant collection ``{prefix}-clocks`` next to the indexed versions (same client, same
settings: works the same embedded and with a Qdrant server). A removed image keeps its record
(a tombstone with the clock of its removal), so an older upload replayed later cannot bring it
back, whichever model versions exist then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from qdrant_client import models

from ..consumers.qdrant_index import QdrantIndex, point_id

ClockTuple = tuple[int, int, str]
State = Literal["live", "removed"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clock_of(event: Any) -> ClockTuple:
    """The clock of an ImageUploaded / ImageAttributesChanged / ImageRemoved."""
    occurred: datetime = event.occurred_at
    if occurred.tzinfo is None:  # naive times are taken as UTC
        occurred = occurred.replace(tzinfo=UTC)
    micros = (occurred - _EPOCH) // timedelta(microseconds=1)
    sequence = event.sequence if event.sequence is not None else -1
    return (int(sequence), int(micros), str(event.event_id))


def as_clock(value: Any) -> ClockTuple | None:
    """A clock read back from a JSON payload (a list), or None."""
    if not value:
        return None
    sequence, micros, event_id = value
    return (int(sequence), int(micros), str(event_id))


@dataclass(frozen=True)
class ClockRecord:
    image_id: str
    clock: ClockTuple
    state: State
    reason: str | None = None  # why it was removed

    def payload(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "clock": list(self.clock),
            "state": self.state,
            "reason": self.reason,
            "updated_at": datetime.now(UTC).isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ClockRecord:
        clock = as_clock(payload["clock"])
        assert clock is not None
        return cls(str(payload["image_id"]), clock, payload["state"], payload.get("reason"))


def is_current(clock: ClockTuple, held: ClockRecord | None) -> bool:
    """Apply an event with ``clock`` given what the index holds? (see the module docstring)"""
    return held is None or clock >= held.clock


class ClockStore:
    """Latest applied clock and live/removed state per image id (a Qdrant collection)."""

    def __init__(self, index: QdrantIndex, collection: str) -> None:
        self.client = index.client
        self.collection = collection
        self._lock = index.lock
        index.ensure_named_collection(collection, None)

    @classmethod
    def for_index(cls, index: QdrantIndex) -> ClockStore:
        """The store beside ``index``'s collections (named so it is never taken for a version)."""
        return cls(index, f"clocks-{index.prefix}")

    def get_many(self, image_ids: Iterable[str]) -> dict[str, ClockRecord]:
        ids = sorted(set(image_ids))
        if not ids:
            return {}
        with self._lock:
            records = self.client.retrieve(
                self.collection, ids=[point_id(i) for i in ids], with_payload=True
            )
        found = [ClockRecord.from_payload(r.payload or {}) for r in records]
        return {r.image_id: r for r in found}

    def get(self, image_id: str) -> ClockRecord | None:
        return self.get_many([image_id]).get(image_id)

    def put_many(self, records: Sequence[ClockRecord]) -> None:
        if not records:
            return
        with self._lock:
            self.client.upsert(
                self.collection,
                points=[
                    models.PointStruct(id=point_id(r.image_id), vector={}, payload=r.payload())
                    for r in records
                ],
                wait=True,
            )

    def tombstones(self) -> int:
        with self._lock:
            return self.client.count(
                self.collection,
                count_filter=models.Filter(
                    must=[
                        models.FieldCondition(key="state", match=models.MatchValue(value="removed"))
                    ]
                ),
                exact=True,
            ).count
