"""Category validation inside the indexing pipeline: each upload is judged against what was
indexed before its batch, mismatches come back as CategoryAlerts, and every upload is indexed
whatever its verdict.

TinyEncoder's vectors are random projections, so the mismatched upload is a near copy (one pixel
changed, re-encoded) of a catalogue image of another category: its nearest neighbour is that image
at similarity ~1 and the outcome does not depend on how well the tiny net separates categories.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes import TinyEncoder
from imagegen import CATEGORIES, image_bytes, make_image
from qdrant_client import QdrantClient

from lookalike.consumers.alerts import AlertStore
from lookalike.events import ConsumedMessage, ImageUploaded, InlineSource
from lookalike.images import ImageFetcher
from lookalike.index import QdrantIndex
from lookalike.indexing import IndexingPipeline
from lookalike.validation import CategoryValidator, ValidationSettings

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

TOPIC = "lookalike.uploads"
OCCURRED = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
SETTINGS = ValidationSettings(min_examples=2, k=3, threshold=0.85)
SEEDS = range(4)


def event(image_id: str, data: bytes, category: str, seller: str) -> bytes:
    return ImageUploaded(
        event_id=f"evt-{image_id}",
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id=seller,
        category=category,
        occurred_at=OCCURRED,
        image=InlineSource(data=data),
    ).to_json_bytes()


def messages(values: Sequence[bytes], first_offset: int = 0) -> list[ConsumedMessage]:
    return [
        ConsumedMessage(value=v, topic=TOPIC, partition=0, offset=first_offset + i)
        for i, v in enumerate(values)
    ]


def near_copy(category: str, seed: int) -> bytes:
    """The catalogue image of (category, seed) with one pixel changed, re-encoded."""
    img = make_image(category, seed)
    img.putpixel((0, 0), (0, 0, 0))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


CATALOGUE = messages(
    [event(f"{c}-{s}", image_bytes(c, s), c, "catalogue") for c in CATEGORIES for s in SEEDS]
)
LATER = messages(
    [
        event("cheat", near_copy("circles", 1), "stripes", "cheater"),  # circles, declared stripes
        event("honest", near_copy("stripes", 2), "stripes", "honest"),
        event("pioneer", image_bytes("triangles", 0), "triangles", "pioneer"),  # a new category
        event("corrupt", image_bytes("circles", 5)[:200], "circles", "cheater"),
    ],
    first_offset=100,
)


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def index(encoder: TinyEncoder) -> Iterator[QdrantIndex]:
    idx = QdrantIndex(QdrantClient(":memory:"), prefix="unit")
    idx.ensure_collection(encoder.version, encoder.dim)
    try:
        yield idx
    finally:
        idx.close()


@pytest.fixture
def fetcher() -> Iterator[ImageFetcher]:
    with ImageFetcher(image_root=None, timeout=2, max_bytes=1_000_000) as f:
        yield f


@pytest.fixture
def validator(encoder: TinyEncoder, index: QdrantIndex) -> CategoryValidator:
    return CategoryValidator(index, encoder.version, encoder.dim, SETTINGS)


@pytest.fixture
def pipeline(
    encoder: TinyEncoder, index: QdrantIndex, fetcher: ImageFetcher, validator: CategoryValidator
) -> Iterator[IndexingPipeline]:
    p = IndexingPipeline(
        encoder, index, fetcher, max_pixels=10_000_000, decode_threads=2, validator=validator
    )
    try:
        yield p
    finally:
        p.close()


def test_first_images_of_a_category_cannot_be_judged(
    pipeline: IndexingPipeline, validator: CategoryValidator, index: QdrantIndex
) -> None:
    result = pipeline.process(CATALOGUE)
    assert len(result.indexed) == len(CATALOGUE)
    assert result.verdicts == {"cannot_judge": len(CATALOGUE)}
    assert result.alerts == []
    assert "validate" in result.timings
    # observed after the write: the next batch can be judged
    assert {c: validator.support(c) for c in CATEGORIES} == {c: len(SEEDS) for c in CATEGORIES}
    assert index.count(validator.version) == len(CATALOGUE)


def test_mismatched_upload_raises_one_alert(
    pipeline: IndexingPipeline,
    validator: CategoryValidator,
    index: QdrantIndex,
    encoder: TinyEncoder,
) -> None:
    pipeline.process(CATALOGUE)
    result = pipeline.process(LATER)

    assert sorted(result.indexed) == ["cheat", "honest", "pioneer"]
    assert [dl.source_offset for dl in result.dead_letters] == [103]
    assert result.verdicts == {"mismatch": 1, "ok": 1, "cannot_judge": 1}

    assert len(result.alerts) == 1
    alert = result.alerts[0]
    assert (alert.image_id, alert.listing_id, alert.seller_id) == (
        "cheat",
        "listing-cheat",
        "cheater",
    )
    assert (alert.declared_category, alert.predicted_category) == ("stripes", "circles")
    assert alert.source_event_id == "evt-cheat"
    assert alert.model_version == encoder.version
    assert SETTINGS.threshold <= alert.confidence <= 1.0
    assert sum(alert.votes.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(alert.votes, key=alert.votes.__getitem__) == "circles"
    assert set(alert.prototype_scores) == set(CATEGORIES)
    top = alert.evidence[0]
    assert (top.image_id, top.category, top.seller_id) == ("circles-1", "circles", "catalogue")
    assert top.score > 0.99
    assert "cheat" not in {n.image_id for n in alert.evidence}

    # Every upload is indexed, under its declared category, whatever the verdict.
    assert index.count(encoder.version) == len(CATALOGUE) + 3
    cheat = index.get(encoder.version, "cheat")
    assert cheat is not None and cheat["category"] == "stripes"
    assert index.get(encoder.version, "pioneer")["category"] == "triangles"  # type: ignore[index]
    assert validator.support("triangles") == 1
    assert validator.support("stripes") == len(SEEDS) + 2


def test_replayed_batch_raises_the_same_alert_once(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder, tmp_path: Path
) -> None:
    store = AlertStore(tmp_path / "alerts.sqlite")
    try:
        pipeline.process(CATALOGUE)
        first = pipeline.process(LATER)
        replay = pipeline.process(LATER)  # e.g. offsets not committed before a restart
        assert [a.image_id for a in replay.alerts] == ["cheat"]  # its own point is no evidence
        assert replay.alerts[0].source_event_id == first.alerts[0].source_event_id
        assert index.count(encoder.version) == len(CATALOGUE) + 3
        assert store.add(first.alerts[0]) is True
        assert store.add(replay.alerts[0]) is False
        assert len(store.list()) == 1
    finally:
        store.close()


def test_no_validator_no_verdicts(
    encoder: TinyEncoder, index: QdrantIndex, fetcher: ImageFetcher
) -> None:
    pipeline = IndexingPipeline(encoder, index, fetcher, max_pixels=10_000_000, decode_threads=2)
    try:
        pipeline.process(CATALOGUE)
        result = pipeline.process(LATER)
    finally:
        pipeline.close()
    assert sorted(result.indexed) == ["cheat", "honest", "pioneer"]
    assert result.verdicts == {}
    assert result.alerts == []
    assert "validate" not in result.timings
