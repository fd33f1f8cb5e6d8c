"""The in-memory mirror (embedded Qdrant) and Qdrant's own search (server) give the same
verdicts, and both skip the image itself and, when asked, the seller's images."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from lookalike.index import IndexPoint, QdrantIndex
from lookalike.validation import CategoryValidator, Upload, ValidationSettings

DIM = 16


def vector(axis: int, rng: np.random.Generator) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[axis] = 1.0
    v += rng.normal(scale=0.15, size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def index() -> QdrantIndex:
    rng = np.random.default_rng(3)
    idx = QdrantIndex(QdrantClient(":memory:"), "p")
    idx.ensure_collection("v", DIM)
    points = [
        IndexPoint(
            f"{cat}-{i}",
            vector(axis, rng),
            {"image_id": f"{cat}-{i}", "category": cat, "seller_id": f"s{i % 2}"},
        )
        for axis, cat in enumerate("ABC")
        for i in range(8)
    ]
    idx.upsert("v", points)
    return idx


@pytest.mark.parametrize("exclude_same_seller", [False, True])
def test_mirror_and_qdrant_agree(index: QdrantIndex, exclude_same_seller: bool) -> None:
    settings = ValidationSettings(k=5, min_examples=3, exclude_same_seller=exclude_same_seller)
    mirror = CategoryValidator(index, "v", DIM, settings, in_memory=True)
    server = CategoryValidator(index, "v", DIM, settings, in_memory=False)
    assert mirror.mirror is not None and server.mirror is None
    rng = np.random.default_rng(9)
    uploads = [
        Upload("A-0", "s0", "B", vector(0, rng)),  # already indexed: must not be its own evidence
        Upload("new-1", "s1", "A", vector(0, rng)),
        Upload("new-2", "s0", "C", vector(1, rng)),
    ]
    for a, b in zip(mirror.judge(uploads), server.judge(uploads), strict=True):
        assert (a.outcome, a.predicted) == (b.outcome, b.predicted)
        assert [n.image_id for n in a.evidence] == [n.image_id for n in b.evidence]
        assert a.confidence == pytest.approx(b.confidence, abs=1e-3)
    verdicts = mirror.judge(uploads)
    assert "A-0" not in {n.image_id for n in verdicts[0].evidence}
    assert [v.outcome for v in verdicts] == ["mismatch", "ok", "mismatch"]
    if exclude_same_seller:
        assert all(n.seller_id != "s1" for n in verdicts[1].evidence)
