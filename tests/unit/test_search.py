"""Unit tests for lookalike.search (the logic behind the HTTP search API), with the tiny
encoder and an in-memory Qdrant."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fakes import TinyEncoder
from imagegen import image_bytes, make_image
from qdrant_client import QdrantClient

from lookalike.api import status_for
from lookalike.errors import DecodeError, InvalidRequest, NotFound, NotReady
from lookalike.images import decode_image
from lookalike.index import IndexPoint, QdrantIndex
from lookalike.search import SearchRequest, SearchService
from lookalike.search.blending import blend_pages

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

IDS = [("c0", "circles", 0), ("c1", "circles", 1), ("s0", "stripes", 0), ("k0", "checkers", 0)]


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def index(encoder: TinyEncoder) -> Iterator[QdrantIndex]:
    idx = QdrantIndex(QdrantClient(":memory:"), prefix="search")
    try:
        yield idx
    finally:
        idx.close()


@pytest.fixture
def service(encoder: TinyEncoder, index: QdrantIndex) -> SearchService:
    index.ensure_collection(encoder.version, encoder.dim)
    vectors = encoder.embed_images([make_image(cat, seed) for _, cat, seed in IDS])
    index.upsert(
        encoder.version,
        [
            IndexPoint(image_id, vector, {"image_id": image_id, "category": cat})
            for (image_id, cat, _), vector in zip(IDS, vectors, strict=True)
        ],
    )
    index.set_serving(encoder.version)
    return SearchService(encoder, index, max_pixels=10_000_000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"image_id": "a", "image_bytes": b"x"},
        {"image_id": "a", "k": 0},
        {"image_id": "a", "k": 1001},
    ],
    ids=["neither", "both", "k0", "k1001"],
)
def test_request_validation(kwargs: dict) -> None:
    with pytest.raises(InvalidRequest) as info:
        SearchRequest(**kwargs)
    assert status_for(info.value) == 400


def test_nothing_served_yet(encoder: TinyEncoder, index: QdrantIndex) -> None:
    with pytest.raises(NotReady) as info:
        SearchService(encoder, index, 10**7).search(SearchRequest(image_id="c0"))
    assert status_for(info.value) == 503


def test_serving_version_of_another_encoder(encoder: TinyEncoder, index: QdrantIndex) -> None:
    index.ensure_collection("someone-else", encoder.dim)
    index.set_serving("someone-else")
    with pytest.raises(NotReady) as info:
        SearchService(encoder, index, 10**7).serving_version()
    assert status_for(info.value) == 503
    assert "someone-else" in str(info.value) and encoder.version in str(info.value)


def test_search_by_image_id_excludes_itself(service: SearchService) -> None:
    result = service.search(SearchRequest(image_id="c0", k=10))
    ids = [r["image_id"] for r in result["results"]]
    assert "c0" not in ids and sorted(ids) == ["c1", "k0", "s0"]
    assert [r["rank"] for r in result["results"]] == [1, 2, 3]
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
    assert result["query"] == {
        "type": "image_id",
        "image_id": "c0",
        "k": 10,
        "filter": {},
        "user_id": None,
        "session_id": None,
    }
    assert result["model_version"] == service.encoder.version


def test_search_by_image_bytes_finds_the_same_image_first(service: SearchService) -> None:
    result = service.search(SearchRequest(image_bytes=image_bytes("stripes", 0, fmt="PNG"), k=2))
    first = result["results"][0]
    assert first["image_id"] == "s0" and first["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(result["results"]) == 2
    assert result["query"]["type"] == "image"


def test_search_with_filter(service: SearchService) -> None:
    request = SearchRequest(image_id="s0", k=10, conditions={"category": "circles"})
    result = service.search(request)
    assert sorted(r["image_id"] for r in result["results"]) == ["c0", "c1"]
    assert all(r["category"] == "circles" for r in result["results"])
    assert result["query"]["filter"] == {"category": "circles"}


def test_unknown_filter_field(service: SearchService) -> None:
    with pytest.raises(InvalidRequest, match="price"):
        service.search(SearchRequest(image_id="s0", conditions={"price": 1}))


def test_unknown_image_id(service: SearchService) -> None:
    with pytest.raises(NotFound) as info:
        service.search(SearchRequest(image_id="nope"))
    assert status_for(info.value) == 404
    with pytest.raises(NotFound) as info:
        service.get_image("nope")
    assert status_for(info.value) == 404


def test_bad_image_bytes(service: SearchService) -> None:
    with pytest.raises(DecodeError):
        service.search(SearchRequest(image_bytes=b"not an image"))


def test_get_image(service: SearchService) -> None:
    assert service.get_image("k0") == {"image_id": "k0", "category": "checkers"}


def test_anchor_slots_keep_the_anchor_top_matches_on_the_page(
    encoder: TinyEncoder, index: QdrantIndex
) -> None:
    anchor = TinyEncoder(seed=99)
    catalogue = [(f"i{n}", ("circles", "stripes", "checkers")[n % 3], n) for n in range(16)]
    images = [make_image(category, seed) for _, category, seed in catalogue]
    for model in (encoder, anchor):
        index.ensure_collection(model.version, model.dim)
        vectors = model.embed_images(images)
        if model is anchor:  # a model that sees the catalogue quite differently
            vectors = np.roll(vectors, 5, axis=0)
        index.upsert(
            model.version,
            [
                IndexPoint(image_id, vector, {"image_id": image_id, "category": category})
                for (image_id, category, _), vector in zip(catalogue, vectors, strict=True)
            ],
        )
    index.set_serving(encoder.version)
    encoders = {encoder.version: encoder, anchor.version: anchor}

    def service(slots: int) -> SearchService:
        return SearchService(
            encoder,
            index,
            10**7,
            encoders=encoders,
            anchor=lambda: anchor.version,
            anchor_slots=slots,
        )

    def ids(answer: dict) -> list[str]:
        return [hit["image_id"] for hit in answer["results"]]

    upload = image_bytes("stripes", 7)
    decoded = decode_image(upload, max_pixels=10**7, target_size=encoder.preprocessing.resize)
    for query, vector, exclude in (
        (SearchRequest(image_id="i0", k=12), index.get(anchor.version, "i0", True), ["i0"]),
        (SearchRequest(image_bytes=upload, k=12), anchor.embed_images([decoded])[0], []),
    ):
        if isinstance(vector, dict):
            vector = vector["vector"]
        plain = ids(service(0).search(query))
        anchor_top = [h.image_id for h in index.search(anchor.version, vector, 3, None, exclude)]
        answer = service(3).search(query)
        assert ids(answer) == blend_pages(plain, anchor_top, 10, 3)[:12]
        assert [hit["rank"] for hit in answer["results"]] == list(range(1, 13))
        assert set(anchor_top) <= set(ids(answer)[:10])
        placed = [h["image_id"] for h in answer["results"] if h["ranked_by"] == anchor.version]
        assert placed, "the serving model's first 7 hold all of this query's anchor top 3"
        assert set(placed) <= set(anchor_top) and not set(placed) & set(plain[:7])
        assert ids(answer)[: 10 - len(placed)] == plain[: 10 - len(placed)]
    # Five results are all the serving model's (the anchor's places are 8 to 10)
    five = SearchRequest(image_id="i0", k=5)
    assert ids(service(3).search(five)) == ids(service(0).search(five))
