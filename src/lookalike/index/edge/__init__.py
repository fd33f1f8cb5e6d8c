"""The embedded default index: Qdrant's own engine (qdrant-edge) in this process."""

from .index import EdgeIndex
from .space import OptimizerPolicy

__all__ = ["EdgeIndex", "OptimizerPolicy"]
