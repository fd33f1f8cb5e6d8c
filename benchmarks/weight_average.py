"""Fine-tuned checkpoints averaged weight by weight (a uniform "model soup"): the same base,
tail blocks and head, trained from the same start with other seeds or clicks, so that each
weight lines up with its counterparts; with ``--towards-base S``, the result (or a single
checkpoint) pulled back towards the base, S of every weight the base's (WiSE-FT, what
``lookalike train --interpolate-base S`` saves), to try shares without re-reading the images.

    lookalike train ... --seed 0 --out R0; lookalike train ... --seed 1 --out R1; ...
    .venv/bin/python benchmarks/weight_average.py /tmp/soup.pt R0/model.pt R1/model.pt R2/model.pt
    .venv/bin/python benchmarks/weight_average.py --towards-base 0.2 /tmp/r0-wise.pt R0/model.pt
    .venv/bin/python benchmarks/base_mix.py --holdout S/holdout /tmp/soup.pt /tmp/r0-wise.pt

The result loads like any checkpoint ``lookalike train`` writes (an encoder, a rollout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lookalike.encoders import load_encoder
from lookalike.encoders.finetuned import blend_states, towards_base

#: What must agree for the weights to line up.
LAYOUT = ("format", "base_version", "head_config", "tail_blocks", "keep_base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the averaged checkpoint")
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument(
        "--towards-base",
        type=float,
        default=0.0,
        help="the base's share of every weight of the result (0: the average alone)",
    )
    args = parser.parse_args()
    loaded = [torch.load(p, map_location="cpu", weights_only=False) for p in args.checkpoints]
    for path, checkpoint in zip(args.checkpoints[1:], loaded[1:], strict=True):
        differ = [key for key in LAYOUT if checkpoint.get(key) != loaded[0].get(key)]
        if differ:
            raise SystemExit(f"{path} differs from {args.checkpoints[0]} in {differ}: not averaged")
    averaged = dict(loaded[0])
    uniform = [1 / len(loaded)] * len(loaded)
    for part in ("head_state", "tail_state"):
        if loaded[0][part]:
            averaged[part] = blend_states([c[part] for c in loaded], uniform)
    if args.towards_base:
        base = load_encoder(averaged["base_encoder"], precision="fp32")
        if base.version != averaged["base_version"]:
            raise SystemExit(f"the installed base is {base.version}, not the checkpoints' base")
        try:
            averaged["head_state"], averaged["tail_state"] = towards_base(
                averaged["head_state"],
                averaged["tail_state"],
                base,
                averaged["tail_blocks"],
                args.towards_base,
            )
        except ValueError as exc:
            raise SystemExit(f"{exc}: trained with --dim or --hidden, not interpolated") from None
    averaged["metadata"] = dict(
        loaded[0]["metadata"],
        averaged=[str(p) for p in args.checkpoints],
        interpolate_base=args.towards_base,
    )
    torch.save(averaged, args.out)
    print(
        f"averaged {len(loaded)} checkpoints into {args.out}"
        + (f", {args.towards_base} of each weight the base's" if args.towards_base else "")
    )


if __name__ == "__main__":
    main()
