"""Anchor slots (or the base's scores fused in) only on the searches the serving model is least
sure of: those whose top-1 similarity is among the lowest share of the queries'. Tried against
plain anchor slots on a labelled holdout, each choice cross-validated over two random halves.

    .venv/bin/python benchmarks/gated_anchor.py --holdout S/holdout OUT/model.pt [...]

Prints, per checkpoint, how well the top-1 similarity (and other signals a search has) flags
the pages with no right item (AUC), then for plain slots and for the gated variants: the best
mAP at the base's Recall@10 chosen on the whole holdout, and chosen on one half and scored on
the other. (README, "How much a rebuild moves": no gain, so not built.)
"""

from __future__ import annotations

import json

import numpy as np
from base_mix import halves, holdout_command, holdout_vectors

from lookalike.evaluation.metrics import leave_one_out_orders, ranking_metrics
from lookalike.search.blending import PAGE, blend_pages

SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
SLOTS = range(1, 9)
FUSED = (0.3, 0.5, 0.7, 0.8)


def similarities(vectors: np.ndarray) -> np.ndarray:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return sims


def auc(signal: np.ndarray, miss: np.ndarray) -> float:
    """How often a page with no right item has a lower signal than one with (ties count half)."""
    low, high = signal[miss], signal[~miss]
    return float(np.mean([(x < high).mean() + 0.5 * (x == high).mean() for x in low]))


Variants = dict[tuple[str, float, float], dict[str, np.ndarray]]


def best(
    variants: Variants, base_recall: np.ndarray, keys: list, on: np.ndarray
) -> tuple[str, float, float] | None:
    """The variant with the best mAP over the queries ``on`` among those that reach the base's
    Recall@10 there (None if none does)."""
    reach = [k for k in keys if variants[k]["recall_at_10"][on].mean() >= base_recall[on].mean()]
    return max(reach, key=lambda k: variants[k]["map"][on].mean(), default=None)


def main() -> None:
    args, files, labels = holdout_command(__doc__)
    queries = len(files)
    base = holdout_vectors(args.base, files)
    base_sims, base_orders = similarities(base), leave_one_out_orders(base)
    base_recall = ranking_metrics(base_orders, labels, labels)["recall_at_10"]
    one, other = halves(queries)
    for checkpoint in args.checkpoints:
        tuned = holdout_vectors(checkpoint, files)
        sims, orders = similarities(tuned), leave_one_out_orders(tuned)
        top1 = sims.max(axis=1)
        miss = ranking_metrics(orders, labels, labels)["recall_at_10"] == 0
        overlap = np.array(
            [len(set(a[:PAGE]) & set(b[:PAGE])) for a, b in zip(orders, base_orders, strict=True)]
        )
        signals = {"top1_similarity": auc(top1, miss), "overlap_with_base": auc(overlap, miss)}
        variants: Variants = {}
        for share in SHARES:
            gate = top1 <= np.quantile(top1, share)
            for slots in SLOTS:
                served = [
                    blend_pages(row.tolist(), kept[:slots].tolist(), PAGE, slots) if g else row
                    for row, kept, g in zip(orders, base_orders, gate, strict=True)
                ]
                variants[("slots", share, slots)] = ranking_metrics(
                    np.array(served), labels, labels
                )
            for weight in FUSED:
                fused = np.where(gate[:, None], (1 - weight) * sims + weight * base_sims, sims)
                ranked = np.argsort(-fused, axis=1, kind="stable")[:, :-1]
                variants[("fused", share, weight)] = ranking_metrics(ranked, labels, labels)

        report: dict[str, object] = {
            "checkpoint": checkpoint,
            "misses": int(miss.sum()),
            "auc": signals,
        }
        plain = [k for k in variants if k[0] == "slots" and k[1] == 1.0]
        for name, keys in (("plain_slots", plain), ("gated", list(variants))):
            whole = best(variants, base_recall, keys, np.arange(queries))
            scored = {m: np.zeros(queries) for m in ("map", "recall_at_10")}
            chosen = []
            for choose_on, score_on in ((one, other), (other, one)):
                pick = best(variants, base_recall, keys, choose_on) or max(
                    keys, key=lambda k: variants[k]["recall_at_10"][choose_on].mean()
                )
                chosen.append(list(pick))
                for m in scored:
                    scored[m][score_on] = variants[pick][m][score_on]
            report[name] = {
                "whole_holdout": whole
                and {
                    "choice": list(whole),
                    "map": round(float(variants[whole]["map"].mean()), 4),
                    "recall_at_10": round(float(variants[whole]["recall_at_10"].mean()), 4),
                },
                "cross_validated": {
                    "choices": chosen,
                    "map": round(float(scored["map"].mean()), 4),
                    "recall_at_10": round(float(scored["recall_at_10"].mean()), 4),
                },
            }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
