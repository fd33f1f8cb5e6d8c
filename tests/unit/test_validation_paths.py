"""The embedded engine and the Qdrant-server code path give the same verdicts, and both skip the
image itself and, when asked, the seller's images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backends import BACKENDS, open_backend

from lookalike.index import IndexPoint, VectorIndex
from lookalike.validation import CategoryValidator, Upload, ValidationSettings

DIM = 16


def vector(axis: int, rng: np.random.Generator) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[axis] = 1.0
    v += rng.normal(scale=0.15, size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def indexes(tmp_path: Path) -> Iterator[dict[str, VectorIndex]]:
    rng = np.random.default_rng(3)
    points = [
        IndexPoint(
            f"{cat}-{i}",
            vector(axis, rng),
            {"image_id": f"{cat}-{i}", "category": cat, "seller_id": f"s{i % 2}"},
        )
        for axis, cat in enumerate("ABC")
        for i in range(8)
    ]
    opened = {kind: open_backend(kind, tmp_path / kind, "p") for kind in BACKENDS}
    for index in opened.values():
        index.ensure_collection("v", DIM)
        index.upsert("v", points)
    try:
        yield opened
    finally:
        for index in opened.values():
            index.close()


@pytest.mark.parametrize("exclude_same_seller", [False, True])
def test_embedded_and_server_agree(
    indexes: dict[str, VectorIndex], exclude_same_seller: bool
) -> None:
    settings = ValidationSettings(k=5, min_examples=3, exclude_same_seller=exclude_same_seller)
    embedded = CategoryValidator(indexes["edge"], "v", DIM, settings)
    server = CategoryValidator(indexes["server"], "v", DIM, settings)
    rng = np.random.default_rng(9)
    uploads = [
        Upload("A-0", "s0", "B", vector(0, rng)),  # already indexed: must not be its own evidence
        Upload("new-1", "s1", "A", vector(0, rng)),
        Upload("new-2", "s0", "C", vector(1, rng)),
    ]
    for a, b in zip(embedded.judge(uploads), server.judge(uploads), strict=True):
        assert (a.outcome, a.predicted) == (b.outcome, b.predicted)
        assert [n.image_id for n in a.evidence] == [n.image_id for n in b.evidence]
        assert a.confidence == pytest.approx(b.confidence, abs=1e-3)
    verdicts = embedded.judge(uploads)
    assert "A-0" not in {n.image_id for n in verdicts[0].evidence}
    assert [v.outcome for v in verdicts] == ["mismatch", "ok", "mismatch"]
    if exclude_same_seller:
        assert all(n.seller_id != "s1" for n in verdicts[1].evidence)
