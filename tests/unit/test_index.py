"""The index interface on both backends (the embedded engine and the Qdrant-server code path):
the same calls, the same answers. Server-only mechanics (collections, the alias) at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backends import BACKENDS, open_backend, reopen
from qdrant_client import QdrantClient, models

from lookalike.errors import InvalidRequest
from lookalike.index import FILTERABLE_FIELDS, Hit, IndexPoint, QdrantIndex, VectorIndex, point_id
from lookalike.index.server import build_filter

# Payload indexes are a no-op in local mode; ensure_collection creates them for a server.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 4
V1, V2 = "enc-wdeadbeef-p00000001", "enc-wdeadbeef-p00000002"


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def point(image_id: str, vector: np.ndarray, **payload: object) -> IndexPoint:
    return IndexPoint(image_id, vector, {"image_id": image_id, **payload})


@pytest.fixture(params=BACKENDS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    idx = open_backend(request.param, tmp_path)
    idx.ensure_collection(V1, DIM)
    try:
        yield idx
    finally:
        idx.close()


@pytest.fixture
def server() -> Iterator[QdrantIndex]:
    idx = QdrantIndex(QdrantClient(":memory:"), prefix="test")
    idx.ensure_collection(V1, DIM)
    try:
        yield idx
    finally:
        idx.close()


@pytest.fixture
def filled(index: VectorIndex) -> VectorIndex:
    index.upsert(
        V1,
        [
            point("a", unit(1, 0, 0, 0), category="shoes", seller_id="s1", listing_id="l1"),
            point("b", unit(0.9, 0.1, 0, 0), category="shoes", seller_id="s2", listing_id="l2"),
            point("c", unit(0.5, 0.5, 0, 0), category="bags", seller_id="s1", listing_id="l3"),
            point("d", unit(0, 1, 0, 0), category="bags", seller_id="s3", listing_id="l4"),
            point("e", unit(-1, 0, 0, 1), category="hats", seller_id="s2", listing_id="l5"),
        ],
    )
    return index


# --- point ids ------------------------------------------------------------------------------


def test_point_id_deterministic_uuid() -> None:
    assert point_id("img-1") == point_id("img-1")
    assert point_id("img-1") != point_id("img-2")
    assert point_id("img-1") != point_id("IMG-1")
    assert uuid.UUID(point_id("img-1")).version == 5


# --- collections and the serving alias ------------------------------------------------------


def test_names(server: QdrantIndex) -> None:
    assert server.collection_name(V1) == f"test-{V1}"
    assert server.serving_alias == "test-serving"


def test_ensure_collection_idempotent(index: VectorIndex) -> None:
    index.upsert(V1, [point("a", unit(1, 0, 0, 0))])
    index.ensure_collection(V1, DIM)  # again: must neither fail nor wipe the collection
    index.ensure_collection(V1, DIM)
    assert index.count(V1) == 1
    assert index.versions() == [V1]


def test_collection_holds_the_version_dim(server: QdrantIndex) -> None:
    info = server.client.get_collection(server.collection_name(V1))
    assert info.config.params.vectors.size == DIM  # type: ignore[union-attr]


def test_versions_lists_only_own_prefix(server: QdrantIndex) -> None:
    server.ensure_collection(V2, DIM)
    server.client.create_collection(
        "unrelated", vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE)
    )
    assert server.versions() == sorted([V1, V2])


def test_count_of_missing_version_is_zero(index: VectorIndex) -> None:
    assert index.count("never-created") == 0
    assert index.count(V1) == 0


def test_serving_pointer_switch(index: VectorIndex) -> None:
    index.ensure_collection(V2, DIM)
    index.upsert(V1, [point("old", unit(1, 0, 0, 0))])
    index.upsert(V2, [point("new", unit(1, 0, 0, 0))])
    assert index.serving_version() is None
    index.set_serving(V1)
    assert index.serving_version() == V1
    assert [h.image_id for h in index.search(V1, unit(1, 0, 0, 0), k=5)] == ["old"]
    index.set_serving(V2)
    assert index.serving_version() == V2
    index.set_serving(V2)  # idempotent
    assert index.serving_version() == V2
    assert index.versions() == sorted([V1, V2])  # the pointer is not a version


def test_serving_alias_switch(server: QdrantIndex) -> None:
    index = server
    index.ensure_collection(V2, DIM)
    index.upsert(V1, [point("old", unit(1, 0, 0, 0))])
    index.upsert(V2, [point("new", unit(1, 0, 0, 0))])
    assert index.serving_version() is None

    index.set_serving(V1)
    assert index.serving_version() == V1
    hits = index.client.query_points(index.serving_alias, query=[1.0, 0, 0, 0], limit=5).points
    assert [p.id for p in hits] == [point_id("old")]

    index.set_serving(V2)
    assert index.serving_version() == V2
    hits = index.client.query_points(index.serving_alias, query=[1.0, 0, 0, 0], limit=5).points
    assert [p.id for p in hits] == [point_id("new")]
    aliases = [a for a in index.client.get_aliases().aliases if a.alias_name == "test-serving"]
    assert len(aliases) == 1

    index.set_serving(V2)  # idempotent
    assert index.serving_version() == V2
    assert index.versions() == sorted([V1, V2])  # the alias is not a version


def test_set_serving_to_missing_collection_keeps_old_alias(index: VectorIndex) -> None:
    index.set_serving(V1)
    with pytest.raises(Exception):  # noqa: B017 - the client's own error type
        index.set_serving("does-not-exist")
    assert index.serving_version() == V1


def test_two_prefixes_share_a_client(server: QdrantIndex) -> None:
    index = server
    other = QdrantIndex(index.client, prefix="other")
    other.ensure_collection(V2, DIM)
    other.set_serving(V2)
    index.set_serving(V1)
    assert other.serving_version() == V2
    assert index.serving_version() == V1
    assert other.versions() == [V2]


# --- points ---------------------------------------------------------------------------------


def test_upsert_same_image_twice_overwrites(index: VectorIndex) -> None:
    index.upsert(V1, [point("a", unit(1, 0, 0, 0), category="shoes")])
    index.upsert(V1, [point("a", unit(0, 1, 0, 0), category="bags")])
    assert index.count(V1) == 1
    record = index.get(V1, "a", with_vector=True)
    assert record is not None
    assert record["category"] == "bags"
    np.testing.assert_allclose(record["vector"], unit(0, 1, 0, 0), atol=1e-6)


def test_upsert_empty_is_noop(index: VectorIndex) -> None:
    index.upsert(V1, [])
    index.upsert("no-such-collection", [])  # not even a call to Qdrant
    assert index.count(V1) == 0


def test_get(filled: VectorIndex) -> None:
    record = filled.get(V1, "c")
    assert record == {"image_id": "c", "category": "bags", "seller_id": "s1", "listing_id": "l3"}
    assert "vector" not in record
    with_vector = filled.get(V1, "c", with_vector=True)
    assert with_vector is not None
    np.testing.assert_allclose(with_vector["vector"], unit(0.5, 0.5, 0, 0), atol=1e-6)
    assert filled.get(V1, "nope") is None


def test_search_nearest_first(filled: VectorIndex) -> None:
    hits = filled.search(V1, unit(1, 0, 0, 0), k=5)
    assert [h.image_id for h in hits] == ["a", "b", "c", "d", "e"]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[-1].score == pytest.approx(-(0.5**0.5), abs=1e-5)
    assert hits[1].payload["category"] == "shoes"


def test_search_k_limits(filled: VectorIndex) -> None:
    assert [h.image_id for h in filled.search(V1, [0, 1, 0, 0], k=2)] == ["d", "c"]


def test_search_accepts_unnormalised_query(filled: VectorIndex) -> None:
    assert filled.search(V1, [10.0, 0, 0, 0], k=1)[0].image_id == "a"


def test_search_category_filter(filled: VectorIndex) -> None:
    hits = filled.search(V1, unit(1, 0, 0, 0), k=10, conditions={"category": "bags"})
    assert [h.image_id for h in hits] == ["c", "d"]


@pytest.mark.parametrize("values", [["bags", "hats"], ("bags", "hats")], ids=["list", "tuple"])
def test_search_any_of_filter(filled: VectorIndex, values: object) -> None:
    hits = filled.search(V1, unit(1, 0, 0, 0), k=10, conditions={"category": values})
    assert [h.image_id for h in hits] == ["c", "d", "e"]


def test_search_combined_filters_and(filled: VectorIndex) -> None:
    hits = filled.search(
        V1, unit(1, 0, 0, 0), k=10, conditions={"seller_id": ["s1", "s2"], "category": "shoes"}
    )
    assert [h.image_id for h in hits] == ["a", "b"]


def test_search_none_condition_ignored(filled: VectorIndex) -> None:
    hits = filled.search(V1, unit(1, 0, 0, 0), k=10, conditions={"category": None})
    assert len(hits) == 5


def test_search_no_match(filled: VectorIndex) -> None:
    assert filled.search(V1, unit(1, 0, 0, 0), conditions={"category": "boats"}) == []


def test_search_exclude_ids(filled: VectorIndex) -> None:
    hits = filled.search(V1, unit(1, 0, 0, 0), k=10, exclude_image_ids=["a", "c"])
    assert [h.image_id for h in hits] == ["b", "d", "e"]
    hits = filled.search(
        V1, unit(1, 0, 0, 0), k=10, conditions={"category": "shoes"}, exclude_image_ids=["a"]
    )
    assert [h.image_id for h in hits] == ["b"]


def test_unknown_filter_field(filled: VectorIndex) -> None:
    with pytest.raises(InvalidRequest) as info:
        filled.search(V1, unit(1, 0, 0, 0), conditions={"price": 3})
    assert "price" in str(info.value)
    for name in FILTERABLE_FIELDS:
        assert name in str(info.value)


def test_build_filter_empty() -> None:
    assert build_filter(None) is None
    assert build_filter({}) is None
    assert build_filter({"category": None}) is None


def test_delete(filled: VectorIndex) -> None:
    filled.delete(V1, ["a", "b", "never-indexed"])
    assert filled.count(V1) == 3
    assert filled.get(V1, "a") is None
    assert [h.image_id for h in filled.search(V1, unit(1, 0, 0, 0), k=10)] == ["c", "d", "e"]
    filled.delete(V1, [])
    assert filled.count(V1) == 3


def test_versions_are_isolated(index: VectorIndex) -> None:
    index.ensure_collection(V2, 3)
    index.upsert(V1, [point("a", unit(1, 0, 0, 0))])
    index.upsert(V2, [point("a", unit(1, 0, 0)), point("b", unit(0, 1, 0))])
    assert (index.count(V1), index.count(V2)) == (1, 2)
    assert index.get(V1, "b") is None


def test_hit_as_json() -> None:
    hit = Hit("a", 0.123456789, {"image_id": "a", "category": "shoes"})
    assert hit.as_json() == {"image_id": "a", "score": 0.123457, "category": "shoes"}


# --- durability -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
def test_on_disk_index_survives_reopen(tmp_path: Path, kind: str) -> None:
    first = open_backend(kind, tmp_path, "disk")
    first.ensure_collection(V1, DIM)
    first.upsert(V1, [point("a", unit(1, 0, 0, 0), category="shoes")])
    first.upsert(V1, [point("b", unit(0, 1, 0, 0), category="bags")])
    first.set_serving(V1)
    second = reopen(first, kind, tmp_path)
    try:
        assert second.versions() == [V1]
        assert second.serving_version() == V1
        assert second.count(V1) == 2
        assert second.get(V1, "a") == {"image_id": "a", "category": "shoes"}
        assert second.search(V1, unit(0, 1, 0, 0), k=1)[0].image_id == "b"
        second.ensure_collection(V1, DIM)  # idempotent after reopen too
        assert second.count(V1) == 2
    finally:
        second.close()
