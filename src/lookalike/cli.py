"""The `lookalike` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from .errors import LookalikeError
from .settings import Settings

log = logging.getLogger("lookalike")


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory [env LOOKALIKE_DATA_DIR; default ~/.local/share/lookalike].",
)
port_option = click.option(
    "--port", type=int, default=None, help="HTTP API port [env LOOKALIKE_API_PORT; default 6066]."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main() -> None:
    """lookalike: a streaming visual-search indexer.

    Upload events flow from Kafka through Faust agents that embed each image and upsert it into
    Qdrant; an HTTP API answers "what looks like this?". Settings come from LOOKALIKE_*
    environment variables; flags override them.
    """


@main.command()
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

    Starts (or reuses) the local broker when LOOKALIKE_KAFKA_BOOTSTRAP is unset, opens Qdrant
    (embedded on disk unless LOOKALIKE_QDRANT_URL is set), and runs the indexing worker and the
    HTTP API on 127.0.0.1:PORT. On exit it stops the local broker it manages.
    """
    from .local_broker import start_local_broker, stop_local_broker

    settings = _settings(data_dir=data_dir, api_port=port, encoder=encoder)
    _setup_logging(settings.log_level)
    try:
        managed_broker = settings.kafka_bootstrap is None
        if managed_broker:
            broker, _ = start_local_broker(settings)
            bootstrap = broker.bootstrap
        else:
            bootstrap = settings.kafka_bootstrap or ""
        try:
            if index_paths:
                sent = _publish_files(
                    settings, bootstrap, list(index_paths), None, True, "cli-seller", "auto"
                )
                log.info(
                    "published %d upload events from %s", sent, ", ".join(map(str, index_paths))
                )
            from .streams.worker import run_worker  # torch, faust: imported after the broker is up

            run_worker(settings, bootstrap)
        finally:
            if managed_broker:
                stop_local_broker(settings)
    except LookalikeError as exc:
        _fail(str(exc))


@main.command()
@data_dir_option
@port_option
def worker(data_dir: Path | None, port: int | None) -> None:
    """Run only the worker + API against an existing broker (never starts or stops one)."""
    from .local_broker import resolve_bootstrap
    from .streams.worker import run_worker

    settings = _settings(data_dir=data_dir, api_port=port)
    _setup_logging(settings.log_level)
    try:
        run_worker(settings, resolve_bootstrap(settings))
    except LookalikeError as exc:
        _fail(str(exc))


@main.command()
@data_dir_option
def down(data_dir: Path | None) -> None:
    """Stop a local broker left running under the data dir (e.g. after a killed `up`)."""
    from .local_broker import stop_local_broker

    settings = _settings(data_dir=data_dir)
    click.echo(
        "stopped the local broker" if stop_local_broker(settings) else "no local broker runs"
    )


@main.command()
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
    from .local_broker import resolve_bootstrap

    if not category and not category_from_folder:
        _fail("give --category C or --category-from-folder")
    settings = _settings(data_dir=data_dir)
    _setup_logging("warning")
    try:
        sent = _publish_files(
            settings,
            resolve_bootstrap(settings, wait=wait_seconds),
            list(paths),
            category,
            category_from_folder,
            seller_id,
            mode,
        )
    except LookalikeError as exc:
        _fail(str(exc))
    click.echo(f"sent {sent} upload events to {settings.uploads_topic}")


def _send_events(settings: Settings, wait_seconds: float, events: list[Any]) -> None:
    from .local_broker import resolve_bootstrap
    from .publish import UploadPublisher

    try:
        with UploadPublisher(settings, resolve_bootstrap(settings, wait=wait_seconds)) as pub:
            for event in events:
                pub.publish(event)
            pub.flush()
    except LookalikeError as exc:
        _fail(str(exc))


def _publish_files(
    settings: Settings,
    bootstrap: str,
    paths: list[str | Path],
    category: str | None,
    category_from_folder: bool,
    seller_id: str,
    mode: str,
) -> int:
    from tqdm import tqdm

    from .publish import UploadPublisher, event_for_file, event_for_url, iter_image_files

    urls = [str(p) for p in paths if str(p).startswith(("http://", "https://"))]
    files = list(iter_image_files(Path(p) for p in paths if str(p) not in urls))
    sent = 0
    with UploadPublisher(settings, bootstrap) as publisher:
        for url in urls:
            publisher.publish(
                event_for_url(url, category=category or "unknown", seller_id=seller_id)
            )
            sent += 1
        for path in tqdm(files, desc="publishing", unit="img", disable=len(files) < 50):
            cat = path.resolve().parent.name if category_from_folder else str(category)
            publisher.publish(
                event_for_file(
                    path,
                    category=cat,
                    seller_id=seller_id,
                    image_root=settings.image_root,
                    mode=mode,
                )
            )  # type: ignore[arg-type]
            sent += 1
        publisher.flush()
    return sent


def _api(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=settings.base_api_url, timeout=60.0)


