"""The index on a Qdrant server, through qdrant-client.

One collection per model version (``{prefix}-{version}``), read through the serving alias
(``{prefix}-serving``), so a new version is built beside the old one and switched with one
atomic alias operation. Beside them: the exemplar collections of category validation
(``exemplars-{prefix}-{version}``) and payload-only record stores (``{kind}-{prefix}``).

qdrant-client's local mode (``QdrantClient(path=...)`` or ``":memory:"``) speaks the same client
API and stands in for a server in tests. It is not thread-safe, so calls are serialised by a
lock unless the client talks to a real server (``serialise=False``, which ``from_settings``
sets), where concurrent reads are the server's job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from ..base import FILTERABLE_FIELDS, Hit, IndexPoint, Quantization, point_id, without
from .queries import as_hit, as_record, build_filter, collection_config, search_params
from .records import QdrantRecordStore, field_filter

log = logging.getLogger(__name__)


class QdrantIndex:
    def __init__(
        self,
        client: QdrantClient,
        prefix: str = "lookalike",
        *,
        quantization: Quantization = "none",
        serialise: bool = True,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.quantization = quantization
        self._lock: AbstractContextManager[Any] = threading.RLock() if serialise else nullcontext()

    @classmethod
    def connect(cls, url: str, api_key: str | None, prefix: str, quantization: Quantization):
        return cls(
            QdrantClient(url=url, api_key=api_key),
            prefix,
            quantization=quantization,
            serialise=False,
        )

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

    def records(self, kind: str, key_field: str, indexed: Sequence[str] = ()) -> QdrantRecordStore:
        """The payload-only store ``{kind}-{prefix}`` (e.g. clocks, versions)."""
        name = f"{kind}-{self.prefix}"
        self._ensure(name, None, indexed)
        return QdrantRecordStore(self.client, self._lock, name, key_field)

    def describe(self) -> dict[str, Any]:
        return {"backend": "qdrant-server", "quantization": self.quantization}

    # --- collections and alias -------------------------------------------------------------------
    def _ensure(self, name: str, dim: int | None, keyword_indexes: Sequence[str] = ()) -> None:
        """A collection; ``dim=None``: payload-only records."""
        with self._lock:
            if self.client.collection_exists(name):
                return
            self.client.create_collection(name, **collection_config(dim, self.quantization))
            for key in keyword_indexes:  # used by a Qdrant server; ignored by local mode
                self.client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD)
        log.info("created collection %s%s", name, f" ({dim} dims)" if dim else "")

    def ensure_collection(self, version: str, dim: int) -> None:
        self._ensure(self.collection_name(version), dim, FILTERABLE_FIELDS)

    def ensure_exemplars(self, version: str, dim: int) -> None:
        self._ensure(self.exemplar_collection(version), dim, ("category",))

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
    def _retrieve(
        self, collection: str, image_ids: Sequence[str], with_vector: bool
    ) -> list[models.Record]:
        with self._lock:
            if not self.client.collection_exists(collection):
                return []
            return self.client.retrieve(
                collection,
                ids=[point_id(i) for i in image_ids],
                with_payload=True,
                with_vectors=with_vector,
            )

    def get(self, version: str, image_id: str, with_vector: bool = False) -> dict[str, Any] | None:
        records = self._retrieve(self.collection_name(version), [image_id], with_vector)
        return as_record(records[0], with_vector) if records else None

    def exemplar(self, version: str, exemplar_id: str) -> dict[str, Any] | None:
        records = self._retrieve(self.exemplar_collection(version), [exemplar_id], True)
        return as_record(records[0], True) if records else None

    def vectors(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the given images (those indexed under ``version``)."""
        records = self._retrieve(self.collection_name(version), image_ids, True)
        return {
            str((r.payload or {})["image_id"]): np.asarray(r.vector, dtype=np.float32)
            for r in records
        }

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored records (payloads) of the given images, in one request."""
        records = self._retrieve(self.collection_name(version), image_ids, False)
        return {str((r.payload or {})["image_id"]): dict(r.payload or {}) for r in records}

    def held(self, version: str, image_ids: Sequence[str]) -> set[str]:
        """Which of ``image_ids`` the version holds (one request, no payloads)."""
        ids = {point_id(i): i for i in image_ids}
        with self._lock:
            records = self.client.retrieve(
                self.collection_name(version), ids=list(ids), with_payload=False
            )
        return {ids[str(r.id)] for r in records}

    def _query(
        self,
        collection: str,
        vector: np.ndarray | Sequence[float],
        limit: int,
        query_filter: models.Filter | None,
        payload: bool | Sequence[str] = True,
    ) -> list[Hit]:
        """A search that returns ``limit`` hits whenever that many match: re-run exactly if the
        approximate answer came back short."""
        query = np.asarray(vector, dtype=np.float32).tolist()
        with_payload = list(payload) if not isinstance(payload, bool) else payload
        with self._lock:
            if not self.client.collection_exists(collection):
                return []
            points = self.client.query_points(
                collection,
                query=query,
                limit=limit,
                query_filter=query_filter,
                search_params=search_params(self.quantization, query_filter is not None),
                with_payload=with_payload,
            ).points
            if len(points) < limit and self._count(collection, query_filter) > len(points):
                points = self.client.query_points(
                    collection,
                    query=query,
                    limit=limit,
                    query_filter=query_filter,
                    search_params=search_params(self.quantization, False, exact=True),
                    with_payload=with_payload,
                ).points
        return [as_hit(p) for p in points]

    def search(
        self,
        version: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        conditions: Mapping[str, Any] | None = None,
        exclude_image_ids: Iterable[str] = (),
    ) -> list[Hit]:
        excluded = list(exclude_image_ids)
        hits = self._query(
            self.collection_name(version), vector, k + len(excluded), build_filter(conditions)
        )
        return without(hits, excluded, k)

    def _query_many(
        self, collection: str, vectors: Sequence[np.ndarray], k: int, fields: Sequence[str] | None
    ) -> list[list[Hit]]:
        """One batched request; any answer that came back short is re-run exactly."""
        if not vectors:
            return []
        with_payload = list(fields) if fields else True
        requests = [
            models.QueryRequest(
                query=np.asarray(v, dtype=np.float32).tolist(),
                limit=k,
                params=search_params(self.quantization, False),
                with_payload=with_payload,
            )
            for v in vectors
        ]
        with self._lock:
            if not self.client.collection_exists(collection):
                return [[] for _ in vectors]
            responses = self.client.query_batch_points(collection, requests=requests)
        results = [[as_hit(p) for p in r.points] for r in responses]
        short = [i for i, hits in enumerate(results) if len(hits) < k]
        if short and self._count(collection) > min(len(results[i]) for i in short):
            for i in short:
                results[i] = self._query(collection, vectors[i], k, None, with_payload)
        return results

    def search_many(
        self,
        version: str,
        vectors: Sequence[np.ndarray],
        k: int,
        payload_fields: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """One batched request for several unfiltered queries."""
        return self._query_many(self.collection_name(version), vectors, k, payload_fields)

    def search_exemplars(
        self, version: str, vectors: Sequence[np.ndarray], k: int
    ) -> list[list[Hit]]:
        fields = ("image_id", "category", "seller_id")
        return self._query_many(self.exemplar_collection(version), vectors, k, fields)

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

    def scroll_vectors(self, version: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """(payload, vector) of every point of ``version``."""
        collection, offset = self.collection_name(version), None
        while True:
            with self._lock:
                if not self.client.collection_exists(collection):
                    return
                records, offset = self.client.scroll(
                    collection, limit=256, offset=offset, with_payload=True, with_vectors=True
                )
            for record in records:
                yield record.payload or {}, np.asarray(record.vector, dtype=np.float32)
            if offset is None:
                return

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
