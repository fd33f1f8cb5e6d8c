"""What every command shares: settings from flags and environment, logging, failing with a
message, printing JSON, calling the worker's API, and publishing events."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from ..errors import LookalikeError
from ..logs import configure_logging, is_terminal
from ..settings import Settings


def settings_from(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def setup_logging(settings: Settings, level: str | None = None) -> None:
    """Logs at ``level`` (default LOOKALIKE_LOG_LEVEL) in LOOKALIKE_LOG_FORMAT, on stderr."""
    configure_logging(level or settings.log_level, settings.log_format)


def show_progress() -> bool:
    """Progress bars go to stderr, and only to a terminal (never into a log file, and never
    into stdout, which may carry a command's JSON)."""
    return is_terminal(sys.stderr)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def print_json(obj: Any) -> None:
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


def send_events(settings: Settings, wait_seconds: float, events: list[Any]) -> None:
    from ..kafka.local_broker import resolve_bootstrap
    from ..kafka.publisher import UploadPublisher

    try:
        with UploadPublisher(settings, resolve_bootstrap(settings, wait=wait_seconds)) as pub:
            for event in events:
                pub.publish(event)
            pub.flush()
    except LookalikeError as exc:
        fail(str(exc))


def publish_files(
    settings: Settings,
    bootstrap: str,
    paths: list[str | Path],
    category: str | None,
    category_from_folder: bool,
    seller_id: str,
    mode: str,
) -> int:
    from tqdm import tqdm

    from ..images import iter_image_files
    from ..kafka.file_events import FileEvents, event_for_url
    from ..kafka.publisher import UploadPublisher

    urls = [str(p) for p in paths if str(p).startswith(("http://", "https://"))]
    files = list(iter_image_files(Path(p) for p in paths if str(p) not in urls))
    sent = 0
    with UploadPublisher(settings, bootstrap) as publisher:
        for url in urls:
            publisher.publish(
                event_for_url(url, category=category or "unknown", seller_id=seller_id)
            )
            sent += 1
        events = FileEvents(
            seller_id=seller_id,
            image_root=settings.image_root,
            mode=mode,  # type: ignore[arg-type]
        )
        bar = tqdm(
            files, desc="publishing", unit="img", disable=len(files) < 50 or not show_progress()
        )
        for path in bar:
            publisher.publish(events.event(path, None if category_from_folder else str(category)))
            sent += 1
        publisher.flush()
    return sent


def api_client(settings: Settings) -> httpx.Client:
    """A client of the worker's API that sends the CLI's token (LOOKALIKE_API_TOKEN)."""
    return httpx.Client(
        base_url=settings.base_api_url, timeout=60.0, headers=settings.client_headers()
    )


def call_api(
    settings: Settings,
    method: str,
    path: str,
    *,
    timeout: float = 60.0,
    hint: str = "is `lookalike up` running? Set --port / LOOKALIKE_API_URL to where it listens.",
    **kwargs: Any,
) -> Any:
    try:
        with httpx.Client(
            base_url=settings.base_api_url, timeout=timeout, headers=settings.client_headers()
        ) as client:
            response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        fail(f"cannot reach the lookalike API at {settings.base_api_url} ({exc}); {hint}")
    try:
        body = response.json()
    except ValueError:
        fail(
            f"{response.status_code} from {path} without a JSON body ({response.text[:200]!r}); "
            "the worker's log says why"
        )
    if response.status_code in (401, 403):
        fail(
            f"{response.status_code}: {body.get('error', body)}. Set LOOKALIKE_API_TOKEN to a "
            "token of the worker's LOOKALIKE_API_ADMIN_TOKENS (or READ_TOKENS)"
        )
    if response.status_code >= 400:
        fail(f"{response.status_code}: {body.get('error', body)}")
    return body
