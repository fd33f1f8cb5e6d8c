"""The vector index on Qdrant (embedded local mode under the data dir, or a server).

One collection per model version (``{prefix}-{version}``), read through the serving alias
(``{prefix}-serving``) so a new version can be built beside the old one and switched atomically.
Beside them: the exemplar collections of category validation (``exemplars-{prefix}-{version}``)
and payload-only record stores (``clocks-{prefix}``, ``versions-{prefix}``). Every call to
Qdrant goes through this class and its lock (embedded local mode is not thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from ..errors import ConfigurationError
from ..settings import Settings
from .points import FILTERABLE_FIELDS, Hit, IndexPoint, build_filter, field_filter, point_id
from .records import RecordStore

log = logging.getLogger(__name__)


def open_index(settings: Settings) -> QdrantIndex:
    """The index the settings point at, with a clear error when another process holds it."""
    try:
        return QdrantIndex.from_settings(settings)
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise ConfigurationError(
                f"{settings.qdrant_path} is open in another process (embedded Qdrant allows one): "
                "stop the other lookalike worker, or give this one another --data-dir"
            ) from None
        raise


class QdrantIndex:
    """Thread-safe facade over a QdrantClient."""

    def __init__(self, client: QdrantClient, prefix: str = "lookalike") -> None:
        self.client = client
        self.prefix = prefix
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        """Held around every client call."""
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

    def exemplar_collection(self, version: str) -> str:
        return f"exemplars-{self.prefix}-{version}"

    def _version_of(self, collection: str) -> str:
        return collection.removeprefix(f"{self.prefix}-")

    def records(self, kind: str, key_field: str) -> RecordStore:
        """The payload-only store ``{kind}-{prefix}`` (e.g. clocks, versions)."""
        name = f"{kind}-{self.prefix}"
        self._ensure(name, None)
        return RecordStore(self.client, self._lock, name, key_field)

    # --- collections and alias -------------------------------------------------------------------
    def _ensure(self, name: str, dim: int | None, keyword_indexes: Sequence[str] = ()) -> None:
        """A collection; ``dim=None``: payload-only records."""
        vectors: models.VectorParams | dict = (
            models.VectorParams(size=dim, distance=models.Distance.COSINE) if dim else {}
        )
        with self._lock:
            if self.client.collection_exists(name):
                return
            self.client.create_collection(name, vectors_config=vectors)
            for key in keyword_indexes:  # used by a Qdrant server; ignored by local mode
                self.client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD)
        log.info("created collection %s%s", name, f" ({dim} dims)" if dim else "")

    def ensure_collection(self, version: str, dim: int) -> None:
        self._ensure(self.collection_name(version), dim, FILTERABLE_FIELDS)

    def ensure_exemplars(self, version: str, dim: int) -> None:
        self._ensure(self.exemplar_collection(version), dim)

    def drop_version(self, version: str) -> None:
        """Delete a version's collection, if it exists."""
        name = self.collection_name(version)
        with self._lock:
            if self.client.collection_exists(name):
                self.client.delete_collection(name)

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

    # --- writing points --------------------------------------------------------------------------
    def _upsert(self, collection: str, points: Sequence[IndexPoint]) -> None:
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
            self.client.upsert(collection, points=structs, wait=True)

    def upsert(self, version: str, points: Sequence[IndexPoint]) -> None:
        self._upsert(self.collection_name(version), points)

    def upsert_exemplar(self, version: str, point: IndexPoint) -> None:
        self._upsert(self.exemplar_collection(version), [point])

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

    # --- reading points --------------------------------------------------------------------------
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

    def held(self, version: str, image_ids: Sequence[str]) -> set[str]:
        """Which of ``image_ids`` the version holds (one request, no payloads)."""
        ids = {point_id(i): i for i in image_ids}
        with self._lock:
            records = self.client.retrieve(
                self.collection_name(version), ids=list(ids), with_payload=False
            )
        return {ids[str(r.id)] for r in records}

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
        return [_hit(p) for p in response.points]

    def _search_many(
        self,
        collection: str,
        vectors: Sequence[np.ndarray],
        k: int,
        payload_fields: Sequence[str] | None,
    ) -> list[list[Hit]]:
        if not vectors:
            return []
        requests = [
            models.QueryRequest(
                query=np.asarray(v, dtype=np.float32).tolist(),
                limit=k,
                with_payload=list(payload_fields) if payload_fields else True,
            )
            for v in vectors
        ]
        with self._lock:
            if not self.client.collection_exists(collection):
                return [[] for _ in vectors]
            responses = self.client.query_batch_points(collection, requests=requests)
        return [[_hit(p) for p in response.points] for response in responses]

    def search_many(
        self,
        version: str,
        vectors: Sequence[np.ndarray],
        k: int,
        payload_fields: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """One batched request for several queries."""
        return self._search_many(self.collection_name(version), vectors, k, payload_fields)

    def search_exemplars(
        self, version: str, vectors: Sequence[np.ndarray], k: int
    ) -> list[list[Hit]]:
        fields = ("image_id", "category", "seller_id")
        return self._search_many(self.exemplar_collection(version), vectors, k, fields)

    def scroll(
        self, version: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of payloads in point-id order from ``cursor``; the next cursor, or None at
        the end."""
        with self._lock:
            records, next_cursor = self.client.scroll(
                self.collection_name(version),
                limit=limit,
                offset=cursor,
                with_payload=True,
                with_vectors=False,
            )
        payloads = [dict(r.payload or {}) for r in records]
        return payloads, str(next_cursor) if next_cursor is not None else None

    def _scroll_vectors(
        self, collection: str, batch: int = 256
    ) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
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

    def scroll_vectors(self, version: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """(payload, vector) of every point of ``version``."""
        return self._scroll_vectors(self.collection_name(version))

    def scroll_exemplars(self, version: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        return self._scroll_vectors(self.exemplar_collection(version))

    def image_ids(self, version: str) -> set[str]:
        """Every image id a version holds (a payload-only scroll)."""
        found: set[str] = set()
        offset = None
        name = self.collection_name(version)
        while True:
            with self._lock:
                if not self.client.collection_exists(name):
                    return found
                records, offset = self.client.scroll(
                    name, limit=1024, offset=offset, with_payload=["image_id"], with_vectors=False
                )
            found.update(str((r.payload or {}).get("image_id")) for r in records)
            if offset is None:
                return found

    def _count(self, collection: str, count_filter: models.Filter | None = None) -> int:
        with self._lock:
            if not self.client.collection_exists(collection):
                return 0
            return self.client.count(collection, count_filter=count_filter, exact=True).count

    def count(self, version: str) -> int:
        return self._count(self.collection_name(version))

    def count_exemplars(self, version: str, category: str) -> int:
        return self._count(self.exemplar_collection(version), field_filter("category", category))

    def close(self) -> None:
        with self._lock:
            self.client.close()


def _hit(point: models.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(str(payload.get("image_id")), point.score, payload)
