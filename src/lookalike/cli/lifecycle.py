"""`lookalike update`, `remove`, `versions` and `rollout ...`: the index lifecycle's CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import httpx

from ..errors import LookalikeError
from ..settings import Settings
from .common import (
    api_client,
    call_api,
    data_dir_option,
    fail,
    port_option,
    print_json,
    send_events,
    settings_from,
    setup_logging,
)


def _parse_attrs(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    if not pairs:
        return None
    attrs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--attr takes KEY=VALUE, got {pair!r}")
        attrs[key] = value
    return attrs


sequence_option = click.option(
    "--sequence",
    type=click.IntRange(min=0),
    default=None,
    help="Per-image sequence number: orders this event before event time does.",
)
wait_option = click.option(
    "--wait",
    "wait_seconds",
    default=30.0,
    show_default=True,
    help="Seconds to wait for a starting `lookalike up` to bring up the local broker.",
)


@click.command()
@click.argument("image_id")
@click.option("--category", default=None, help="New category.")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    help="KEY=VALUE; repeatable. Given: the attributes become exactly these.",
)
@click.option("--listing", "listing_id", default=None, help="New listing id.")
@sequence_option
@wait_option
@data_dir_option
def update(
    image_id: str,
    category: str | None,
    attrs: tuple[str, ...],
    listing_id: str | None,
    sequence: int | None,
    wait_seconds: float,
    data_dir: Path | None,
) -> None:
    """Change an indexed image's category or attributes (payload only: no re-embedding)."""
    from ..events import ImageAttributesChanged

    attributes = _parse_attrs(attrs)
    if category is None and attributes is None and listing_id is None:
        fail("give --category, --attr KEY=VALUE or --listing")
    event = ImageAttributesChanged(
        image_id=image_id,
        category=category,
        attributes=attributes,
        listing_id=listing_id,
        sequence=sequence,
    )
    settings = settings_from(data_dir=data_dir)
    setup_logging(settings, "warning")
    send_events(settings, wait_seconds, [event])
    click.echo(f"sent image_attributes_changed {event.event_id} for {image_id}")


@click.command()
@click.argument("image_ids", nargs=-1, required=True)
@click.option("--reason", default="removed", show_default=True, help="Why, e.g. removed or sold.")
@sequence_option
@wait_option
@data_dir_option
def remove(
    image_ids: tuple[str, ...],
    reason: str,
    sequence: int | None,
    wait_seconds: float,
    data_dir: Path | None,
) -> None:
    """Remove images from the index (every model version); older events cannot bring them back."""
    from ..events import ImageRemoved

    events = [ImageRemoved(image_id=i, reason=reason, sequence=sequence) for i in image_ids]
    settings = settings_from(data_dir=data_dir)
    setup_logging(settings, "warning")
    send_events(settings, wait_seconds, events)
    click.echo(f"sent {len(events)} image_removed events to {settings.uploads_topic}")


def _versions_offline(settings: Settings) -> dict[str, Any]:
    """The registry read from the data dir's embedded Qdrant (when no worker holds it)."""
    from ..index import open_index
    from ..rollout import VersionRegistry

    index = open_index(settings)
    try:
        return {"versions": [r.as_dict() for r in VersionRegistry(index).all()]}
    finally:
        index.close()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry records as JSON.")
@port_option
@data_dir_option
def versions(as_json: bool, port: int | None, data_dir: Path | None) -> None:
    """The model versions and their states (serving, candidate, previous, anchor, retired,
    aborted).

    Asks the running worker; with no worker running, reads the data dir (embedded Qdrant) or
    the Qdrant server directly."""
    settings = settings_from(api_port=port, data_dir=data_dir)
    try:
        with api_client(settings) as client:
            body = client.get("/versions").json()
    except httpx.TransportError:
        try:
            body = _versions_offline(settings)
        except LookalikeError as exc:
            fail(str(exc))
    if as_json:
        print_json(body)
        return
    click.echo(f"{'state':<10} {'version':<58} encoder")
    for record in body["versions"]:
        click.echo(f"{record['state']:<10} {record['version']:<58} {record['encoder']}")


@click.group()
def rollout() -> None:
    """Move search to a new model version: start -> (backfill) -> promote -> retire (or anchor).

    These talk to the running worker's API (embedded Qdrant allows one process): start the
    worker first. While a candidate exists every live upload, update and removal is written to
    it too; after promote the old version stays written until retire, so rollback is instant.
    """


def _rollout_call(port: int | None, method: str, path: str, **kwargs: Any) -> Any:
    # Rollout steps may evaluate two encoders on a labelled folder: allow them time.
    return call_api(
        settings_from(api_port=port),
        method,
        path,
        timeout=1800.0,
        hint="rollouts run inside the worker; start it (`lookalike up`) or point --port at it",
        **kwargs,
    )


@rollout.command("start")
@click.argument("encoder")
@port_option
def rollout_start(encoder: str, port: int | None) -> None:
    """Create a candidate version for ENCODER (a name or a fine-tuned .pt path on the worker's
    machine), dual-write live events to it and backfill the catalogue into it."""
    body = _rollout_call(port, "POST", "/rollout/start", json={"encoder": encoder})
    click.echo(f"candidate {body['version']}: backfilling from {body['backfill']['source']}")
    click.echo("follow it with: lookalike rollout status --watch")


def _bar(percent: float, width: int = 30) -> str:
    filled = int(width * percent / 100)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {percent:5.1f}%"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA ?"
    minutes, secs = divmod(int(seconds), 60)
    return f"ETA {minutes}m{secs:02d}s" if minutes else f"ETA {secs}s"


