"""Publishing upload events: the producer API a marketplace calls (kafka-python), and the
helpers behind `lookalike publish`.

Events are keyed by image id, so every event about one image lands on one partition, in order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import ValidationError

from .errors import BrokerUnavailable, ConfigurationError
from .events import (
    Click,
    FileSource,
    ImageAttributesChanged,
    ImageRemoved,
    ImageUploaded,
    InlineSource,
    UrlSource,
)
from .settings import Settings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
#: Kafka's default message limit is 1 MiB; base64 grows bytes by 4/3.
MAX_INLINE_BYTES = 700_000

SourceMode = Literal["auto", "inline", "file"]


def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create missing topics (brokers differ on auto-creation, so never rely on it)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="lookalike-admin")
    except KafkaError as exc:
        raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap}: {exc}") from None
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", missing)
    finally:
        admin.close()


class UploadPublisher:
    """Sends ImageUploaded, ImageAttributesChanged and ImageRemoved events to the uploads topic,
    keyed by image id (so one image's events stay in order). Use as a context manager."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.topic = settings.uploads_topic
        ensure_topics(
            bootstrap,
            settings.all_topics,
            settings.topic_partitions,
        )
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="lookalike-publisher",
                acks="all",
                linger_ms=20,
                retries=5,
                max_in_flight_requests_per_connection=1,  # keep per-image order under retries
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap}: {exc}") from None

    def publish(self, event: ImageUploaded | ImageAttributesChanged | ImageRemoved) -> Any:
        """Queue one event; returns kafka-python's future (``.get()`` waits for the ack)."""
        return self._producer.send(
            self.topic, key=event.image_id.encode("utf-8"), value=event.to_json_bytes()
        )

    def publish_raw(self, key: bytes | None, value: bytes) -> Any:
        """Send bytes as they are (for replaying dead letters, or testing bad input)."""
        return self._producer.send(self.topic, key=key, value=value)

    def flush(self, timeout: float | None = 60.0) -> None:
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise BrokerUnavailable(f"could not deliver events: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=10)

    def __enter__(self) -> UploadPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClickPublisher(UploadPublisher):
    """Sends Click events (keyed by search id) to the clicks topic, for front ends that report
    clicks through Kafka rather than POST /clicks."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        super().__init__(settings, bootstrap)
        self.topic = settings.clicks_topic

    def publish(self, click: Click) -> Any:  # type: ignore[override]
        return self._producer.send(
            self.topic, key=click.search_id.encode("utf-8"), value=click.model_dump_json().encode()
        )


# --- `lookalike publish` helpers -------------------------------------------------------------
def iter_image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files given directly, and image files under given folders (recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            yield path
        else:
            raise ConfigurationError(f"{path} does not exist")


def image_id_for_file(path: Path) -> str:
    """Stable id for a local file: its name plus a digest of its absolute path, so publishing
    the same file again addresses the same image, and same-named files in two folders don't
    collide."""
    resolved = str(path.resolve())
    # Long names are cut: ids are capped at 200 characters and the digest keeps them unique.
    return f"{path.stem[:100]}-{hashlib.sha1(resolved.encode()).hexdigest()[:10]}"


def source_for_file(
    path: Path, image_root: Path | None, mode: SourceMode
) -> FileSource | InlineSource:
    resolved = path.resolve()
    under_root = image_root is not None and resolved.is_relative_to(image_root)
    if mode == "file" or (mode == "auto" and under_root):
        if not under_root:
            raise ConfigurationError(
                f"{path} is not under LOOKALIKE_IMAGE_ROOT ({image_root}); file references "
                "must be, so the worker may read them"
            )
        assert image_root is not None
        return FileSource(path=str(resolved.relative_to(image_root)))
    data = resolved.read_bytes()
    if len(data) > MAX_INLINE_BYTES:
        raise ConfigurationError(
            f"{path} is {len(data)} bytes, too large to send inline (max {MAX_INLINE_BYTES}); "
            "set LOOKALIKE_IMAGE_ROOT to a folder holding it so a file reference is sent"
        )
    return InlineSource(data=data)


def event_for_file(
    path: Path,
    *,
    category: str,
    seller_id: str,
    image_root: Path | None,
    mode: SourceMode = "auto",
) -> ImageUploaded:
    image_id = image_id_for_file(path)
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id=seller_id,
        category=category,
        attributes={"filename": path.name},
        image=source_for_file(path, image_root, mode),
    )


def event_for_url(url: str, *, category: str, seller_id: str) -> ImageUploaded:
    image_id = "url-" + hashlib.sha1(url.encode()).hexdigest()[:16]
    try:
        source = UrlSource(url=url)  # type: ignore[arg-type]
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ConfigurationError(f"{url!r} is not a valid http(s) URL: {reason}") from None
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id=seller_id,
        category=category,
        image=source,
    )
