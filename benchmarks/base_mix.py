"""Holdout metrics of fine-tuned checkpoints with their base mixed in, by weight or by anchor
slots, to choose ``W`` or ``N``.

    .venv/bin/python benchmarks/base_mix.py --holdout demo/sets/holdout demo/model/model.pt [...]

For each checkpoint, every holdout image is embedded by the base encoder and by the checkpoint
(fp32), and scored leave-one-out as ``lookalike eval`` scores them: for each weight, the vectors
normalize(W x base + (1 - W) x tuned), which is what ``lookalike train --keep-base W`` saves and
serves; for each number of slots, the tuned ranking with the base's top N kept on each first
page of 10, which is what search serves with the base as the anchor and
``LOOKALIKE_SEARCH_ANCHOR_SLOTS=N`` (and what ``lookalike eval --against --anchor-slots N``
reports). One JSON line per checkpoint and weight or slots. A weight or a number of slots
chosen on this holdout is optimistic for it, so a last line per checkpoint says what choosing
the slots costs: two random halves of the queries (seed 0), the fewest slots that reach the
base's Recall@10 chosen on each half and scored on the other (``cross_validated``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encoders import configure_threads, load_encoder
from lookalike.evaluation import labelled_images, retrieval_metrics
from lookalike.evaluation.metrics import (
    METRICS,
    anchored_orders,
    leave_one_out_orders,
    ranking_metrics,
)

WEIGHTS = (0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8)
SLOTS = (1, 2, 3, 4, 5)


def holdout_vectors(name: str, files: list[Path]) -> np.ndarray:
    encoder = load_encoder(name, precision="fp32")
    parts = [
        encoder.embed_images([Image.open(f).convert("RGB") for f in files[i : i + 32]])
        for i in range(0, len(files), 32)
    ]
    vectors = np.concatenate(parts).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cross_validated(
    per_slots: dict[int, dict[str, np.ndarray]], base: dict[str, np.ndarray]
) -> dict[str, object]:
    """Anchor slots chosen on one half of the queries (the fewest that reach the base's
    Recall@10 there; the most tried if none does), scored on the other half, and both ways."""
    queries = len(base["map"])
    one, other = halves(queries)
    chosen, scored = [], {name: np.zeros(queries) for name in ("map", "recall_at_10")}
    for choose_on, score_on in ((one, other), (other, one)):
        needed = base["recall_at_10"][choose_on].mean()
        slots = next(
            (n for n in SLOTS if per_slots[n]["recall_at_10"][choose_on].mean() >= needed),
            SLOTS[-1],
        )
        chosen.append(slots)
        for name in scored:
            scored[name][score_on] = per_slots[slots][name][score_on]
    return {
        "cross_validated": {
            "anchor_slots_chosen": chosen,
            "map": round(float(scored["map"].mean()), 4),
            "recall_at_10": round(float(scored["recall_at_10"].mean()), 4),
            "base_recall_at_10": round(float(base["recall_at_10"].mean()), 4),
        }
    }


def holdout_command(doc: str) -> tuple[argparse.Namespace, list[Path], list[str]]:
    """The command line these holdout benchmarks share (``--holdout``, ``--base``,
    ``--threads``, checkpoints), parsed, and the holdout's image files and labels."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("--base", default="efficientnet-lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    configure_threads(args.threads)
    labelled = labelled_images(args.holdout)
    return args, [f for f, _ in labelled], [c for _, c in labelled]


def halves(queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Two random halves of the queries (seed 0), to choose on one and score on the other."""
    first = np.random.default_rng(0).permutation(queries)[: queries // 2]
    return first, np.setdiff1d(np.arange(queries), first)


def main() -> None:
    args, files, labels = holdout_command(__doc__)
    base = holdout_vectors(args.base, files)
    base_orders = leave_one_out_orders(base)
    base_found = ranking_metrics(base_orders, labels, labels)
    for checkpoint in args.checkpoints:
        tuned = holdout_vectors(checkpoint, files)
        tuned_orders = leave_one_out_orders(tuned)
        per_slots = {}
        for slots in SLOTS:
            found = per_slots[slots] = ranking_metrics(
                anchored_orders(tuned_orders, base_orders, slots), labels, labels
            )
            figures = {name: round(float(found[name].mean()), 4) for name in METRICS}
            print(
                json.dumps({"checkpoint": checkpoint, "anchor_slots": slots} | figures), flush=True
            )
        print(
            json.dumps({"checkpoint": checkpoint} | cross_validated(per_slots, base_found)),
            flush=True,
        )
        for weight in WEIGHTS:
            mixed = weight * base + (1 - weight) * tuned
            mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
            found = retrieval_metrics(mixed, labels).as_dict()
            figures = {k: round(v, 4) for k, v in found.items() if isinstance(v, float)}
            print(json.dumps({"checkpoint": checkpoint, "weight": weight} | figures), flush=True)


if __name__ == "__main__":
    main()
