"""Search logic behind the HTTP API: "what looks like this?" by image bytes or by image id.

Blocking (decode, inference, Qdrant): the API runs these calls in an executor.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..encoders import Encoder
from ..errors import InvalidRequest, NotFound, NotReady
from ..images import BlobStore, decode_image
from ..index import Hit, VectorIndex
from .blending import PAGE, blend_pages


@dataclass(frozen=True)
class SearchRequest:
    k: int = 10
    conditions: Mapping[str, Any] | None = None
    image_id: str | None = None
    image_bytes: bytes | None = None
    user_id: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        if (self.image_id is None) == (self.image_bytes is None):
            raise InvalidRequest("give exactly one of: an image file, or a JSON body with image_id")
        if not 1 <= self.k <= 1000:
            raise InvalidRequest("k must be between 1 and 1000")


class SearchService:
    def __init__(
        self,
        encoder: Encoder,
        index: VectorIndex,
        max_pixels: int,
        query_images: BlobStore | None = None,
        encoders: MutableMapping[str, Encoder] | None = None,
        anchor: Callable[[], str | None] | None = None,
        anchor_slots: int = 0,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.max_pixels = max_pixels
        # Where query uploads are kept for training pairs (None: not kept).
        self.query_images = query_images
        #: The worker's encoder per written version (shared, updated by rollouts): a query is
        #: embedded by the encoder of whatever version the serving alias points at.
        self.encoders = encoders
        #: The anchor version, if one is kept (read at each search: a rollout step may change
        #: it), and how many places of each first page its best matches keep (0: none).
        self.anchor = anchor
        self.anchor_slots = anchor_slots

    def _encoder_of(self, version: str) -> Encoder | None:
        if self.encoders is not None:
            return self.encoders.get(version)
        return self.encoder if version == self.encoder.version else None

    def serving_version(self) -> str:
        return self._serving()[0]

    def _serving(self) -> tuple[str, Encoder]:
        version = self.index.serving_version()
        if version is None:
            raise NotReady("nothing is indexed yet: no serving model version")
        encoder = self._encoder_of(version)
        if encoder is None:
            raise NotReady(
                f"the serving model version is {version} but this worker runs encoder "
                f"{self.encoder.version}; run a worker with that encoder"
            )
        return version, encoder

    def search(self, request: SearchRequest) -> dict[str, Any]:
        # One read of the alias: the query is embedded and answered by the same version, even
        # if a promotion switches the alias meanwhile.
        version, encoder = self._serving()
        query: dict[str, Any]
        exclude: list[str] = []
        image = None
        if request.image_bytes is not None:
            image = decode_image(
                request.image_bytes,
                max_pixels=self.max_pixels,
                target_size=encoder.preprocessing.resize,
            )
            vector = encoder.embed_images([image])[0]
            if self.query_images is not None:
                self.query_images.put(request.image_bytes)
            query = {
                "type": "image",
                "content_sha256": hashlib.sha256(request.image_bytes).hexdigest(),
            }
        else:
            assert request.image_id is not None
            record = self.index.get(version, request.image_id, with_vector=True)
            if record is None:
                raise _not_indexed(request.image_id)
            vector = record["vector"]
            exclude = [request.image_id]  # "more like this" should not answer with itself
            query = {"type": "image_id", "image_id": request.image_id}
        hits = [
            hit.as_json() | {"ranked_by": version}
            for hit in self.index.search(version, vector, request.k, request.conditions, exclude)
        ]
        anchor = self._anchor(version)
        if anchor is not None and request.k > PAGE - self.anchor_slots:
            hits = self._with_anchor(hits, anchor, request, image, exclude)
        return {
            "search_id": uuid.uuid4().hex,
            "model_version": version,
            "query": {
                **query,
                "k": request.k,
                "filter": dict(request.conditions or {}),
                "user_id": request.user_id,
                "session_id": request.session_id,
            },
            "results": [hit | {"rank": rank} for rank, hit in enumerate(hits, 1)],
        }

    def _anchor(self, serving: str) -> tuple[str, Encoder] | None:
        if not self.anchor_slots or self.anchor is None:
            return None
        version = self.anchor()
        encoder = self._encoder_of(version) if version not in (None, serving) else None
        return (version, encoder) if version is not None and encoder is not None else None

    def _with_anchor(
        self,
        hits: list[dict[str, Any]],
        anchor: tuple[str, Encoder],
        request: SearchRequest,
        image: Any,
        exclude: list[str],
    ) -> list[dict[str, Any]]:
        """The serving model's results with the anchor's top ``anchor_slots`` on the first
        page (:func:`~lookalike.search.blending.blend_pages`), cut to ``k``."""
        version, encoder = anchor
        if request.image_id is None:
            vector = encoder.embed_images([image])[0]
        else:
            record = self.index.get(version, request.image_id, with_vector=True)
            if record is None:  # not in the anchor (yet): the serving model's page alone
                return hits
            vector = record["vector"]
        found: list[Hit] = self.index.search(
            version, vector, self.anchor_slots, request.conditions, exclude
        )
        serving_ids = [hit["image_id"] for hit in hits]
        order = blend_pages(serving_ids, [hit.image_id for hit in found], PAGE, self.anchor_slots)
        # The page follows the serving model's order up to where the anchor's places begin.
        pairs = zip(order, serving_ids, strict=False)
        kept = next((n for n, (a, b) in enumerate(pairs) if a != b), PAGE)
        by_id = {hit["image_id"]: hit for hit in hits}
        by_id |= {
            hit.image_id: hit.as_json() | {"ranked_by": version}
            for hit in found
            if hit.image_id in order[kept:PAGE]
        }
        return [by_id[image_id] for image_id in order][: request.k]

    def get_image(self, image_id: str) -> dict[str, Any]:
        version = self.serving_version()
        record = self.index.get(version, image_id)
        if record is None:
            raise _not_indexed(image_id)
        return record


def _not_indexed(image_id: str) -> NotFound:
    return NotFound("image", image_id, f"image {image_id!r} is not in the index")
