"""The validator's per-category evidence of one model version: how many catalogue images and
exemplars each category has, and the sum of their vectors (the prototype is its direction).

Durable and incremental: kept in a record store of the index, changed by the write step of each
batch with the exact before/after of every image it touches (so a replaced or re-categorised
image moves its contribution exactly), and loaded at start in one read of a few records, whatever
the catalogue's size. Records are per worker and additive (``{version}|{worker}|{category}``):
each worker writes only its own, so workers sharing a Qdrant server never overwrite each other's
counts, and a partition moving between workers keeps the totals right.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from ..index import RecordStore

#: A server's other workers change the totals too: re-read them at most this often.
REFRESH_SECONDS = 30.0


class _Tally:
    """Counts and the vector sum of one category."""

    __slots__ = ("images", "exemplars", "total")

    def __init__(self, dim: int) -> None:
        self.images = 0
        self.exemplars = 0
        self.total = np.zeros(dim, dtype=np.float64)

    def add(self, other: _Tally, sign: int = 1) -> None:
        self.images += sign * other.images
        self.exemplars += sign * other.exemplars
        self.total += sign * other.total


class CategoryEvidence:
    def __init__(
        self,
        store: RecordStore | None,
        version: str,
        dim: int,
        worker: str = "local",
        shared: bool = False,
    ) -> None:
        """``store=None``: in memory only. ``shared``: other workers write to the store too."""
        self.store = store
        self.version = version
        self.dim = dim
        self.worker = worker
        self.shared = shared
        self._mine: dict[str, _Tally] = defaultdict(lambda: _Tally(dim))
        self._others: dict[str, _Tally] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        # Derived from the tallies, dropped whenever they change: the validator reads them for
        # every upload it judges, the write step changes them once per batch.
        self._cached_totals: dict[str, _Tally] | None = None
        self._norms: tuple[list[str], np.ndarray] | None = None

    # --- durable state ---------------------------------------------------------------------
    def load(self) -> bool:
        """Read this version's records. False when there are none (a new version, or an index
        written before evidence was kept: see :meth:`rebuild`)."""
        if self.store is None:
            return False
        records = self.store.find("version", self.version)
        mine: dict[str, _Tally] = defaultdict(lambda: _Tally(self.dim))
        others: dict[str, _Tally] = defaultdict(lambda: _Tally(self.dim))
        for record in records:
            tally = _decode(record, self.dim)
            (mine if record["worker"] == self.worker else others)[record["category"]].add(tally)
        with self._lock:
            self._mine, self._others = mine, dict(others)
            self._loaded_at = time.monotonic()
            self._invalidate()
        return bool(records)

    def rebuild(self, points: Iterable[tuple[str, np.ndarray]], exemplars: Iterable) -> None:
        """Count everything again from (category, vector) pairs: one pass over the index, for a
        version that has no evidence yet."""
        with self._lock:
            self._mine = defaultdict(lambda: _Tally(self.dim))
            self._others = {}
            self._invalidate()
            for category, vector in points:
                self._change(category, vector, images=1)
            for category, vector in exemplars:
                self._change(category, vector, exemplars=1)
            self._dirty.update(self._mine)
        self.commit()

    def commit(self) -> None:
        """Save the categories changed since the last commit (one write)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            records = [_encode(self.version, self.worker, c, self._mine[c]) for c in dirty]
        if self.store is not None and records:
            self.store.put_many(records)

    def _refresh(self) -> None:
        if self.shared and time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self.load()

    # --- changes ----------------------------------------------------------------------------
    def _change(
        self, category: str, vector: np.ndarray, images: int = 0, exemplars: int = 0
    ) -> None:
        tally = self._mine[category]
        tally.images += images
        tally.exemplars += exemplars
        tally.total += (images + exemplars) * np.asarray(vector, dtype=np.float64)
        self._dirty.add(category)
        self._invalidate()

    def _invalidate(self) -> None:
        self._cached_totals = None
        self._norms = None

    def move(
        self,
        before: tuple[str, np.ndarray] | None,
        after: tuple[str, np.ndarray] | None,
        exemplar: bool = False,
    ) -> None:
        """One image (or exemplar) went from ``before`` to ``after`` ((category, vector), or
        None where it does not exist)."""
        kind = "exemplars" if exemplar else "images"
        with self._lock:
            if before is not None:
                self._change(before[0], before[1], **{kind: -1})
            if after is not None:
                self._change(after[0], after[1], **{kind: 1})

    # --- reading ------------------------------------------------------------------------------
    def _totals(self) -> dict[str, _Tally]:
        """This worker's tallies plus the others'; the caller holds the lock."""
        if self._cached_totals is None:
            totals: dict[str, _Tally] = {}
            for source in (self._mine, self._others):
                for category, tally in source.items():
                    totals.setdefault(category, _Tally(self.dim)).add(tally)
            self._cached_totals = totals
        return self._cached_totals

    def images(self, category: str) -> int:
        self._refresh()
        with self._lock:
            return self._totals().get(category, _Tally(self.dim)).images

    def exemplars(self, category: str) -> int:
        with self._lock:
            return self._totals().get(category, _Tally(self.dim)).exemplars

    def exemplar_counts(self) -> dict[str, int]:
        self._refresh()
        with self._lock:
            return {c: t.exemplars for c, t in sorted(self._totals().items()) if t.exemplars}

    def count(self, category: str) -> int:
        """Catalogue images and exemplars of ``category`` (what its prototype averages)."""
        with self._lock:
            tally = self._totals().get(category)
        return 0 if tally is None else tally.images + tally.exemplars

    def similarities(self, vector: np.ndarray) -> dict[str, float]:
        """Cosine similarity of ``vector`` to each category's prototype."""
        self._refresh()
        with self._lock:
            if self._norms is None:
                totals = {c: t for c, t in self._totals().items() if t.images + t.exemplars > 0}
                categories = sorted(totals)
                matrix = (
                    np.stack([totals[c].total for c in categories])
                    if categories
                    else np.zeros((0, self.dim))
                )
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                self._norms = (categories, matrix / np.where(norms > 0, norms, 1.0))
            categories, unit = self._norms
        if not categories:
            return {}
        scores = unit @ np.asarray(vector, dtype=np.float64)
        return {c: float(s) for c, s in zip(categories, scores, strict=True)}


def _encode(version: str, worker: str, category: str, tally: _Tally) -> dict[str, object]:
    return {
        "key": f"{version}|{worker}|{category}",
        "version": version,
        "worker": worker,
        "category": category,
        "images": tally.images,
        "exemplars": tally.exemplars,
        # float64 bytes: exact sums, about half the size of a JSON list of floats
        "total": base64.b64encode(tally.total.astype(np.float64).tobytes()).decode("ascii"),
    }


def _decode(record: dict, dim: int) -> _Tally:
    tally = _Tally(dim)
    tally.images = int(record["images"])
    tally.exemplars = int(record["exemplars"])
    tally.total = np.frombuffer(base64.b64decode(record["total"]), dtype=np.float64).copy()
    return tally
