"""What a micro-batch does to each image: its events folded in partition order under the clock
rule (see :mod:`.clock`), so several events for one image in one batch apply in order and an
older event never undoes a newer one. Pure logic: the writer turns the plans into Qdrant calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import ImageAttributesChanged, ImageRemoved, ImageUploaded
from .clock import ClockRecord, clock_of, is_current

Event = ImageUploaded | ImageAttributesChanged | ImageRemoved


@dataclass
class ImagePlan:
    """The net effect of a batch on one image."""

    image_id: str
    action: Literal["upsert", "update", "remove"]
    record: ClockRecord  # what the clock store holds afterwards
    upload: ImageUploaded | None = None  # upsert: the upload whose image is written
    upload_slot: int | None = None  # upsert: which prepared image (vector) it is
    changes: dict[str, Any] = field(default_factory=dict)  # payload fields set on top


@dataclass
class BatchPlan:
    images: list[ImagePlan] = field(default_factory=list)
    #: Events ignored because the index already holds a newer one for their image.
    stale: list[Event] = field(default_factory=list)
    #: Attribute changes for an image that is removed (they never bring it back).
    ignored_removed: list[Event] = field(default_factory=list)


def plan_batch(
    events: Sequence[tuple[Event, int | None]], held: Mapping[str, ClockRecord]
) -> BatchPlan:
    """``events``: the batch's parsed events in partition order, each upload with the slot of
    its prepared image (uploads that failed to prepare are left out by the caller).
    ``held``: the clock store's records for these images."""
    plan = BatchPlan()
    current: dict[str, ImagePlan | None] = {}
    state = dict(held)
    for event, slot in events:
        image_id = event.image_id
        clock = clock_of(event)
        if not is_current(clock, state.get(image_id)):
            plan.stale.append(event)
            continue
        previous = current.get(image_id)
        if isinstance(event, ImageUploaded):
            record = ClockRecord(image_id, clock, "live")
            current[image_id] = ImagePlan(image_id, "upsert", record, event, slot)
        elif isinstance(event, ImageRemoved):
            record = ClockRecord(image_id, clock, "removed", event.reason)
            current[image_id] = ImagePlan(image_id, "remove", record)
        else:
            held_record = state.get(image_id)
            removed = (previous is not None and previous.action == "remove") or (
                previous is None and held_record is not None and held_record.state == "removed"
            )
            if removed:
                plan.ignored_removed.append(event)
                continue
            record = ClockRecord(image_id, clock, "live")
            if previous is None:
                current[image_id] = ImagePlan(image_id, "update", record, changes=event.changes())
            else:
                previous.record = record
                previous.changes = {**previous.changes, **event.changes()}
        state[image_id] = current[image_id].record  # type: ignore[union-attr]
    plan.images = [p for p in current.values() if p is not None]
    return plan