def _call(
    settings: Settings,
    method: str,
    path: str,
    *,
    timeout: float = 60.0,
    hint: str = "is `lookalike up` running? Set --port / LOOKALIKE_API_URL to where it listens.",
    **kwargs: Any,
) -> Any:
    try:
        with httpx.Client(base_url=settings.base_api_url, timeout=timeout) as client:
            response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        _fail(f"cannot reach the lookalike API at {settings.base_api_url} ({exc}); {hint}")
    try:
        body = response.json()
    except ValueError:
        _fail(
            f"{response.status_code} from {path} without a JSON body ({response.text[:200]!r}); "
            "the worker's log says why"
        )
    if response.status_code >= 400:
        _fail(f"{response.status_code}: {body.get('error', body)}")
    return body


@main.command()
@click.argument(
    "image_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@click.option("--id", "image_id", default=None, help="Search by an indexed image id instead.")
@click.option("--k", default=10, show_default=True, help="Number of results.")
@click.option("--category", default=None, help="Only results of this category.")
@click.option("--seller", "seller_id", default=None, help="Only results of this seller.")
@port_option
def search(
    image_file: Path | None,
    image_id: str | None,
    k: int,
    category: str | None,
    seller_id: str | None,
    port: int | None,
) -> None:
    """Find images that look like IMAGE_FILE (or like an indexed image, with --id)."""
    settings = _settings(api_port=port)
    filters = {key: v for key, v in (("category", category), ("seller_id", seller_id)) if v}
    if image_file is not None:
        files = {"image": (image_file.name, image_file.read_bytes(), "application/octet-stream")}
        body = _call(settings, "POST", "/search", files=files, data={"k": str(k), **filters})
    elif image_id is not None:
        body = _call(
            settings, "POST", "/search", json={"image_id": image_id, "k": k, "filter": filters}
        )
    else:
        _fail("give an IMAGE_FILE or --id IMAGE_ID")
    _print_json(body)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def encoders(as_json: bool) -> None:
    """List the encoders: ready (weights present) or not, dimensions and model version ids."""
    from dataclasses import asdict

    from .encoders import list_encoders

    statuses = list_encoders()
    if as_json:
        _print_json([asdict(s) for s in statuses])
        return
    click.echo(f"{'encoder':<20} {'ready':<6} {'dim':>5}  version / what is missing")
    for s in statuses:
        detail = s.version if s.ready else s.problem
        click.echo(f"{s.name:<20} {'yes' if s.ready else 'no':<6} {s.dim:>5}  {detail}")
    click.echo(
        "\nAlso: the path of a fine-tuned checkpoint saved by lookalike (LOOKALIKE_ENCODER=x.pt)."
    )


@main.command()
@port_option
def stats(port: int | None) -> None:
    """Indexed images per model version, dead letters and worker counters (from the API)."""
    _print_json(_call(_settings(api_port=port), "GET", "/stats"))


@main.command("dead-letters")
@click.option("--limit", default=20, show_default=True)
@click.option(
    "--from-topic",
    is_flag=True,
    help="Read every record of the dead-letter topic from Kafka instead of the API.",
)
@port_option
@data_dir_option
def dead_letters(limit: int, from_topic: bool, port: int | None, data_dir: Path | None) -> None:
    """The latest dead letters with their reasons and stages."""
    settings = _settings(api_port=port, data_dir=data_dir)
    if not from_topic:
        _print_json(_call(settings, "GET", "/dead-letters", params={"limit": limit}))
        return
    from .local_broker import resolve_bootstrap
    from .topic_reader import read_topic

    try:
        records = read_topic(resolve_bootstrap(settings), settings.dead_letters_topic)
    except LookalikeError as exc:
        _fail(str(exc))
    _print_json([json.loads(r.value) for r in records if r.value])


@main.command()
@click.argument("image_id")
@port_option
def show(image_id: str, port: int | None) -> None:
    """The indexed record of one image."""
    _print_json(_call(_settings(api_port=port), "GET", f"/images/{image_id}"))


@main.command()
@click.option("--seller", "seller_id", default=None, help="Only this seller's alerts.")
@click.option("--category", default=None, help="Declared or predicted category.")
@click.option("--status", type=click.Choice(["open", "confirmed", "dismissed"]), default=None)
@click.option("--limit", default=20, show_default=True)
@port_option
def alerts(
    seller_id: str | None, category: str | None, status: str | None, limit: int, port: int | None
) -> None:
    """Category alerts, latest first: uploads that do not look like their declared category."""
    params = {"seller_id": seller_id, "category": category, "status": status, "limit": limit}
    body = _call(
        _settings(api_port=port),
        "GET",
        "/alerts",
        params={k: v for k, v in params.items() if v is not None},
    )
    _print_json(body)


@main.command()
@click.argument("alert_id")
@click.argument("decision", type=click.Choice(["confirm", "dismiss"]))
@click.option("--note", default=None, help="Why (kept with the alert).")
@port_option
def review(alert_id: str, decision: str, note: str | None, port: int | None) -> None:
    """Confirm an alert (the image's category is corrected in the index) or dismiss it."""
    status = {"confirm": "confirmed", "dismiss": "dismissed"}[decision]
    _print_json(
        _call(
            _settings(api_port=port),
            "POST",
            f"/alerts/{alert_id}/review",
            json={"decision": status, "note": note},
        )
    )


@main.command()
@click.argument("image_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--category", required=True, help="The category this image is an example of.")
@click.option("--id", "exemplar_id", default=None, help="Exemplar id (default: content hash).")
@port_option
def exemplar(image_file: Path, category: str, exemplar_id: str | None, port: int | None) -> None:
    """Register an example image of a category for validation (no retraining; one is enough
    for a new category)."""
    data = {"category": category, **({"exemplar_id": exemplar_id} if exemplar_id else {})}
    files = {"image": (image_file.name, image_file.read_bytes(), "application/octet-stream")}
    _print_json(_call(_settings(api_port=port), "POST", "/exemplars", files=files, data=data))


@main.command("eval")
@click.argument(
    "dataset_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--gallery",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Gallery folder (with --queries): queries not in the gallery.",
)
@click.option(
    "--queries",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Query folder (with --gallery).",
)
@click.option("--encoder", default=None, help="[default: LOOKALIKE_ENCODER]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(
    dataset_dir: Path | None,
    gallery: Path | None,
    queries: Path | None,
    encoder: str | None,
    as_json: bool,
) -> None:
    """Retrieval quality on labelled folders (a sub-folder per category, category =
    relevance): Recall@1/5/10, Precision@10, mAP, nDCG@10. Each image of DATASET_DIR queries all
    the others; or --gallery DIR --queries DIR."""
    from .encoders import configure_threads, load_encoder_from_settings
    from .evaluation import evaluate

    settings = _settings(encoder=encoder)
    _setup_logging("warning")
    if (dataset_dir is None) == (gallery is None and queries is None):
        _fail("give DATASET_DIR, or --gallery DIR --queries DIR")
    try:
        configure_threads(settings.torch_threads)
        model = load_encoder_from_settings(settings)
        metrics = evaluate(
            model, dataset_dir, gallery=gallery, queries=queries, progress=not as_json
        )
    except LookalikeError as exc:
        _fail(str(exc))
    report = {"model_version": model.version, **metrics.as_dict()}
    if as_json:
        click.echo(json.dumps(report))
        return
    for key, value in report.items():
        click.echo(f"{key:<16} {value:.4f}" if isinstance(value, float) else f"{key:<16} {value}")


@main.command("validate-eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--mislabel-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Share of wrong categories.",
)
@click.option("--batch-size", type=int, default=None, help="[default: LOOKALIKE_BATCH_SIZE]")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--threshold", type=float, default=None, help="[default: LOOKALIKE_VALIDATION_THRESHOLD]"
)
@click.option("--encoder", default=None, help="[default: LOOKALIKE_ENCODER]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def validate_eval_command(
    dataset_dir: Path,
    mislabel_rate: float,
    batch_size: int | None,
    seed: int,
    threshold: float | None,
    encoder: str | None,
    as_json: bool,
) -> None:
    """Inject wrong categories into DATASET_DIR (a folder per category), run the validator as the
    stream does, and print precision, recall and the precision/recall curve over thresholds."""
    from .encoders import configure_threads, load_encoder_from_settings
    from .validation import ValidationSettings
    from .validation_eval import validate_eval

    settings = _settings(encoder=encoder, validation_threshold=threshold)
    _setup_logging("warning")
    try:
        configure_threads(settings.torch_threads)
        model = load_encoder_from_settings(settings)
        model.warm_up()
        report = validate_eval(
            dataset_dir,
            model,
            ValidationSettings(
                threshold=settings.validation_threshold,
                k=settings.validation_k,
                min_examples=settings.validation_min_examples,
                exclude_same_seller=settings.validation_exclude_same_seller,
            ),
            mislabel_rate=mislabel_rate,
            seed=seed,
            batch_size=batch_size or settings.batch_size,
            progress=not as_json,
        )
    except LookalikeError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(
        f"{report['images']} images, {report['mislabelled']} mislabelled "
        f"({mislabel_rate:.0%}), {report['cannot_judge']} could not be judged"
    )
    click.echo(
        f"at threshold {report['threshold']}: precision {report['precision']:.3f}, "
        f"recall {report['recall']:.3f}, {report['flagged']} alerts\n"
    )
    click.echo(f"{'threshold':>9} {'alerts':>7} {'precision':>9} {'recall':>7}")
    for point in report["curve"]:
        click.echo(
            f"{point['threshold']:>9.2f} {point['flagged']:>7} "
            f"{point['precision']:>9.3f} {point['recall']:>7.3f}"
        )


# Registers their commands on `main`.
from . import cli_learning, cli_lifecycle  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
