"""Holdout metrics of fine-tuned checkpoints mixed with their base, by weight, to choose ``W``.

    .venv/bin/python benchmarks/base_mix.py --holdout demo/sets/holdout demo/model/model.pt [...]

For each checkpoint, every holdout image is embedded by the base encoder and by the checkpoint
(fp32), and each weight's vectors normalize(W x base + (1 - W) x tuned), which is what
``lookalike train --keep-base W`` saves and serves, are scored leave-one-out as ``lookalike
eval`` scores them. One JSON line per checkpoint and weight. The weight that keeps the base's
Recall@10 is then chosen on this holdout, so its figures are optimistic for it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encoders import configure_threads, load_encoder
from lookalike.evaluation import labelled_images, retrieval_metrics

WEIGHTS = (0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8)


def holdout_vectors(name: str, files: list[Path]) -> np.ndarray:
    encoder = load_encoder(name, precision="fp32")
    parts = [
        encoder.embed_images([Image.open(f).convert("RGB") for f in files[i : i + 32]])
        for i in range(0, len(files), 32)
    ]
    vectors = np.concatenate(parts).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("--base", default="efficientnet-lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    configure_threads(args.threads)
    labelled = labelled_images(args.holdout)
    files, labels = [f for f, _ in labelled], [c for _, c in labelled]
    base = holdout_vectors(args.base, files)
    for checkpoint in args.checkpoints:
        tuned = holdout_vectors(checkpoint, files)
        for weight in WEIGHTS:
            mixed = weight * base + (1 - weight) * tuned
            mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
            found = retrieval_metrics(mixed, labels).as_dict()
            figures = {k: round(v, 4) for k, v in found.items() if isinstance(v, float)}
            print(json.dumps({"checkpoint": checkpoint, "weight": weight} | figures), flush=True)


if __name__ == "__main__":
    main()
