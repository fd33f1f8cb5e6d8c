"""Writers that agents hand their results to: the Qdrant index, dead letters, category alerts."""

from .alerts import AlertStore, AlertWriter
from .dead_letters import DeadLetterLedger, DeadLetterWriter
from .qdrant_index import Hit, IndexPoint, QdrantIndex, point_id

__all__ = [
    "AlertStore",
    "AlertWriter",
    "DeadLetterLedger",
    "DeadLetterWriter",
    "Hit",
    "IndexPoint",
    "QdrantIndex",
    "point_id",
]
