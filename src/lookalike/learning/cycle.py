"""One step of the learning loop: follow the rollout it started, or train and judge a candidate.

Each run looks at where things stand and takes the next step, so the loop can be run by a
scheduler (cron, a systemd timer, a Kubernetes CronJob) or by `lookalike learn run --every`,
survives restarts at any point, and never holds state in memory between runs:

* no rollout in progress: count the pairs that arrived since the last candidate; too few, or
  the version served before the last promotion still dual-written (the worker would refuse a
  rollout) -> *skipped*. Otherwise train a candidate on them (held-out pairs left out), compare
  it with the serving version on the labelled holdout and the held-out clicks (both in fp32,
  from the same images), and either *refuse* it (with the figures) or *start a rollout* through
  the worker;
* a rollout this loop started: wait for the backfill (*backfilling*), then promote through the
  worker's gate, which evaluates both versions on the holdout again and refuses a candidate that
  is worse there (*promoted*, or *refused* and the rollout aborted); with approval required, it
  waits for `lookalike learn approve` first (*waiting for approval*).
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..clicks import read_pairs
from ..encoders import Encoder
from ..errors import ConfigurationError, RolloutError
from ..evaluation import compare_on_folder
from ..events import TrainingPair
from ..settings import Settings
from ..training import TrainConfig, fp32_encoder, train_candidate, warm_start
from .decisions import Decision, DecisionLog
from .judge import refusals
from .worker_rollout import WorkerRollout, record_in_state, serving_record

log = logging.getLogger(__name__)

#: Learning rate of the base's last block when LOOKALIKE_LEARN_TAIL is on (`train --tail-lr`).
TAIL_LEARNING_RATE = 3e-4


@dataclass(frozen=True)
class LearnPolicy:
    """The loop's settings (LOOKALIKE_LEARN_*), overridable per run from the CLI."""

    holdout_dir: Path
    min_new_pairs: int
    margin: float
    recall_tolerance: float
    require_approval: bool
    epochs: int
    batch_size: int
    tail: bool
    tail_blocks: int
    views: int
    click_groups: float
    keep_base: float
    interpolate_base: float
    continue_serving: bool

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LearnPolicy:
        values = {
            "holdout_dir": settings.learn_holdout_dir,
            "min_new_pairs": settings.learn_min_new_pairs,
            "margin": settings.learn_margin,
            "recall_tolerance": settings.learn_recall_tolerance,
            "require_approval": settings.learn_require_approval,
            "epochs": settings.learn_epochs,
            "batch_size": settings.learn_batch_size,
            "tail": settings.learn_tail,
            "tail_blocks": settings.learn_tail_blocks,
            "views": settings.learn_views,
            "click_groups": settings.learn_click_groups,
            "keep_base": settings.learn_keep_base,
            "interpolate_base": settings.learn_interpolate_base,
            "continue_serving": settings.learn_continue,
        } | {k: v for k, v in overrides.items() if v is not None}
        if values["holdout_dir"] is None:
            raise ConfigurationError(
                "the learning loop judges candidates on a labelled holdout: set "
                "LOOKALIKE_LEARN_HOLDOUT_DIR (or --holdout-dir) to a folder with a sub-folder "
                "per category, never indexed or clicked"
            )
        if not Path(values["holdout_dir"]).is_dir():
            raise ConfigurationError(f"holdout folder {values['holdout_dir']} is not a folder")
        return cls(**values)

    def train_config(self) -> TrainConfig:
        """What a candidate trains with: the tail's settings only when the tail trains."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            tail_learning_rate=TAIL_LEARNING_RATE if self.tail else 0.0,
            tail_blocks=self.tail_blocks if self.tail else 0,
            views=self.views if self.tail else 1,
            click_groups=self.click_groups,
        )


@contextmanager
def one_cycle_at_a_time(folder: Path) -> Iterator[None]:
    """Hold the loop's lock: a scheduled run that overlaps a long one must not train twice."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "cycle.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"another `lookalike learn run` holds {folder / 'cycle.lock'}: let it finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LearnCycle:
    def __init__(
        self,
        settings: Settings,
        policy: LearnPolicy,
        decisions: DecisionLog,
        rollout: WorkerRollout,
        progress: bool = False,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.decisions = decisions
        self.rollout = rollout
        self.progress = progress

    def step(self) -> Decision:
        """Take the next step; blocking (training and evaluation run here, for minutes)."""
        status = self.rollout.status()
        if status.get("candidate"):
            return self._follow(status)
        return self._maybe_train(status)

    # --- a rollout in progress ----------------------------------------------------------------
    def _follow(self, status: dict[str, Any]) -> Decision:
        candidate = status["candidate"]
        started = self.decisions.last("rollout_started", candidate)
        if started is None:
            return self.decisions.record(
                "skipped",
                f"a rollout of {candidate} not started by the learning loop is in progress",
                candidate,
                collapse=True,
            )
        gate = status.get("gate") or {}
        if not gate.get("ready"):
            backfill = status.get("backfill") or {}
            why = "; ".join(gate.get("reasons", [])) or "the backfill is running"
            return self.decisions.record(
                "backfilling",
                f"{why} ({backfill.get('percent', 0)}% scanned)",
                candidate,
                {"backfill": backfill},
                collapse=True,
            )
        if self.policy.require_approval and self.decisions.last("approved", candidate) is None:
            return self.decisions.record(
                "waiting_for_approval",
                f"backfill done; approve with `lookalike learn approve {started.id}` (or "
                f"`lookalike learn reject {started.id}`)",
                candidate,
                collapse=True,
            )
        return self._promote(candidate)

    def _promote(self, candidate: str) -> Decision:
        try:
            result = self.rollout.promote(str(self.policy.holdout_dir))
        except RolloutError as exc:
            self.rollout.abort()
            return self.decisions.record(
                "refused", f"the promotion gate refused it (rollout aborted): {exc}", candidate
            )
        evaluation = result.get("evaluation") or {}
        return self.decisions.record(
            "promoted",
            f"serving {result['serving']} (previous {result['previous']}); gate mAP "
            f"{evaluation.get('candidate', {}).get('map', float('nan')):.4f} vs "
            f"{evaluation.get('serving', {}).get('map', float('nan')):.4f}",
            candidate,
            {"promotion": result},
        )

    # --- no rollout: train and judge a candidate --------------------------------------------
    def _maybe_train(self, status: dict[str, Any]) -> Decision:
        pairs = self._pairs()
        last = self.decisions.last("trained")
        seen = int(last.details.get("pairs_total", 0)) if last else 0
        new = len(pairs) - seen
        if new < self.policy.min_new_pairs:
            return self.decisions.record(
                "skipped",
                f"{new} new pairs since the last candidate ({len(pairs)} in all): fewer than "
                f"LOOKALIKE_LEARN_MIN_NEW_PAIRS={self.policy.min_new_pairs}",
                details={"pairs_total": len(pairs), "new_pairs": new},
                collapse=True,
            )
        if status.get("previous"):
            # The worker refuses a rollout while the previous version is written: say so now,
            # not after minutes of training.
            return self.decisions.record(
                "skipped",
                f"{new} new pairs, but {status['previous']} (the version served before the "
                "last promotion) is still dual-written: `lookalike rollout retire` it (or "
                "`rollout anchor` to keep it on each page) so the next candidate can roll out",
                details={"pairs_total": len(pairs), "new_pairs": new},
                collapse=True,
            )
        serving = serving_record(status)
        reference = fp32_encoder(self.settings, serving["encoder"])
        trained = self._train(pairs, serving, reference)
        return self._judge(trained, reference, status)

    def _pairs(self) -> list[TrainingPair]:
        folder = self.settings.training_pairs_dir
        return read_pairs(folder) if folder.exists() else []

    def _train(
        self, pairs: list[TrainingPair], serving: dict[str, Any], reference: Encoder
    ) -> Decision:
        # A fine-tuned serving version trains its successor from the same base encoder.
        base_encoder = getattr(reference, "base", None)
        base = base_encoder.name if base_encoder is not None else serving["encoder"]
        out = self.settings.learn_path / "candidates" / time.strftime("%Y%m%dT%H%M%S")
        config = self.policy.train_config()
        if self.policy.continue_serving and base_encoder is not None:
            config = self._continued(config, serving, base_encoder)
        started = time.monotonic()
        summary = train_candidate(
            self.settings,
            pairs,
            base,
            out,
            config,
            indexed_version=serving["version"],
            reference=("serving", reference),
            keep_base=self.policy.keep_base,
            interpolate_base=self.policy.interpolate_base,
            progress=self.progress,
        )
        seconds = round(time.monotonic() - started, 1)
        return self.decisions.record(
            "trained",
            f"{summary['trained']} of {base} on {summary['train_pairs']} pairs, "
            f"{summary['epochs']} epochs in {seconds:.0f} s"
            + (f", continuing {serving['version']}" if config.init_from else "")
            + (f", the base mixed in at {self.policy.keep_base}" if self.policy.keep_base else "")
            + (
                f", {self.policy.interpolate_base} of each weight the base's"
                if self.policy.interpolate_base
                else ""
            ),
            summary["version"],
            summary | {"pairs_total": len(pairs), "seconds": seconds},
        )

    @staticmethod
    def _continued(config: TrainConfig, serving: dict[str, Any], base: Encoder) -> TrainConfig:
        """``config`` starting from the serving checkpoint, when it can continue it (the same
        trained blocks and head); otherwise from the base, with the reason logged."""
        continued = replace(config, init_from=serving["encoder"])
        try:
            warm_start(continued, base)
        except ConfigurationError as exc:
            log.warning("training the candidate from the base, not the serving model: %s", exc)
            return config
        return continued

    def _judge(self, trained: Decision, reference: Encoder, status: dict[str, Any]) -> Decision:
        encoders = {
            "serving": reference,
            "candidate": fp32_encoder(self.settings, trained.details["model"]),
        }
        # With an anchor kept on each page, both are judged as search would serve them.
        anchor, slots = record_in_state(status, "anchor"), int(status.get("anchor_slots") or 0)
        if anchor is not None and slots:
            encoders["anchor"] = fp32_encoder(self.settings, anchor["encoder"])
        log.info("comparing candidate and serving on the holdout %s", self.policy.holdout_dir)
        holdout = compare_on_folder(
            encoders,
            self.policy.holdout_dir,
            "serving",
            progress=self.progress,
            anchor="anchor" if "anchor" in encoders else None,
            anchor_slots=slots,
        )
        figures = {"holdout": holdout, "held_out_clicks": trained.details["held_out_clicks"]}
        reasons = refusals(holdout, self.policy.margin, self.policy.recall_tolerance)
        if reasons:
            return self.decisions.record("refused", "; ".join(reasons), trained.candidate, figures)
        self.rollout.start(trained.details["model"])
        serving_map = holdout["models"]["serving"]["map"]["value"]
        candidate_map = holdout["models"]["candidate"]["map"]["value"]
        return self.decisions.record(
            "rollout_started",
            f"holdout mAP {candidate_map:.4f} vs serving {serving_map:.4f} (margin "
            f"{self.policy.margin}): dual-writing and backfilling",
            trained.candidate,
            figures,
        )
