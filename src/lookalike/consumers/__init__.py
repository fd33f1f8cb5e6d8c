"""Writers that agents hand their results to: the Qdrant index and the dead letters."""

from .dead_letters import DeadLetterLedger, DeadLetterWriter
from .qdrant_index import Hit, IndexPoint, QdrantIndex, point_id

__all__ = ["DeadLetterLedger", "DeadLetterWriter", "Hit", "IndexPoint", "QdrantIndex", "point_id"]
