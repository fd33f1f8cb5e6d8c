"""The index on a Qdrant server (qdrant-client); its local mode stands in for a server in tests."""

from .index import QdrantIndex
from .queries import build_filter
from .records import QdrantRecordStore

__all__ = ["QdrantIndex", "QdrantRecordStore", "build_filter"]
