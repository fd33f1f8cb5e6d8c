"""The learning loop's parts: the decision log, the rollout rule, and the cycle's steps around a
rollout (a fake worker stands in for the API here; the integration test runs the real one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lookalike.errors import ConfigurationError, Conflict, NotFound, RolloutError
from lookalike.learning import (
    DecisionLog,
    LearnCycle,
    LearnPolicy,
    approve,
    one_cycle_at_a_time,
    refusals,
    reject,
)
from lookalike.settings import Settings


def test_decisions_are_durable_ordered_and_repeats_collapse(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    first = log.record("skipped", "3 new pairs", details={"new_pairs": 3}, collapse=True)
    again = log.record("skipped", "5 new pairs", details={"new_pairs": 5}, collapse=True)
    assert again.id == first.id and again.details == {"new_pairs": 5}
    trained = log.record("trained", "ok", "cand-1", {"pairs_total": 40})
    log.record("skipped", "0 new pairs", collapse=True)  # not the latest kind: a new row
    log.close()
    reopened = DecisionLog(tmp_path)
    assert [d.kind for d in reopened.recent()] == ["skipped", "trained", "skipped"]
    assert reopened.last("trained").details == {"pairs_total": 40}
    assert reopened.last("trained", "other") is None
    assert reopened.get(trained.id).candidate == "cand-1"
    with pytest.raises(NotFound, match="learn status"):
        reopened.get(999)
    with pytest.raises(ValueError):
        reopened.record("maybe", "?")  # type: ignore[arg-type]


def report(serving: dict[str, float], candidate: dict[str, float]) -> dict[str, Any]:
    def estimates(values: dict[str, float]) -> dict[str, dict[str, float]]:
        return {k: {"value": v, "low": v - 0.01, "high": v + 0.01} for k, v in values.items()}

    gain = candidate["map"] - serving["map"]
    return {
        "models": {"serving": estimates(serving), "candidate": estimates(candidate)},
        "difference": {"candidate": {"map": {"value": gain, "low": gain - 0.01, "high": gain}}},
    }


def test_the_rule_refuses_worse_short_and_recall_losing_candidates() -> None:
    base = {"map": 0.60, "recall_at_10": 0.98}
    assert refusals(report(base, {"map": 0.65, "recall_at_10": 0.98}), 0.02, 0.0) == []
    short = refusals(report(base, {"map": 0.61, "recall_at_10": 0.99}), 0.02, 0.0)
    assert len(short) == 1 and "below the margin 0.02" in short[0]
    # Worse is refused whatever the margin (even a negative one).
    worse = refusals(report(base, {"map": 0.59, "recall_at_10": 0.98}), -1.0, 0.0)
    assert len(worse) == 1 and worse[0].startswith("worse on the holdout")
    recall = refusals(report(base, {"map": 0.70, "recall_at_10": 0.96}), 0.02, 0.0)
    assert len(recall) == 1 and "Recall@10 0.9600 < serving 0.9800" in recall[0]
    assert refusals(report(base, {"map": 0.70, "recall_at_10": 0.975}), 0.02, 0.01) == []


class FakeWorker:
    """The worker's rollout routes, as the cycle sees them."""

    def __init__(self, candidate: str | None, ready: bool = True, gate_refuses: bool = False):
        self.candidate = candidate
        self.ready = ready
        self.gate_refuses = gate_refuses
        self.calls: list[str] = []

    def status(self) -> dict[str, Any]:
        gate = {
            "ready": self.ready,
            "reasons": [] if self.ready else ["the backfill is not finished"],
        }
        return {
            "candidate": self.candidate,
            "gate": gate,
            "backfill": {"percent": 100.0 if self.ready else 40.0},
            "versions": [
                {"version": "base-v", "encoder": "efficientnet-lite0", "state": "serving"}
            ],
        }

    def promote(self, eval_dir: str) -> dict[str, Any]:
        self.calls.append(f"promote {eval_dir}")
        if self.gate_refuses:
            raise RolloutError("the candidate does not pass the gate: candidate mAP 0.5 < 0.6")
        evaluation = {"candidate": {"map": 0.7}, "serving": {"map": 0.6}, "passed": True}
        return {"serving": self.candidate, "previous": "base-v", "evaluation": evaluation}

    def abort(self) -> dict[str, Any]:
        self.calls.append("abort")
        self.candidate = None
        return {}

    def start(self, encoder: str) -> dict[str, Any]:
        raise AssertionError("no candidate is trained in these tests")


