"""Migrate a data dir's index from qdrant-client's local mode (lookalike before 0.2) to the
embedded engine: every version's vectors and payloads, the exemplars, the per-image clocks and
tombstones, the version registry and the serving alias.

The new index is written to ``index.migrating`` and renamed to ``index`` only once every count
matches, so an interrupted migration leaves the old index as it was and simply runs again. The
old folder is kept as ``qdrant.migrated`` (delete it once you are happy).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from ..errors import ConfigurationError
from ..settings import Settings
from .base import IndexPoint
from .edge import EdgeIndex

log = logging.getLogger(__name__)


def _pages(client: QdrantClient, collection: str, vectors: bool) -> Iterator[list[Any]]:
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=256, offset=offset, with_payload=True, with_vectors=vectors
        )
        if records:
            yield records
        if offset is None:
            return


def _points(records: list[Any]) -> list[IndexPoint]:
    return [
        IndexPoint(str(r.payload["image_id"]), np.asarray(r.vector, dtype=np.float32), r.payload)
        for r in records
    ]


def migrate_local_mode(
    settings: Settings, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Blocking. Returns what was copied; raises ConfigurationError when there is nothing to
    migrate or the old index is in use."""
    old_path, prefix = settings.qdrant_path, settings.collection_prefix
    if settings.index_path.exists():
        raise ConfigurationError(f"{settings.index_path} exists already: nothing to migrate")
    try:
        old = QdrantClient(path=str(old_path))
    except RuntimeError as exc:  # "already accessed by another instance"
        raise ConfigurationError(
            f"{old_path} is open in another process: stop the lookalike worker using this data "
            f"dir, then migrate ({exc})"
        ) from None
    staging = settings.data_dir / "index.migrating"
    shutil.rmtree(staging, ignore_errors=True)
    new = EdgeIndex(staging, prefix, quantization=settings.quantization, background=False)
    try:
        copied = _copy(old, new, prefix, progress or (lambda n: None))
        serving = next(
            (
                a.collection_name
                for a in old.get_aliases().aliases
                if a.alias_name == f"{prefix}-serving"
            ),
            None,
        )
        if serving is not None:
            new.set_serving(serving.removeprefix(f"{prefix}-"))
        for version, count in copied["versions"].items():
            if new.count(version) != count:
                raise RuntimeError(f"{version}: {new.count(version)} points copied of {count}")
        new.flush()
    finally:
        new.close()
        old.close()
    os.replace(staging, settings.index_path)
    os.replace(old_path, old_path.with_name("qdrant.migrated"))
    copied["serving"] = serving and serving.removeprefix(f"{prefix}-")
    log.info("migrated %s to %s: %s", old_path, settings.index_path, copied)
    return copied


def _copy(
    old: QdrantClient, new: EdgeIndex, prefix: str, progress: Callable[[int], None]
) -> dict[str, Any]:
    copied: dict[str, Any] = {"versions": {}, "exemplars": {}, "clocks": 0, "registry": 0}
    stores = {
        f"clocks-{prefix}": ("clocks", new.records("clocks", "image_id", indexed=("state",))),
        f"versions-{prefix}": ("registry", new.records("versions", "version")),
    }
    for collection in sorted(c.name for c in old.get_collections().collections):
        if collection in stores:
            what, store = stores[collection]
            for records in _pages(old, collection, vectors=False):
                store.put_many(r.payload for r in records)
                copied[what] += len(records)
            continue
        exemplars = collection.startswith(f"exemplars-{prefix}-")
        if not exemplars and not collection.startswith(f"{prefix}-"):
            log.warning("not migrated: collection %s is not lookalike's", collection)
            continue
        version = collection.removeprefix("exemplars-").removeprefix(f"{prefix}-")
        dim = old.get_collection(collection).config.params.vectors.size  # type: ignore[union-attr]
        (new.ensure_exemplars if exemplars else new.ensure_collection)(version, dim)
        count = 0
        for records in _pages(old, collection, vectors=True):
            points = _points(records)
            if exemplars:
                for point in points:
                    new.upsert_exemplar(version, point)
            else:
                new.upsert(version, points)
                progress(len(points))
            count += len(points)
        copied["exemplars" if exemplars else "versions"][version] = count
    return copied


def legacy_points(path: Path) -> int:
    """How many points the old index holds in all (for a progress bar)."""
    client = QdrantClient(path=str(path))
    try:
        return sum(client.count(c.name).count for c in client.get_collections().collections)
    finally:
        client.close()
