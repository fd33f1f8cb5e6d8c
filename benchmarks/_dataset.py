"""Shared by the benchmarks: the labelled image folder they run on."""

from __future__ import annotations

from pathlib import Path

from lookalike.evaluation import labelled_images

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared/datasets/clothing-small/train"


__all__ = ["DEFAULT_DATASET", "RESULTS", "labelled_images"]
