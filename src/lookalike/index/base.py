"""What every index backend is: the interface the rest of lookalike uses, and what it stores and
returns (points keyed by image id, hits, search conditions).

Two backends implement :class:`VectorIndex` with the same semantics:

* :class:`~lookalike.index.edge.EdgeIndex`, the embedded default: Qdrant's own engine in this
  process (qdrant-edge), one shard per vector space under the data dir, a crash-safe serving
  pointer file, SQLite record stores, HNSW built off the hot path;
* :class:`~lookalike.index.server.QdrantIndex`: a Qdrant server through qdrant-client (a
  collection per vector space, the serving alias, payload-only collections as record stores).

Point ids are derived from image ids (uuid5), so writing an image again overwrites it: replays
and restarts cannot duplicate an image.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from ..errors import InvalidRequest

_POINT_NAMESPACE = uuid.UUID("8f5f3b1e-3c1e-4a8e-9d1c-6c6b7a9e0f42")

#: Payload fields a search may filter on (exact match); both backends index them.
FILTERABLE_FIELDS = ("category", "seller_id", "listing_id")

#: Scalar quantisation of stored vectors (``LOOKALIKE_QUANTIZATION``).
Quantization = Literal["none", "int8"]

#: {"category": "shoes"} or {"seller_id": ["a", "b"]} (a list means any of).
Conditions = Mapping[str, str | list[str]]


@functools.lru_cache(maxsize=65_536)  # a batch asks for each image's id several times
def point_id(image_id: str) -> str:
    """Deterministic point id (a UUID string) for an image id."""
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


def check_conditions(conditions: Mapping[str, Any] | None) -> dict[str, str | list[str]]:
    """Search conditions as the backends take them: known fields only, each value a string or a
    list of strings (any of); None values are dropped."""
    checked: dict[str, str | list[str]] = {}
    for key, value in (conditions or {}).items():
        if value is None:
            continue
        if key not in FILTERABLE_FIELDS:
            raise InvalidRequest(
                f"cannot filter on {key!r}; filterable fields: {FILTERABLE_FIELDS}"
            )
        values = value if isinstance(value, list | tuple) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            raise InvalidRequest(
                f"filter {key!r} takes a string or a non-empty list of strings, not {value!r}"
            )
        checked[key] = list(values) if isinstance(value, list | tuple) else value
    return checked


def without(hits: Iterable[Hit], excluded: Iterable[str], k: int) -> list[Hit]:
    """The first ``k`` hits that are not ``excluded``. Backends over-fetch by the number of
    excluded ids instead of filtering them out in the engine: an exclusion filter would make a
    "more like this image" search a filtered one, which is slower and may come back short."""
    drop = set(excluded)
    return [hit for hit in hits if hit.image_id not in drop][:k]


class RecordStore(Protocol):
    """Small payload-only records (per-image clocks, the version registry, validation evidence),
    each a JSON-able dict holding its own key under the store's key field."""

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put_many(self, records: Iterable[Mapping[str, Any]]) -> None: ...

    def all(self, limit: int = 10_000) -> list[dict[str, Any]]: ...

    def find(self, field: str, value: str) -> list[dict[str, Any]]: ...

    def count(self, field: str, value: str) -> int: ...


class VectorIndex(Protocol):
    """One vector space per model version (plus one for each version's validation exemplars),
    a serving pointer, and record stores. Blocking and thread-safe: called from executors."""

    prefix: str

    # --- vector spaces and the serving pointer -------------------------------------------------
    def versions(self) -> list[str]: ...

    def ensure_collection(self, version: str, dim: int) -> None: ...

    def drop_version(self, version: str) -> None: ...

    def serving_version(self) -> str | None: ...

    def set_serving(self, version: str) -> None:
        """Atomically: search reads ``version`` next."""
        ...

    def records(self, kind: str, key_field: str, indexed: Sequence[str] = ()) -> RecordStore: ...

    # --- points ---------------------------------------------------------------------------------
    def upsert(self, version: str, points: Sequence[IndexPoint]) -> None: ...

    def delete(self, version: str, image_ids: Sequence[str]) -> None: ...

    def update_payload(self, version: str, image_id: str, payload: Mapping[str, Any]) -> bool: ...

    def get(
        self, version: str, image_id: str, with_vector: bool = False
    ) -> dict[str, Any] | None: ...

    def vectors(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def held(self, version: str, image_ids: Sequence[str]) -> set[str]: ...

    def search(
        self,
        version: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        conditions: Mapping[str, Any] | None = None,
        exclude_image_ids: Iterable[str] = (),
    ) -> list[Hit]:
        """The ``k`` nearest images matching ``conditions`` (k of them whenever k match)."""
        ...

    def search_many(
        self,
        version: str,
        vectors: Sequence[np.ndarray],
        k: int,
        payload_fields: Sequence[str] | None = None,
    ) -> list[list[Hit]]: ...

    def scroll(
        self, version: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def scroll_vectors(self, version: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]: ...

    def image_ids(self, version: str) -> set[str]: ...

    def count(self, version: str) -> int: ...

    # --- validation exemplars ---------------------------------------------------------------------
    def ensure_exemplars(self, version: str, dim: int) -> None: ...

    def upsert_exemplar(self, version: str, point: IndexPoint) -> None: ...

    def exemplar(self, version: str, exemplar_id: str) -> dict[str, Any] | None: ...

    def search_exemplars(
        self, version: str, vectors: Sequence[np.ndarray], k: int
    ) -> list[list[Hit]]: ...

    def count_exemplars(self, version: str, category: str) -> int: ...

    def describe(self) -> dict[str, Any]:
        """What backend this is, where, and its state (for /stats)."""
        ...

    def close(self) -> None: ...