def _progress_line(backfill: dict[str, Any]) -> str:
    rate = backfill.get("images_per_second")
    return (
        f"{_bar(backfill['percent'])} {backfill.get('scanned', 0)}/{backfill['total']} scanned, "
        f"{backfill.get('embedded', 0)} embedded, {backfill.get('skipped', 0)} skipped, "
        f"{backfill.get('failed', 0)} failed"
        + (f", {rate} img/s" if rate else "")
        + ("  done" if backfill.get("done") else f"  {_eta(backfill.get('eta_seconds'))}")
    )


@rollout.command("status")
@click.option("--watch", is_flag=True, help="Redraw the progress bar until the backfill ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
@port_option
def rollout_status(watch: bool, as_json: bool, port: int | None) -> None:
    """Versions, backfill progress and ETA, coverage, the promotion gate, evaluation and
    agreement of the candidate (or the previous version) with the serving one."""

    while watch:
        body = _rollout_call(port, "GET", "/rollout/status", params={"quick": "1"})
        backfill = body.get("backfill")
        if backfill is None:
            break
        click.echo("\r" + _progress_line(backfill), nl=False)
        if backfill.get("done"):
            click.echo()
            break
        time.sleep(2.0)
    body = _rollout_call(port, "GET", "/rollout/status")
    if as_json:
        print_json(body)
        return
    for state in ("serving", "candidate", "previous"):
        click.echo(f"{state:<10} {body.get(state) or '-'}")
    if body.get("anchor"):
        slots = body.get("anchor_slots") or 0
        click.echo(
            f"anchor     {body['anchor']} ("
            + (f"its top {slots} kept on each first page" if slots else "search slots off")
            + ")"
        )
    if body.get("backfill"):
        click.echo("backfill   " + _progress_line(body["backfill"]))
    gate = body.get("gate")
    if gate:
        click.echo(
            "gate       "
            + ("ready to promote" if gate["ready"] else "not ready: " + "; ".join(gate["reasons"]))
        )
    if body.get("evaluation"):
        ev = body["evaluation"]
        click.echo(
            f"evaluation mAP serving {ev['serving']['map']:.4f} vs candidate "
            f"{ev['candidate']['map']:.4f} on {ev['eval_dir']}"
        )
    if body.get("agreement"):
        ag = body["agreement"]
        recent, sample = ag["recent_searches"], ag["sample"]
        k = ag["k"]
        click.echo(
            f"agreement  overlap@{k}: recent searches {recent[f'overlap@{k}']} (n={recent['n']}, "
            f"clicked kept {recent[f'clicked_in_candidate_top{k}']}), "
            f"sample {sample[f'overlap@{k}']} (n={sample['n']})"
        )


@rollout.command("promote")
@click.option("--force", is_flag=True, help="Promote even if the gate does not pass.")
@click.option(
    "--eval-dir",
    default=None,
    help="Labelled folder (a sub-folder per category) on the worker's machine: the candidate "
    "must score at least the serving version's mAP on it.",
)
@port_option
def rollout_promote(force: bool, eval_dir: str | None, port: int | None) -> None:
    """Switch search to the candidate (atomic alias switch) if it holds every live image and
    passes the gate; the old version stays written (rollback) until retire."""
    if eval_dir:
        eval_dir = str(Path(eval_dir).resolve())
    body = _rollout_call(
        port, "POST", "/rollout/promote", json={"force": force, "eval_dir": eval_dir}
    )
    if ev := body.get("evaluation"):
        click.echo(
            f"evaluation on {ev['eval_dir']}: mAP {ev['serving']['map']:.4f} (previous) -> "
            f"{ev['candidate']['map']:.4f} (promoted)"
        )
    click.echo(f"serving {body['serving']}; previous {body['previous']} (still written)")


@rollout.command("rollback")
@port_option
def rollout_rollback(port: int | None) -> None:
    """Serve the previous version again (instant: it was kept up to date)."""
    body = _rollout_call(port, "POST", "/rollout/rollback")
    click.echo(f"serving {body['serving']}; {body['candidate']} is a candidate again")


@rollout.command("abort")
@port_option
def rollout_abort(port: int | None) -> None:
    """Stop the rollout: the candidate's collection is dropped."""
    body = _rollout_call(port, "POST", "/rollout/abort")
    click.echo(f"aborted {body['aborted']}")


@rollout.command("retire")
@click.option("--drop", is_flag=True, help="Also delete its Qdrant collection.")
@click.option("--anchor", is_flag=True, help="Retire the anchor version instead.")
@port_option
def rollout_retire(drop: bool, anchor: bool, port: int | None) -> None:
    """Stop writing the previous version (no rollback after this), or the anchor."""
    body = _rollout_call(port, "POST", "/rollout/retire", json={"drop": drop, "anchor": anchor})
    click.echo(f"retired {body['retired']}" + (" (collection dropped)" if drop else ""))


@rollout.command("anchor")
@port_option
def rollout_anchor(port: int | None) -> None:
    """Keep the previous version written for good, as the anchor (no longer in the way of the
    next rollout): with LOOKALIKE_SEARCH_ANCHOR_SLOTS=N on the worker, its top N matches keep a
    place on each first page of results, under whatever fine-tuned model serves."""
    body = _rollout_call(port, "POST", "/rollout/anchor")
    slots = body["slots"]
    click.echo(
        f"{body['anchor']} is the anchor; "
        + (
            f"its top {slots} are kept on each first page"
            if slots
            else "set LOOKALIKE_SEARCH_ANCHOR_SLOTS on the worker to use it in search"
        )
    )


COMMANDS = [update, remove, versions, rollout]
