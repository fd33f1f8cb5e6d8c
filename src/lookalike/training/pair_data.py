"""Training pairs -> tensors of base-encoder vectors.

The head is trained on top of a frozen base encoder, so every image a pair names is needed only
as its base vector. Catalogue images (positives, negatives, queries by id) are read from the
index under the base encoder's version (through the running worker's API, or straight from the
index when no worker holds it); uploaded query images are read from the query-image store and
embedded here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import httpx
import numpy as np
import torch
from PIL import Image

from ..encoders import Encoder
from ..errors import ConfigurationError, ImageRejected
from ..events import TrainingPair
from ..images import BlobStore, ImageFetcher, decode_image, payload_bytes
from ..index import VectorIndex
from .augment import Augmentation, view_pixels

#: How training views of product photos are drawn (see ``augment``).
AUGMENTATION = Augmentation()

log = logging.getLogger(__name__)


class VectorSource(Protocol):
    def fetch(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


def _no_version(version: str) -> ConfigurationError:
    return ConfigurationError(
        f"the index holds no vectors for {version}: train on the encoder that indexed the "
        "catalogue (see `lookalike stats`)"
    )


class ApiVectors:
    """Vectors from a running worker (``POST /vectors``): embedded Qdrant is single-process."""

    def __init__(self, client: httpx.Client, chunk: int = 500) -> None:
        self.client = client
        self.chunk = chunk

    def _post(self, version: str, image_ids: Sequence[str], what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(image_ids), self.chunk):
            body = {"version": version, "image_ids": list(image_ids[start : start + self.chunk])}
            response = self.client.post("/vectors", json=body | {"payloads": what == "payloads"})
            if response.status_code == 404:
                raise _no_version(version)
            response.raise_for_status()
            found.update(response.json()[what])
        return found

    def fetch(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            image_id: np.asarray(vector, dtype=np.float32)
            for image_id, vector in self._post(version, image_ids, "vectors").items()
        }

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Indexed records, with their source references."""
        return self._post(version, image_ids, "payloads")


class IndexVectors:
    """Vectors straight from the index (no worker running)."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    def _read(
        self, read: Callable[[str, Sequence[str]], dict], version: str, ids: Sequence[str]
    ) -> dict[str, Any]:
        if version not in self.index.versions():
            raise _no_version(version)
        found: dict[str, Any] = {}
        for start in range(0, len(ids), 500):
            found.update(read(version, ids[start : start + 500]))
        return found

    def fetch(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self._read(self.index.vectors, version, image_ids)

    def payloads(self, version: str, image_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._read(self.index.payloads, version, image_ids)


@dataclass
class PairTensors:
    """Pairs as indices into one table of base vectors (catalogue images and queries alike)."""

    vectors: torch.Tensor  # (N, D) base vectors, or (N, C, H, W) trunk maps to train a tail
    queries: torch.Tensor  # (P,) row of each pair's query
    positives: torch.Tensor  # (P,) row of each pair's clicked image
    negatives: torch.Tensor  # (P, M) rows of logged negatives, -1 padded
    skipped: dict[str, int] = field(default_factory=dict)
    #: > 1: ``vectors`` holds that many augmented views of each image (N, V, C, H, W).
    views: int = 1

    def __len__(self) -> int:
        return int(self.positives.shape[0])

    def subset(self, rows: torch.Tensor) -> PairTensors:
        return PairTensors(
            self.vectors,
            self.queries[rows],
            self.positives[rows],
            self.negatives[rows],
            views=self.views,
        )

    def served(self, index: torch.Tensor) -> torch.Tensor:
        """The table's rows at ``index`` as served (view 0)."""
        picked = self.vectors[index]
        return picked if self.views == 1 else picked[:, 0]

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The table's rows at ``index``; with augmented views, a random view of each (view 0
        is the image as served)."""
        picked = self.vectors[index]
        if self.views == 1:
            return picked
        view = torch.randint(0, self.views, (len(index),))
        return picked[torch.arange(len(index)), view]


def pairs_digest(pairs: Sequence[TrainingPair]) -> str:
    """Identifies a training set: resuming is only allowed on the same pairs."""
    digest = hashlib.sha256()
    for pair_id in sorted(p.pair_id for p in pairs):
        digest.update(pair_id.encode())
    return digest.hexdigest()[:16]


def is_held_out(pair_id: str, fraction: float) -> bool:
    """Whether a pair is kept out of training, by a hash of its id: the same pairs stay held
    out as new ones arrive, so held-out clicks are never trained on by any later candidate."""
    return int(hashlib.sha256(pair_id.encode()).hexdigest()[:8], 16) < fraction * 2**32


def split_pairs(
    pairs: Sequence[TrainingPair], fraction: float
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(pairs to train on, held-out pairs) by :func:`is_held_out`."""
    train = [p for p in pairs if not is_held_out(p.pair_id, fraction)]
    held = [p for p in pairs if is_held_out(p.pair_id, fraction)]
    return train, held