def cycle(
    tmp_path: Path, worker: FakeWorker, approval: bool = False
) -> tuple[LearnCycle, DecisionLog]:
    (tmp_path / "holdout").mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=tmp_path / "data", learn_holdout_dir=tmp_path / "holdout")
    policy = LearnPolicy.from_settings(settings, require_approval=approval, min_new_pairs=5)
    log = DecisionLog(settings.learn_path)
    return LearnCycle(settings, policy, log, worker), log  # type: ignore[arg-type]


def test_too_few_pairs_skips_and_says_how_many(tmp_path: Path) -> None:
    loop, log = cycle(tmp_path, FakeWorker(None))
    decision = loop.step()
    assert decision.kind == "skipped" and decision.reason.startswith("0 new pairs")
    assert "LOOKALIKE_LEARN_MIN_NEW_PAIRS=5" in decision.reason
    assert loop.step().id == decision.id  # a repeat collapses


def test_a_rollout_is_followed_approved_by_a_human_then_promoted(tmp_path: Path) -> None:
    worker = FakeWorker("cand-1", ready=False)
    loop, log = cycle(tmp_path, worker, approval=True)
    started = log.record("rollout_started", "go", "cand-1")
    assert loop.step().kind == "backfilling"
    worker.ready = True
    waiting = loop.step()
    assert waiting.kind == "waiting_for_approval" and f"approve {started.id}" in waiting.reason
    assert worker.calls == []  # nothing promotes without the approval
    with pytest.raises(Conflict, match="not a rollout"):
        approve(log, log.record("skipped", "x").id, worker, "ana")  # type: ignore[arg-type]
    assert approve(log, started.id, worker, "ana").kind == "approved"  # type: ignore[arg-type]
    promoted = loop.step()
    assert promoted.kind == "promoted" and worker.calls == [f"promote {tmp_path / 'holdout'}"]
    assert "gate mAP 0.7000 vs 0.6000" in promoted.reason


def test_a_rejected_or_gate_refused_candidate_is_aborted(tmp_path: Path) -> None:
    worker = FakeWorker("cand-1")
    loop, log = cycle(tmp_path / "a", worker, approval=True)
    started = log.record("rollout_started", "go", "cand-1")
    assert reject(log, started.id, worker, "ana").kind == "rejected"  # type: ignore[arg-type]
    assert worker.calls == ["abort"]
    with pytest.raises(Conflict, match="no longer the worker's candidate"):
        approve(log, started.id, worker, "ana")  # type: ignore[arg-type]

    refusing = FakeWorker("cand-2", gate_refuses=True)
    loop, log = cycle(tmp_path / "b", refusing)
    log.record("rollout_started", "go", "cand-2")
    refused = loop.step()
    assert refused.kind == "refused" and "candidate mAP 0.5 < 0.6" in refused.reason
    assert refusing.calls[-1] == "abort"


def test_a_rollout_the_loop_did_not_start_is_left_alone(tmp_path: Path) -> None:
    worker = FakeWorker("someone-elses")
    loop, _ = cycle(tmp_path, worker)
    decision = loop.step()
    assert decision.kind == "skipped" and "not started by the learning loop" in decision.reason
    assert worker.calls == []


def test_the_policy_needs_a_holdout_and_runs_one_cycle_at_a_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LOOKALIKE_LEARN_HOLDOUT_DIR"):
        LearnPolicy.from_settings(Settings(data_dir=tmp_path))
    with one_cycle_at_a_time(tmp_path), pytest.raises(ConfigurationError, match="let it finish"):
        with one_cycle_at_a_time(tmp_path):
            pass


@pytest.mark.parametrize("field", ["keep_base", "interpolate_base"])
def test_the_policy_takes_the_base_back_as_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """The base's weight in the vector and its share of the weights, from the environment,
    overridden per run (`learn run --keep-base 0`), and never 1 (nothing learned)."""
    (tmp_path / "holdout").mkdir()
    variable = f"LOOKALIKE_LEARN_{field.upper()}"
    monkeypatch.setenv(variable, "0.7")
    settings = Settings(data_dir=tmp_path, learn_holdout_dir=tmp_path / "holdout")
    assert getattr(LearnPolicy.from_settings(settings), field) == 0.7
    assert getattr(LearnPolicy.from_settings(settings, **{field: 0.0}), field) == 0.0
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ValueError, match=f"learn_{field}"):
        Settings(data_dir=tmp_path)


