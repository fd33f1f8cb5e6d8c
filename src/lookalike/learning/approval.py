"""A human's say over a candidate the loop rolled out (LOOKALIKE_LEARN_REQUIRE_APPROVAL)."""

from __future__ import annotations

from ..errors import Conflict
from .decisions import Decision, DecisionLog
from .worker_rollout import WorkerRollout


def _rollout_in_progress(decisions: DecisionLog, number: int, rollout: WorkerRollout) -> Decision:
    """The rollout decision ``number`` names (the id of its rollout_started or
    waiting_for_approval decision), if its candidate is still the worker's candidate."""
    named = decisions.get(number)
    started = decisions.last("rollout_started", named.candidate) if named.candidate else None
    if started is None or named.kind not in ("rollout_started", "waiting_for_approval"):
        raise Conflict(
            f"decision {number} is {named.kind!r}, not a rollout: approve or reject the id of a "
            "'rollout_started' or 'waiting_for_approval' decision (`lookalike learn status`)"
        )
    if rollout.status().get("candidate") != started.candidate:
        raise Conflict(
            f"{started.candidate} is no longer the worker's candidate (promoted, refused or "
            "aborted since): nothing to approve or reject"
        )
    return started


def approve(decisions: DecisionLog, number: int, rollout: WorkerRollout, by: str) -> Decision:
    """Allow the next cycle to promote the candidate (the gate still has to pass)."""
    started = _rollout_in_progress(decisions, number, rollout)
    return decisions.record(
        "approved",
        f"approved by {by}: the next `lookalike learn run` promotes it if the gate passes",
        started.candidate,
    )


def reject(decisions: DecisionLog, number: int, rollout: WorkerRollout, by: str) -> Decision:
    """Abort the candidate's rollout now."""
    started = _rollout_in_progress(decisions, number, rollout)
    rollout.abort()
    return decisions.record("rejected", f"rejected by {by}: rollout aborted", started.candidate)
