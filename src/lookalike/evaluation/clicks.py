"""Held-out clicks as a test set: does a model rank what buyers clicked above the rest?

Each held-out pair ranks its clicked image among a *pool*: every catalogue image the held-out
pairs name (clicked or shown and skipped), less the other images its query clicked (those are
relevant too, not misses). Every pair counts, not only the quarter that carry logged negatives,
so a few hundred pairs tell models apart (with their bootstrap intervals). Vectors are given
per image key, so every model is scored on the same pairs from images it embedded itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from ..events import TrainingPair

#: Per-pair click metrics; ``beats_logged_negatives`` only over pairs with logged negatives.
CLICK_METRICS = ("reciprocal_rank", "hit_at_10", "beats_logged_negatives")


def pair_key(pair: TrainingPair) -> str:
    """The query's key in a table of vectors: its image id, or its kept upload's hash."""
    return pair.query.image_id or f"sha:{pair.query.content_sha256}"


def resolvable(pairs: Sequence[TrainingPair], vectors: Mapping[str, np.ndarray]) -> list[int]:
    """Indices of the pairs whose query and clicked image both have a vector."""
    return [i for i, p in enumerate(pairs) if pair_key(p) in vectors and p.positive in vectors]


def click_scores(
    pairs: Sequence[TrainingPair], vectors: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Each metric of :data:`CLICK_METRICS` per pair (pairs whose query or clicked image has no
    vector are left out: score models on :func:`resolvable` pairs common to all of them)."""
    kept = [pairs[i] for i in resolvable(pairs, vectors)]
    shown = {n for p in kept for n in p.negatives if n in vectors}
    pool = sorted({p.positive for p in kept} | shown)
    column = {key: i for i, key in enumerate(pool)}
    table = _normalised(np.stack([vectors[key] for key in pool])) if pool else np.zeros((0, 1))
    clicked_by_query: dict[str, set[str]] = defaultdict(set)
    for pair in kept:
        clicked_by_query[pair_key(pair)].add(pair.positive)
    scores: dict[str, list[float]] = {name: [] for name in CLICK_METRICS}
    for pair in kept:
        sims = table @ _normalised(vectors[pair_key(pair)][None, :])[0]
        others = [column[c] for c in clicked_by_query[pair_key(pair)] if c != pair.positive]
        sims[others] = -np.inf  # also relevant: neither a miss nor a hit
        if pair.query.image_id in column:
            sims[column[pair.query.image_id]] = -np.inf  # the query never ranks itself
        clicked = sims[column[pair.positive]]
        rank = 1 + int((sims > clicked).sum())
        scores["reciprocal_rank"].append(1.0 / rank)
        scores["hit_at_10"].append(float(rank <= 10))
        negatives = [column[n] for n in pair.negatives if n in column]
        if negatives:
            scores["beats_logged_negatives"].append(float(clicked > sims[negatives].max()))
    return {name: np.asarray(values, dtype=np.float64) for name, values in scores.items()}


def _normalised(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
