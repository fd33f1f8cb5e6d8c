"""The vector store: one vector space per model version, a serving pointer, payload-only record
stores (per-image clocks, the version registry, validation evidence), and the exemplars of
category validation. Two backends, one interface (:class:`VectorIndex`): the embedded default
on Qdrant's own engine, and a Qdrant server."""

from .base import (
    FILTERABLE_FIELDS,
    Hit,
    IndexPoint,
    Quantization,
    RecordStore,
    VectorIndex,
    check_conditions,
    point_id,
)
from .open import legacy_index_path, open_index
from .server import QdrantIndex

__all__ = [
    "FILTERABLE_FIELDS",
    "Hit",
    "IndexPoint",
    "QdrantIndex",
    "Quantization",
    "RecordStore",
    "VectorIndex",
    "check_conditions",
    "legacy_index_path",
    "open_index",
    "point_id",
]
