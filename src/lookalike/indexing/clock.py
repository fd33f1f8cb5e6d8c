"""Per-image event clocks and tombstones: which event is newer, and what the index holds.

Ordering rule (per image id): an event's clock is the tuple
``(sequence or -1, occurred_at in microseconds, event_id)``, compared left to right. So a
producer that numbers its events per image gets that order; without sequences, event time
decides; an event with a sequence is newer than any without; and the event id makes the order
total, so every worker (and every replay) reaches the same answer. An event is applied only if
its clock is >= the clock the index holds for the image (equal = the same event replayed:
re-applying it is harmless); older events are ignored.

The latest applied clock of every image, live or removed, is kept in a small vector-less
record store ``clocks-{prefix}`` next to the indexed versions (same client, same
settings: works the same embedded and with a Qdrant server). A removed image keeps its record
(a tombstone with the clock of its removal), so an older upload replayed later cannot bring it
back, whichever model versions exist then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..index import VectorIndex
from ..utc import utcnow_iso

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
            "updated_at": utcnow_iso(),
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
    """Latest applied clock and live/removed state per image id (a record store of the index)."""

    def __init__(self, index: VectorIndex) -> None:
        # Named so it is never taken for a model version.
        self.records = index.records("clocks", key_field="image_id", indexed=("state",))

    def get_many(self, image_ids: Iterable[str]) -> dict[str, ClockRecord]:
        found = self.records.get_many(image_ids)
        return {key: ClockRecord.from_payload(payload) for key, payload in found.items()}

    def get(self, image_id: str) -> ClockRecord | None:
        return self.get_many([image_id]).get(image_id)

    def put_many(self, records: Sequence[ClockRecord]) -> None:
        self.records.put_many(r.payload() for r in records)

    def tombstones(self) -> int:
        return self.records.count("state", "removed")
