"""Updates, removals and the per-image clock rule, through the real pipeline (TinyEncoder,
in-memory Qdrant): late and replayed events never undo newer ones, removals leave tombstones."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakes import TinyEncoder
from imagegen import image_bytes
from qdrant_client import QdrantClient

from lookalike.events import (
    ConsumedMessage,
    ImageAttributesChanged,
    ImageRemoved,
    ImageUploaded,
    InlineSource,
    parse_image_event,
)
from lookalike.images import ImageFetcher
from lookalike.index import IndexPoint, QdrantIndex
from lookalike.indexing import ClockRecord, IndexingPipeline, clock_of, is_current

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
A = image_bytes("circles", 1)
B = image_bytes("stripes", 2)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def up(image_id: str, minute: int, data: bytes = A, **kw: Any) -> ImageUploaded:
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"l-{image_id}",
        seller_id="s1",
        category=kw.pop("category", "circles"),
        occurred_at=at(minute),
        image=InlineSource(data=data),
        **kw,
    )


def change(image_id: str, minute: int, **kw: Any) -> ImageAttributesChanged:
    return ImageAttributesChanged(image_id=image_id, occurred_at=at(minute), **kw)


def remove(image_id: str, minute: int, **kw: Any) -> ImageRemoved:
    return ImageRemoved(image_id=image_id, occurred_at=at(minute), **kw)


@pytest.fixture
def encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def index(encoder: TinyEncoder) -> Iterator[QdrantIndex]:
    idx = QdrantIndex(QdrantClient(":memory:"), prefix="unit")
    idx.ensure_collection(encoder.version, encoder.dim)
    yield idx
    idx.close()


@pytest.fixture
def pipeline(encoder: TinyEncoder, index: QdrantIndex) -> Iterator[IndexingPipeline]:
    fetcher = ImageFetcher(image_root=None, timeout=2, max_bytes=1_000_000)
    p = IndexingPipeline(encoder, index, fetcher, max_pixels=10_000_000)
    yield p
    p.close()
    fetcher.close()


def run(pipeline: IndexingPipeline, *events: Any) -> Any:
    messages = [
        ConsumedMessage(value=e.to_json_bytes(), topic="t", partition=0, offset=n)
        for n, e in enumerate(events)
    ]
    return pipeline.process(messages)


def record(index: QdrantIndex, encoder: TinyEncoder, image_id: str) -> dict | None:
    return index.get(encoder.version, image_id)


# --- the order --------------------------------------------------------------------------------


def test_sequence_decides_before_time_and_event_id_breaks_ties() -> None:
    early_seq = up("x", 50, sequence=1)
    late_seq = up("x", 10, sequence=2)
    assert clock_of(late_seq) > clock_of(early_seq)  # sequence beats event time
    assert clock_of(up("x", 0, sequence=0)) > clock_of(up("x", 99))  # sequenced beats unsequenced
    assert clock_of(up("x", 2)) > clock_of(up("x", 1))
    a, b = up("x", 5, event_id="a"), up("x", 5, event_id="b")
    assert clock_of(b) > clock_of(a)  # a total order: every replay decides the same way


def test_equal_clock_applies_and_tombstone_rejects_older() -> None:
    event = up("x", 5)
    held = ClockRecord("x", clock_of(event), "removed")
    assert is_current(clock_of(event), held)  # the same event replayed
    assert not is_current(clock_of(up("x", 4)), held)
    assert is_current(clock_of(up("x", 6)), held)
    assert is_current(clock_of(up("x", 0)), None)


def test_parses_every_event_type_and_old_events_without_type() -> None:
    changed = parse_image_event(change("x", 1, category="c").to_json_bytes())
    assert isinstance(changed, ImageAttributesChanged)
    assert isinstance(parse_image_event(remove("x", 1).to_json_bytes()), ImageRemoved)
    legacy = up("x", 1).model_dump(mode="json")
    del legacy["type"]
    assert isinstance(parse_image_event(json.dumps(legacy)), ImageUploaded)


# --- through the pipeline ---------------------------------------------------------------------


def test_attribute_change_updates_payload_without_re_embedding(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    run(pipeline, up("x", 1))
    before = index.get(encoder.version, "x", with_vector=True)
    result = run(pipeline, change("x", 2, category="stripes", attributes={"colour": "red"}))
    after = index.get(encoder.version, "x", with_vector=True)
    assert result.updated == ["x"] and result.indexed == []
    assert after["category"] == "stripes" and after["attributes"] == {"colour": "red"}
    assert after["listing_id"] == "l-x"  # fields left out keep their value
    assert after["vector"] == before["vector"]
    assert after["clock"] == list(clock_of(change("x", 2, event_id=after["clock"][2])))


def test_remove_deletes_and_an_older_upload_replayed_later_does_not_resurrect(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    original = up("x", 1)
    run(pipeline, original)
    result = run(pipeline, remove("x", 5, reason="sold"))
    assert result.removed == ["x"] and record(index, encoder, "x") is None
    replay = run(pipeline, original)  # the same upload event, replayed
    late = run(pipeline, up("x", 3, data=B))  # an upload from before the removal, arriving late
    assert record(index, encoder, "x") is None
    assert replay.stale == 1 and late.stale == 1
    tomb = pipeline.clocks.get("x")
    assert tomb is not None and tomb.state == "removed" and tomb.reason == "sold"
    relisted = run(pipeline, up("x", 9, data=B))  # newer than the removal: a real re-listing
    assert relisted.indexed == ["x"]
    assert record(index, encoder, "x")["content_sha256"] == hashlib.sha256(B).hexdigest()


def test_older_upload_does_not_restore_stale_attributes_or_image(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    run(pipeline, up("x", 1, data=A))
    run(pipeline, change("x", 5, category="checkers"))
    result = run(pipeline, up("x", 3, data=B, category="stripes"))
    assert result.stale == 1 and result.indexed == []
    held = record(index, encoder, "x")
    assert held["category"] == "checkers"
    assert held["content_sha256"] == hashlib.sha256(A).hexdigest()


def test_late_attribute_change_is_ignored(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    run(pipeline, up("x", 1), change("x", 5, category="new"))
    result = run(pipeline, change("x", 3, category="old"))
    assert result.stale == 1
    assert record(index, encoder, "x")["category"] == "new"


def test_sequence_numbers_order_events_whatever_their_times(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    run(pipeline, up("x", 30, sequence=1), change("x", 40, sequence=3, category="third"))
    result = run(pipeline, change("x", 50, sequence=2, category="second"))
    assert result.stale == 1
    assert record(index, encoder, "x")["category"] == "third"


def test_events_for_one_image_in_one_batch_apply_in_order(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    result = run(
        pipeline,
        up("a", 1),
        change("a", 2, category="stripes"),
        up("b", 1),
        remove("b", 2),
        up("b", 1, data=B),  # late, in the same batch as the removal
        remove("c", 3),
        up("c", 4, data=B),  # re-listed after removal, same batch
        change("a", 0, category="stale"),
    )
    assert sorted(result.indexed) == ["a", "c"] and result.removed == ["b"]
    assert result.stale == 2
    assert record(index, encoder, "a")["category"] == "stripes"
    assert record(index, encoder, "b") is None
    assert record(index, encoder, "c") is not None
    assert pipeline.clocks.get("b").state == "removed"  # type: ignore[union-attr]


def test_replaying_a_whole_batch_is_idempotent(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    events = [up("a", 1), up("b", 1), change("a", 2, category="z"), remove("b", 3)]
    run(pipeline, *events)
    first = record(index, encoder, "a")
    run(pipeline, *events)  # a crash after writing, before the offsets were committed
    again = record(index, encoder, "a")
    assert again["category"] == first["category"] == "z"
    assert record(index, encoder, "b") is None
    assert index.count(encoder.version) == 1


def test_change_or_removal_of_an_unknown_image(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    result = run(pipeline, change("ghost", 5, category="x"))
    assert result.updated == [] and pipeline.clocks.get("ghost") is None
    result = run(pipeline, remove("ghost2", 5))
    assert result.removed == ["ghost2"] and pipeline.clocks.get("ghost2").state == "removed"  # type: ignore[union-attr]
    assert run(pipeline, up("ghost2", 4)).stale == 1


def test_attribute_change_on_removed_image_does_not_bring_it_back(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    run(pipeline, up("x", 1), remove("x", 2))
    result = run(pipeline, change("x", 3, category="back?"))
    assert result.stale == 1 and record(index, encoder, "x") is None


def test_malformed_update_is_dead_lettered(pipeline: IndexingPipeline) -> None:
    messages = [ConsumedMessage("t", 0, 0, b'{"type": "image_removed"}')]
    result = pipeline.process(messages)
    assert len(result.dead_letters) == 1
    assert result.dead_letters[0].stage == "validate"
    assert "image_id" in result.dead_letters[0].reason


def test_writes_every_target_version_including_updates_and_removals(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    other = TinyEncoder(seed=99)
    index.ensure_collection(other.version, other.dim)
    pipeline.set_targets({encoder.version: encoder, other.version: other}, encoder.version)
    run(pipeline, up("a", 1), up("b", 1), change("a", 2, category="z"), remove("b", 3))
    for version in (encoder.version, other.version):
        assert index.count(version) == 1
        assert index.get(version, "a")["category"] == "z"  # type: ignore[index]
        assert index.get(version, "a")["model_version"] == version  # type: ignore[index]
    va = index.get(encoder.version, "a", with_vector=True)["vector"]  # type: ignore[index]
    vb = index.get(other.version, "a", with_vector=True)["vector"]  # type: ignore[index]
    assert va != vb  # each version embedded with its own encoder


def test_a_version_added_mid_batch_keeps_no_stale_copy(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: TinyEncoder
) -> None:
    other = TinyEncoder(seed=99)
    index.ensure_collection(other.version, other.dim)
    run(pipeline, up("x", 1))
    old = index.get(encoder.version, "x", with_vector=True)
    index.upsert(
        other.version, [IndexPoint("x", old["vector"], {"image_id": "x"})]
    )  # a backfill copy
    message = ConsumedMessage("t", 0, 9, up("x", 2, data=B).to_json_bytes())
    result = pipeline.prepare([message])  # prepared for the serving version only ...
    pipeline.set_targets({encoder.version: encoder, other.version: other}, encoder.version)
    pipeline.write(pipeline.embed(result))  # ... written after the candidate was added
    assert record(index, encoder, "x")["content_sha256"] == hashlib.sha256(B).hexdigest()
    assert index.get(other.version, "x") is None  # the backfill's final pass copies it again
