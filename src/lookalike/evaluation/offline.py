"""Offline retrieval quality of an encoder on labelled folders (one sub-folder per category)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import ConfigurationError
from ..images import decode_image
from .compare import compare_scores
from .datasets import labelled_images
from .metrics import (
    RetrievalMetrics,
    anchored_orders,
    leave_one_out_orders,
    per_query_metrics,
    ranking_metrics,
    retrieval_metrics,
)


def embed_folder(
    encoder: Any, pairs: Sequence[tuple[Path, str]], batch: int = 32, progress: bool = True
) -> np.ndarray:
    """Embed (file, label) pairs the way the worker does (safe decode, preprocessing, batches)."""
    size = encoder.preprocessing.resize
    out = []
    with tqdm(total=len(pairs), desc="embedding", unit="img", disable=not progress) as bar:
        for start in range(0, len(pairs), batch):
            pixels = [
                encoder.preprocess(
                    decode_image(path.read_bytes(), max_pixels=50_000_000, target_size=size)
                )
                for path, _ in pairs[start : start + batch]
            ]
            out.append(encoder.embed_tensors(pixels))
            bar.update(len(pixels))
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)


def evaluate(
    encoder: Any,
    dataset: Path | None = None,
    *,
    gallery: Path | None = None,
    queries: Path | None = None,
    progress: bool = True,
) -> RetrievalMetrics:
    """Retrieval quality of ``encoder`` on labelled folders (one sub-folder per category).

    ``dataset``: every image queries all the others. ``gallery`` + ``queries``: the queries
    are not in the gallery. Rankings are exact cosine (what a brute-force index returns); mAP
    needs the full ranking of every query, not just a top-k.
    """
    if dataset is not None:
        pairs = labelled_images(dataset)
        vectors = embed_folder(encoder, pairs, progress=progress)
        return retrieval_metrics(vectors, [label for _, label in pairs])
    if gallery is None or queries is None:
        raise ConfigurationError("give a dataset folder, or both --gallery and --queries")
    gallery_pairs, query_pairs = labelled_images(gallery), labelled_images(queries)
    return retrieval_metrics(
        embed_folder(encoder, query_pairs, progress=progress),
        [label for _, label in query_pairs],
        embed_folder(encoder, gallery_pairs, progress=progress),
        [label for _, label in gallery_pairs],
    )


def compare_on_folder(
    encoders: Mapping[str, Any],
    dataset: Path,
    baseline: str,
    progress: bool = True,
    anchor: str | None = None,
    anchor_slots: int = 0,
) -> dict[str, Any]:
    """Every encoder on the same labelled folder (each image queries all the others), each
    embedding the images itself: means with bootstrap intervals, and each one's paired
    difference from ``baseline``. Give encoders loaded in the same precision (fp32) so a
    difference is the models', not the arithmetic's.

    ``anchor`` (one of ``encoders``' names) and ``anchor_slots``: score every model's rankings
    as search serves them with ``LOOKALIKE_SEARCH_ANCHOR_SLOTS``, the anchor's top
    ``anchor_slots`` kept on each first page (the anchor itself is scored unchanged)."""
    pairs = labelled_images(dataset)
    labels = [label for _, label in pairs]
    vectors = {
        name: embed_folder(encoder, pairs, progress=progress) for name, encoder in encoders.items()
    }
    if anchor is None or not anchor_slots:
        per_model = {name: per_query_metrics(found, labels) for name, found in vectors.items()}
    else:
        kept = leave_one_out_orders(vectors[anchor])
        per_model = {
            name: ranking_metrics(
                anchored_orders(leave_one_out_orders(found), kept, anchor_slots), labels, labels
            )
            for name, found in vectors.items()
        }
    report = compare_scores(per_model, baseline)
    versions = {name: encoder.version for name, encoder in encoders.items()}
    served = {"anchor": anchor, "anchor_slots": anchor_slots} if anchor and anchor_slots else {}
    return {
        "eval_dir": str(dataset),
        "images": len(pairs),
        "versions": versions,
        **served,
        **report,
    }
