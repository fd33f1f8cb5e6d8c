"""The indexing encoder in a child process: the same vectors, model errors kept apart from a
dead process, and the pipeline's rules (bad image dead-lettered, dead child retried) unchanged."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import DyingEncoder, FailingEncoder, TinyEncoder, poison_image_bytes
from imagegen import image_bytes
from qdrant_client import QdrantClient

from lookalike.encoders import EncoderProcess, EncoderProcessError
from lookalike.errors import ServiceUnavailable
from lookalike.events import ConsumedMessage, ImageUploaded, InlineSource
from lookalike.images import ImageFetcher, decode_image
from lookalike.index import QdrantIndex
from lookalike.indexing import IndexingPipeline

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")


def pixels(encoder: TinyEncoder, data: bytes) -> torch.Tensor:
    size = encoder.preprocessing.resize
    return encoder.preprocessing.pixels(decode_image(data, max_pixels=10**7, target_size=size))


GOOD = [image_bytes("circles", 1), image_bytes("checkers", 2, fmt="PNG")]


def test_an_encoder_pickles_without_its_lock_or_compiled_function() -> None:
    encoder = TinyEncoder()
    copy = pickle.loads(pickle.dumps(encoder))
    batch = torch.stack([pixels(encoder, data) for data in GOOD])
    assert np.array_equal(copy.embed_tensors(batch), encoder.embed_tensors(batch))
    assert copy._lock is not encoder._lock


def test_the_child_embeds_as_the_encoder_does() -> None:
    encoder = TinyEncoder()
    batch = [pixels(encoder, data) for data in GOOD]
    process = EncoderProcess(encoder)
    try:
        process.start()
        assert process.running
        assert np.array_equal(process.embed_tensors(batch), encoder.embed_tensors(batch))
        assert process.embed_tensors([]).shape == (0, encoder.dim)
    finally:
        process.close()
    assert not process.running


def test_a_model_error_comes_back_as_such_and_the_child_lives_on() -> None:
    encoder = FailingEncoder()
    process = EncoderProcess(encoder)
    try:
        with pytest.raises(EncoderProcessError, match="poison image in batch"):
            process.embed_tensors([pixels(encoder, poison_image_bytes())])
        assert process.running
        assert process.embed_tensors([pixels(encoder, GOOD[0])]).shape == (1, encoder.dim)
    finally:
        process.close()


def test_a_child_that_dies_mid_batch_is_infrastructure_and_is_replaced() -> None:
    encoder = DyingEncoder()
    process = EncoderProcess(encoder)
    try:
        with pytest.raises(ServiceUnavailable, match="encoder process died"):
            process.embed_tensors([pixels(encoder, poison_image_bytes())])
        assert not process.running
        good = [pixels(encoder, GOOD[0])]
        assert np.array_equal(process.embed_tensors(good), encoder.embed_tensors(good))
    finally:
        process.close()


# --- the pipeline with its encoder in a process ----------------------------------------------


def message(image_id: str, data: bytes, offset: int) -> ConsumedMessage:
    event = ImageUploaded(
        event_id=f"evt-{image_id}",
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id="seller-1",
        category="circles",
        occurred_at="2024-03-01T08:00:00Z",
        image=InlineSource(data=data),
    )
    return ConsumedMessage("lookalike.uploads", 0, offset, event.to_json_bytes())


@pytest.fixture
def fetcher(tmp_path: Path) -> Iterator[ImageFetcher]:
    with ImageFetcher(image_root=tmp_path, timeout=2, max_bytes=1_000_000) as f:
        yield f


def pipeline_with(encoder: TinyEncoder, fetcher: ImageFetcher) -> IndexingPipeline:
    index = QdrantIndex(QdrantClient(":memory:"), prefix="unit")
    index.ensure_collection(encoder.version, encoder.dim)
    process = EncoderProcess(encoder)
    return IndexingPipeline(process, index, fetcher, max_pixels=10**7, decode_threads=1)


def test_the_pipeline_dead_letters_only_the_image_that_breaks_the_model(
    fetcher: ImageFetcher,
) -> None:
    pipeline = pipeline_with(FailingEncoder(), fetcher)
    try:
        pipeline.encoder.warm_up()
        batch = [
            message("good-a", GOOD[0], 1),
            message("poison", poison_image_bytes(), 2),
            message("good-b", GOOD[1], 3),
        ]
        result = pipeline.process(batch)
        assert sorted(result.indexed) == ["good-a", "good-b"]
        assert [(d.stage, d.image_id) for d in result.dead_letters] == [("embed", "poison")]
        assert "poison image in batch" in result.dead_letters[0].reason
    finally:
        pipeline.close()
        pipeline.encoder.close()


def test_the_pipeline_retries_a_batch_whose_encoder_process_died(fetcher: ImageFetcher) -> None:
    """A dead child is the machine's trouble, not the image's: the batch raises (the agent
    retries it, offsets held) instead of dead-lettering anything."""
    pipeline = pipeline_with(DyingEncoder(), fetcher)
    try:
        with pytest.raises(ServiceUnavailable):
            pipeline.process([message("good", GOOD[0], 1), message("p", poison_image_bytes(), 2)])
        result = pipeline.process([message("good", GOOD[0], 1)])  # a new child
        assert result.indexed == ["good"] and not result.dead_letters
    finally:
        pipeline.close()
        pipeline.encoder.close()
        pipeline.encoder.close()


def test_the_process_stands_in_for_the_encoder() -> None:
    encoder = TinyEncoder()
    process = EncoderProcess(encoder)
    try:
        assert (process.version, process.dim, process.preprocessing) == (
            encoder.version,
            encoder.dim,
            encoder.preprocessing,
        )
        assert not process.running  # nothing starts until it is warmed up or used
        process.warm_up()
        assert process.running
        image = decode_image(GOOD[0], max_pixels=10**7, target_size=encoder.preprocessing.resize)
        assert np.array_equal(process.embed_images([image]), encoder.embed_images([image]))
    finally:
        process.close()


def test_the_worker_embeds_searches_and_uploads_in_the_same_child(settings_env: Path) -> None:
    """One child per version serves indexing, searches and the backfill alike, so a query and
    the catalogue come from the same compiled code."""
    from lookalike.settings import Settings
    from lookalike.streams.runtime import Runtime

    runtime = Runtime(Settings(compile=False), TinyEncoder(), encoder_processes=True)
    try:
        assert isinstance(runtime.encoder, EncoderProcess)
        assert runtime.pipeline.encoder is runtime.encoder
        assert runtime.search.encoder is runtime.encoder
        assert runtime.encoders[runtime.encoder.version] is runtime.encoder
        runtime.models.warm_up()
        assert runtime.encoder.running
    finally:
        runtime.close()
    assert not runtime.encoder.running
    in_process = Runtime(Settings(compile=False), TinyEncoder())
    try:
        assert not isinstance(in_process.encoder, EncoderProcess)  # only the worker asks
    finally:
        in_process.close()
