"""Retrieval quality, category = relevance: metrics (Recall@k, Precision@10, mAP, nDCG@10) per
query and with bootstrap intervals, an encoder's offline evaluation on labelled folders, models
compared on the same queries, and held-out clicks as a test set."""

from .clicks import CLICK_METRICS, click_scores, pair_key, resolvable
from .compare import compare_scores
from .confidence import Estimate, bootstrap, paired_difference
from .datasets import labelled_images, split_labelled
from .metrics import METRICS, RetrievalMetrics, per_query_metrics, retrieval_metrics
from .offline import compare_on_folder, embed_folder, evaluate

__all__ = [
    "CLICK_METRICS",
    "METRICS",
    "Estimate",
    "RetrievalMetrics",
    "bootstrap",
    "click_scores",
    "compare_on_folder",
    "compare_scores",
    "embed_folder",
    "evaluate",
    "labelled_images",
    "pair_key",
    "paired_difference",
    "per_query_metrics",
    "resolvable",
    "retrieval_metrics",
    "split_labelled",
]
