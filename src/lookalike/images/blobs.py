"""Content-addressed image bytes on disk (``<dir>/<aa>/<digest>``), for two jobs:

- inline uploads: the index payload keeps only ``inline:sha256:<digest>``; the bytes are kept
  here when the image is indexed, so a backfill can re-embed them;
- search queries: images uploaded to ``POST /search`` are kept (by the same digest the logged
  search names) so training pairs can use them.

Files are written to a temporary name and renamed, so a crash never leaves a truncated blob.
Blobs are never deleted (several images may share one; a removed image's bytes stay until
someone cleans the folder).
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
