"""Index lifecycle end to end: real broker, `lookalike worker` subprocesses (EfficientNet-Lite0
serving, Lite1 as the new version), embedded Qdrant on disk, the CLI.

* late and replayed events never undo newer updates or removals;
* a full rollout (start -> backfill -> promote -> anchor -> retire the anchor) while uploads,
  replacements, attribute changes, removals and stale replays stream in and searches are polled:
  no search fails or returns a removed image, the anchor's top 2 are kept on each page, and the
  new version ends holding exactly the live images with their latest attributes, checked point
  by point against the event history;
* SIGKILL during the backfill: the restarted worker resumes it without re-embedding what was
  written and without gaps.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from imagegen import CATEGORIES, image_bytes

from lookalike.events import ImageAttributesChanged, ImageRemoved, ImageUploaded, InlineSource
from lookalike.indexing import clock_of
from lookalike.kafka.publisher import UploadPublisher
from lookalike.search.blending import blend_pages
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

NEW_ENCODER = "efficientnet-lite1"
Event = ImageUploaded | ImageAttributesChanged | ImageRemoved


def worker_env(broker: str, prefix: str, **extra: str) -> dict[str, str]:
    return clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_COMPILE="false",
        LOOKALIKE_BATCH_SIZE="8",
        **extra,
    )


def upload(
    image_id: str, category: str, seed: int, looks_like: str | None = None, **kw: Any
) -> ImageUploaded:
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"l-{image_id}",
        seller_id="s",
        category=category,
        image=InlineSource(data=image_bytes(looks_like or category, seed)),
        **kw,
    )


def cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lookalike", *args, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )


@dataclass
class History:
    """Every event published, in order, and the state it must lead to (the clock rule)."""

    events: list[Event] = field(default_factory=list)

    def expected(self) -> dict[str, dict[str, Any] | None]:
        state: dict[str, dict[str, Any] | None] = {}
        clocks: dict[str, tuple] = {}
        for event in self.events:
            clock = clock_of(event)
            if event.image_id in clocks and clock < clocks[event.image_id]:
                continue  # older than what the index holds: ignored
            held = state.get(event.image_id)
            if isinstance(event, ImageUploaded):
                state[event.image_id] = {
                    "category": event.category,
                    "attributes": event.attributes,
                    "listing_id": event.listing_id,
                    "content_sha256": hashlib.sha256(event.image.data).hexdigest(),  # type: ignore[union-attr]
                }
            elif isinstance(event, ImageRemoved):
                state[event.image_id] = None
            else:
                if held is None:
                    continue  # a change to a removed (or unknown) image changes nothing
                held.update(event.changes())
            clocks[event.image_id] = clock
        return state


class Publisher:
    def __init__(self, settings: Settings, bootstrap: str, history: History) -> None:
        self.publisher = UploadPublisher(settings, bootstrap)
        self.history = history
        self.lock = threading.Lock()

    def send(self, *events: Event) -> None:
        with self.lock:
            for event in events:
                self.history.events.append(event)
                self.publisher.publish(event)
            self.publisher.flush()

    def close(self) -> None:
        self.publisher.close()


def image_record(worker: LookalikeProcess, image_id: str) -> dict | None:
    response = httpx.get(f"{worker.url}/images/{image_id}", timeout=30)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def stack(
    broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LookalikeProcess, Settings]]:
    root = tmp_path_factory.mktemp("lifecycle")
    prefix = f"lc-{uuid.uuid4().hex[:8]}"
    worker = LookalikeProcess(
        "worker",
        root / "data",
        worker_env(broker, prefix, LOOKALIKE_BACKFILL_BATCH="8", LOOKALIKE_SEARCH_ANCHOR_SLOTS="2"),
    ).start()
    settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=root / "client")
    try:
        yield worker, settings
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_late_and_replayed_events_do_not_undo_newer_ones(
    stack: tuple[LookalikeProcess, Settings], broker: str
) -> None:
    worker, settings = stack
    t0 = datetime(2025, 6, 1, tzinfo=UTC)
    at = lambda m: t0 + timedelta(minutes=m)  # noqa: E731
    original = upload("late-a", "circles", 1, occurred_at=at(1))
    history = History()
    publisher = Publisher(settings, broker, history)
    try:
        publisher.send(
            original,
            upload("late-b", "stripes", 1, occurred_at=at(1)),
            upload("late-c", "checkers", 1, occurred_at=at(1), sequence=5),
        )
        wait_for(lambda: image_record(worker, "late-c"), 120, "late-c indexed")
        publisher.send(
            ImageRemoved(image_id="late-a", occurred_at=at(10), reason="sold"),
            ImageAttributesChanged(image_id="late-b", occurred_at=at(10), category="hats"),
            ImageAttributesChanged(
                image_id="late-c", occurred_at=at(0), sequence=7, attributes={"v": "7"}
            ),
        )
        wait_for(lambda: image_record(worker, "late-a") is None, 60, "late-a removed")
        # late and replayed: the original upload again, an older replacement, an older change,
        # a lower sequence number with a newer time
        publisher.send(
            original,
            upload("late-b", "circles", 2, occurred_at=at(5)),
            ImageAttributesChanged(image_id="late-b", occurred_at=at(9), category="stale"),
            ImageAttributesChanged(
                image_id="late-c", occurred_at=at(99), sequence=6, attributes={"v": "6"}
            ),
            upload("late-marker", "circles", 3),
        )
        wait_for(lambda: image_record(worker, "late-marker"), 60, "the marker indexed")
        wait_for(lambda: worker.stats()["worker"]["stale_events"] >= 4, 60, "4 stale events")
    finally:
        publisher.close()
    assert image_record(worker, "late-a") is None
    b = image_record(worker, "late-b")
    assert b is not None and b["category"] == "hats"
    assert b["content_sha256"] == hashlib.sha256(image_bytes("stripes", 1)).hexdigest()
    assert image_record(worker, "late-c")["attributes"] == {"v": "7"}  # type: ignore[index]
    assert worker.stats()["tombstones"] >= 1


class Traffic:
    """Live events and searches in background threads while the rollout runs."""

    def __init__(self, worker: LookalikeProcess, publisher: Publisher, live: list[str]) -> None:
        self.worker = worker
        self.publisher = publisher
        self.live = list(live)
        self.removed: set[str] = set()  # removals the worker has confirmed (404)
        self.rng = random.Random(7)
        self.stop = threading.Event()
        self.search_failures: list[str] = []
        self.removed_returned: list[str] = []
        self.searches = 0
        self.versions_seen: set[str] = set()
        self.counter = 0
        self.threads = [
            threading.Thread(target=self._events, daemon=True),
            threading.Thread(target=self._searches, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _events(self) -> None:
        while not self.stop.is_set():
            self.counter += 1
            n, roll = self.counter, self.rng.random()
            category = self.rng.choice(CATEGORIES)
            if roll < 0.35 or len(self.live) < 10:
                image_id = f"live-{n}"
                self.publisher.send(upload(image_id, category, 500 + n))
                self.live.append(image_id)
            elif roll < 0.5:  # a replacement image
                self.publisher.send(upload(self.rng.choice(self.live), category, 900 + n))
            elif roll < 0.7:
                self.publisher.send(
                    ImageAttributesChanged(
                        image_id=self.rng.choice(self.live),
                        category=category,
                        attributes={"n": str(n)},
                    )
                )
            elif roll < 0.85:
                image_id = self.live.pop(self.rng.randrange(len(self.live)))
                # Indexed first: a 404 for an upload still in flight would not confirm a removal.
                wait_for(lambda i=image_id: image_record(self.worker, i), 60, "the upload")
                self.publisher.send(ImageRemoved(image_id=image_id, reason="sold"))
                wait_for(lambda i=image_id: image_record(self.worker, i) is None, 60, "removal")
                self.removed.add(image_id)
                # ... and its first upload replayed later must not bring it back
                first = next(e for e in self.publisher.history.events if e.image_id == image_id)
                self.publisher.send(first)
            else:  # a stale copy of a live image: older than everything about it
                image_id = self.rng.choice(self.live)
                self.publisher.send(
                    upload(
                        image_id,
                        "stale",
                        1,
                        looks_like="circles",
                        occurred_at=datetime(2000, 1, 1, tzinfo=UTC),
                    )
                )
            self.stop.wait(0.15)

    def _searches(self) -> None:
        while not self.stop.is_set():
            removed = set(self.removed)  # confirmed before the search was sent
            if self.rng.random() < 0.5:
                response = httpx.post(
                    f"{self.worker.url}/search",
                    files={"image": ("q.jpg", image_bytes(self.rng.choice(CATEGORIES), 77))},
                    data={"k": "20"},
                    timeout=60,
                )
            else:
                query = self.rng.choice(self.live[:20])
                response = httpx.post(
                    f"{self.worker.url}/search", json={"image_id": query, "k": 20}, timeout=60
                )
                if response.status_code == 404:
                    continue  # the query image was just removed
            self.searches += 1
            if response.status_code != 200:
                self.search_failures.append(f"{response.status_code} {response.text}")
                continue
            body = response.json()
            self.versions_seen.add(body["model_version"])
            self.removed_returned += [
                r["image_id"] for r in body["results"] if r["image_id"] in removed
            ]


def rollout_status(worker: LookalikeProcess) -> dict:
    return httpx.get(f"{worker.url}/rollout/status", params={"quick": "1"}, timeout=60).json()


def check_anchor_slots(
    worker: LookalikeProcess, serving: str, anchor: str, catalogue: list[str]
) -> None:
    """A search by id answers the serving model's ranking with the anchor's top 2 on the page,
    both rankings computed here from the stored vectors."""
    live = [i for i in catalogue if image_record(worker, i) is not None]
    query, others = live[0], live[1:]

    def ranking(version: str) -> list[str]:
        found = httpx.post(
            f"{worker.url}/vectors", json={"version": version, "image_ids": live}, timeout=60
        ).json()["vectors"]
        q = np.asarray(found[query])
        return sorted(others, key=lambda i: -float(np.dot(q, found[i])))

    listings = [f"l-{i}" for i in others]
    body = httpx.post(
        f"{worker.url}/search",
        json={"image_id": query, "k": 10, "filter": {"listing_id": listings}},
        timeout=60,
    ).json()
    page = [r["image_id"] for r in body["results"]]
    placed = {r["image_id"] for r in body["results"] if r["ranked_by"] == anchor}
    served, kept = ranking(serving), ranking(anchor)[:2]
    assert set(page) == set(blend_pages(served, kept, 10, 2)[:10]), (page, served, kept)
    assert set(kept) <= set(page) and placed <= set(kept)


def test_full_rollout_under_live_traffic(
    stack: tuple[LookalikeProcess, Settings], broker: str
) -> None:
    worker, settings = stack
    old = worker.stats()["serving_version"]
    others = worker.indexed()  # left by the other tests on this worker, untouched here
    history = History()
    publisher = Publisher(settings, broker, history)
    catalogue = [upload(f"cat-{c}-{i}", c, i) for c in CATEGORIES for i in range(10)]
    publisher.send(*catalogue)
    wait_for(lambda: image_record(worker, catalogue[-1].image_id), 120, "the catalogue")
    try:
        with Traffic(worker, publisher, [e.image_id for e in catalogue]) as traffic:
            started = cli(worker.port, "rollout", "start", NEW_ENCODER)
            assert started.returncode == 0, started.stderr
            new = rollout_status(worker)["candidate"]
            assert new.startswith(NEW_ENCODER) and new != old
            wait_for(lambda: rollout_status(worker)["backfill"]["done"], 300, "backfill", 1.0)
            status = cli(worker.port, "rollout", "status")
            assert status.returncode == 0 and "ready to promote" in status.stdout, status.stdout
            promoted = cli(worker.port, "rollout", "promote")
            assert promoted.returncode == 0, promoted.stderr
            assert worker.stats()["serving_version"] == new
            wait_for(lambda: new in traffic.versions_seen, 60, "a search answered by the new")
            versions = cli(worker.port, "versions")
            assert f"previous   {old}" in versions.stdout, versions.stdout
            # The old version kept written as the anchor: searches (k 20) now keep its top 2
            # on each first page, while live events still reach both.
            anchored = cli(worker.port, "rollout", "anchor")
            assert anchored.returncode == 0 and f"{old} is the anchor" in anchored.stdout
            assert rollout_status(worker)["anchor"] == old
            traffic.stop.wait(3.0)
        wait_for(
            lambda: worker.stats()["indexed"][old] == worker.stats()["indexed"][new],
            60,
            "the anchor to hold what the serving version holds",
        )
        check_anchor_slots(worker, new, old, [e.image_id for e in catalogue])
        retired = cli(worker.port, "rollout", "retire", "--anchor")
        assert retired.returncode == 0, retired.stderr
    finally:
        publisher.close()
    assert traffic.searches > 20
    assert traffic.search_failures == []
    assert traffic.removed_returned == []
    assert {old, new} <= traffic.versions_seen
    assert worker.stats()["written_versions"] == [new]

    expected = history.expected()
    live = {image_id for image_id, state in expected.items() if state is not None}

    def mismatches() -> list[str]:
        found = []
        indexed = worker.stats()["indexed"].get(new)
        if indexed != others + len(live):
            found.append(f"{new} holds {indexed} images, {others + len(live)} are live")
        for image_id, state in expected.items():
            record = image_record(worker, image_id)
            if state is None and record is not None:
                found.append(f"{image_id} should be removed")
            elif state is not None and record is None:
                found.append(f"{image_id} is missing")
            elif state is not None and record is not None:
                wrong = {k: record.get(k) for k, v in state.items() if record.get(k) != v}
                if wrong or record["model_version"] != new:
                    found.append(f"{image_id}: {wrong} expected {state}")
        return found

    def matches() -> bool:
        return not mismatches()

    try:
        wait_for(matches, 120, "the new version to match the event history point by point", 2.0)
    except AssertionError:
        pytest.fail(f"{mismatches()[:10]}\n{worker.log_tail(30)}")
    assert worker.stats()["worker"]["stale_events"] > 0


def test_backfill_resumes_after_sigkill_without_re_embedding(broker: str, tmp_path: Path) -> None:
    prefix = f"lk-{uuid.uuid4().hex[:8]}"
    env = worker_env(broker, prefix, LOOKALIKE_BACKFILL_BATCH="4", LOOKALIKE_INFERENCE_BATCH="2")
    worker = LookalikeProcess("worker", tmp_path / "data", env).start()
    settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=tmp_path / "c")
    catalogue = [upload(f"k-{c}-{i}", c, i) for c in CATEGORIES for i in range(16)]
    publisher = Publisher(settings, broker, History())
    try:
        publisher.send(*catalogue)
    finally:
        publisher.close()
    try:
        wait_for(lambda: worker.indexed() == len(catalogue), 180, "the catalogue")
        assert cli(worker.port, "rollout", "start", NEW_ENCODER).returncode == 0
        wait_for(
            lambda: rollout_status(worker)["backfill"]["embedded"] >= 8,
            120,
            "part of the backfill",
            0.1,
        )
    finally:
        worker.kill()

    worker = LookalikeProcess("worker", tmp_path / "data", env, port=worker.port).start()
    try:
        wait_for(lambda: rollout_status(worker)["backfill"]["done"], 300, "the backfill", 1.0)
        status = json.loads(cli(worker.port, "rollout", "status", "--json").stdout)
        backfill = status["backfill"]
        resumed_with = backfill["session"]["resumed_with"]
        assert 0 < resumed_with < len(catalogue)
        # this run embedded exactly what the killed one had not written
        assert backfill["session"]["embedded"] == len(catalogue) - resumed_with
        assert worker.stats()["worker"]["backfill_embedded"] == len(catalogue) - resumed_with
        assert status["gate"]["ready"], status["gate"]
        assert status["gate"]["coverage"]["missing"] == 0
        assert backfill["candidate_holds"] == len(catalogue)
        assert "resuming at cursor" in worker.log_path.read_text()
    finally:
        assert worker.stop() == 0, worker.log_tail()
