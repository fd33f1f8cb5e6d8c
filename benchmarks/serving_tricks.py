"""Search-time ways to use trained models, scored on the holdout from saved vectors alone.

    .venv/bin/python benchmarks/serving_tricks.py --holdout demo/sets/holdout \\
        demo/vec/base.holdout.npy demo/vec/tail3-aug-5ep-b64.holdout.npy [...]

Reads holdout vectors saved by ``learning_variants.py --save-vectors`` (``*.holdout.npy``, one
row per holdout image in ``labelled_images`` order; ``--variants base`` saves the base's) and
prints, for each file, its holdout metrics alone and with query expansion (each query averaged
with its k nearest results, weighted by similarity cubed, then searched again: alpha-QE), and
the metrics of all the files concatenated (a search over the models side by side). Nothing
trains; every figure comes from the same leave-one-out scoring as ``lookalike eval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lookalike.evaluation import labelled_images, retrieval_metrics

EXPANSIONS = (1, 3, 5, 10)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def expanded(x: np.ndarray, k: int, alpha: float = 3.0) -> np.ndarray:
    """Each row averaged with its ``k`` nearest other rows, weighted by similarity ** alpha."""
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    weights = np.take_along_axis(similarity, nearest, 1).clip(0) ** alpha
    return normalise(x + (weights[..., None] * x[nearest]).sum(1))


def scores(x: np.ndarray, labels: list[str]) -> dict[str, float]:
    m = retrieval_metrics(x, labels).as_dict()
    return {k: round(m[k], 4) for k in ("map", "recall_at_1", "recall_at_10")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("vectors", type=Path, nargs="+", help="saved *.holdout.npy files")
    args = parser.parse_args()
    labels = [category for _, category in labelled_images(args.holdout)]
    tables = [normalise(np.load(path).astype(np.float32)) for path in args.vectors]
    for path, x in zip(args.vectors, tables, strict=True):
        if len(x) != len(labels):
            raise SystemExit(f"{path}: {len(x)} rows for {len(labels)} holdout images")
        row = {"vectors": path.name, "alone": scores(x, labels)}
        row |= {f"expanded_{k}": scores(expanded(x, k), labels) for k in EXPANSIONS}
        print(json.dumps(row), flush=True)
    if len(tables) > 1:
        side_by_side = normalise(np.hstack(tables))
        print(json.dumps({"concatenated": len(tables), "alone": scores(side_by_side, labels)}))


if __name__ == "__main__":
    main()
