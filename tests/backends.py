"""Both index backends behind one helper, so a test can run against each: the embedded engine
(qdrant-edge, on disk) and the Qdrant-server code path (qdrant-client; its local mode on disk
stands in for a server, which cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from lookalike.index import QdrantIndex, VectorIndex
from lookalike.index.edge import EdgeIndex

BACKENDS = ("edge", "server")


def open_backend(kind: str, folder: Path, prefix: str = "test", **options: Any) -> VectorIndex:
    if kind == "edge":
        return EdgeIndex(folder / "index", prefix, background=False, **options)
    return QdrantIndex(QdrantClient(path=str(folder / "qdrant")), prefix, **options)


def reopen(index: VectorIndex, kind: str, folder: Path, **options: Any) -> VectorIndex:
    """Close ``index`` and open the same data again (a restart)."""
    index.close()
    return open_backend(kind, folder, index.prefix, **options)
