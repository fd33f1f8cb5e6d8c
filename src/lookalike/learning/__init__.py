"""The closed learning loop: when enough new click pairs arrived, train a candidate, judge it
against the serving version on a labelled holdout and held-out clicks, roll it out through the
worker, and promote it when the backfill and the gate pass (or a human approves); every
decision logged durably."""

from .approval import approve, reject
from .cycle import LearnCycle, LearnPolicy, one_cycle_at_a_time
from .decisions import KINDS, Decision, DecisionLog
from .judge import refusals
from .worker_rollout import WorkerRollout, serving_record

__all__ = [
    "KINDS",
    "Decision",
    "DecisionLog",
    "LearnCycle",
    "LearnPolicy",
    "WorkerRollout",
    "approve",
    "one_cycle_at_a_time",
    "refusals",
    "reject",
    "serving_record",
]
