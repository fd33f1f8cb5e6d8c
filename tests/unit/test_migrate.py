"""A data dir written by lookalike before 0.2 (qdrant-client local mode) moves to the embedded
engine with nothing lost: vectors, payloads, exemplars, clocks and tombstones, the version
registry and the serving version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from qdrant_client import QdrantClient

from lookalike.cli import main
from lookalike.index import IndexPoint, QdrantIndex
from lookalike.index.edge import EdgeIndex
from lookalike.indexing import ClockRecord, ClockStore
from lookalike.rollout import VersionRegistry

DIM = 8


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def legacy_data_dir(data: Path) -> None:
    """What the previous release left: two versions (serving + candidate), exemplars, clocks."""
    old = QdrantIndex(QdrantClient(path=str(data / "qdrant")))
    registry = VersionRegistry(old)
    registry.bootstrap("v1", "efficientnet-lite0", DIM)
    registry.start("v2", "efficientnet-lite1", DIM)
    for version, n in (("v1", 600), ("v2", 250)):
        old.ensure_collection(version, DIM)
        old.upsert(
            version,
            [
                IndexPoint(
                    f"img-{i}",
                    vector(i),
                    {"image_id": f"img-{i}", "category": f"c{i % 3}", "attributes": {"n": i}},
                )
                for i in range(n)
            ],
        )
    old.set_serving("v1")
    old.ensure_exemplars("v1", DIM)
    old.upsert_exemplar(
        "v1", IndexPoint("ex-1", vector(99), {"image_id": "ex-1", "category": "c9"})
    )
    ClockStore(old).put_many(
        [ClockRecord(f"img-{i}", (1, i, "e"), "live") for i in range(600)]
        + [ClockRecord("gone", (3, 5, "e"), "removed", "sold")]
    )
    old.close()


def test_migrate_keeps_everything(settings_env: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    legacy_data_dir(data)
    result = CliRunner().invoke(main, ["migrate", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert (data / "qdrant.migrated").is_dir() and not (data / "qdrant").exists()

    index = EdgeIndex(data / "index", background=False)
    try:
        assert index.versions() == ["v1", "v2"]
        assert index.serving_version() == "v1"
        assert (index.count("v1"), index.count("v2")) == (600, 250)
        record = index.get("v1", "img-42", with_vector=True)
        assert record is not None
        assert record["category"] == "c0" and record["attributes"] == {"n": 42}
        np.testing.assert_allclose(record["vector"], vector(42), atol=1e-6)
        assert index.search("v1", vector(7), k=1)[0].image_id == "img-7"
        assert index.count_exemplars("v1", "c9") == 1
        clocks = ClockStore(index)
        assert clocks.get("img-5") == ClockRecord("img-5", (1, 5, "e"), "live")
        assert clocks.tombstones() == 1 and clocks.get("gone").reason == "sold"  # type: ignore[union-attr]
        states = {r.version: r.state for r in VersionRegistry(index).all()}
        assert states == {"v1": "serving", "v2": "candidate"}
    finally:
        index.close()

    again = CliRunner().invoke(main, ["migrate", "--data-dir", str(data)])
    assert again.exit_code == 1 and "nothing to migrate" in again.output
