"""`lookalike up`, `worker`, `down` and `publish`: running the stack and feeding it."""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from pathlib import Path

import click

from ..errors import BrokerUnavailable, LookalikeError
from ..settings import Settings
from .common import (
    data_dir_option,
    fail,
    port_option,
    print_json,
    publish_files,
    settings_from,
    setup_logging,
    show_progress,
)
from .progress import IndexingProgress

log = logging.getLogger("lookalike")


@click.command()
@data_dir_option
@port_option
@click.option("--encoder", default=None, help="Encoder name [env LOOKALIKE_ENCODER].")
@click.option(
    "--index",
    "index_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also publish the images under this folder (category = folder name) once the "
    "broker is up. Repeatable.",
)
def up(
    data_dir: Path | None, port: int | None, encoder: str | None, index_paths: tuple[Path, ...]
) -> None:
    """Run the stack in the foreground until Ctrl-C / SIGTERM.

    Starts (or reuses) the local broker when LOOKALIKE_KAFKA_BOOTSTRAP is unset, opens the index
    (embedded under the data dir unless LOOKALIKE_QDRANT_URL is set; an index written by an
    earlier lookalike is migrated first), and runs the indexing worker, the HTTP API and the
    console (http://127.0.0.1:PORT/). With --index, shows the indexing progress until the
    published images are consumed. On exit it stops the local broker it manages (never one
    another running `up` manages: a second `up` on the same data dir is refused). Exits with
    status 3 when the broker stays unreachable (LOOKALIKE_BROKER_LOST_EXIT).
    """
    from ..api.auth import check_exposure
    from ..index import legacy_index_path
    from ..kafka.local_broker import start_local_broker, stop_local_broker

    settings = settings_from(data_dir=data_dir, api_port=port, encoder=encoder)
    setup_logging(settings)
    log.info("version %s, data in %s", version("lookalike"), settings.data_dir)
    me = os.getpid()
    try:
        check_exposure(settings)  # before a broker is started for nothing
        if legacy_index_path(settings) is not None:
            _migrate(settings)
        managed_broker = settings.kafka_bootstrap is None
        if managed_broker:
            broker, _ = start_local_broker(settings, owner=me)
            bootstrap = broker.bootstrap
        else:
            bootstrap = settings.kafka_bootstrap or ""
        progress: IndexingProgress | None = None
        try:
            if index_paths:
                what = ", ".join(map(str, index_paths))
                sent = publish_files(
                    settings, bootstrap, list(index_paths), None, True, "cli-seller", "auto"
                )
                log.info("published %d upload events from %s", sent, what)
                if sent:
                    progress = IndexingProgress(settings, sent, what, show_progress())
                    progress.start()
            from ..streams.worker import run_worker  # torch, faust: imported after the broker is up

            run_worker(settings, bootstrap)
        finally:
            if progress is not None:
                progress.stop()
            if managed_broker:
                stop_local_broker(settings, owner=me)  # only if it is still ours
    except BrokerUnavailable as exc:
        fail(str(exc), code=3)
    except LookalikeError as exc:
        fail(str(exc))


def _migrate(settings: Settings) -> dict:
    from tqdm import tqdm

    from ..index.migrate import legacy_points, migrate_local_mode

    log.warning(
        "%s holds an index written by an earlier lookalike: migrating it to the embedded "
        "engine (once; the old folder is kept as qdrant.migrated)",
        settings.qdrant_path,
    )
    total = legacy_points(settings.qdrant_path)
    with tqdm(total=total, unit="point", desc="migrating", disable=not show_progress()) as bar:
        return migrate_local_mode(settings, progress=bar.update)


@click.command()
@data_dir_option
def migrate(data_dir: Path | None) -> None:
    """Move a data dir's index written by lookalike before 0.2 (qdrant-client local mode) to the
    embedded engine: vectors, payloads, clocks, the version registry and the serving version.
    `lookalike up` does this by itself; stop the worker first."""
    from ..index import legacy_index_path

    settings = settings_from(data_dir=data_dir)
    setup_logging(settings, "warning")
    if legacy_index_path(settings) is None:
        fail(f"nothing to migrate in {settings.data_dir} (no {settings.qdrant_path.name}/ index)")
    try:
        print_json(_migrate(settings))
    except LookalikeError as exc:
        fail(str(exc))


@click.command()
@data_dir_option
@port_option
def worker(data_dir: Path | None, port: int | None) -> None:
    """Run only the worker + API against an existing broker (never starts or stops one).

    Exits with status 3 when the broker stays unreachable (LOOKALIKE_BROKER_LOST_EXIT)."""
    from ..kafka.local_broker import resolve_bootstrap
    from ..streams.worker import run_worker

    settings = settings_from(data_dir=data_dir, api_port=port)
    setup_logging(settings)
    try:
        run_worker(settings, resolve_bootstrap(settings))
    except BrokerUnavailable as exc:
        fail(str(exc), code=3)
    except LookalikeError as exc:
        fail(str(exc))


@click.command()
@data_dir_option
def down(data_dir: Path | None) -> None:
    """Stop a local broker left running under the data dir (e.g. after a killed `up`)."""
    from ..kafka.local_broker import stop_local_broker

    settings = settings_from(data_dir=data_dir)
    try:
        stopped = stop_local_broker(settings)
    except LookalikeError as exc:
        fail(str(exc))
    click.echo("stopped the local broker" if stopped else "no local broker runs")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--category", default=None, help="Declared category for every image.")
@click.option(
    "--category-from-folder",
    is_flag=True,
    help="Declared category = the name of each image's folder.",
)
@click.option("--seller", "seller_id", default="cli-seller", show_default=True, help="Seller id.")
@click.option(
    "--source",
    "mode",
    type=click.Choice(["auto", "inline", "file"]),
    default="auto",
    show_default=True,
    help="inline: send bytes in the event; file: send a path under "
    "LOOKALIKE_IMAGE_ROOT; auto: file when under the root, else inline.",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=30.0,
    show_default=True,
    help="Seconds to wait for a starting `lookalike up` to bring up the local broker.",
)
@data_dir_option
def publish(
    paths: tuple[str, ...],
    category: str | None,
    category_from_folder: bool,
    seller_id: str,
    mode: str,
    wait_seconds: float,
    data_dir: Path | None,
) -> None:
    """Send one upload event per image file (folders are walked recursively).

    A PATH that starts with http:// or https:// is sent as an image URL for the worker to fetch.
    """
    from ..kafka.local_broker import resolve_bootstrap

    if not category and not category_from_folder:
        fail("give --category C or --category-from-folder")
    settings = settings_from(data_dir=data_dir)
    setup_logging(settings, "warning")
    try:
        sent = publish_files(
            settings,
            resolve_bootstrap(settings, wait=wait_seconds),
            list(paths),
            category,
            category_from_folder,
            seller_id,
            mode,
        )
    except LookalikeError as exc:
        fail(str(exc))
    click.echo(f"sent {sent} upload events to {settings.uploads_topic}")


COMMANDS = [up, worker, down, publish, migrate]
