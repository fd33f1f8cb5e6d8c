"""Retrieval quality metrics, category = relevance.

Each query ranks the gallery by cosine similarity (vectors are L2-normalised); a gallery item is
relevant when it has the query's label. Leave-one-out when the queries are the gallery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


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
    leave_one_out = gallery is None
    gallery = queries if gallery is None else gallery
    gallery_labels = query_labels if gallery_labels is None else gallery_labels
    q_lab = np.asarray(query_labels)
    g_lab = np.asarray(gallery_labels)
    n_gallery = len(g_lab) - (1 if leave_one_out else 0)
    k = min(10, n_gallery)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict.fromkeys(("r1", "r5", "r10", "p10", "ap", "ndcg"), 0.0)
    counted = 0
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
                continue  # a label with no other example cannot be retrieved
            counted += 1
            sums["r1"] += row[:1].any()
            sums["r5"] += row[:5].any()
            sums["r10"] += row[:10].any()
            sums["p10"] += row[:k].mean()
            hits = np.flatnonzero(row)
            sums["ap"] += float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))
            ideal = discounts[: min(int(total), k)].sum()
            sums["ndcg"] += float((row[:k] * discounts).sum() / ideal)
    n = max(counted, 1)
    return RetrievalMetrics(
        queries=counted,
        gallery=len(g_lab),
        recall_at_1=float(sums["r1"] / n),
        recall_at_5=float(sums["r5"] / n),
        recall_at_10=float(sums["r10"] / n),
        precision_at_10=float(sums["p10"] / n),
        map=float(sums["ap"] / n),
        ndcg_at_10=float(sums["ndcg"] / n),
    )
