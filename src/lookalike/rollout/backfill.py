"""The rollout backfill: re-embed the whole catalogue into the candidate version.

Blocking steps, run by :class:`lookalike.rollout.controller.Rollout` on the worker's executors:

1. :meth:`Backfill.next_page` scrolls the source (serving) version in point-id order from the
   saved cursor and keeps the images the candidate does not hold yet: a restart after a crash
   re-embeds nothing that was written.
2. :meth:`Backfill.prepare_one` reads each image again from its source reference (URL, file
   under the image root, or the inline-bytes blob store) and preprocesses it for the candidate.
3. :meth:`Backfill.embed` runs the candidate encoder (on the model thread, in small chunks, so a
   live batch waits at most one chunk).
4. :meth:`Backfill.write` runs on the single writer thread, so it is atomic with respect to
   live writes: an image is written only if the candidate still lacks it (a live upload
   dual-written meanwhile is newer) and the source still holds it with the same content (not
   removed or replaced meanwhile); it copies the source's *current* payload (attribute changes
   made during the embedding are kept). Then the cursor and counts are saved to the registry.

When the scroll reaches the end, :meth:`missing` lists the source's images the candidate still
lacks (written behind the cursor by batches prepared before the rollout started, or failed);
those are backfilled again, a few rounds at most, before the backfill is marked done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..encoders.base import Encoder
from ..errors import ImageRejected
from ..images import decode_image
from ..index import IndexPoint, VectorIndex
from ..utc import utcnow_iso
from .versions import VersionRecord, VersionRegistry

log = logging.getLogger(__name__)

MAX_FAILURES_KEPT = 50


@dataclass
class Page:
    todo: list[dict[str, Any]]  # source payloads of images the candidate lacks
    scanned: int
    next_cursor: str | None  # None: the scroll reached the end


@dataclass
class Prepared:
    payload: dict[str, Any]
    tensor: torch.Tensor | None = None
    failure: str | None = None


@dataclass
class WriteOutcome:
    written: int = 0
    skipped: int = 0  # the candidate got it from a live event, or it was removed or replaced
    failed: dict[str, str] = field(default_factory=dict)


class Backfill:
    def __init__(
        self,
        index: VectorIndex,
        registry: VersionRegistry,
        source: str,
        target: str,
        encoder: Encoder,
        read_source: Callable[[dict[str, Any]], bytes],
        max_pixels: int,
        page_size: int = 64,
    ) -> None:
        self.index = index
        self.registry = registry
        self.source = source
        self.target = target
        self.encoder = encoder
        self.read_source = read_source
        self.max_pixels = max_pixels
        self.page_size = page_size

    # --- 1. what to do -----------------------------------------------------------------------
    def _absent_from_target(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        held = self.index.held(self.target, [str(p["image_id"]) for p in payloads])
        return [p for p in payloads if str(p["image_id"]) not in held]

    def next_page(self, cursor: str | None) -> Page:
        payloads, next_cursor = self.index.scroll(self.source, cursor, self.page_size)
        todo = self._absent_from_target(payloads) if payloads else []
        return Page(todo, len(payloads), next_cursor)

    def missing(self) -> list[dict[str, Any]]:
        """Source payloads of the images the candidate lacks (after the scroll)."""
        lacking = sorted(self.index.image_ids(self.source) - self.index.image_ids(self.target))
        return [p for p in (self.index.get(self.source, i) for i in lacking) if p is not None]

    # --- 2. fetch and preprocess ---------------------------------------------------------------
    def prepare_one(self, payload: dict[str, Any]) -> Prepared:
        try:
            data = self.read_source(payload)
            image = decode_image(
                data, max_pixels=self.max_pixels, target_size=self.encoder.preprocessing.resize
            )
            return Prepared(payload, self.encoder.preprocess(image))
        except ImageRejected as exc:
            return Prepared(payload, failure=f"[{exc.stage}] {exc.reason}")
        except Exception as exc:  # never stop the backfill for one image
            log.exception("backfill cannot prepare %s", payload.get("image_id"))
            return Prepared(payload, failure=f"{type(exc).__name__}: {exc}")

    # --- 3. embed ------------------------------------------------------------------------------
    def embed(self, items: list[Prepared]) -> list[np.ndarray]:
        ready = [i for i in items if i.tensor is not None]
        if not ready:
            return []
        return list(self.encoder.embed_tensors([i.tensor for i in ready]))  # type: ignore[misc]

    # --- 4. write (on the writer thread) -----------------------------------------------------
    def write(
        self, items: list[Prepared], vectors: list[np.ndarray], progress: dict[str, Any]
    ) -> WriteOutcome:
        """``progress``: backfill fields saved with this batch (cursor, scrolled, and
        ``scanned``, which is added to the count)."""
        outcome = WriteOutcome()
        ready = [i for i in items if i.tensor is not None]
        outcome.failed = {str(i.payload["image_id"]): str(i.failure) for i in items if i.failure}
        todo = self._absent_from_target([i.payload for i in ready]) if ready else []
        absent = {str(p["image_id"]) for p in todo}
        now = utcnow_iso()
        points = []
        for item, vector in zip(ready, vectors, strict=True):
            image_id = str(item.payload["image_id"])
            current = self.index.get(self.source, image_id) if image_id in absent else None
            if current is None or current.get("content_sha256") != item.payload.get(
                "content_sha256"
            ):
                outcome.skipped += 1  # live-written, removed, or replaced meanwhile
                continue
            payload = {**current, "model_version": self.target, "backfilled_at": now}
            points.append(IndexPoint(image_id, vector, payload))
        record = self.registry.get(self.target)
        if record is None or record.state != "candidate":
            return outcome  # aborted, or promoted by force, meanwhile: write nothing more
        self.index.upsert(self.target, points)
        outcome.written = len(points)
        # The cursor is saved right after the points it covers: a crash in between only means
        # those images are found in the candidate (and skipped) on the next run.
        self._save_progress(record, outcome, progress, [p.image_id for p in points])
        return outcome

    def _save_progress(
        self,
        record: VersionRecord,
        outcome: WriteOutcome,
        progress: dict[str, Any],
        written: list[str],
    ) -> None:
        state = record.backfill
        scanned = progress.pop("scanned", 0)
        state.update(progress)
        state["scanned"] = state.get("scanned", 0) + scanned
        state["embedded"] = state.get("embedded", 0) + outcome.written
        state["skipped"] = state.get("skipped", 0) + outcome.skipped
        failures: dict[str, str] = state.get("failures", {})
        for image_id in written:
            failures.pop(image_id, None)
        failures.update(outcome.failed)
        state["failures"] = dict(list(failures.items())[-MAX_FAILURES_KEPT:])
        state["failed"] = len(state["failures"])
        state["updated_at"] = utcnow_iso()
        self.registry.save(record)

    def update(self, **fields: Any) -> VersionRecord | None:
        """Save fields of the backfill state (scanned count, scrolled, done...)."""
        record = self.registry.get(self.target)
        if record is None or record.state != "candidate":
            return None
        record.backfill.update(fields)
        record.backfill["updated_at"] = utcnow_iso()
        self.registry.save(record)
        return record
