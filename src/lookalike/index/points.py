"""What the index stores and returns: points keyed by image id, hits, and search filters.

Point ids are derived from image ids (uuid5), so writing an image again overwrites it: replays
and restarts cannot duplicate an image.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import models

from ..errors import InvalidRequest

_POINT_NAMESPACE = uuid.UUID("8f5f3b1e-3c1e-4a8e-9d1c-6c6b7a9e0f42")

#: Payload fields a search may filter on (exact match).
FILTERABLE_FIELDS = ("category", "seller_id", "listing_id")


def point_id(image_id: str) -> str:
    """Deterministic Qdrant point id for an image id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, image_id))


@dataclass(frozen=True)
class IndexPoint:
    image_id: str
    vector: np.ndarray
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    image_id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "score": round(float(self.score), 6),
            **{k: v for k, v in self.payload.items() if k != "image_id"},
        }


def build_filter(
    conditions: Mapping[str, Any] | None, exclude_image_ids: Iterable[str] = ()
) -> models.Filter | None:
    """{"category": "shoes", "seller_id": ["a", "b"]} -> a Qdrant filter (lists mean any-of)."""
    must: list[models.Condition] = []
    for key, value in (conditions or {}).items():
        if value is None:
            continue
        if key not in FILTERABLE_FIELDS:
            raise InvalidRequest(
                f"cannot filter on {key!r}; filterable fields: {FILTERABLE_FIELDS}"
            )
        match = (
            models.MatchAny(any=list(value))
            if isinstance(value, list | tuple)
            else models.MatchValue(value=value)
        )
        must.append(models.FieldCondition(key=key, match=match))
    must_not: list[models.Condition] = []
    excluded = [point_id(i) for i in exclude_image_ids]
    if excluded:
        must_not.append(models.HasIdCondition(has_id=excluded))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


def field_filter(key: str, value: str) -> models.Filter:
    """Exact match of one payload field."""
    return models.Filter(
        must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    )
