"""Which index the settings point at: a Qdrant server when ``LOOKALIKE_QDRANT_URL`` is set, else
the embedded engine under the data dir."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigurationError
from ..settings import Settings
from .base import VectorIndex
from .server import QdrantIndex


def legacy_index_path(settings: Settings) -> Path | None:
    """The data dir's index written by lookalike before 0.2 (qdrant-client's local mode), if it
    has one that was not migrated yet."""
    old = settings.qdrant_path
    if settings.qdrant_url or settings.index_path.exists() or not (old / "meta.json").exists():
        return None
    return old


def open_index(settings: Settings) -> VectorIndex:
    """The index the settings point at, with clear errors for what stops it from opening."""
    if settings.qdrant_url:
        return QdrantIndex.connect(
            settings.qdrant_url,
            settings.qdrant_api_key,
            settings.collection_prefix,
            settings.quantization,
        )
    if (old := legacy_index_path(settings)) is not None:
        raise ConfigurationError(
            f"{old} holds an index written by an earlier lookalike (qdrant-client local mode): "
            f"migrate it once with `lookalike migrate --data-dir {settings.data_dir}` "
            "(`lookalike up` does it for you); nothing is lost"
        )
    from .edge import EdgeIndex  # the engine loads a native library: only when it is used

    try:
        return EdgeIndex(
            settings.index_path, settings.collection_prefix, quantization=settings.quantization
        )
    except Exception as exc:
        if "WouldBlock" in str(exc):
            raise ConfigurationError(
                f"{settings.index_path} is open in another process (the embedded index allows "
                "one): stop the other lookalike worker, or give this one another --data-dir"
            ) from None
        raise
