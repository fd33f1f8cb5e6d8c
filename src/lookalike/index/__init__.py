"""The vector store: one vector space per model version, a serving pointer, payload-only record
stores (per-image clocks, the version registry), and the exemplars of category validation."""

from .points import FILTERABLE_FIELDS, Hit, IndexPoint, build_filter, point_id
from .qdrant import QdrantIndex, open_index
from .records import RecordStore

__all__ = [
    "FILTERABLE_FIELDS",
    "Hit",
    "IndexPoint",
    "QdrantIndex",
    "RecordStore",
    "build_filter",
    "open_index",
    "point_id",
]
