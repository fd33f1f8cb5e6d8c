"""Upload events for local files and URLs: what `lookalike publish` and `lookalike up --index`
send. A file's image id is stable (its name plus a digest of its absolute path), so publishing
the same files again updates the same images."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from ..errors import ConfigurationError
from ..events import FileSource, ImageUploaded, InlineSource, UrlSource

#: Kafka's default message limit is 1 MiB; base64 grows bytes by 4/3.
MAX_INLINE_BYTES = 700_000

SourceMode = Literal["auto", "inline", "file"]


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
