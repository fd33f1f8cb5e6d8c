"""Content-addressed store of inline image bytes, so a backfill can re-embed inline uploads.

Inline events keep only ``inline:sha256:<digest>`` in the index payload; the bytes themselves
are written here (``<dir>/<aa>/<digest>``) when the image is indexed. Files are written to a
temporary name and renamed, so a crash never leaves a truncated blob. Blobs are never deleted
(several images may share one; a removed image's bytes stay until someone cleans the folder).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None
