"""`lookalike search`, `show`, `stats`, `dead-letters`, `alerts`, `review`, `exemplar` and
`encoders`: asking the running worker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import LookalikeError
from .common import (
    call_api,
    data_dir_option,
    fail,
    port_option,
    print_json,
    settings_from,
)


@click.command()
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
    settings = settings_from(api_port=port)
    filters = {key: v for key, v in (("category", category), ("seller_id", seller_id)) if v}
    if image_file is not None:
        files = {"image": (image_file.name, image_file.read_bytes(), "application/octet-stream")}
        body = call_api(settings, "POST", "/search", files=files, data={"k": str(k), **filters})
    elif image_id is not None:
        body = call_api(
            settings, "POST", "/search", json={"image_id": image_id, "k": k, "filter": filters}
        )
    else:
        fail("give an IMAGE_FILE or --id IMAGE_ID")
    print_json(body)


@click.command()
@click.argument("image_id")
@port_option
def show(image_id: str, port: int | None) -> None:
    """The indexed record of one image."""
    print_json(call_api(settings_from(api_port=port), "GET", f"/images/{image_id}"))


@click.command()
@port_option
def stats(port: int | None) -> None:
    """Indexed images per model version, dead letters, worker counters and readiness."""
    print_json(call_api(settings_from(api_port=port), "GET", "/stats"))


@click.command()
@port_option
def status(port: int | None) -> None:
    """Whether the worker can do its job: broker, index and encoder usable, or why not.

    Exits 0 when ready, 1 when not (or when no worker answers)."""
    import httpx

    settings = settings_from(api_port=port)
    try:
        response = httpx.get(f"{settings.base_api_url}/ready", timeout=15)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        fail(f"no lookalike worker answers at {settings.base_api_url} ({exc})")
    print_json(body)
    if not body.get("ready"):
        fail(body.get("error", "not ready"))


@click.command("dead-letters")
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
    settings = settings_from(api_port=port, data_dir=data_dir)
    if not from_topic:
        print_json(call_api(settings, "GET", "/dead-letters", params={"limit": limit}))
        return
    from ..kafka.local_broker import resolve_bootstrap
    from ..kafka.security import aiokafka_options
    from ..kafka.topic_reader import read_topic

    try:
        records = read_topic(
            resolve_bootstrap(settings),
            settings.dead_letters_topic,
            client_options=aiokafka_options(settings),
        )
    except LookalikeError as exc:
        fail(str(exc))
    print_json([json.loads(r.value) for r in records if r.value])


@click.command()
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
    body = call_api(
        settings_from(api_port=port),
        "GET",
        "/alerts",
        params={k: v for k, v in params.items() if v is not None},
    )
    print_json(body)


@click.command()
@click.argument("alert_id")
@click.argument("decision", type=click.Choice(["confirm", "dismiss"]))
@click.option("--note", default=None, help="Why (kept with the alert).")
@port_option
def review(alert_id: str, decision: str, note: str | None, port: int | None) -> None:
    """Confirm an alert (the image's category is corrected in the index) or dismiss it."""
    status = {"confirm": "confirmed", "dismiss": "dismissed"}[decision]
    print_json(
        call_api(
            settings_from(api_port=port),
            "POST",
            f"/alerts/{alert_id}/review",
            json={"decision": status, "note": note},
        )
    )


@click.command()
@click.argument("image_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--category", required=True, help="The category this image is an example of.")
@click.option("--id", "exemplar_id", default=None, help="Exemplar id (default: content hash).")
@port_option
def exemplar(image_file: Path, category: str, exemplar_id: str | None, port: int | None) -> None:
    """Register an example image of a category for validation (no retraining; one is enough
    for a new category)."""
    data = {"category": category, **({"exemplar_id": exemplar_id} if exemplar_id else {})}
    files = {"image": (image_file.name, image_file.read_bytes(), "application/octet-stream")}
    print_json(call_api(settings_from(api_port=port), "POST", "/exemplars", files=files, data=data))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def encoders(as_json: bool) -> None:
    """List the encoders: ready (weights present) or not, dimensions and model version ids."""
    from dataclasses import asdict

    from ..encoders import list_encoders

    statuses = list_encoders()
    if as_json:
        print_json([asdict(s) for s in statuses])
        return
    click.echo(f"{'encoder':<20} {'ready':<6} {'dim':>5}  version / what is missing")
    for s in statuses:
        detail = s.version if s.ready else s.problem
        click.echo(f"{s.name:<20} {'yes' if s.ready else 'no':<6} {s.dim:>5}  {detail}")
    click.echo(
        "\nAlso: the path of a fine-tuned checkpoint saved by lookalike (LOOKALIKE_ENCODER=x.pt)."
    )


COMMANDS = [search, show, stats, status, dead_letters, alerts, review, exemplar, encoders]
