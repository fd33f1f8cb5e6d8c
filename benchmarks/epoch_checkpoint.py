"""A kept copy of `lookalike train`'s per-epoch state (``OUT/train-state.pt``, overwritten after
every epoch) saved as a loadable checkpoint, so one run's epochs can each be scored:

    cp OUT/train-state.pt /tmp/epoch1.pt          # after epoch 1 (the log says when), and so on
    .venv/bin/python benchmarks/epoch_checkpoint.py /tmp/epoch1.pt /tmp/epoch1-model.pt
    .venv/bin/python benchmarks/base_mix.py --holdout S/holdout /tmp/epoch1-model.pt

The checkpoint holds that epoch's head and trained blocks on the base (``--base``), as
``lookalike train`` would have saved it had it stopped there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lookalike.encoders.finetuned import ProjectionHead, save_checkpoint
from lookalike.settings import Settings
from lookalike.training import fp32_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", type=Path, help="a copy of OUT/train-state.pt")
    parser.add_argument("out", type=Path, help="where to write the checkpoint")
    parser.add_argument("--base", default="efficientnet-lite0")
    args = parser.parse_args()
    state = torch.load(args.state, map_location="cpu", weights_only=False)
    config = state["config"]
    base = fp32_encoder(Settings(), args.base)
    in_dim = base.dim
    head = ProjectionHead(in_dim, config["out_dim"] or in_dim, config["hidden_dim"])
    head.load_state_dict(state["head"])
    save_checkpoint(
        args.out,
        base,
        head,
        {"epochs": state["epoch"], "config": config},
        tail_state=state["tail"],
        tail_blocks=config["tail_blocks"],
    )
    print(f"{args.out}: epoch {state['epoch']} of {config['epochs']}")


if __name__ == "__main__":
    main()