def test_the_policy_trains_with_its_batch_size_and_the_tail_only_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "holdout").mkdir()
    monkeypatch.setenv("LOOKALIKE_LEARN_BATCH_SIZE", "64")
    monkeypatch.setenv("LOOKALIKE_LEARN_TAIL_BLOCKS", "3")
    monkeypatch.setenv("LOOKALIKE_LEARN_VIEWS", "5")
    monkeypatch.setenv("LOOKALIKE_LEARN_CLICK_GROUPS", "0.3")
    settings = Settings(data_dir=tmp_path, learn_holdout_dir=tmp_path / "holdout")
    config = LearnPolicy.from_settings(settings).train_config()
    assert (config.batch_size, config.tail_blocks, config.views) == (64, 3, 5)
    assert config.click_groups == 0.3
    assert config.tail_learning_rate > 0
    assert not LearnPolicy.from_settings(settings).continue_serving
    monkeypatch.setenv("LOOKALIKE_LEARN_CONTINUE", "true")
    again = Settings(data_dir=tmp_path, learn_holdout_dir=tmp_path / "holdout")
    assert LearnPolicy.from_settings(again).continue_serving
    assert not LearnPolicy.from_settings(again, continue_serving=False).continue_serving
    head_only = LearnPolicy.from_settings(settings, tail=False, batch_size=32).train_config()
    assert (head_only.batch_size, head_only.tail_blocks, head_only.views) == (32, 0, 1)
    assert head_only.tail_learning_rate == 0.0


def test_learn_run_wait_steps_until_the_loop_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lookalike.cli import learn as learn_cli

    log = DecisionLog(tmp_path)
    steps = iter(["rollout_started", "backfilling", "backfilling", "promoted", "skipped"])

    class Steps:
        def step(self) -> Any:
            return log.record(next(steps), "why", "cand-1")  # type: ignore[arg-type]

    monkeypatch.setattr(learn_cli, "BACKFILL_POLL", 0.0)
    learn_cli._loop(Steps(), log, wait=True, interval=None, as_json=True)
    printed = [line for line in capsys.readouterr().out.splitlines() if line]
    assert [json.loads(line)["kind"] for line in printed] == [
        "rollout_started",
        "backfilling",
        "backfilling",
        "promoted",
    ]
    # Without --wait one step is taken; a failed step exits 1 with its reason.
    learn_cli._loop(Steps(), log, wait=False, interval=None, as_json=False)
    assert "skipped" in capsys.readouterr().out

    class Broken:
        def step(self) -> Any:
            raise ConfigurationError("set LOOKALIKE_LEARN_HOLDOUT_DIR")

    with pytest.raises(SystemExit) as exit_info:
        learn_cli._loop(Broken(), log, wait=False, interval=None, as_json=False)
    assert exit_info.value.code == 1 and log.recent(1)[0].kind == "failed"


def test_a_candidate_continues_the_serving_checkpoint_only_when_it_fits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The head-only checkpoint continues a head-only run; a run that also trains the base's
    blocks cannot continue it, so it starts from the base and the log says why."""
    from fakes import TinyEncoder

    from lookalike.encoders.finetuned import ProjectionHead, save_checkpoint
    from lookalike.training import TrainConfig

    base = TinyEncoder()
    path = save_checkpoint(tmp_path / "model.pt", base, ProjectionHead(base.dim, base.dim))
    serving = {"version": "finetuned-v1", "encoder": str(path)}
    continued = LearnCycle._continued(TrainConfig(epochs=2), serving, base)
    assert continued.init_from == str(path) and continued.epochs == 2
    with caplog.at_level("WARNING", logger="lookalike.learning.cycle"):
        tail = TrainConfig(epochs=2, tail_learning_rate=3e-4)
        assert LearnCycle._continued(tail, serving, base).init_from is None
    assert "from the base, not the serving model" in caplog.text and "--tail" in caplog.text
