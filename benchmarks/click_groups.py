"""How pure are the groups the click graph forms (``train --click-groups``), by Louvain resolution?

    .venv/bin/python benchmarks/click_groups.py --pairs demo/data/training-pairs --sets demo/sets \\
        [--resolutions 1,0.5,0.3,0.2,0.1] [--by-version]

Reads the training pairs as ``lookalike train`` does (held-out pairs left out by id), builds the
graph ``lookalike.training.click_groups`` builds, and only then reads the split's folders, to
measure each grouping after the fact: groups, images grouped, purity (share of grouped images in
their group's majority category), completeness (share of each category in its largest group).
``--by-version`` also measures the clicks of each serving model version alone: one round of
clicks against the rounds together. One JSON line per grouping.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _pseudo_labels as pl
import torch
from learning_variants import _categories

from lookalike.clicks import read_pairs
from lookalike.evaluation import pair_key
from lookalike.events import TrainingPair
from lookalike.training.click_groups import click_groups
from lookalike.training.pair_data import split_pairs


def measure(pairs: list[TrainingPair], sets: Path, resolution: float) -> dict:
    keys = sorted({pair_key(p) for p in pairs} | {p.positive for p in pairs})
    row = {key: i for i, key in enumerate(keys)}
    queries = torch.tensor([row[pair_key(p)] for p in pairs])
    positives = torch.tensor([row[p.positive] for p in pairs])
    groups = click_groups(queries, positives, len(keys), resolution)
    return {"images": len(keys)} | pl.purity(groups.tolist(), _categories(keys, sets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, required=True, help="the training-pairs folder")
    parser.add_argument("--sets", type=Path, required=True, help="the split's folders")
    parser.add_argument("--resolutions", default="1,0.5,0.3,0.2,0.1")
    parser.add_argument("--by-version", action="store_true")
    args = parser.parse_args()
    pairs, _ = split_pairs(read_pairs(args.pairs), 0.1)
    rounds = {"all": pairs}
    if args.by_version:
        for pair in pairs:
            rounds.setdefault(pair.model_version, []).append(pair)
    for name, chosen in rounds.items():
        for resolution in (float(r) for r in args.resolutions.split(",")):
            found = measure(chosen, args.sets, resolution)
            line = {"clicks_of": name, "pairs": len(chosen), "resolution": resolution} | found
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
