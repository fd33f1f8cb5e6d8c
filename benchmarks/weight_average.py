"""Fine-tuned checkpoints averaged weight by weight (a uniform "model soup"): the same base,
tail blocks and head, trained from the same start with other seeds or clicks, so that each
weight lines up with its counterparts.

    lookalike train ... --seed 0 --out R0; lookalike train ... --seed 1 --out R1; ...
    .venv/bin/python benchmarks/weight_average.py /tmp/soup.pt R0/model.pt R1/model.pt R2/model.pt
    .venv/bin/python benchmarks/base_mix.py --holdout S/holdout /tmp/soup.pt

The result loads like any checkpoint ``lookalike train`` writes (an encoder, a rollout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

#: What must agree for the weights to line up.
LAYOUT = ("format", "base_version", "head_config", "tail_blocks", "keep_base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the averaged checkpoint")
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args()
    loaded = [torch.load(p, map_location="cpu", weights_only=False) for p in args.checkpoints]
    for path, checkpoint in zip(args.checkpoints[1:], loaded[1:], strict=True):
        differ = [key for key in LAYOUT if checkpoint.get(key) != loaded[0].get(key)]
        if differ:
            raise SystemExit(f"{path} differs from {args.checkpoints[0]} in {differ}: not averaged")
    averaged = dict(loaded[0])
    for part in ("head_state", "tail_state"):
        averaged[part] = {
            name: (
                (sum(c[part][name].double() for c in loaded) / len(loaded)).to(tensor.dtype)
                if tensor.is_floating_point()
                else tensor  # BatchNorm's step counters
            )
            for name, tensor in (loaded[0][part] or {}).items()
        }
    averaged["metadata"] = dict(loaded[0]["metadata"], averaged=[str(p) for p in args.checkpoints])
    torch.save(averaged, args.out)
    print(f"averaged {len(loaded)} checkpoints into {args.out}")


if __name__ == "__main__":
    main()
