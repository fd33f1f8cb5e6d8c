"""Bytes of an indexed image, from the source reference its payload keeps (for re-embedding:
a rollout's backfill, fine-tuning)."""

from __future__ import annotations

from typing import Any

from ..errors import ImageRejected
from ..events import FileSource, UrlSource
from .blobs import BlobStore
from .fetch import ImageFetcher


def payload_bytes(payload: dict[str, Any], fetcher: ImageFetcher, blobs: BlobStore | None) -> bytes:
    kind, reference = payload.get("source_kind"), str(payload.get("source", ""))
    if kind == "url":
        return fetcher.fetch(UrlSource(url=reference))  # type: ignore[arg-type]
    if kind == "file":
        return fetcher.fetch(FileSource(path=reference.removeprefix("file:")))
    if kind == "inline":
        data = blobs.get(str(payload.get("content_sha256"))) if blobs else None
        if data is None:
            raise ImageRejected(
                "the inline image's bytes were not kept (indexed before the blob store "
                "existed, or the blob folder was cleaned): upload the image again",
                stage="fetch",
            )
        return data
    raise ImageRejected(f"unknown source kind {kind!r}", stage="fetch")
