"""Thumbnails of indexed images, for the console: the serving version's record says where the
image's bytes are (the kept blob of an inline upload, a file under the image root, a URL
fetched through the same guard as indexing); :class:`~lookalike.images.ThumbnailCache` makes
and keeps the small copy."""

from __future__ import annotations

import hashlib

from ..errors import NotFound
from ..images import BlobStore, ImageFetcher, ThumbnailCache, payload_bytes
from ..index import VectorIndex
from .service import SearchService


class ThumbnailService:
    def __init__(
        self,
        search: SearchService,
        index: VectorIndex,
        fetcher: ImageFetcher,
        blobs: BlobStore | None,
        cache: ThumbnailCache,
    ) -> None:
        self.search = search
        self.index = index
        self.fetcher = fetcher
        self.blobs = blobs
        self.cache = cache

    def thumbnail(self, image_id: str, size: int) -> tuple[bytes, str, str]:
        """Blocking: (JPEG bytes, "cache" or "made", an ETag)."""
        version = self.search.serving_version()
        payload = self.index.payloads(version, [image_id]).get(image_id)
        if payload is None:
            raise NotFound("image", image_id, f"image {image_id!r} is not in the index")
        digest = (
            str(payload.get("content_sha256") or "")
            or hashlib.sha256(str(payload.get("source", image_id)).encode()).hexdigest()
        )
        data, source = self.cache.get(
            digest, size, lambda: payload_bytes(payload, self.fetcher, self.blobs)
        )
        return data, source, f'"{digest[:32]}-{size}"'
