"""Upload events for local files and URLs: what `lookalike publish` and `lookalike up --index`
send. A file's image id is stable (its name plus a digest of its absolute path), so publishing
the same files again updates the same images.

:class:`FileEvents` builds them for many files: each folder is resolved once, not every file
(``Path.resolve`` walks every component of the path with a system call each).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from ..errors import ConfigurationError
from ..events import FileSource, ImageUploaded, InlineSource, UrlSource

#: Kafka's default message limit is 1 MiB; base64 grows bytes by 4/3.
MAX_INLINE_BYTES = 700_000

SourceMode = Literal["auto", "inline", "file"]


def image_id_for_file(path: Path, resolved: Path | None = None) -> str:
    """Stable id for a local file: its name plus a digest of its absolute path, so publishing
    the same file again addresses the same image, and same-named files in two folders don't
    collide. ``resolved``: ``path.resolve()``, when the caller has it."""
    resolved = resolved or path.resolve()
    # Long names are cut: ids are capped at 200 characters and the digest keeps them unique.
    return f"{path.stem[:100]}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"


def source_for_file(
    path: Path, image_root: Path | None, mode: SourceMode, resolved: Path | None = None
) -> FileSource | InlineSource:
    resolved = resolved or path.resolve()
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
    resolved: Path | None = None,
) -> ImageUploaded:
    """``resolved``: ``path.resolve()``, when the caller has it (see :class:`FileEvents`)."""
    resolved = resolved or path.resolve()
    image_id = image_id_for_file(path, resolved)
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id=seller_id,
        category=category,
        attributes={"filename": path.name},
        image=source_for_file(path, image_root, mode, resolved),
    )


class FileEvents:
    """Upload events for many files, resolving each folder once: a file's resolved path is its
    resolved folder plus its name, unless the file itself is a symbolic link (one ``lstat``)."""

    def __init__(
        self, *, seller_id: str, image_root: Path | None, mode: SourceMode = "auto"
    ) -> None:
        self.seller_id = seller_id
        self.image_root = image_root
        self.mode = mode
        self._folders: dict[Path, Path] = {}

    def resolve(self, path: Path) -> Path:
        if path.name in ("", ".", "..") or os.path.islink(path):
            return path.resolve()
        folder = self._folders.get(path.parent)
        if folder is None:
            folder = self._folders[path.parent] = path.parent.resolve()
        return folder / path.name

    def event(self, path: Path, category: str | None = None) -> ImageUploaded:
        """``category`` None: the name of the file's folder."""
        resolved = self.resolve(path)
        return event_for_file(
            path,
            category=category if category is not None else resolved.parent.name,
            seller_id=self.seller_id,
            image_root=self.image_root,
            mode=self.mode,
            resolved=resolved,
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
