"""Model-version rollout: the version registry, the worker's encoders per written version, the
backfill that re-embeds the catalogue into a candidate, the promotion gate and the agreement
report."""

from .agreement import RecentSearches, agreement
from .backfill import Backfill
from .controller import BackfillInputs, Rollout
from .models import WorkerModels
from .versions import VersionRecord, VersionRegistry

__all__ = [
    "Backfill",
    "BackfillInputs",
    "RecentSearches",
    "Rollout",
    "VersionRecord",
    "VersionRegistry",
    "WorkerModels",
    "agreement",
]
