"""The validator's evidence kept in memory: per-category prototypes (running mean vectors) and,
for an embedded index, a mirror of the catalogue for exact k-NN in one matrix product."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np

from ..index import Hit


class Prototypes:
    """Running mean vector per category (catalogue images and exemplars)."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, category: str, vector: np.ndarray) -> None:
        with self._lock:
            if category in self._sums:
                self._sums[category] += vector
            else:
                self._sums[category] = np.array(vector, dtype=np.float64)
            self._counts[category] += 1

    def remove(self, category: str, vector: np.ndarray) -> None:
        with self._lock:
            if category in self._sums:
                self._sums[category] -= vector
                self._counts[category] -= 1
                if self._counts[category] <= 0:
                    del self._sums[category]
                    self._counts.pop(category, None)

    def count(self, category: str) -> int:
        return self._counts.get(category, 0)

    def similarities(self, vector: np.ndarray) -> dict[str, float]:
        with self._lock:
            if not self._sums:
                return {}
            categories = list(self._sums)
            matrix = np.stack([self._sums[c] for c in categories])
        norms = np.linalg.norm(matrix, axis=1)
        scores = (matrix @ vector) / np.where(norms > 0, norms, 1.0)
        return {c: float(v) for c, v, n in zip(categories, scores, norms, strict=True) if n > 0}


class VectorMirror:
    """The index's vectors, categories and sellers in one matrix, for exact k-NN in one matmul.

    Used when Qdrant is embedded: this process is then the index's only writer, so the mirror
    (loaded from the index at start, updated on every write) holds exactly what the index does,
    and a batch of 32 queries costs one matrix product instead of 32 Python-level scans.
    """

    def __init__(self, dim: int) -> None:
        self._vectors = np.zeros((1024, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._categories: list[str] = []
        self._sellers: list[str | None] = []
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def upsert(
        self, image_id: str, category: str, seller_id: str | None, vector: np.ndarray
    ) -> None:
        with self._lock:
            row = self._rows.get(image_id)
            if row is None:
                row = len(self._ids)
                if row == len(self._vectors):
                    self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
                self._rows[image_id] = row
                self._ids.append(image_id)
                self._categories.append(category)
                self._sellers.append(seller_id)
            self._vectors[row] = vector
            self._categories[row] = category
            self._sellers[row] = seller_id

    def set_category(self, image_id: str, category: str) -> None:
        with self._lock:
            if (row := self._rows.get(image_id)) is not None:
                self._categories[row] = category

    def get(self, image_id: str) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(image_id)
            return None if row is None else self._vectors[row].copy()

    def remove(self, image_id: str) -> None:
        """Drop an image: the last row moves into its place."""
        with self._lock:
            row = self._rows.pop(image_id, None)
            if row is None:
                return
            last = len(self._ids) - 1
            if row != last:
                moved = self._ids[last]
                self._vectors[row] = self._vectors[last]
                self._ids[row] = moved
                self._categories[row] = self._categories[last]
                self._sellers[row] = self._sellers[last]
                self._rows[moved] = row
            self._ids.pop()
            self._categories.pop()
            self._sellers.pop()

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        with self._lock:
            n = len(self._ids)
            if n == 0:
                return [[] for _ in queries]
            scores = queries @ self._vectors[:n].T
            k = min(k, n)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            results = []
            for q, candidates in enumerate(top):
                ranked = candidates[np.argsort(-scores[q, candidates])]
                results.append(
                    [
                        Hit(
                            self._ids[r],
                            float(scores[q, r]),
                            {
                                "image_id": self._ids[r],
                                "category": self._categories[r],
                                "seller_id": self._sellers[r],
                            },
                        )
                        for r in ranked
                    ]
                )
            return results
