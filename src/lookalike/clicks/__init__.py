"""From clicks to training data: the click -> search join, training-pair files, and a buyer
simulator that plays the loop against a running API."""

from .join import ClickJoin, ClickOutcome, Rejected
from .pair_files import PairFileWriter, iter_pairs, read_pairs

__all__ = [
    "ClickJoin",
    "ClickOutcome",
    "PairFileWriter",
    "Rejected",
    "iter_pairs",
    "read_pairs",
]
