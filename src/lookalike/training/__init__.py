"""Fine-tuning from clicks: training pairs -> a projection head on a frozen base encoder."""

from .contrastive import EpochReport, TrainConfig, Trainer, info_nce, pair_accuracy
from .pair_data import (
    ApiVectors,
    IndexVectors,
    PairTensors,
    build_pair_tensors,
    pairs_digest,
    split_pairs,
)
from .run import (
    compare_on_held_out_clicks,
    fp32_encoder,
    train_candidate,
    train_from_pairs,
    warm_start,
)

__all__ = [
    "ApiVectors",
    "EpochReport",
    "IndexVectors",
    "PairTensors",
    "TrainConfig",
    "Trainer",
    "build_pair_tensors",
    "compare_on_held_out_clicks",
    "fp32_encoder",
    "info_nce",
    "pair_accuracy",
    "pairs_digest",
    "split_pairs",
    "train_candidate",
    "train_from_pairs",
    "warm_start",
]
