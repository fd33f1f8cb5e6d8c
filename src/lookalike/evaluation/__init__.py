"""Retrieval quality, category = relevance: metrics (Recall@k, Precision@10, mAP, nDCG@10),
an encoder's offline evaluation on labelled folders, and the folders themselves."""

from .datasets import labelled_images, split_labelled
from .metrics import RetrievalMetrics, retrieval_metrics
from .offline import embed_folder, evaluate

__all__ = [
    "RetrievalMetrics",
    "embed_folder",
    "evaluate",
    "labelled_images",
    "retrieval_metrics",
    "split_labelled",
]