#: A table row's key and how to read its image's bytes (None: the bytes are gone).
ImageRead = tuple[str, Callable[[], bytes | None]]


def build_pair_tensors(
    pairs: Sequence[TrainingPair],
    base: Encoder,
    source: VectorSource,
    blobs: BlobStore,
    *,
    max_pixels: int,
    fetcher: ImageFetcher | None = None,
    tail: bool = False,
    batch: int = 32,
    progress: Callable[[int, int], None] | None = None,
    indexed_version: str | None = None,
    tail_blocks: int = 0,
    views: int = 1,
) -> PairTensors:
    """Resolve every image the pairs name; pairs with a missing image are skipped (counted).
    ``progress(done, total)`` is told of each batch of images read (``total``: all to read).

    ``tail=False``: rows are base vectors (catalogue images read from the index, queries
    embedded). ``tail=True``: rows are the base trunk's feature maps, so the tail can be trained;
    every image is then re-read from its source (``fetcher``, ``blobs``) and run through the
    trunk, ``views`` times when > 1 (augmented views: ``training.augment``).
    ``indexed_version``: whose index records name the images' sources (default: the base's;
    with ``tail=False`` it must be the base's, whose stored vectors are used).
    """
    if views > 1 and not tail:
        raise ConfigurationError(
            "augmented views need the tail trained (--tail): a head only "
            "trains on the index's stored vectors"
        )
    indexed_version = indexed_version or base.version
    catalogue_ids = _catalogue_ids(pairs)
    rows: dict[str, int] = {}
    table: list[torch.Tensor] = []
    # Images that go through the model here.
    to_run: list[ImageRead] = []
    if tail:
        if fetcher is None:
            raise ValueError("training the tail re-reads catalogue images: give a fetcher")
        for image_id, payload in source.payloads(indexed_version, catalogue_ids).items():
            to_run.append((image_id, partial(payload_bytes, payload, fetcher, blobs)))
    else:
        found = source.fetch(base.version, catalogue_ids)
        log.info("%d of %d catalogue images found in the index", len(found), len(catalogue_ids))
        for image_id, vector in found.items():
            rows[image_id] = len(table)
            table.append(torch.from_numpy(vector))
    to_run.extend(_query_uploads(pairs, blobs))
    run = _run_images(to_run, base, max_pixels, tail, batch, progress, tail_blocks, views)
    for key, value in run:
        rows[key] = len(table)
        table.append(value)
    data = _index_pairs(pairs, rows, table)
    data.views = views
    return data


def _catalogue_ids(pairs: Sequence[TrainingPair]) -> list[str]:
    return sorted(
        {p.positive for p in pairs}
        | {n for p in pairs for n in p.negatives}
        | {p.query.image_id for p in pairs if p.query.image_id}
    )


def _query_uploads(pairs: Sequence[TrainingPair], blobs: BlobStore) -> list[ImageRead]:
    """Uploaded query images, read from the kept blobs by content hash."""
    shas = sorted({p.query.content_sha256 for p in pairs if p.query.content_sha256})
    return [("sha:" + sha, partial(blobs.get, sha)) for sha in shas]


