"""`lookalike learn run | status | approve | reject`: the closed learning loop's CLI."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Any

import click

from ..errors import LookalikeError
from ..settings import Settings
from .common import data_dir_option, fail, port_option, settings_from, setup_logging, show_progress

#: Decisions after which a waiting run (--wait) stops: the next step needs news or a human.
SETTLED = {"skipped", "refused", "promoted", "waiting_for_approval", "rejected", "failed"}
#: Seconds between looks at a running backfill (--wait, --every).
BACKFILL_POLL = 5.0


@click.group("learn")
def learn() -> None:
    """The closed learning loop: train on new clicks, judge, roll out, promote.

    `learn run` takes the next step (run it from a scheduler, or with --every); it talks to the
    running worker (rollouts run there) and reads the pairs under the data dir. Decisions are
    logged in DATA_DIR/learn/decisions.sqlite: `learn status`.
    """


def _open(settings: Settings) -> tuple[Any, Any]:
    from ..learning import DecisionLog, WorkerRollout

    return DecisionLog(settings.learn_path), WorkerRollout(settings)


def _show(decision: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(decision.as_dict()))
    else:
        who = f" {decision.candidate}" if decision.candidate else ""
        click.echo(f"#{decision.id} {decision.at[:19]} {decision.kind}{who}: {decision.reason}")


@learn.command("run")
@click.option(
    "--holdout-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Labelled holdout folder [env LOOKALIKE_LEARN_HOLDOUT_DIR].",
)
@click.option("--min-new-pairs", type=int, default=None, help="[env LOOKALIKE_LEARN_MIN_NEW_PAIRS]")
@click.option("--margin", type=float, default=None, help="[env LOOKALIKE_LEARN_MARGIN]")
@click.option("--epochs", type=int, default=None, help="[env LOOKALIKE_LEARN_EPOCHS]")
@click.option(
    "--batch-size", type=click.IntRange(2), default=None, help="[env LOOKALIKE_LEARN_BATCH_SIZE]"
)
@click.option("--tail/--head-only", default=None, help="[env LOOKALIKE_LEARN_TAIL]")
@click.option("--tail-blocks", type=int, default=None, help="[env LOOKALIKE_LEARN_TAIL_BLOCKS]")
@click.option("--views", type=int, default=None, help="[env LOOKALIKE_LEARN_VIEWS]")
@click.option(
    "--click-groups",
    type=click.FloatRange(0),
    default=None,
    help="[env LOOKALIKE_LEARN_CLICK_GROUPS]",
)
@click.option(
    "--keep-base",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="[env LOOKALIKE_LEARN_KEEP_BASE]",
)
@click.option(
    "--interpolate-base",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="[env LOOKALIKE_LEARN_INTERPOLATE_BASE]",
)
@click.option(
    "--continue/--from-base",
    "continue_serving",
    default=None,
    help="Start from the serving fine-tuned model, or the base [env LOOKALIKE_LEARN_CONTINUE].",
)
@click.option(
    "--require-approval/--no-approval", default=None, help="[env LOOKALIKE_LEARN_REQUIRE_APPROVAL]"
)
@click.option("--wait", is_flag=True, help="Keep stepping until the loop settles (e.g. promoted).")
@click.option(
    "--every",
    type=float,
    default=None,
    is_flag=False,
    flag_value=-1.0,
    help="Run forever, a cycle every SECONDS [bare flag: LOOKALIKE_LEARN_INTERVAL].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per decision.")
@data_dir_option
@port_option
def learn_run(
    holdout_dir: Path | None,
    min_new_pairs: int | None,
    margin: float | None,
    epochs: int | None,
    batch_size: int | None,
    tail: bool | None,
    tail_blocks: int | None,
    views: int | None,
    click_groups: float | None,
    keep_base: float | None,
    interpolate_base: float | None,
    continue_serving: bool | None,
    require_approval: bool | None,
    wait: bool,
    every: float | None,
    as_json: bool,
    data_dir: Path | None,
    port: int | None,
) -> None:
    """Take the loop's next step: skip (too few new pairs), train + judge + start a rollout, wait
    for the backfill, or promote. Exits 1 when the step failed (the reason is logged too)."""
    from ..encoders import configure_threads
    from ..learning import LearnCycle, LearnPolicy, one_cycle_at_a_time

    settings = settings_from(data_dir=data_dir, api_port=port)
    setup_logging(settings)
    try:
        policy = LearnPolicy.from_settings(
            settings,
            holdout_dir=holdout_dir,
            min_new_pairs=min_new_pairs,
            margin=margin,
            epochs=epochs,
            batch_size=batch_size,
            tail=tail,
            tail_blocks=tail_blocks,
            views=views,
            click_groups=click_groups,
            keep_base=keep_base,
            interpolate_base=interpolate_base,
            continue_serving=continue_serving,
            require_approval=require_approval,
        )
        configure_threads(settings.torch_threads)
    except LookalikeError as exc:
        fail(str(exc))
    decisions, rollout = _open(settings)
    cycle = LearnCycle(settings, policy, decisions, rollout, progress=show_progress())
    interval = settings.learn_interval if every == -1.0 else every
    try:
        with one_cycle_at_a_time(settings.learn_path):
            _loop(cycle, decisions, wait, interval, as_json)
    except LookalikeError as exc:
        fail(str(exc))
    finally:
        rollout.close()
        decisions.close()


def _loop(cycle: Any, decisions: Any, wait: bool, interval: float | None, as_json: bool) -> None:
    while True:
        decision = _step(cycle, decisions)
        _show(decision, as_json)
        settled = decision.kind in SETTLED
        if interval is None and (settled or not wait):
            if decision.kind == "failed":
                fail(decision.reason)
            return
        # A rollout in progress is followed closely; otherwise wait for the next cycle.
        time.sleep(interval if settled and interval is not None else BACKFILL_POLL)


def _step(cycle: Any, decisions: Any) -> Any:
    try:
        return cycle.step()
    except LookalikeError as exc:
        return decisions.record("failed", str(exc))


@learn.command("status")
@click.option("--limit", default=20, show_default=True, help="Latest decisions to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: decisions, newest first.")
@data_dir_option
def learn_status(limit: int, as_json: bool, data_dir: Path | None) -> None:
    """The loop's latest decisions, newest first, each with why (--json: with the figures:
    training summary, holdout and held-out-click metrics with their intervals)."""
    from ..learning import DecisionLog

    settings = settings_from(data_dir=data_dir)
    log = DecisionLog(settings.learn_path)
    try:
        recent = log.recent(limit)
    finally:
        log.close()
    if as_json:
        click.echo(json.dumps({"decisions": [d.as_dict() for d in recent]}))
        return
    if not recent:
        click.echo("no decisions yet: run `lookalike learn run`")
    for decision in recent:
        _show(decision, False)


def _human_decision(action: str, number: int, data_dir: Path | None, port: int | None) -> None:
    from .. import learning

    settings = settings_from(data_dir=data_dir, api_port=port)
    decisions, rollout = _open(settings)
    try:
        decision = getattr(learning, action)(decisions, number, rollout, getpass.getuser())
    except LookalikeError as exc:
        fail(str(exc))
    finally:
        rollout.close()
        decisions.close()
    _show(decision, False)


@learn.command("approve")
@click.argument("decision_id", type=int)
@data_dir_option
@port_option
def learn_approve(decision_id: int, data_dir: Path | None, port: int | None) -> None:
    """Allow the loop to promote the candidate of rollout DECISION_ID (the next `learn run`
    promotes it if the worker's gate passes)."""
    _human_decision("approve", decision_id, data_dir, port)


@learn.command("reject")
@click.argument("decision_id", type=int)
@data_dir_option
@port_option
def learn_reject(decision_id: int, data_dir: Path | None, port: int | None) -> None:
    """Abort the rollout of DECISION_ID's candidate."""
    _human_decision("reject", decision_id, data_dir, port)


COMMANDS = [learn]
