"""Retrieval quality metrics, category = relevance.

Each query ranks the gallery by cosine similarity (vectors are L2-normalised); a gallery item is
relevant when it has the query's label. Leave-one-out when the queries are the gallery.

:func:`per_query_metrics` keeps one value per query and metric, so a confidence interval can be
drawn by resampling queries (:mod:`.confidence`); :func:`retrieval_metrics` is their mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: The per-query metrics, in the order of :class:`RetrievalMetrics`' fields after the counts.
METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "precision_at_10", "map", "ndcg_at_10")


@dataclass(frozen=True)
class RetrievalMetrics:
    queries: int
    gallery: int
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    precision_at_10: float
    map: float
    ndcg_at_10: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def per_query_metrics(
    queries: np.ndarray,
    query_labels: Sequence[str],
    gallery: np.ndarray | None = None,
    gallery_labels: Sequence[str] | None = None,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Each metric of :data:`METRICS` per counted query (a query whose label has no other
    example cannot be retrieved and is not counted). With no gallery, each query searches all
    the *other* queries (leave-one-out)."""
    leave_one_out = gallery is None
    gallery = queries if gallery is None else gallery
    gallery_labels = query_labels if gallery_labels is None else gallery_labels
    q_lab = np.asarray(query_labels)
    g_lab = np.asarray(gallery_labels)
    n_gallery = len(g_lab) - (1 if leave_one_out else 0)
    k = min(10, n_gallery)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for start in range(0, len(q_lab), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        if leave_one_out:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")
        if leave_one_out:
            order = order[:, :-1]  # the query itself sorts last
        relevant = g_lab[order] == q_lab[start : start + chunk, None]
        for row in relevant:
            total = row.sum()
            if total == 0:
                continue
            hits = np.flatnonzero(row)
            ideal = discounts[: min(int(total), k)].sum()
            values["recall_at_1"].append(float(row[:1].any()))
            values["recall_at_5"].append(float(row[:5].any()))
            values["recall_at_10"].append(float(row[:10].any()))
            values["precision_at_10"].append(float(row[:k].mean()))
            values["map"].append(float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1))))
            values["ndcg_at_10"].append(float((row[:k] * discounts).sum() / ideal))
    return {name: np.asarray(found, dtype=np.float64) for name, found in values.items()}


def summarise(per_query: dict[str, np.ndarray], gallery: int) -> RetrievalMetrics:
    counted = len(per_query["map"])
    means = {name: float(per_query[name].mean()) if counted else 0.0 for name in METRICS}
    return RetrievalMetrics(queries=counted, gallery=gallery, **means)


def retrieval_metrics(
    queries: np.ndarray,
    query_labels: Sequence[str],
    gallery: np.ndarray | None = None,
    gallery_labels: Sequence[str] | None = None,
    chunk: int = 512,
) -> RetrievalMetrics:
    """Recall@k (a relevant item in the top k), Precision@10, mAP and nDCG@10 (binary gains).

    With no gallery, each query searches all the *other* queries (leave-one-out).
    """
    per_query = per_query_metrics(queries, query_labels, gallery, gallery_labels, chunk)
    return summarise(per_query, len(query_labels if gallery_labels is None else gallery_labels))
