"""Whether a candidate may be rolled out: the rule, apart from the loop that applies it.

A candidate goes on only when, on the operator's labelled holdout, its mAP beats the serving
version's by the margin (and is never lower, whatever the margin) and its Recall@10 is not lower
by more than the tolerance. Held-out clicks are reported beside it, not judged: they are the
buyers' view of the same question, and too few early on to decide alone.
"""

from __future__ import annotations

from typing import Any


def refusals(holdout: dict[str, Any], margin: float, recall_tolerance: float) -> list[str]:
    """Why the candidate may not be rolled out (empty: it may). ``holdout``: a
    ``compare_on_folder`` report with models ``serving`` and ``candidate``."""
    serving = holdout["models"]["serving"]
    candidate = holdout["models"]["candidate"]
    map_s, map_c = serving["map"]["value"], candidate["map"]["value"]
    r10_s, r10_c = serving["recall_at_10"]["value"], candidate["recall_at_10"]["value"]
    gain = holdout["difference"]["candidate"]["map"]
    reasons = []
    if map_c < map_s:
        reasons.append(f"worse on the holdout: mAP {map_c:.4f} < serving {map_s:.4f}")
    elif map_c - map_s < margin:
        reasons.append(
            f"holdout mAP {map_c:.4f} vs serving {map_s:.4f}: gain {map_c - map_s:+.4f} "
            f"(95% CI {gain['low']:+.4f} to {gain['high']:+.4f}) is below the margin {margin}"
        )
    if r10_c < r10_s - recall_tolerance:
        reasons.append(
            f"holdout Recall@10 {r10_c:.4f} < serving {r10_s:.4f}"
            + (f" - tolerance {recall_tolerance}" if recall_tolerance else "")
        )
    return reasons
