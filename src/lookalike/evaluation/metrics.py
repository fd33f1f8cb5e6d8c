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

from ..search.blending import PAGE, blend_pages

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
    parts = []
    for start in range(0, len(query_labels), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        if leave_one_out:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")
        if leave_one_out:
            order = order[:, :-1]  # the query itself sorts last
        parts.append(ranking_metrics(order, query_labels[start : start + chunk], gallery_labels))
    return {name: np.concatenate([np.zeros(0), *(p[name] for p in parts)]) for name in METRICS}


def ranking_metrics(
    orders: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str]
) -> dict[str, np.ndarray]:
    """Each metric of :data:`METRICS` per counted query, from each query's ranking of the
    gallery (row i: gallery indices, best first), however it was ranked."""
    q_lab = np.asarray(query_labels)
    g_lab = np.asarray(gallery_labels)
    k = min(10, orders.shape[1])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for row in g_lab[orders] == q_lab[:, None]:
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


def leave_one_out_orders(vectors: np.ndarray) -> np.ndarray:
    """Each row's ranking of all the other rows by cosine similarity, best first."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :-1]  # the row itself sorts last


def anchored_orders(orders: np.ndarray, anchor_orders: np.ndarray, slots: int) -> np.ndarray:
    """Each ranking as search serves it with ``LOOKALIKE_SEARCH_ANCHOR_SLOTS`` = ``slots``:
    the anchor's top ``slots`` kept on the first page of 10 (:func:`blend_pages`)."""
    if slots == 0:
        return orders
    return np.array(
        [
            blend_pages(row.tolist(), anchor_row[:slots].tolist(), PAGE, slots)
            for row, anchor_row in zip(orders, anchor_orders, strict=True)
        ],
        dtype=orders.dtype,
    ).reshape(orders.shape)


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
