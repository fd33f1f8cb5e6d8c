"""Record stores on a Qdrant server: one payload-only collection per kind (a point without a
vector per record), in the same Qdrant as the versions, so they are durable and shared by every
worker that points at it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from qdrant_client import QdrantClient, models

from ..base import point_id


def field_filter(key: str, value: str) -> models.Filter:
    """Exact match of one payload field."""
    return models.Filter(
        must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    )


class QdrantRecordStore:
    """Records keyed by a string, each a JSON-able dict that holds its own key under
    ``key_field``. Every call holds the index's lock (made by :meth:`QdrantIndex.records`)."""

    def __init__(
        self,
        client: QdrantClient,
        lock: AbstractContextManager[Any],
        collection: str,
        key_field: str,
    ) -> None:
        self._client = client
        self._lock = lock
        self.collection = collection
        self.key_field = key_field

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = [point_id(k) for k in sorted(set(keys))]
        if not ids:
            return {}
        with self._lock:
            records = self._client.retrieve(self.collection, ids=ids, with_payload=True)
        return {str(r.payload[self.key_field]): dict(r.payload) for r in records if r.payload}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def put_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Upsert records in one request, so a transition of several is saved whole."""
        points = [
            models.PointStruct(id=point_id(str(r[self.key_field])), vector={}, payload=dict(r))
            for r in records
        ]
        if not points:
            return
        with self._lock:
            self._client.upsert(self.collection, points=points, wait=True)

    def all(self, limit: int = 10_000) -> list[dict[str, Any]]:
        with self._lock:
            records, _ = self._client.scroll(self.collection, limit=limit, with_payload=True)
        return [dict(r.payload or {}) for r in records]

    def find(self, key: str, value: str) -> list[dict[str, Any]]:
        """Every record whose field ``key`` equals ``value``."""
        found: list[dict[str, Any]] = []
        offset = None
        while True:
            with self._lock:
                records, offset = self._client.scroll(
                    self.collection,
                    scroll_filter=field_filter(key, value),
                    limit=1024,
                    offset=offset,
                    with_payload=True,
                )
            found.extend(dict(r.payload or {}) for r in records)
            if offset is None:
                return found

    def count(self, key: str, value: str) -> int:
        """Records whose field ``key`` equals ``value``."""
        with self._lock:
            return self._client.count(
                self.collection, count_filter=field_filter(key, value), exact=True
            ).count
