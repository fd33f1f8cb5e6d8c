"""The model-version registry: which versions exist, which one search reads, which are written.

States::

    candidate --promote--> serving --promote (of the next)--> previous --retire--> retired
        |                     ^                                   |  ^
        +--abort--> aborted   +-------------rollback--------------+  |
                                                          anchor |  | retire --anchor
                                                                 v  |
                                                                anchor

* ``serving``: the one search reads (the Qdrant serving alias points at its collection).
* ``candidate``: being built by a backfill; every live event is dual-written to it.
* ``previous``: the serving version before the last promotion; still dual-written, so
  ``rollback`` is an instant alias switch, until ``retire``.
* ``anchor``: a former serving version kept written for good (at most one), so search can keep
  its best matches on each page (``LOOKALIKE_SEARCH_ANCHOR_SLOTS``); it does not block the next
  rollout as ``previous`` does.
* ``retired`` / ``aborted``: no longer written (the collection may be dropped).

Records live in a vector-less Qdrant collection ``versions-{prefix}`` (one point per version,
the record as payload), beside the versions' collections: durable, no Faust table (whose
changelog recovery cannot be trusted on the local broker), and shared by every worker that
points at the same Qdrant. The serving alias stays the authority for what search reads: a crash
between switching it and saving the records is repaired at start-up (:meth:`reconcile`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import RolloutError
from ..index import VectorIndex
from ..utc import utcnow_iso

State = Literal["serving", "candidate", "previous", "anchor", "retired", "aborted"]
WRITTEN_STATES: tuple[State, ...] = ("serving", "candidate", "previous", "anchor")


@dataclass
class VersionRecord:
    version: str
    encoder: str  # how to load it: a registered encoder name or a fine-tuned .pt path
    dim: int
    state: State
    created_at: str = field(default_factory=utcnow_iso)
    promoted_at: str | None = None
    retired_at: str | None = None
    #: Candidate only: the backfill's cursor and counts (see lookalike.lifecycle.backfill).
    backfill: dict[str, Any] = field(default_factory=dict)
    #: Candidate only: the last gate evaluation against the serving version.
    evaluation: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VersionRegistry:
    def __init__(self, index: VectorIndex) -> None:
        self.records = index.records("versions", key_field="version")

    # --- reading -------------------------------------------------------------------------------
    def all(self) -> list[VersionRecord]:
        found = [VersionRecord(**payload) for payload in self.records.all()]
        return sorted(found, key=lambda r: r.created_at)

    def get(self, version: str) -> VersionRecord | None:
        payload = self.records.get(version)
        return VersionRecord(**payload) if payload is not None else None

    def in_state(self, state: State) -> VersionRecord | None:
        return next((r for r in self.all() if r.state == state), None)

    def serving(self) -> VersionRecord | None:
        return self.in_state("serving")

    def candidate(self) -> VersionRecord | None:
        return self.in_state("candidate")

    def written(self) -> list[VersionRecord]:
        """Every version live events go to, the serving one first."""
        order = {state: n for n, state in enumerate(WRITTEN_STATES)}
        return sorted(
            (r for r in self.all() if r.state in WRITTEN_STATES), key=lambda r: order[r.state]
        )

    # --- writing -------------------------------------------------------------------------------
    def save(self, *records: VersionRecord) -> None:
        """One upsert for all of them, so a transition is saved whole."""
        self.records.put_many(r.as_dict() for r in records)

    def bootstrap(self, version: str, encoder: str, dim: int) -> VersionRecord:
        """The first serving version of an empty index."""
        record = VersionRecord(version, encoder, dim, "serving", promoted_at=utcnow_iso())
        self.save(record)
        return record

    # --- transitions ---------------------------------------------------------------------------
    def start(self, version: str, encoder: str, dim: int) -> VersionRecord:
        serving = self.serving()
        if serving is None:
            raise RolloutError("nothing is serving yet: start the worker once to create it")
        if serving.version == version:
            raise RolloutError(f"{version} is already the serving version")
        for record in self.all():
            if record.state == "candidate":
                raise RolloutError(
                    f"{record.version} is already a candidate: promote it or abort it first"
                )
            if record.state == "previous":
                raise RolloutError(
                    f"{record.version} (the previous version) is still dual-written: "
                    "`lookalike rollout retire` it first (or `rollout rollback`)"
                )
        record = VersionRecord(version, encoder, dim, "candidate")
        self.save(record)
        return record

    def promote(self) -> tuple[VersionRecord, VersionRecord]:
        """candidate -> serving, serving -> previous. Returns (new serving, previous)."""
        candidate, serving = self.candidate(), self.serving()
        if candidate is None or serving is None:
            raise RolloutError("no candidate to promote: `lookalike rollout start ENCODER` first")
        candidate.state, candidate.promoted_at = "serving", utcnow_iso()
        serving.state = "previous"
        self.save(candidate, serving)
        return candidate, serving

    def rollback(self) -> tuple[VersionRecord, VersionRecord]:
        """previous -> serving, serving -> candidate (ready to be promoted again)."""
        previous, serving = self.in_state("previous"), self.serving()
        if previous is None or serving is None:
            raise RolloutError("no previous version to roll back to (it was retired)")
        previous.state, previous.promoted_at = "serving", utcnow_iso()
        serving.state = "candidate"
        self.save(previous, serving)
        return previous, serving

    def abort(self) -> VersionRecord:
        candidate = self.candidate()
        if candidate is None:
            raise RolloutError("no candidate to abort")
        candidate.state, candidate.retired_at = "aborted", utcnow_iso()
        self.save(candidate)
        return candidate

    def anchor(self) -> VersionRecord:
        """previous -> anchor: kept written, no longer in the way of the next rollout."""
        previous = self.in_state("previous")
        if previous is None:
            raise RolloutError("no previous version to keep as the anchor (promote one first)")
        current = self.in_state("anchor")
        if current is not None:
            raise RolloutError(
                f"{current.version} is already the anchor: `lookalike rollout retire --anchor` "
                "it first"
            )
        previous.state = "anchor"
        self.save(previous)
        return previous

    def retire(self, anchor: bool = False) -> VersionRecord:
        """previous (or, with ``anchor``, the anchor) -> retired: no longer written."""
        state: State = "anchor" if anchor else "previous"
        record = self.in_state(state)
        if record is None:
            raise RolloutError(
                "no anchor version to retire"
                if anchor
                else "no previous version to retire (promote a candidate first)"
            )
        record.state, record.retired_at = "retired", utcnow_iso()
        self.save(record)
        return record

    def reconcile(self, alias_version: str | None) -> str | None:
        """Finish a promotion or rollback that crashed between the alias switch and the save:
        the alias is the authority. Returns what was repaired, if anything."""
        serving = self.serving()
        if alias_version is None or serving is None or serving.version == alias_version:
            return None
        target = self.get(alias_version)
        if target is None:
            return None
        if target.state == "candidate":
            self.promote()
            return f"completed the promotion of {alias_version}"
        if target.state == "previous":
            self.rollback()
            return f"completed the rollback to {alias_version}"
        return None
