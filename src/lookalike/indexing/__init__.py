"""The Faust-free batch step: a micro-batch of upload-topic messages through prepare, embed and
write, with per-image ordering (clocks, tombstones, each batch's net effect per image)."""

from .batch import BatchResult, ParsedChange, PreparedUpload
from .clock import ClockRecord, ClockStore, clock_of, is_current
from .pipeline import IndexingPipeline
from .plan import BatchPlan, ImagePlan, plan_batch

__all__ = [
    "BatchPlan",
    "BatchResult",
    "ClockRecord",
    "ClockStore",
    "ImagePlan",
    "IndexingPipeline",
    "ParsedChange",
    "PreparedUpload",
    "clock_of",
    "is_current",
    "plan_batch",
]
