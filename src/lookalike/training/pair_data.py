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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import numpy as np
import torch

from ..blobs import BlobStore
from ..consumers.qdrant_index import QdrantIndex
from ..encoders.base import Encoder
from ..errors import ConfigurationError, ImageRejected
from ..events import TrainingPair
from ..images import decode_image

log = logging.getLogger(__name__)


class VectorSource(Protocol):
    def fetch(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]: ...


class ApiVectors:
    """Vectors from a running worker (``POST /vectors``): embedded Qdrant is single-process."""

    def __init__(self, client: httpx.Client, chunk: int = 500) -> None:
        self.client = client
        self.chunk = chunk

    def fetch(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(image_ids), self.chunk):
            response = self.client.post(
                "/vectors",
                json={"version": version, "image_ids": list(image_ids[start : start + self.chunk])},
            )
            if response.status_code == 404:
                raise ConfigurationError(
                    f"the index holds no vectors for {version}: train on the encoder that "
                    "indexed the catalogue (see `lookalike stats`)"
                )
            response.raise_for_status()
            for image_id, vector in response.json()["vectors"].items():
                found[image_id] = np.asarray(vector, dtype=np.float32)
        return found


class IndexVectors:
    """Vectors straight from the index (no worker running)."""

    def __init__(self, index: QdrantIndex) -> None:
        self.index = index

    def fetch(self, version: str, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        if version not in self.index.versions():
            raise ConfigurationError(
                f"the index holds no vectors for {version}: train on the encoder that indexed "
                "the catalogue (see `lookalike stats`)"
            )
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(image_ids), 500):
            found.update(self.index.vectors(version, image_ids[start : start + 500]))
        return found


@dataclass
class PairTensors:
    """Pairs as indices into one table of base vectors (catalogue images and queries alike)."""

    vectors: torch.Tensor  # (N, D) float32, L2-normalised base vectors
    queries: torch.Tensor  # (P,) row of each pair's query
    positives: torch.Tensor  # (P,) row of each pair's clicked image
    negatives: torch.Tensor  # (P, M) rows of logged negatives, -1 padded
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.positives.shape[0])

    def subset(self, rows: torch.Tensor) -> PairTensors:
        return PairTensors(
            self.vectors, self.queries[rows], self.positives[rows], self.negatives[rows]
        )


def pairs_digest(pairs: Sequence[TrainingPair]) -> str:
    """Identifies a training set: resuming is only allowed on the same pairs."""
    digest = hashlib.sha256()
    for pair_id in sorted(p.pair_id for p in pairs):
        digest.update(pair_id.encode())
    return digest.hexdigest()[:16]


def build_pair_tensors(
    pairs: Sequence[TrainingPair],
    base: Encoder,
    source: VectorSource,
    query_images: BlobStore,
    *,
    max_pixels: int,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
) -> PairTensors:
    """Resolve every image the pairs name; pairs with a missing image are skipped (counted)."""
    catalogue_ids = sorted(
        {p.positive for p in pairs}
        | {n for p in pairs for n in p.negatives}
        | {p.query.image_id for p in pairs if p.query.image_id}
    )
    found = source.fetch(base.version, catalogue_ids)
    log.info("%d of %d catalogue images found in the index", len(found), len(catalogue_ids))
    rows: dict[str, int] = {}
    table: list[np.ndarray] = []
    for image_id, vector in found.items():
        rows[image_id] = len(table)
        table.append(vector)

    hashes = sorted({p.query.content_sha256 for p in pairs if p.query.content_sha256})
    pending: list[tuple[str, torch.Tensor]] = []
    for sha in hashes:
        data = query_images.get(sha)
        if data is None:
            continue
        try:
            image = decode_image(data, max_pixels=max_pixels, target_size=base.preprocessing.resize)
        except ImageRejected as exc:
            log.warning("query image %s unreadable: %s", sha[:12], exc)
            continue
        pending.append((sha, base.preprocess(image)))
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        for (sha, _), vector in zip(chunk, base.embed_tensors([t for _, t in chunk]), strict=True):
            rows["sha:" + sha] = len(table)
            table.append(vector)
        if progress is not None:
            progress(len(chunk))

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
        vectors=torch.from_numpy(np.stack(table).astype(np.float32)),
        queries=torch.tensor(queries, dtype=torch.long),
        positives=torch.tensor(positives, dtype=torch.long),
        negatives=padded,
        skipped=skipped,
    )
