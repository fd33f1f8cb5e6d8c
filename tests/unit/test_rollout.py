"""Rollout in one worker runtime, without Faust: dual-writing, the backfill (resumed after a
"crash"), the gate, promote / rollback / retire, searches across the switch. TinyEncoders
(seed = a different model) and real embedded Qdrant on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import TinyEncoder
from imagegen import CATEGORIES, image_bytes

from lookalike.encoders.base import Encoder
from lookalike.errors import RolloutError
from lookalike.events import (
    ConsumedMessage,
    ImageAttributesChanged,
    ImageRemoved,
    ImageUploaded,
    InlineSource,
)
from lookalike.search import SearchRequest
from lookalike.settings import Settings
from lookalike.streams.runtime import Runtime

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")


class CountingEncoder(TinyEncoder):
    """Counts the images it embeds (to prove a resumed backfill re-embeds nothing done)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.embedded = 0

    def embed_tensors(self, tensors: Any) -> Any:
        self.embedded += len(tensors)
        return super().embed_tensors(tensors)


class Loader:
    def __init__(self) -> None:
        self.built: list[CountingEncoder] = []

    def __call__(self, spec: str) -> Encoder:
        encoder = CountingEncoder(seed=int(spec.removeprefix("tiny-")))
        self.built.append(encoder)
        return encoder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", backfill_batch=8, validation_enabled=False, decode_threads=2
    )


def open_runtime(settings: Settings, loader: Loader) -> Runtime:
    return Runtime(settings, encoder=TinyEncoder(), encoder_loader=loader)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = open_runtime(settings, Loader())
    yield rt
    rt.close()


def upload(image_id: str, category: str, seed: int) -> ImageUploaded:
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"l-{image_id}",
        seller_id="s",
        category=category,
        image=InlineSource(data=image_bytes(category, seed)),
    )


def apply(rt: Runtime, *events: Any) -> None:
    messages = [ConsumedMessage("t", 0, n, e.to_json_bytes()) for n, e in enumerate(events)]
    rt.pipeline.process(messages)


