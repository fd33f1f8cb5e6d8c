"""Small JPEG copies of indexed images for the console, kept on disk within a byte budget.

A thumbnail is named by the image's content digest and its size, so a re-uploaded image gets
a new one and an unchanged image is never made twice. Hits refresh the file's modification
time; when the folder grows past ``max_bytes`` the least recently used files go first (down to
90% of the budget, so eviction does not run on every write). It is a cache: a write that fails
(disk full) serves the thumbnail anyway and says so once.

Bytes come from the caller (the kept blob, or the image's source through the same fetch guard
as indexing) and are decoded under the same pixel limit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .blobs import write_atomically
from .decode import decode_image

log = logging.getLogger(__name__)

Source = Literal["cache", "made"]
QUALITY = 82


class ThumbnailCache:
    def __init__(self, root: Path, max_bytes: int, max_pixels: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._bytes: int | None = None  # measured on first use (off the event loop)
        self.hits = 0
        self.made = 0
        self._write_failing = False

    def path(self, digest: str, size: int) -> Path:
        if not digest.isalnum():
            raise ValueError(f"not a digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}-{size}.jpg"

    def get(self, digest: str, size: int, read: Callable[[], bytes]) -> tuple[bytes, Source]:
        """Blocking. The thumbnail of the image whose bytes ``read`` returns (called only on a
        miss; its errors propagate)."""
        path = self.path(digest, size)
        try:
            data = path.read_bytes()
        except OSError:  # not made yet (or the folder is unusable: made, and served uncached)
            pass
        else:
            with contextlib.suppress(OSError):
                os.utime(path)  # least recently *used* goes first
            with self._lock:
                self.hits += 1
            return data, "cache"
        data = self.make(read(), size)
        with self._lock:
            self.made += 1
        if self.max_bytes > 0:
            self._keep(path, data)
        return data, "made"

    def make(self, image: bytes, size: int) -> bytes:
        picture = decode_image(image, max_pixels=self.max_pixels, target_size=size)
        picture.thumbnail((size, size))
        out = io.BytesIO()
        picture.save(out, format="JPEG", quality=QUALITY)
        return out.getvalue()

    def _keep(self, path: Path, data: bytes) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = self._measure()  # before this write, which is added below
        try:
            write_atomically(path, data)
        except OSError as exc:
            if not self._write_failing:
                log.warning(
                    "cannot keep thumbnails in %s (%s): serving them uncached", self.root, exc
                )
            self._write_failing = True
            return
        self._write_failing = False
        with self._lock:
            self._bytes = (self._bytes or 0) + len(data)
            if self._bytes > self.max_bytes:
                self._bytes = self._evict(int(self.max_bytes * 0.9))

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.root.glob("*/*.jpg"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _measure(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self, target: int) -> int:
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= size
        return total

    def usage(self) -> dict[str, Any]:
        """Blocking the first time (measures the folder)."""
        with self._lock:
            if self._bytes is None:
                self._bytes = self._measure()
            return {
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "made": self.made,
                "path": str(self.root),
            }
