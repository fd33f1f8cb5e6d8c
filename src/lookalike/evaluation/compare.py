"""Models compared on the same queries: each metric's mean with its bootstrap interval, and
each candidate's paired difference from the baseline (same queries in every resample)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .confidence import bootstrap, paired_difference


def compare_scores(
    per_model: Mapping[str, Mapping[str, np.ndarray]], baseline: str
) -> dict[str, Any]:
    """``per_model``: model -> metric -> one value per query (the same queries, in the same
    order, for every model). Returns ``{"models": {model: {metric: estimate}}, "difference":
    {model: {metric: estimate of model - baseline}}}`` (estimates as dicts)."""
    if baseline not in per_model:
        raise ValueError(f"baseline {baseline!r} is not among {sorted(per_model)}")
    models = {
        model: {metric: bootstrap(values).as_dict() for metric, values in scores.items()}
        for model, scores in per_model.items()
    }
    difference = {
        model: {
            metric: paired_difference(values, per_model[baseline][metric]).as_dict()
            for metric, values in scores.items()
        }
        for model, scores in per_model.items()
        if model != baseline
    }
    return {"baseline": baseline, "models": models, "difference": difference}
