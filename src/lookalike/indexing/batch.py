"""A micro-batch between the pipeline's stages, and what it did to the index in the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..encoders import Encoder
from ..events import (
    CategoryAlert,
    ConsumedMessage,
    DeadLetter,
    ImageAttributesChanged,
    ImageRemoved,
    ImageUploaded,
)
from .plan import ImagePlan


@dataclass
class PreparedUpload:
    """An upload, fetched, decoded and preprocessed."""

    message: ConsumedMessage
    event: ImageUploaded
    #: Preprocessed pixels per preprocessing digest (versions may preprocess differently).
    tensors: dict[str, torch.Tensor]
    width: int
    height: int
    sha256: str

    def payload(self, plan: ImagePlan, version: str, indexed_at: str) -> dict[str, Any]:
        """What the index stores with the image: the upload, with the batch's later attribute
        changes (``plan.changes``) on top."""
        event = self.event
        payload = {
            "image_id": event.image_id,
            "listing_id": event.listing_id,
            "seller_id": event.seller_id,
            "category": event.category,
            "attributes": event.attributes,
            # An inline image's reference is its digest: computed once, at decode.
            "source": (
                f"inline:sha256:{self.sha256}"
                if event.image.kind == "inline"
                else event.image.reference()
            ),
            "source_kind": event.image.kind,
            "content_sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "event_id": event.event_id,
            "model_version": version,
            "occurred_at": event.occurred_at.isoformat(),
            "indexed_at": indexed_at,
            "clock": list(plan.record.clock),
        }
        payload.update(plan.changes)
        if plan.changes:
            payload["updated_at"] = indexed_at
        return payload


@dataclass
class ParsedChange:
    """An attribute change or removal: nothing to fetch or embed."""

    message: ConsumedMessage
    event: ImageAttributesChanged | ImageRemoved


@dataclass
class BatchResult:
    indexed: list[str] = field(default_factory=list)
    #: Images updated in place (payload only) and removed, by this batch.
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Events ignored because the index holds a newer event for their image (late, replayed).
    stale: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Seconds spent per stage (prepare = parse + fetch + decode + preprocess), for logs/stats.
    timings: dict[str, float] = field(default_factory=dict)
    #: Category validation: outcome counts, and the alerts to publish.
    verdicts: dict[str, int] = field(default_factory=dict)
    alerts: list[CategoryAlert] = field(default_factory=list)
    #: Between stages: the batch's events in order (uploads as their prepared images), the
    #: versions (and encoders) it was prepared for, and (after embed) vectors per version.
    items: list[PreparedUpload | ParsedChange] = field(default_factory=list, repr=False)
    targets: dict[str, Encoder] = field(default_factory=dict, repr=False)
    primary: str = ""
    vectors: dict[str, list] = field(default_factory=dict, repr=False)

    @property
    def prepared(self) -> list[PreparedUpload]:
        return [item for item in self.items if isinstance(item, PreparedUpload)]