def catalogue(n_per_category: int = 7) -> list[ImageUploaded]:
    return [upload(f"{c}-{i}", c, i) for c in CATEGORIES for i in range(n_per_category)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def step_until_done(rt: Runtime, limit: int = 50) -> int:
    steps = 0
    while run(rt.rollout.step()):
        steps += 1
        assert steps < limit
    return steps


PAYLOAD_KEYS = ("image_id", "category", "attributes", "listing_id", "seller_id", "clock")


def same_points(rt: Runtime, a: str, b: str) -> None:
    ids = {p["image_id"] for p, _ in rt.index.scroll_vectors(a)}
    ids_b = {p["image_id"] for p, _ in rt.index.scroll_vectors(b)}
    assert ids == ids_b
    for image_id in ids:
        pa, pb = rt.index.get(a, image_id), rt.index.get(b, image_id)
        assert {k: pa[k] for k in PAYLOAD_KEYS} == {k: pb[k] for k in PAYLOAD_KEYS}, image_id  # type: ignore[index]


def test_registry_bootstraps_with_the_configured_encoder(runtime: Runtime) -> None:
    serving = runtime.registry.serving()
    assert serving is not None and serving.version == TinyEncoder().version
    assert runtime.index.serving_version() == serving.version
    assert runtime.stats()["versions"][0]["state"] == "serving"


def test_rollout_with_live_events_resumes_after_a_crash_and_promotes(
    settings: Settings,
) -> None:
    loader = Loader()
    rt = open_runtime(settings, loader)
    events = catalogue()
    apply(rt, *events)
    old = rt.encoder.version
    candidate = run(rt.rollout.start("tiny-7"))["version"]
    assert rt.pipeline.versions == [old, candidate]

    # live events during the backfill go to both versions
    apply(rt, upload("new-1", "circles", 100))
    assert rt.index.get(candidate, "new-1") is not None
    run(rt.rollout.step())  # one backfill page of 8
    apply(
        rt,
        ImageRemoved(image_id="stripes-3"),
        ImageAttributesChanged(image_id="checkers-6", category="circles"),
        ImageAttributesChanged(image_id="circles-0", attributes={"colour": "red"}),
    )
    run(rt.rollout.step())
    held_before_crash = rt.index.count(candidate)
    assert 0 < held_before_crash < len(events)
    rt.close()  # the worker dies mid-backfill

    loader2 = Loader()
    rt = open_runtime(settings, loader2)
    try:
        assert rt.pipeline.versions == [old, candidate]  # the rollout survived the restart
        with pytest.raises(RolloutError, match="backfill is not finished"):
            run(rt.rollout.promote(False, None))
        step_until_done(rt)
        live = len(events)  # + new-1 - stripes-3
        assert rt.index.count(candidate) == live
        # nothing done before the crash was embedded again, and nothing is missing
        assert loader2.built[0].embedded == live - held_before_crash
        same_points(rt, old, candidate)
        assert rt.index.get(candidate, "checkers-6")["category"] == "circles"  # type: ignore[index]
        assert rt.index.get(candidate, "stripes-3") is None
        status = rt.rollout.status()
        assert status["backfill"]["done"] and status["gate"]["ready"], status
        assert status["agreement"]["sample"]["n"] > 0

        run(rt.rollout.promote(False, None))
        assert rt.index.serving_version() == candidate
        answer = rt.search.search(SearchRequest(image_bytes=image_bytes("circles", 3), k=3))
        assert answer["model_version"] == candidate
        assert answer["results"][0]["image_id"] == "circles-3"
        # the previous version is still written: rollback is instant and complete
        apply(rt, ImageRemoved(image_id="circles-1"))
        assert rt.index.get(old, "circles-1") is None
        assert run(rt.rollout.on_writer(rt.rollout.rollback))["serving"] == old
        assert rt.search.search(SearchRequest(image_id="circles-2"))["model_version"] == old
        run(rt.rollout.promote(False, None))
        run(rt.rollout.on_writer(rt.rollout.retire, True))
        assert rt.pipeline.versions == [candidate]
        assert old not in rt.index.versions()
        assert {r.state for r in rt.registry.all()} == {"serving", "retired"}
    finally:
        rt.close()


def test_backfill_skips_images_removed_or_replaced_while_it_embeds(runtime: Runtime) -> None:
    rt = runtime
    apply(rt, *catalogue(2))
    candidate = run(rt.rollout.start("tiny-5"))["version"]
    record = rt.registry.candidate()
    assert record is not None
    backfill = rt.rollout._backfill(record)
    page = backfill.next_page(None)
    prepared = [backfill.prepare_one(p) for p in page.todo]
    vectors = backfill.embed(prepared)
    # meanwhile, live: one removed, one replaced (dual-written), one re-categorised
    apply(
        rt,
        ImageRemoved(image_id="circles-0"),
        upload("circles-1", "circles", 50),
        ImageAttributesChanged(image_id="stripes-0", category="hats"),
    )
    replaced = rt.index.get(candidate, "circles-1", with_vector=True)
    outcome = backfill.write(prepared, vectors, {"scanned": page.scanned})
    assert outcome.skipped == 2  # the removed one and the replaced one
    assert rt.index.get(candidate, "circles-0") is None
    assert rt.index.get(candidate, "circles-1", with_vector=True) == replaced
    assert rt.index.get(candidate, "stripes-0")["category"] == "hats"  # type: ignore[index]


def test_abort_drops_the_candidate_and_a_new_rollout_can_start(runtime: Runtime) -> None:
    rt = runtime
    apply(rt, *catalogue(1))
    candidate = run(rt.rollout.start("tiny-3"))["version"]
    with pytest.raises(RolloutError, match="already a candidate"):
        run(rt.rollout.start("tiny-4"))
    run(rt.rollout.on_writer(rt.rollout.abort))
    assert candidate not in rt.index.versions()
    assert rt.pipeline.versions == [rt.encoder.version]
    apply(rt, upload("after", "circles", 9))  # live writes go on, to the serving version only
    assert run(rt.rollout.start("tiny-3"))["state"] == "candidate"
    assert rt.index.count(candidate) == 0  # started clean


def test_force_promotes_past_the_gate(runtime: Runtime) -> None:
    rt = runtime
    apply(rt, *catalogue(1))
    candidate = run(rt.rollout.start("tiny-3"))["version"]
    with pytest.raises(RolloutError, match="lacks 3 live images"):
        run(rt.rollout.promote(False, None))
    run(rt.rollout.promote(True, None))
    assert rt.index.serving_version() == candidate


def test_promote_with_an_eval_dir_compares_map_and_gates_on_it(
    runtime: Runtime, tmp_path: Path
) -> None:
    rt = runtime
    apply(rt, *catalogue(2))
    eval_dir = tmp_path / "labelled"
    for category in CATEGORIES:
        (eval_dir / category).mkdir(parents=True)
        for seed in range(3):
            (eval_dir / category / f"{seed}.jpg").write_bytes(image_bytes(category, 50 + seed))
    candidate = run(rt.rollout.start("tiny-3"))["version"]
    step_until_done(rt)
    evaluation = rt.rollout.evaluate(eval_dir)
    serving_map, candidate_map = evaluation["serving"]["map"], evaluation["candidate"]["map"]
    assert 0 < serving_map <= 1 and 0 < candidate_map <= 1
    assert evaluation["passed"] == (candidate_map >= serving_map)
    if evaluation["passed"]:
        run(rt.rollout.promote(False, str(eval_dir)))
        assert rt.index.serving_version() == candidate
    else:
        with pytest.raises(RolloutError, match="candidate mAP"):
            run(rt.rollout.promote(False, str(eval_dir)))
        assert rt.index.serving_version() != candidate


def test_an_anchor_stays_written_and_the_gate_scores_pages_as_search_serves_them(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        backfill_batch=8,
        validation_enabled=False,
        decode_threads=2,
        search_anchor_slots=10,
    )
    rt = open_runtime(settings, Loader())
    try:
        apply(rt, *catalogue(3))
        base = rt.index.serving_version()
        run(rt.rollout.start("tiny-3"))
        step_until_done(rt)
        run(rt.rollout.promote(True, None))
        assert rt.rollout.anchor() == {"anchor": base, "slots": 10}
        apply(rt, upload("late-1", CATEGORIES[0], 40))  # live writes still reach the anchor
        assert rt.index.get(base, "late-1") is not None  # type: ignore[arg-type]
        # Every place kept for the anchor: the page is the anchor's first ten.
        page = rt.search.search(SearchRequest(image_id="late-1", k=10))["results"]
        anchor_top = rt.index.search(
            base,
            rt.index.get(base, "late-1", True)["vector"],
            10,
            None,
            ["late-1"],  # type: ignore[arg-type,index]
        )
        assert {hit["image_id"] for hit in page} == {hit.image_id for hit in anchor_top}
        run(rt.rollout.start("tiny-4"))  # the anchor does not block the next rollout
        step_until_done(rt)
        eval_dir = tmp_path / "labelled"
        for category in CATEGORIES:
            (eval_dir / category).mkdir(parents=True)
            for seed in range(5):
                (eval_dir / category / f"{seed}.jpg").write_bytes(image_bytes(category, 60 + seed))
        evaluation = rt.rollout.evaluate(eval_dir)
        assert evaluation["anchor_slots"] == 10
        # both scored on the anchor's pages: the same ten images, whatever each ranks first
        assert (
            evaluation["serving"]["precision_at_10"] == evaluation["candidate"]["precision_at_10"]
        )
        status = rt.rollout.status()
        assert (status["anchor"], status["anchor_slots"]) == (base, 10)
        rt.rollout.retire(False, anchor=True)
        assert base not in {r.version for r in rt.registry.written()}
    finally:
        rt.close()
