"""Fine-tuning from clicks: training pairs -> a projection head on a frozen base encoder."""

from .contrastive import EpochReport, TrainConfig, Trainer, info_nce, pair_accuracy
from .pair_data import ApiVectors, IndexVectors, PairTensors, build_pair_tensors, pairs_digest
from .run import train_from_pairs

__all__ = [
    "ApiVectors",
    "EpochReport",
    "IndexVectors",
    "PairTensors",
    "TrainConfig",
    "Trainer",
    "build_pair_tensors",
    "info_nce",
    "pair_accuracy",
    "pairs_digest",
    "train_from_pairs",
]
