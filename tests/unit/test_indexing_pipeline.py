"""Unit tests for lookalike.streams.indexing: one micro-batch through parse, fetch, decode,
embed and upsert, with a tiny deterministic encoder and a real in-memory Qdrant."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FailingEncoder, TinyEncoder, poison_image_bytes
from imagegen import image_bytes
from qdrant_client import QdrantClient

from lookalike.encoders.base import Encoder
from lookalike.events import ConsumedMessage, FileSource, ImageUploaded, InlineSource
from lookalike.images import ImageFetcher, decode_image
from lookalike.index import IndexPoint, QdrantIndex
from lookalike.indexing import BatchResult, IndexingPipeline

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

TOPIC = "lookalike.uploads"
OCCURRED = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def upload(image_id: str, image: Any, *, category: str = "circles") -> ImageUploaded:
    return ImageUploaded(
        event_id=f"evt-{image_id}",
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id="seller-1",
        category=category,
        occurred_at=OCCURRED,
        attributes={"n": 1},
        image=image,
    )


def inline(image_id: str, data: bytes, **kw: Any) -> bytes:
    return upload(image_id, InlineSource(data=data), **kw).to_json_bytes()


def messages(
    values: Sequence[bytes], partition: int = 2, first_offset: int = 100
) -> list[ConsumedMessage]:
    return [
        ConsumedMessage(value=v, topic=TOPIC, partition=partition, offset=first_offset + i)
        for i, v in enumerate(values)
    ]


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "shelf").mkdir(parents=True)
    (root / "shelf" / "stripes.png").write_bytes(image_bytes("stripes", 3, fmt="PNG", size=80))
    return root


@pytest.fixture
def fetcher(image_root: Path) -> Iterator[ImageFetcher]:
    with ImageFetcher(image_root=image_root, timeout=2, max_bytes=1_000_000) as f:
        yield f


@pytest.fixture
def index(encoder: Encoder) -> Iterator[QdrantIndex]:
    idx = QdrantIndex(QdrantClient(":memory:"), prefix="unit")
    idx.ensure_collection(encoder.version, encoder.dim)
    try:
        yield idx
    finally:
        idx.close()


def make_pipeline(
    encoder: Encoder, index: QdrantIndex, fetcher: ImageFetcher, **kw: Any
) -> IndexingPipeline:
    return IndexingPipeline(encoder, index, fetcher, max_pixels=10_000_000, decode_threads=2, **kw)


@pytest.fixture
def pipeline(
    encoder: TinyEncoder, index: QdrantIndex, fetcher: ImageFetcher
) -> Iterator[IndexingPipeline]:
    p = make_pipeline(encoder, index, fetcher)
    try:
        yield p
    finally:
        p.close()


GOOD_A = image_bytes("circles", 1)
GOOD_B = image_bytes("checkers", 2, fmt="PNG")
CORRUPT = GOOD_A[: len(GOOD_A) // 3]


def mixed_batch() -> list[ConsumedMessage]:
    return messages(
        [
            inline("good-a", GOOD_A),  # offset 100
            b'{"image_id": "broken", ',  # 101: malformed JSON
            inline("corrupt", CORRUPT),  # 102: truncated JPEG
            upload(
                "from-file", FileSource(path="shelf/stripes.png"), category="stripes"
            ).to_json_bytes(),  # 103
            inline("empty", b""),  # 104: zero bytes
            inline("good-b", GOOD_B, category="checkers"),  # 105
            b"\xff\xfe\x00 not utf-8",  # 106: binary garbage
            upload("escape", FileSource(path="../outside.png")).to_json_bytes(),  # 107
        ]
    )


# --- the mixed batch ------------------------------------------------------------------------


def test_mixed_batch(pipeline: IndexingPipeline, index: QdrantIndex, encoder: Encoder) -> None:
    batch = mixed_batch()
    result = pipeline.process(batch)
    assert isinstance(result, BatchResult)
    assert sorted(result.indexed) == ["from-file", "good-a", "good-b"]
    assert index.count(encoder.version) == 3

    by_offset = {dl.source_offset: dl for dl in result.dead_letters}
    assert sorted(by_offset) == [101, 102, 104, 106, 107]
    expected = {101: "parse", 102: "decode", 104: "decode", 106: "parse", 107: "fetch"}
    assert {o: dl.stage for o, dl in by_offset.items()} == expected
    assert "empty image (0 bytes)" in by_offset[104].reason
    assert "truncated" in by_offset[102].reason
    assert "outside the image root" in by_offset[107].reason

    for dl in result.dead_letters:
        assert dl.source_topic == TOPIC and dl.source_partition == 2
        assert dl.reason and dl.error_type
        original = batch[dl.source_offset - 100].value
        if dl.payload_encoding == "utf-8":
            assert dl.payload.encode("utf-8") == original
        else:
            assert base64.b64decode(dl.payload) == original

    assert by_offset[106].payload_encoding == "base64"
    assert by_offset[101].payload_encoding == "utf-8"
    # Events that parsed carry their ids; those that did not, carry none.
    assert (by_offset[102].image_id, by_offset[102].event_id) == ("corrupt", "evt-corrupt")
    assert by_offset[101].image_id is None and by_offset[101].event_id is None
    assert by_offset[102].error_type == "DecodeError"
    assert by_offset[101].error_type == "InvalidEvent"


def test_same_batch_twice_is_idempotent(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: Encoder
) -> None:
    first = pipeline.process(mixed_batch())
    vector_before = index.get(encoder.version, "good-a", with_vector=True)["vector"]  # type: ignore[index]
    second = pipeline.process(mixed_batch())
    assert sorted(second.indexed) == sorted(first.indexed)
    assert len(second.dead_letters) == len(first.dead_letters)
    assert index.count(encoder.version) == 3
    vector_after = index.get(encoder.version, "good-a", with_vector=True)["vector"]  # type: ignore[index]
    np.testing.assert_allclose(vector_after, vector_before, atol=1e-6)


def test_payload_fields(pipeline: IndexingPipeline, index: QdrantIndex, encoder: Encoder) -> None:
    before = datetime.now(UTC)
    pipeline.process(mixed_batch())
    after = datetime.now(UTC)

    record = index.get(encoder.version, "good-a")
    assert record is not None
    assert record["image_id"] == "good-a"
    assert record["listing_id"] == "listing-good-a"
    assert record["seller_id"] == "seller-1"
    assert record["category"] == "circles"
    assert record["event_id"] == "evt-good-a"
    assert record["attributes"] == {"n": 1}
    assert record["source_kind"] == "inline"
    assert record["source"] == InlineSource(data=GOOD_A).reference()
    assert record["model_version"] == encoder.version
    assert datetime.fromisoformat(record["occurred_at"]) == OCCURRED
    assert before <= datetime.fromisoformat(record["indexed_at"]) <= after
    assert record["content_sha256"] == hashlib.sha256(GOOD_A).hexdigest()

    from_file = index.get(encoder.version, "from-file")
    assert from_file is not None
    assert from_file["source"] == "file:shelf/stripes.png"
    assert from_file["source_kind"] == "file"
    assert from_file["category"] == "stripes"
    assert (from_file["width"], from_file["height"]) == (80, 80)


def test_width_height_are_the_uploaded_image_size(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: Encoder
) -> None:
    pipeline.process(messages([inline("big", image_bytes("stripes", 9, size=400))]))
    record = index.get(encoder.version, "big")
    assert record is not None
    assert (record["width"], record["height"]) == (400, 400)


def test_vectors_match_encoder(pipeline: IndexingPipeline, index: QdrantIndex) -> None:
    pipeline.process(messages([inline("good-a", GOOD_A)]))
    fresh = TinyEncoder()  # another instance: same weights, same vectors
    expected = fresh.embed_images([decode_image(GOOD_A, max_pixels=10**8, target_size=32)])[0]
    record = index.get(fresh.version, "good-a", with_vector=True)
    assert record is not None
    np.testing.assert_allclose(record["vector"], expected, atol=1e-5)
    hits = index.search(fresh.version, expected, k=1)
    assert hits[0].image_id == "good-a" and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_an_unexpected_error_names_the_stage_it_happened_in(
    encoder: TinyEncoder, index: QdrantIndex, image_root: Path
) -> None:
    class BrokenFileFetcher(ImageFetcher):  # a bug in fetching, not a bad input
        def fetch_many(self, sources: Sequence[Any]) -> list[bytes | Exception]:
            fetched = super().fetch_many(sources)
            return [
                RuntimeError("boom") if isinstance(source, FileSource) else data
                for source, data in zip(sources, fetched, strict=True)
            ]

    from_file = upload("from-file", FileSource(path="shelf/stripes.png")).to_json_bytes()
    with BrokenFileFetcher(image_root=image_root, timeout=2, max_bytes=1_000_000) as fetcher:
        p = make_pipeline(encoder, index, fetcher)
        try:
            result = p.process(messages([inline("good-a", GOOD_A), from_file]))
        finally:
            p.close()
    assert result.indexed == ["good-a"]
    [letter] = result.dead_letters
    assert (letter.stage, letter.image_id) == ("fetch", "from-file")
    assert letter.reason == "unexpected RuntimeError: boom"


def test_empty_batch(pipeline: IndexingPipeline) -> None:
    result = pipeline.process([])
    assert result.indexed == [] and result.dead_letters == []


def test_all_bad_batch_touches_no_index(encoder: TinyEncoder, fetcher: ImageFetcher) -> None:
    class NoIndex(QdrantIndex):
        def upsert(self, version: str, points: Sequence[IndexPoint]) -> None:
            raise AssertionError("upsert called for a batch without good images")

    p = make_pipeline(encoder, NoIndex(QdrantClient(":memory:")), fetcher)
    try:
        result = p.process(messages([b"nope", inline("x", CORRUPT)]))
    finally:
        p.close()
    assert result.indexed == []
    assert [dl.stage for dl in result.dead_letters] == ["parse", "decode"]


def test_replaced_image_overwrites(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: Encoder
) -> None:
    pipeline.process(messages([inline("img", GOOD_A)]))
    pipeline.process(messages([inline("img", GOOD_B, category="checkers")], first_offset=200))
    assert index.count(encoder.version) == 1
    record = index.get(encoder.version, "img")
    assert record is not None and record["category"] == "checkers"


def test_same_image_twice_in_one_batch_last_event_wins(
    pipeline: IndexingPipeline, index: QdrantIndex, encoder: Encoder
) -> None:
    batch = messages([inline("img", GOOD_A), inline("img", GOOD_B, category="checkers")])
    result = pipeline.process(batch)
    assert result.dead_letters == []
    assert index.count(encoder.version) == 1
    record = index.get(encoder.version, "img")
    assert record is not None
    assert record["category"] == "checkers"
    assert record["content_sha256"] == hashlib.sha256(GOOD_B).hexdigest()


# --- several versions -----------------------------------------------------------------------


def test_writes_every_version(
    encoder: TinyEncoder, index: QdrantIndex, fetcher: ImageFetcher
) -> None:
    candidate = encoder.version + "-candidate"
    index.ensure_collection(candidate, encoder.dim)
    p = make_pipeline(encoder, index, fetcher, versions=[encoder.version, candidate])
    try:
        result = p.process(mixed_batch())
    finally:
        p.close()
    assert sorted(result.indexed) == ["from-file", "good-a", "good-b"]
    assert index.count(encoder.version) == 3
    assert index.count(candidate) == 3
    assert index.get(candidate, "good-b")["model_version"] == candidate  # type: ignore[index]
    assert index.get(encoder.version, "good-b")["model_version"] == encoder.version  # type: ignore[index]


def test_default_version_is_the_encoders(pipeline: IndexingPipeline, encoder: Encoder) -> None:
    assert pipeline.versions == [encoder.version]


# --- infrastructure failures ----------------------------------------------------------------


class BrokenIndex(QdrantIndex):
    def __init__(self) -> None:
        super().__init__(QdrantClient(":memory:"), prefix="broken")
        self.attempts = 0

    def upsert(self, version: str, points: Sequence[IndexPoint]) -> None:
        self.attempts += 1
        raise ConnectionError("qdrant is down")


def test_index_failure_propagates(encoder: TinyEncoder, fetcher: ImageFetcher) -> None:
    broken = BrokenIndex()
    p = make_pipeline(encoder, broken, fetcher)
    try:
        with pytest.raises(ConnectionError, match="qdrant is down"):
            p.process(mixed_batch())
    finally:
        p.close()
    assert broken.attempts == 1


def test_missing_collection_propagates(encoder: TinyEncoder, fetcher: ImageFetcher) -> None:
    index = QdrantIndex(QdrantClient(":memory:"), prefix="none")  # no collection created
    p = make_pipeline(encoder, index, fetcher)
    try:
        with pytest.raises(Exception) as info:  # noqa: B017 - the client's own error
            p.process(messages([inline("good-a", GOOD_A)]))
    finally:
        p.close()
    assert index.collection_name(encoder.version) in str(info.value)  # Qdrant's "not found"


# --- per-image embed isolation --------------------------------------------------------------


@pytest.fixture
def failing(index: QdrantIndex, fetcher: ImageFetcher) -> Iterator[tuple[IndexingPipeline, Any]]:
    enc = FailingEncoder()
    index.ensure_collection(enc.version, enc.dim)
    p = make_pipeline(enc, index, fetcher)
    try:
        yield p, enc
    finally:
        p.close()


def test_failing_encoder_is_deterministic_tiny_encoder() -> None:
    assert FailingEncoder().version == TinyEncoder().version


def test_poison_image_dead_lettered_rest_of_batch_indexed(
    failing: tuple[IndexingPipeline, FailingEncoder], index: QdrantIndex
) -> None:
    p, enc = failing
    batch = messages(
        [inline("good-a", GOOD_A), inline("poison", poison_image_bytes()), inline("good-b", GOOD_B)]
    )
    result = p.process(batch)
    assert sorted(result.indexed) == ["good-a", "good-b"]
    assert len(result.dead_letters) == 1
    dl = result.dead_letters[0]
    assert (dl.stage, dl.image_id, dl.source_offset) == ("embed", "poison", 101)
    assert "poison image in batch" in dl.reason
    assert dl.payload.encode() == batch[1].value
    assert index.count(enc.version) == 2
    assert index.get(enc.version, "poison") is None
    # One failed batch pass, then one pass per image.
    assert enc.calls == [3, 1, 1, 1]


def test_poison_image_alone_is_dead_lettered(
    failing: tuple[IndexingPipeline, FailingEncoder],
) -> None:
    p, _ = failing
    result = p.process(messages([inline("poison", poison_image_bytes())]))
    assert result.indexed == []
    assert [dl.stage for dl in result.dead_letters] == ["embed"]


def test_poison_alone_with_bad_inputs_is_dead_lettered(
    failing: tuple[IndexingPipeline, FailingEncoder],
) -> None:
    """A batch whose only decodable image breaks the model dead-letters everything, and does
    not raise (a raise would make the agent retry the batch forever)."""
    p, _ = failing
    result = p.process(messages([b"not json", inline("poison", poison_image_bytes())]))
    assert result.indexed == []
    assert sorted(dl.stage for dl in result.dead_letters) == ["embed", "parse"]


def test_tiny_encoder_vectors(encoder: TinyEncoder) -> None:
    images = [decode_image(image_bytes(c, 0), max_pixels=10**8) for c in ("circles", "stripes")]
    vectors = encoder.embed_images(images)
    assert vectors.shape == (2, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(TinyEncoder().embed_images(images), vectors)
    assert not np.allclose(vectors[0], vectors[1])
    assert encoder.version.startswith("tiny-test-w")
    assert json.dumps(encoder.describe())  # JSON-serialisable


# --- infrastructure errors are never dead-lettered --------------------------------------------


class FullDisk:
    """While ``full``, writing a blob raises ENOSPC, as a full disk does: a pack write after
    half its bytes, a file write at once (the integration test fills a real tmpfs instead)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import errno
        import os

        from lookalike.images import blobs

        self.full = True
        real_write_bytes = Path.write_bytes
        real_write_all = blobs._write_all

        def write_bytes(path: Path, data: bytes) -> int:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_write_bytes(path, data)

        def write_all(fd: int, data: bytes) -> None:
            if self.full:
                os.write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write_all(fd, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        monkeypatch.setattr(blobs, "_write_all", write_all)


@pytest.mark.parametrize("packs", [True, False], ids=["packs", "files"])
def test_full_disk_is_retried_not_dead_lettered(
    encoder: TinyEncoder,
    index: QdrantIndex,
    fetcher: ImageFetcher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    packs: bool,
) -> None:
    from lookalike.errors import StorageUnavailable
    from lookalike.images import BlobStore

    blobs = BlobStore(tmp_path / "blobs", packs=packs)
    p = make_pipeline(encoder, index, fetcher, blobs=blobs)
    disk = FullDisk(monkeypatch)
    batch = messages([inline("a", GOOD_A), b"{broken", inline("b", GOOD_B)])
    try:
        with pytest.raises(StorageUnavailable) as info:
            p.prepare(batch)  # the whole batch: its offsets stay uncommitted
        message = str(info.value)
        assert "the disk is full" in message and "LOOKALIKE_BLOB_DIR" in message
        assert str(tmp_path / "blobs") in message
        assert info.value.component == "storage"
        assert index.count(encoder.version) == 0
        # No half-written bytes left: no temporary file, the pack cut back to nothing.
        assert not list((tmp_path / "blobs").rglob("*.tmp"))
        assert all(f.stat().st_size == 0 for f in (tmp_path / "blobs").rglob("*.pack"))
        assert len(list((tmp_path / "blobs").rglob("*.pack"))) == (1 if packs else 0)

        disk.full = False  # the operator freed some space: the retry loses nothing
        result = p.process(batch)
    finally:
        p.close()
    assert sorted(result.indexed) == ["a", "b"]
    assert [d.source_offset for d in result.dead_letters] == [101]  # only the bad input
    assert blobs.get(hashlib.sha256(GOOD_A).hexdigest()) == GOOD_A


def test_index_failure_while_preparing_is_retried_not_dead_lettered(
    encoder: TinyEncoder, index: QdrantIndex, fetcher: ImageFetcher
) -> None:
    """Prepare reads the image's clock from the index: the index failing there is the index's
    trouble, not the image's (it was dead-lettered as 'decode' before)."""

    class DownClocks:
        def get(self, image_id: str) -> Any:
            raise ConnectionError("qdrant is down")

        def get_many(self, image_ids: Any) -> Any:  # prepare reads a batch's clocks at once
            raise ConnectionError("qdrant is down")

    p = make_pipeline(encoder, index, fetcher, clocks=DownClocks())
    try:
        with pytest.raises(ConnectionError):
            p.prepare(messages([inline("a", GOOD_A), b"{broken"]))
    finally:
        p.close()