def embed_pair_images(
    pairs: Sequence[TrainingPair],
    encoders: Mapping[str, Encoder],
    source: VectorSource,
    blobs: BlobStore,
    fetcher: ImageFetcher,
    *,
    version: str,
    max_pixels: int,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Every image the pairs name, re-read from its source and embedded by each encoder
    (encoder name -> image key -> vector): the same images for every model, none of the
    index's stored (possibly bf16, possibly older) vectors. ``version``: the indexed version
    whose records name the catalogue images' sources."""
    catalogue = source.payloads(version, _catalogue_ids(pairs))
    to_run: list[ImageRead] = [
        (image_id, partial(payload_bytes, payload, fetcher, blobs))
        for image_id, payload in catalogue.items()
    ]
    to_run.extend(_query_uploads(pairs, blobs))
    return {
        name: {
            key: row.numpy()
            for key, row in _run_images(to_run, encoder, max_pixels, False, 32, progress)
        }
        for name, encoder in encoders.items()
    }


def _run_images(
    to_run: Sequence[ImageRead],
    base: Encoder,
    max_pixels: int,
    tail: bool,
    batch: int,
    progress: Callable[[int, int], None] | None,
    tail_blocks: int = 0,
    views: int = 1,
) -> list[tuple[str, torch.Tensor]]:
    """Decode and run the images through the base, in batches: (key, row) for each readable
    one (base vectors, or trunk maps to train a tail on: ``views`` of them per image)."""

    def model(tensors: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        if tail:
            return base.trunk_maps(tensors, tail_blocks)
        return torch.from_numpy(base.embed_tensors(tensors))

    out: list[tuple[str, torch.Tensor]] = []
    for start in range(0, len(to_run), batch):
        chunk = to_run[start : start + batch]
        keys, tensors = [], []
        for key, read in chunk:
            try:
                data = read()
                if data is None:
                    continue
                image = decode_image(
                    data, max_pixels=max_pixels, target_size=base.preprocessing.resize
                )
            except ImageRejected as exc:
                log.warning("training image %s unreadable: %s", key, exc.reason)
                continue
            keys.append(key)
            tensors.extend(_views(base, image, key, views))
        if tensors:
            found = model(tensors)
            if views > 1:
                found = found.unflatten(0, (len(keys), views))
            out.extend(zip(keys, found, strict=True))
        if progress is not None:
            progress(len(chunk), len(to_run))
    return out


def _views(base: Encoder, image: Image.Image, key: str, views: int) -> list[torch.Tensor]:
    """The image as the encoder serves it, then ``views - 1`` augmented views of it."""
    if views == 1:
        return [base.preprocess(image)]
    return [view_pixels(image, key, v, base.preprocessing, AUGMENTATION) for v in range(views)]


def _index_pairs(
    pairs: Sequence[TrainingPair], rows: dict[str, int], table: list[torch.Tensor]
) -> PairTensors:
    """Each pair as rows of the table; pairs whose query or positive is missing are skipped."""
    skipped = {"query_missing": 0, "positive_missing": 0}
    queries, positives, negatives = [], [], []
    for pair in pairs:
        key = pair.query.image_id or f"sha:{pair.query.content_sha256}"
        if key not in rows:
            skipped["query_missing"] += 1
            continue
        if pair.positive not in rows:
            skipped["positive_missing"] += 1
            continue
        queries.append(rows[key])
        positives.append(rows[pair.positive])
        negatives.append([rows[n] for n in pair.negatives if n in rows])
    if not queries:
        raise ConfigurationError(
            f"none of the {len(pairs)} pairs could be resolved ({skipped}): are the query images "
            "kept (LOOKALIKE_KEEP_QUERY_IMAGES) and is --data-dir the worker's?"
        )
    width = max(1, max(len(n) for n in negatives))
    padded = torch.full((len(negatives), width), -1, dtype=torch.long)
    for i, row in enumerate(negatives):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return PairTensors(
        vectors=torch.stack(table).float(),
        queries=torch.tensor(queries, dtype=torch.long),
        positives=torch.tensor(positives, dtype=torch.long),
        negatives=padded,
        skipped=skipped,
    )
