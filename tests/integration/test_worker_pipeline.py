"""End to end against real parts: Tansu broker process, `lookalike worker` subprocess (Faust,
the real EfficientNet-Lite0 encoder, embedded Qdrant on disk), HTTP API, dead-letter topic."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from imagegen import CATEGORIES, image_bytes
from PIL import Image

from lookalike.events import FileSource, ImageUploaded, InlineSource, UrlSource
from lookalike.kafka.publisher import UploadPublisher
from lookalike.kafka.topic_reader import read_topic
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

PER_CATEGORY = 6


@dataclass
class Stack:
    worker: LookalikeProcess
    settings: Settings
    bootstrap: str
    image_root: Path
    image_url: str

    def publish(self, events: list[ImageUploaded]) -> None:
        with UploadPublisher(self.settings, self.bootstrap) as publisher:
            for event in events:
                publisher.publish(event)
            publisher.flush()

    def publish_raw(self, values: list[bytes]) -> None:
        with UploadPublisher(self.settings, self.bootstrap) as publisher:
            for value in values:
                publisher.publish_raw(None, value)
            publisher.flush()


def upload(image_id: str, category: str, image, seller: str = "seller-a") -> ImageUploaded:
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"l-{image_id}",
        seller_id=seller,
        category=category,
        image=image,
    )


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from httpserver import image_server

    root = tmp_path_factory.mktemp("stack")
    image_root = root / "images"
    image_root.mkdir()
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_BATCH_SIZE="8",
        LOOKALIKE_FETCH_TIMEOUT="1.5",
        LOOKALIKE_MAX_IMAGE_PIXELS="4000000",
        LOOKALIKE_IMAGE_ROOT=str(image_root),
        # The test image server is on loopback, which the URL guard refuses unless listed.
        LOOKALIKE_FETCH_ALLOW="127.0.0.1/32",
    )
    with image_server({"/url-image.jpg": image_bytes("checkers", 999)}) as base_url:
        worker = LookalikeProcess("worker", root / "data", env).start()
        settings = Settings(
            kafka_bootstrap=broker,
            topic_prefix=prefix,
            image_root=image_root,
            data_dir=root / "client",
        )
        try:
            yield Stack(worker, settings, broker, image_root, base_url)
        finally:
            code = worker.stop()
            assert code == 0, worker.log_tail()


def catalogue(stack: Stack) -> list[ImageUploaded]:
    """PER_CATEGORY images per category; even seeds inline, odd seeds as files under the root."""
    events = []
    for category in CATEGORIES:
        for seed in range(PER_CATEGORY):
            data = image_bytes(category, seed)
            if seed % 2:
                path = stack.image_root / category / f"{seed}.jpg"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(data)
                source = FileSource(path=f"{category}/{seed}.jpg")
            else:
                source = InlineSource(data=data)
            seller = "seller-a" if seed < 3 else "seller-b"
            events.append(upload(f"{category}-{seed}", category, source, seller))
    events.append(
        upload("url-checkers", "checkers", UrlSource(url=f"{stack.image_url}/url-image.jpg"))
    )
    return events


def search_file(stack: Stack, data: bytes, **form: str) -> dict:
    response = httpx.post(
        f"{stack.worker.url}/search", files={"image": ("q.jpg", data)}, data=form, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> list[ImageUploaded]:
    events = catalogue(stack)
    stack.publish(events)
    wait_for(lambda: stack.worker.indexed() == len(events), 120, f"{len(events)} indexed")
    return events


def test_indexed_image_finds_itself_first(stack: Stack, indexed: list[ImageUploaded]) -> None:
    for category in CATEGORIES:
        body = search_file(stack, image_bytes(category, 1), k="5")
        assert body["results"][0]["image_id"] == f"{category}-1"
        assert body["results"][0]["score"] > 0.99
        assert body["model_version"].startswith("efficientnet-lite0-")
        assert body["search_id"]


def test_unseen_image_finds_its_own_category(stack: Stack, indexed: list[ImageUploaded]) -> None:
    for category in CATEGORIES:
        body = search_file(stack, image_bytes(category, 1000 + len(category)), k="5")
        same = [r for r in body["results"] if r["category"] == category]
        assert len(same) >= 4, (category, [r["category"] for r in body["results"]])


def test_filters_and_search_by_id(stack: Stack, indexed: list[ImageUploaded]) -> None:
    body = search_file(stack, image_bytes("circles", 2), k="10", category="stripes")
    assert body["results"] and {r["category"] for r in body["results"]} == {"stripes"}

    response = httpx.post(
        f"{stack.worker.url}/search",
        timeout=60,
        json={"image_id": "circles-0", "k": 50, "filter": {"seller_id": "seller-b"}},
    )
    results = response.json()["results"]
    assert {r["seller_id"] for r in results} == {"seller-b"}
    assert "circles-0" not in {r["image_id"] for r in results}  # seller-a image, and the query
    assert results[0]["category"] == "circles"

    response = httpx.post(f"{stack.worker.url}/search", json={"image_id": "nope"}, timeout=30)
    assert response.status_code == 404
    assert "not in the index" in response.json()["error"]


def test_image_record_and_url_source(stack: Stack, indexed: list[ImageUploaded]) -> None:
    record = httpx.get(f"{stack.worker.url}/images/url-checkers", timeout=10).json()
    assert record["source"] == f"{stack.image_url}/url-image.jpg"
    assert record["category"] == "checkers"
    assert record["model_version"] == stack.worker.stats()["serving_version"]
    assert (record["width"], record["height"]) == (96, 96)
    file_record = httpx.get(f"{stack.worker.url}/images/stripes-3", timeout=10).json()
    assert file_record["source"] == "file:stripes/3.jpg"
    assert file_record["seller_id"] == "seller-b"


def test_cli_search_prints_the_api_json(
    stack: Stack, indexed: list[ImageUploaded], tmp_path: Path
) -> None:
    query = tmp_path / "query.jpg"
    query.write_bytes(image_bytes("stripes", 4))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "search",
            str(query),
            "--k",
            "3",
            "--port",
            str(stack.worker.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["results"][0]["image_id"] == "stripes-4"
    assert len(body["results"]) == 3


def test_replayed_events_do_not_duplicate(stack: Stack, indexed: list[ImageUploaded]) -> None:
    before = stack.worker.stats()
    stack.publish(indexed)
    wait_for(
        lambda: (
            stack.worker.stats()["worker"]["events_consumed"]
            >= before["worker"]["events_consumed"] + len(indexed)
        ),
        120,
        "the replayed events to be consumed",
    )
    assert stack.worker.indexed() == len(indexed)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_input_is_dead_lettered_and_valid_input_indexed(
    stack: Stack, indexed: list[ImageUploaded]
) -> None:
    good = image_bytes("circles", 77)
    bomb = io.BytesIO()
    Image.new("RGB", (3000, 3000), "white").save(bomb, format="PNG")  # 9 Mpx > 4 Mpx limit
    outside = stack.image_root.parent / "outside.jpg"
    outside.write_bytes(good)
    bad = {
        "truncated": (InlineSource(data=good[: len(good) // 2]), "decode", "truncated"),
        "zero-bytes": (InlineSource(data=b""), "decode", "empty"),
        "not-an-image": (InlineSource(data=b"hello, I am text"), "decode", "not a recognised"),
        "bomb": (InlineSource(data=bomb.getvalue()), "decode", "pixel"),
        "unreachable": (
            UrlSource(url=f"http://127.0.0.1:{_closed_port()}/a.jpg"),
            "fetch",
            "unreachable",
        ),
        "slow": (UrlSource(url=f"{stack.image_url}/slow"), "fetch", "timed out"),
        "missing-url": (UrlSource(url=f"{stack.image_url}/missing.jpg"), "fetch", "404"),
        # Refused by the URL guard before any I/O (a literal link-local address).
        "refused-url": (
            UrlSource(url="http://169.254.169.254/latest/meta-data/"),
            "fetch",
            "LOOKALIKE_FETCH_ALLOW",
        ),
        "escape": (FileSource(path="../outside.jpg"), "fetch", "outside"),
    }
    valid = [
        upload(f"valid-{i}", "circles", InlineSource(data=image_bytes("circles", 80 + i)))
        for i in range(3)
    ]
    events = [upload(name, "circles", src) for name, (src, _, _) in bad.items()]
    mixed = [
        e for pair in zip(events, valid + [None] * len(events), strict=False) for e in pair if e
    ]
    stack.publish(mixed)
    raw = {
        "malformed-json": (b'{"image_id": "x", ', "parse", "malformed JSON"),
        "schema": (
            json.dumps({"image_id": "y", "category": "c"}).encode(),
            "validate",
            "listing_id",
        ),
        "version": (
            json.dumps(
                {**json.loads(valid[0].to_json_bytes()), "schema_version": 99, "image_id": "future"}
            ).encode(),
            "validate",
            "schema_version",
        ),
    }
    stack.publish_raw([value for value, _, _ in raw.values()])

    expected_letters = len(bad) + len(raw)
    wait_for(
        lambda: stack.worker.stats()["dead_letters"] == expected_letters,
        120,
        f"{expected_letters} dead letters",
    )
    assert stack.worker.indexed() == len(indexed) + len(valid)

    letters = [
        json.loads(r.value) for r in read_topic(stack.bootstrap, stack.settings.dead_letters_topic)
    ]
    by_image = {letter["image_id"]: letter for letter in letters if letter["image_id"]}
    for name, (_, stage, words) in bad.items():
        letter = by_image[name]
        assert letter["stage"] == stage, letter
        assert words in letter["reason"], letter
        assert json.loads(letter["payload"])["image_id"] == name  # original payload kept
    by_payload = {letter["payload"]: letter for letter in letters}
    for name, (value, stage, words) in raw.items():
        letter = by_payload[value.decode()]
        assert letter["stage"] == stage, (name, letter)
        assert words in letter["reason"], (name, letter)
    # The worker went on: it still indexes.
    stack.publish([upload("after-bad", "stripes", InlineSource(data=image_bytes("stripes", 90)))])
    wait_for(lambda: stack.worker.indexed() == len(indexed) + len(valid) + 1, 60, "after-bad")


def test_searches_are_logged_and_clicks_accepted(
    stack: Stack, indexed: list[ImageUploaded]
) -> None:
    from lookalike.events import Click
    from lookalike.kafka.publisher import ClickPublisher

    response = httpx.post(
        f"{stack.worker.url}/search",
        timeout=60,
        files={"image": ("q.jpg", image_bytes("circles", 3))},
        data={"k": "4", "user_id": "u-1", "session_id": "sess-9"},
    )
    body = response.json()
    served = {
        s["search_id"]: s
        for s in (
            json.loads(r.value) for r in read_topic(stack.bootstrap, stack.settings.searches_topic)
        )
    }
    logged = served[body["search_id"]]
    assert logged["model_version"] == body["model_version"]
    assert logged["query_type"] == "image" and len(logged["query_content_sha256"]) == 64
    assert (logged["user_id"], logged["session_id"]) == ("u-1", "sess-9")
    assert [(r["image_id"], r["rank"]) for r in logged["results"]] == [
        (r["image_id"], r["rank"]) for r in body["results"]
    ]

    clicked = body["results"][1]
    accepted = httpx.post(
        f"{stack.worker.url}/clicks",
        timeout=30,
        json={
            "search_id": body["search_id"],
            "image_id": clicked["image_id"],
            "rank": 2,
            "dwell_seconds": 12.5,
        },
    )
    assert accepted.status_code == 202, accepted.text
    with ClickPublisher(stack.settings, stack.bootstrap) as publisher:
        publisher.publish(
            Click(
                search_id=body["search_id"],
                image_id=clicked["image_id"],
                rank=2,
                added_to_cart=True,
            )
        )
        publisher.flush()
    bad = httpx.post(f"{stack.worker.url}/clicks", json={"search_id": "x", "rank": 0}, timeout=30)
    assert bad.status_code == 400 and "image_id" in bad.json()["error"]

    clicks = [json.loads(r.value) for r in read_topic(stack.bootstrap, stack.settings.clicks_topic)]
    ours = [c for c in clicks if c["search_id"] == body["search_id"]]
    assert len(ours) == 2
    assert {c.get("dwell_seconds") for c in ours} == {12.5, None}
    assert any(c.get("added_to_cart") for c in ours)
