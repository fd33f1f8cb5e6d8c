"""Calibrating category validation: inject wrong categories into a labelled folder, run the
validator the way the stream does, and measure precision and recall of its alerts.

Images arrive in a random order in micro-batches; each batch is judged against what was indexed
before it, then indexed under its *declared* (possibly wrong) category, exactly as the worker
does. So the first images of each category cannot be judged, and mislabelled images pollute the
evidence for later ones.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..encoders import Encoder
from ..errors import ConfigurationError
from ..evaluation import embed_folder, labelled_images
from ..index import IndexPoint, VectorIndex
from ..index.edge import EdgeIndex
from .validator import CategoryValidator, Upload, ValidationSettings

THRESHOLDS = [round(float(t), 2) for t in np.arange(0.05, 1.0, 0.05)]


@dataclass(frozen=True)
class Judged:
    mislabelled: bool
    outcome: str
    predicted: str | None
    declared: str
    confidence: float


def metrics_at(judged: list[Judged], threshold: float) -> dict[str, float]:
    flagged = [
        j
        for j in judged
        if j.outcome != "cannot_judge" and j.predicted != j.declared and j.confidence >= threshold
    ]
    true_positive = sum(j.mislabelled for j in flagged)
    mislabelled = sum(j.mislabelled for j in judged)
    precision = true_positive / len(flagged) if flagged else 1.0
    recall = true_positive / mislabelled if mislabelled else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold,
        "flagged": len(flagged),
        "true_positives": true_positive,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def _declared_categories(
    labels: list[str], mislabel_rate: float, rng: random.Random
) -> tuple[list[str], set[int]]:
    """Each image's declared category: its own, except for a ``mislabel_rate`` share given
    another category at random. Returns (declared, indices of the mislabelled)."""
    categories = sorted(set(labels))
    wrong = set(rng.sample(range(len(labels)), round(mislabel_rate * len(labels))))
    declared = [
        rng.choice([c for c in categories if c != true]) if i in wrong else true
        for i, true in enumerate(labels)
    ]
    return declared, wrong


def _replay(
    encoder: Encoder,
    settings: ValidationSettings,
    vectors: np.ndarray,
    declared: list[str],
    wrong: set[int],
    batch_size: int,
    progress: bool,
) -> list[Judged]:
    """The stream, micro-batch by micro-batch: judge against what came before, then index."""
    with tempfile.TemporaryDirectory(prefix="validate-eval-") as folder:
        index = EdgeIndex(Path(folder), background=False)  # exact k-NN: no HNSW graph built
        try:
            index.ensure_collection(encoder.version, encoder.dim)
            validator = CategoryValidator(
                index, encoder.version, encoder.dim, settings, load_prototypes=False
            )
            batches = range(0, len(declared), batch_size)
            return [
                judged
                for start in tqdm(batches, desc="validating", unit="batch", disable=not progress)
                for judged in _judge_batch(
                    index, validator, vectors, declared, wrong, range(start, start + batch_size)
                )
            ]
        finally:
            index.close()


def _judge_batch(
    index: VectorIndex,
    validator: CategoryValidator,
    vectors: np.ndarray,
    declared: list[str],
    wrong: set[int],
    rows: range,
) -> list[Judged]:
    """One micro-batch: judged against what came before it, then indexed."""
    uploads = [
        Upload(f"img-{i}", f"seller-{i % 50}", declared[i], vectors[i])
        for i in rows
        if i < len(declared)
    ]
    judged = [
        Judged(
            int(upload.image_id.removeprefix("img-")) in wrong,
            verdict.outcome,
            verdict.predicted,
            upload.category,
            verdict.confidence,
        )
        for upload, verdict in zip(uploads, validator.judge(uploads, every_score=True), strict=True)
    ]
    index.upsert(
        validator.version,
        [
            IndexPoint(
                u.image_id,
                u.vector,
                {"image_id": u.image_id, "category": u.category, "seller_id": u.seller_id},
            )
            for u in uploads
        ],
    )
    validator.observe(uploads, {})
    return judged


def validate_eval(
    dataset: Path,
    encoder: Encoder,
    settings: ValidationSettings,
    mislabel_rate: float = 0.1,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    pairs = labelled_images(dataset)
    rng = random.Random(seed)
    rng.shuffle(pairs)
    categories = sorted({c for _, c in pairs})
    if len(categories) < 2:
        raise ConfigurationError(f"{dataset} needs at least two categories (a folder each)")
    if not 0.0 <= mislabel_rate <= 1.0:
        raise ConfigurationError(f"mislabel rate must be between 0 and 1, not {mislabel_rate}")
    declared, wrong = _declared_categories([c for _, c in pairs], mislabel_rate, rng)
    vectors = embed_folder(encoder, pairs, progress=progress)
    judged = _replay(encoder, settings, vectors, declared, wrong, batch_size, progress)
    at_default = metrics_at(judged, settings.threshold)
    return {
        "dataset": str(dataset),
        "images": len(pairs),
        "categories": len(categories),
        "mislabel_rate": mislabel_rate,
        "mislabelled": len(wrong),
        "seed": seed,
        "model_version": encoder.version,
        "settings": asdict(settings),
        "cannot_judge": sum(j.outcome == "cannot_judge" for j in judged),
        **{k: at_default[k] for k in ("threshold", "precision", "recall", "f1", "flagged")},
        "curve": [metrics_at(judged, t) for t in THRESHOLDS],
    }
