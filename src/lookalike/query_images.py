"""Images uploaded as search queries, kept by content hash so a training pair can name its query
(``TrainingPair.query.content_sha256``) and the training job can read it back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class QueryImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Keep the bytes (once per content); returns their sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{sha256}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a reader never sees half an image
        return sha256

    def get(self, sha256: str) -> bytes | None:
        path = self.path_for(sha256)
        return path.read_bytes() if path.is_file() else None
