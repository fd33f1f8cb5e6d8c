"""The embedded default index: Qdrant's own engine (qdrant-edge) in this process.

Layout of ``DATA_DIR/index``::

    serving.json             {"version": "..."}: what search reads (written atomically)
    records.sqlite           record stores: per-image clocks, the version registry, evidence
    versions/<version>/      one vector space per model version (see :mod:`.space`)
    exemplars/<version>/     the validation exemplars of each version

Every shard call holds the GIL (qdrant-edge), so concurrent searches do not run in parallel,
but no lock of ours serialises them either: a space is only locked against its own shard swap.
One process may open the folder (the shards' WALs are locked), so the API and the CLI commands
that read the index go through the worker that owns it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeVectorParams,
    Filter,
    HnswIndexConfig,
    Memory,
    ScalarQuantizationConfig,
    ScalarType,
    ScrollRequest,
    UpdateOperation,
)

from ...sqlite_files import open_sqlite
from ..base import FILTERABLE_FIELDS, Hit, IndexPoint, Quantization, point_id, without
from .queries import (
    EXACT_MAX_POINTS,
    as_list,
    as_point,
    as_record,
    conditions_filter,
    search,
    search_batch,
)
from .records import SqliteRecordStore
from .space import OptimizerPolicy, Space, read_json, write_json_atomically

log = logging.getLogger(__name__)


class EdgeIndex:
    def __init__(
        self,
        root: Path,
        prefix: str = "lookalike",
        *,
        quantization: Quantization = "none",
        policy: OptimizerPolicy | None = None,
        background: bool = True,
        indexing_threshold_kb: int | None = None,
    ) -> None:
        """``indexing_threshold_kb``: segments smaller than this (KB of vectors) are searched
        brute force, never given a graph (the engine's default: 10,000 KB, about 2,000
        1280-d vectors); tests lower it."""
        self.root = root
        self.indexing_threshold_kb = indexing_threshold_kb
        self.prefix = prefix
        self.quantization = quantization
        self.policy = policy or OptimizerPolicy()
        root.mkdir(parents=True, exist_ok=True)
        self._db = open_sqlite(root / "records.sqlite", synchronous="NORMAL")
        self._db_lock = threading.Lock()
        self._spaces: dict[tuple[str, str], Space] = {}
        self._spaces_lock = threading.RLock()
        for kind in ("versions", "exemplars"):
            (root / kind).mkdir(exist_ok=True)
            for path in sorted((root / kind).iterdir()):
                if (path / "CURRENT").exists():
                    self._spaces[(kind, path.name)] = Space.open(path, path.name)
                else:  # a creation that crashed before it completed
                    shutil.rmtree(path, ignore_errors=True)
        self.optimizer_errors: list[str] = []
        self._stop = threading.Event()
        self._optimizer: threading.Thread | None = None
        if background:
            self._optimizer = threading.Thread(
                target=self._optimize_forever, name="index-optimizer", daemon=True
            )
            self._optimizer.start()

    # --- vector spaces and the serving pointer ---------------------------------------------------
    def _config(self, dim: int, small: bool) -> EdgeConfig:
        quantization = (
            ScalarQuantizationConfig(type=ScalarType.Int8, quantile=0.99, always_ram=True)
            if self.quantization == "int8" and not small
            else None
        )
        return EdgeConfig(
            # With int8 codes in RAM, the graph search reads the full vectors only to rescore
            # the best candidates: leave them on disk (mapped), not read in at load.
            vectors=EdgeVectorParams(
                size=dim,
                distance=Distance.Cosine,
                memory=Memory.Cold if quantization is not None else None,
            ),
            hnsw_config=HnswIndexConfig(
                m=16,
                ef_construct=100,
                full_scan_threshold=max(1, EXACT_MAX_POINTS * dim * 4 // 1024),
            ),
            quantization_config=quantization,
            optimizers=EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold_kb),
            # The engine starts a search pool per shard; exemplar spaces hold a handful of points.
            max_search_threads=1 if small else None,
        )

    def _ensure(self, kind: str, version: str, dim: int, fields: tuple[str, ...]) -> None:
        with self._spaces_lock:
            if (kind, version) in self._spaces:
                return
            path = self.root / kind / version
            shutil.rmtree(path, ignore_errors=True)
            config = self._config(dim, small=kind == "exemplars")
            self._spaces[(kind, version)] = Space.create(path, version, config, fields)
        log.info("created %s space %s (%d dims)", kind.rstrip("s"), version, dim)

    def ensure_collection(self, version: str, dim: int) -> None:
        self._ensure("versions", version, dim, FILTERABLE_FIELDS)

    def ensure_exemplars(self, version: str, dim: int) -> None:
        self._ensure("exemplars", version, dim, ("category",))

    def _space(self, version: str, kind: str = "versions") -> Space | None:
        return self._spaces.get((kind, version))

    def _existing(self, version: str, kind: str = "versions") -> Space:
        space = self._space(version, kind)
        if space is None:
            raise KeyError(f"no vector space for model version {version!r}")
        return space

    def drop_version(self, version: str) -> None:
        with self._spaces_lock:
            spaces = [self._spaces.pop((kind, version), None) for kind in ("versions", "exemplars")]
        for kind, space in zip(("versions", "exemplars"), spaces, strict=True):
            if space is not None:
                space.close()
            shutil.rmtree(self.root / kind / version, ignore_errors=True)

    def versions(self) -> list[str]:
        return sorted(version for kind, version in self._spaces if kind == "versions")

    def serving_version(self) -> str | None:
        pointer = read_json(self.root / "serving.json")
        return pointer["version"] if pointer else None

    def set_serving(self, version: str) -> None:
        """One atomic rename of the pointer file: search reads ``version`` next."""
        self._existing(version)
        write_json_atomically(self.root / "serving.json", {"version": version})
        log.info("serving pointer -> %s", version)

    def records(self, kind: str, key_field: str, indexed: Sequence[str] = ()) -> SqliteRecordStore:
        return SqliteRecordStore(self._db, self._db_lock, kind, key_field, indexed)

    # --- writing points --------------------------------------------------------------------------
    def upsert(self, version: str, points: Sequence[IndexPoint]) -> None:
        if points:
            operation = UpdateOperation.upsert_points([as_point(p) for p in points])
            self._existing(version).apply(operation)

    def upsert_exemplar(self, version: str, point: IndexPoint) -> None:
        operation = UpdateOperation.upsert_points([as_point(point)])
        self._existing(version, "exemplars").apply(operation)

    def delete(self, version: str, image_ids: Sequence[str]) -> None:
        if image_ids:
            self._existing(version).apply(
                UpdateOperation.delete_points([point_id(i) for i in image_ids]),
                deletes=len(image_ids),
            )

    def update_payload(self, version: str, image_id: str, payload: Mapping[str, Any]) -> bool:
        """Change payload fields of one image without re-embedding. False if it is not there."""
        space = self._space(version)
        if space is None or not self.held(version, [image_id]):
            return False
        space.apply(UpdateOperation.set_payload([point_id(image_id)], dict(payload)))
        return True

    # --- reading points --------------------------------------------------------------------------
    def _retrieve(
        self, space: Space | None, image_ids: Sequence[str], payload: bool, vector: bool
    ) -> list[Any]:
        if space is None or not image_ids:
            return []
        with space.reading() as shard:
            return shard.retrieve([point_id(i) for i in image_ids], payload, vector)

    def get(self, version: str, image_id: str, with_vector: bool = False) -> dict[str, Any] | None:
        records = self._retrieve(self._space(version), [image_id], True, with_vector)
        return as_record(records[0], with_vector) if records else None

    def exemplar(self, version: str, exemplar_id: str) -> dict[str, Any] | None:
        records = self._retrieve(self._space(version, "exemplars"), [exemplar_id], True, True)
        return as_record(records[0], True) if records else None

    def vectors(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        records = self._retrieve(self._space(version), image_ids, True, True)
        return {str(r.payload["image_id"]): np.asarray(r.vector, dtype=np.float32) for r in records}

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = self._retrieve(self._space(version), image_ids, True, False)
        return {str(r.payload["image_id"]): dict(r.payload) for r in records}

    def held(self, version: str, image_ids: Sequence[str]) -> set[str]:
        by_point = {point_id(i): i for i in image_ids}
        records = self._retrieve(self._space(version), image_ids, False, False)
        return {by_point[str(r.id)] for r in records}

    def search(
        self,
        version: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        conditions: Mapping[str, Any] | None = None,
        exclude_image_ids: Iterable[str] = (),
    ) -> list[Hit]:
        excluded = list(exclude_image_ids)
        hits = search(
            self._space(version),
            as_list(vector),
            k + len(excluded),
            conditions_filter(conditions),
            self.quantization,
        )
        return without(hits, excluded, k)

    def search_many(
        self,
        version: str,
        vectors: Sequence[np.ndarray],
        k: int,
        payload_fields: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """Several unfiltered queries in one engine call (the validator's k-NN)."""
        return search_batch(self._space(version), vectors, k, self.quantization, payload_fields)

    def search_exemplars(
        self, version: str, vectors: Sequence[np.ndarray], k: int
    ) -> list[list[Hit]]:
        fields = ("image_id", "category", "seller_id")
        space = self._space(version, "exemplars")
        return search_batch(space, vectors, k, self.quantization, fields)

    def scroll(
        self, version: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of payloads in point-id order from ``cursor``; the next cursor, or None."""
        space = self._space(version)
        if space is None:
            return [], None
        with space.reading() as shard:
            records, next_id = shard.scroll(
                ScrollRequest(offset=cursor, limit=limit, with_payload=True, with_vector=False)
            )
        return [dict(r.payload) for r in records], str(next_id) if next_id is not None else None

    def scroll_vectors(self, version: str) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        space, cursor = self._space(version), None
        while space is not None:
            with space.reading() as shard:
                records, cursor = shard.scroll(
                    ScrollRequest(offset=cursor, limit=256, with_payload=True, with_vector=True)
                )
            for record in records:
                yield dict(record.payload), np.asarray(record.vector, dtype=np.float32)
            if cursor is None:
                return

    def image_ids(self, version: str) -> set[str]:
        found: set[str] = set()
        page, cursor = self.scroll(version, None, 1024)
        while True:
            found.update(str(p["image_id"]) for p in page)
            if cursor is None:
                return found
            page, cursor = self.scroll(version, cursor, 1024)

    def _count(self, space: Space | None, query_filter: Filter | None = None) -> int:
        if space is None:
            return 0
        with space.reading() as shard:
            return int(shard.count(CountRequest(exact=True, filter=query_filter)))

    def count(self, version: str) -> int:
        return self._count(self._space(version))

    def count_exemplars(self, version: str, category: str) -> int:
        return self._count(
            self._space(version, "exemplars"), conditions_filter({"category": category})
        )

    # --- state, durability, background builds ------------------------------------------------
    def describe(self) -> dict[str, Any]:
        spaces = {}
        for (kind, version), space in sorted(self._spaces.items()):
            if kind != "versions":
                continue
            with space.reading() as shard:
                info = shard.info()
            spaces[version] = {
                "points": info.points_count,
                "indexed": info.indexed_vectors_count,
                "segments": info.segments_count,
                "generation": space.generation,
                "building": space.building,
                "builds": space.builds,
                "last_build": space.last_build,
            }
        return {
            "backend": "embedded (qdrant-edge)",
            "path": str(self.root),
            "quantization": self.quantization,
            "spaces": spaces,
            "optimizer_errors": self.optimizer_errors[-5:],
        }

    def flush(self) -> None:
        """Persist every shard's WAL and segments (``update`` alone survives a killed process,
        not a power cut)."""
        for space in list(self._spaces.values()):
            space.flush()

    def optimize(self, version: str) -> dict[str, Any] | None:
        """Blocking: bring a version's HNSW graph up to date now (in a child process; this
        process keeps serving), after any build already running. None when nothing was left
        to index. The background optimiser does this on its own when enough points are new."""
        return self._existing(version).catch_up(self.policy)

    def _optimize_forever(self) -> None:
        while not self._stop.wait(self.policy.check_interval):
            for space in list(self._spaces.values()):
                if self._stop.is_set():
                    return
                try:
                    if space.needs_build(self.policy):
                        log.info("indexing %s in the background", space.name)
                        result = space.build(self.policy)
                        log.info("indexed %s: %s", space.name, result)
                except Exception as exc:  # keep serving the old generation; retry later
                    if self._stop.is_set():
                        return  # close() cancelled the build: not a failure
                    self.optimizer_errors.append(f"{space.name}: {exc}")
                    log.warning("background indexing of %s failed: %s", space.name, exc)

    def close(self) -> None:
        self._stop.set()
        for space in self._spaces.values():
            space.cancel_build()
        if self._optimizer is not None:
            self._optimizer.join(timeout=30)
        for space in self._spaces.values():
            space.close()
        self._spaces.clear()
        with self._db_lock:
            self._db.close()
