"""This worker process's counters (``worker`` in ``GET /stats``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Since this worker process started (durable totals come from Qdrant and the ledger)."""

    started_at: float = field(default_factory=time.time)
    events_consumed: int = 0
    images_indexed: int = 0
    images_updated: int = 0
    images_removed: int = 0
    #: Late or replayed events ignored because the index held a newer one for their image.
    stale_events: int = 0
    dead_letters: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
