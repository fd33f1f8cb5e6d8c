"""Qdrant index writer and reader.

One collection per model version (``{prefix}-{version}``), read through the serving alias
(``{prefix}-serving``) so a new version can be built beside the old one and switched atomically.
Point ids are derived from image ids (uuid5), so writing an image again overwrites it: replays
and restarts cannot duplicate an image.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from ..settings import Settings

log = logging.getLogger(__name__)

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
            raise ValueError(f"cannot filter on {key!r}; filterable fields: {FILTERABLE_FIELDS}")
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


class QdrantIndex:
    """Thread-safe facade over a QdrantClient (embedded local mode is not thread-safe)."""

    def __init__(self, client: QdrantClient, prefix: str = "lookalike") -> None:
        self.client = client
        self.prefix = prefix
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        """Held around every client call (for stores that share this client)."""
        return self._lock

    @classmethod
    def from_settings(cls, settings: Settings) -> QdrantIndex:
        if settings.qdrant_url:
            client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        else:
            settings.qdrant_path.mkdir(parents=True, exist_ok=True)
            client = QdrantClient(path=str(settings.qdrant_path))
        return cls(client, settings.collection_prefix)

    # --- names ---------------------------------------------------------------------------------
    @property
    def serving_alias(self) -> str:
        return f"{self.prefix}-serving"

    def collection_name(self, version: str) -> str:
        return f"{self.prefix}-{version}"

    def _version_of(self, collection: str) -> str:
        return collection.removeprefix(f"{self.prefix}-")

    # --- collections and alias -------------------------------------------------------------------
    def ensure_collection(self, version: str, dim: int) -> None:
        name = self.collection_name(version)
        with self._lock:
            if self.client.collection_exists(name):
                return
            self.client.create_collection(
                name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
            for key in FILTERABLE_FIELDS:  # used by a Qdrant server; ignored by local mode
                self.client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD)
            log.info("created collection %s (%d dims)", name, dim)

    def serving_version(self) -> str | None:
        with self._lock:
            for alias in self.client.get_aliases().aliases:
                if alias.alias_name == self.serving_alias:
                    return self._version_of(alias.collection_name)
        return None

    def set_serving(self, version: str) -> None:
        """Point the serving alias at ``version`` in one atomic alias operation."""
        ops: list[models.AliasOperations] = []
        with self._lock:
            if self.serving_version() is not None:
                ops.append(
                    models.DeleteAliasOperation(
                        delete_alias=models.DeleteAlias(alias_name=self.serving_alias)
                    )
                )
            ops.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(
                        collection_name=self.collection_name(version), alias_name=self.serving_alias
                    )
                )
            )
            self.client.update_collection_aliases(change_aliases_operations=ops)
        log.info("serving alias %s -> %s", self.serving_alias, self.collection_name(version))

    def versions(self) -> list[str]:
        with self._lock:
            names = [c.name for c in self.client.get_collections().collections]
        return sorted(self._version_of(n) for n in names if n.startswith(f"{self.prefix}-"))

    # --- points --------------------------------------------------------------------------------
    def upsert(self, version: str, points: Sequence[IndexPoint]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(
                id=point_id(p.image_id),
                vector=np.asarray(p.vector, dtype=np.float32).tolist(),
                payload=dict(p.payload),
            )
            for p in points
        ]
        with self._lock:
            self.client.upsert(self.collection_name(version), points=structs, wait=True)

    def delete(self, version: str, image_ids: Sequence[str]) -> None:
        if not image_ids:
            return
        with self._lock:
            self.client.delete(
                self.collection_name(version),
                points_selector=models.PointIdsList(points=[point_id(i) for i in image_ids]),
                wait=True,
            )

    def update_payload(self, version: str, image_id: str, payload: Mapping[str, Any]) -> bool:
        """Change payload fields of one image without re-embedding. False if it is not there."""
        name = self.collection_name(version)
        with self._lock:
            if not self.client.retrieve(name, ids=[point_id(image_id)]):
                return False
            self.client.set_payload(
                name, payload=dict(payload), points=[point_id(image_id)], wait=True
            )
        return True

    def get(self, version: str, image_id: str, with_vector: bool = False) -> dict[str, Any] | None:
        with self._lock:
            records = self.client.retrieve(
                self.collection_name(version),
                ids=[point_id(image_id)],
                with_payload=True,
                with_vectors=with_vector,
            )
        if not records:
            return None
        record = records[0]
        result: dict[str, Any] = dict(record.payload or {})
        if with_vector:
            result["vector"] = record.vector
        return result

    def vectors(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the given images (those indexed under ``version``)."""
        with self._lock:
            records = self.client.retrieve(
                self.collection_name(version),
                ids=[point_id(i) for i in image_ids],
                with_payload=["image_id"],
                with_vectors=True,
            )
        return {
            str((r.payload or {})["image_id"]): np.asarray(r.vector, dtype=np.float32)
            for r in records
        }

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored records (payloads) of the given images, in one request."""
        with self._lock:
            records = self.client.retrieve(
                self.collection_name(version), ids=[point_id(i) for i in image_ids]
            )
        return {str((r.payload or {})["image_id"]): dict(r.payload or {}) for r in records}

    def search(
        self,
        version: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        conditions: Mapping[str, Any] | None = None,
        exclude_image_ids: Iterable[str] = (),
    ) -> list[Hit]:
        query_filter = build_filter(conditions, exclude_image_ids)
        with self._lock:
            response = self.client.query_points(
                self.collection_name(version),
                query=np.asarray(vector, dtype=np.float32).tolist(),
                limit=k,
                query_filter=query_filter,
                with_payload=True,
            )
        return [
            Hit(
                image_id=str((p.payload or {}).get("image_id")),
                score=p.score,
                payload=p.payload or {},
            )
            for p in response.points
        ]

    def search_many(
        self,
        version: str,
        vectors: Sequence[np.ndarray],
        k: int,
        filters: Sequence[models.Filter | None],
        collection: str | None = None,
        payload_fields: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """One batched request for several queries, each with its own filter."""
        if not vectors:
            return []
        name = collection or self.collection_name(version)
        requests = [
            models.QueryRequest(
                query=np.asarray(v, dtype=np.float32).tolist(),
                limit=k,
                filter=f,
                with_payload=list(payload_fields) if payload_fields else True,
            )
            for v, f in zip(vectors, filters, strict=True)
        ]
        with self._lock:
            if not self.client.collection_exists(name):
                return [[] for _ in vectors]
            responses = self.client.query_batch_points(name, requests=requests)
        return [
            [
                Hit(str((p.payload or {}).get("image_id")), p.score, p.payload or {})
                for p in response.points
            ]
            for response in responses
        ]

    def count_where(self, collection: str, key: str, value: str) -> int:
        with self._lock:
            if not self.client.collection_exists(collection):
                return 0
            return self.client.count(
                collection,
                count_filter=models.Filter(
                    must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))]
                ),
                exact=True,
            ).count

    def scroll_vectors(self, collection: str, batch: int = 256):
        """Yield (payload, vector) for every point of ``collection``."""
        offset = None
        while True:
            with self._lock:
                if not self.client.collection_exists(collection):
                    return
                records, offset = self.client.scroll(
                    collection, limit=batch, offset=offset, with_payload=True, with_vectors=True
                )
            for record in records:
                yield record.payload or {}, np.asarray(record.vector, dtype=np.float32)
            if offset is None:
                return

    def ensure_named_collection(self, name: str, dim: int | None) -> None:
        """A collection outside the version naming; ``dim=None``: payload-only records."""
        vectors: models.VectorParams | dict = (
            models.VectorParams(size=dim, distance=models.Distance.COSINE) if dim else {}
        )
        with self._lock:
            if not self.client.collection_exists(name):
                self.client.create_collection(name, vectors_config=vectors)

    def count(self, version: str) -> int:
        with self._lock:
            if not self.client.collection_exists(self.collection_name(version)):
                return 0
            return self.client.count(self.collection_name(version), exact=True).count

    def close(self) -> None:
        with self._lock:
            self.client.close()
