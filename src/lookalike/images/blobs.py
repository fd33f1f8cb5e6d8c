"""Content-addressed image bytes on disk (``<dir>/<aa>/<digest>``), for two jobs:

- inline uploads: the index payload keeps only ``inline:sha256:<digest>``; the bytes are kept
  here when the image is indexed, so a backfill can re-embed them;
- search queries: images uploaded to ``POST /search`` are kept (by the same digest the logged
  search names) so training pairs can use them.

Files are written to a temporary name and renamed, so a crash never leaves a truncated blob.
A write that fails for the machine's reason (disk full, read-only, permissions) raises
:class:`~lookalike.errors.StorageUnavailable`: the batch is retried, never dead-lettered.
Blobs are never deleted (several images may share one; a removed image's bytes stay until
someone cleans the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from ..errors import StorageUnavailable


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it: a crash never leaves a
    truncated file. On an error the temporary file is removed and the error raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a half-written file only takes the space back
        raise


class BlobStore:
    def __init__(
        self, root: Path, what: str = "image bytes", setting: str | None = "LOOKALIKE_BLOB_DIR"
    ) -> None:
        self.root = root
        self.what = what  # for the error a full disk raises: what could not be kept
        self.setting = setting  # the setting that moves the folder

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Keep ``data``; ``sha256``: its digest when the caller has it already."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if path.exists():
            return digest
        try:
            write_atomically(path, data)
        except OSError as exc:
            if StorageUnavailable.is_storage_error(exc):
                raise StorageUnavailable(self.what, self.root, exc, self.setting) from exc
            raise
        return digest

    def put_many(self, items: Sequence[tuple[bytes, str]], executor: Executor) -> None:
        """Keep each (data, sha256) in ``executor``'s threads: file creation and writes release
        the GIL, so a micro-batch's blobs are written side by side, not one after another."""
        for _ in executor.map(lambda item: self.put(*item), items):
            pass  # drains the map: the first error (a full disk) raises here

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None
