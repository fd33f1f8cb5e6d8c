"""Clicks joined to searches become training pairs on disk: a real broker, a real worker, a
SIGKILL in the middle of the click stream, and nothing lost or doubled."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imagegen import image_bytes

from lookalike.clicks import read_pairs
from lookalike.events import Click, ImageUploaded, InlineSource, TrainingPair
from lookalike.kafka.publisher import ClickPublisher, UploadPublisher
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

CATEGORIES = ("circles", "stripes")


@pytest.fixture()
def env_and_settings(broker: str, tmp_path: Path) -> Iterator[tuple[dict, Settings]]:
    prefix = f"cp-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_BATCH_SIZE="8",
        LOOKALIKE_CLICK_GRACE="3",
        LOOKALIKE_VALIDATION_ENABLED="false",
    )
    yield env, Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=tmp_path / "client")


def _pairs_on_disk(data_dir: Path) -> list[TrainingPair]:
    root = data_dir / "training-pairs"
    return read_pairs(root) if root.exists() else []


def _lines_on_disk(data_dir: Path) -> int:
    return sum(f.read_text().count("\n") for f in (data_dir / "training-pairs").rglob("*.jsonl"))


def _send(settings: Settings, bootstrap: str, clicks: list[Click]) -> None:
    with ClickPublisher(settings, bootstrap) as publisher:
        for click in clicks:
            publisher.publish(click)
        publisher.flush()


def test_worker_restart_mid_click_stream_neither_loses_nor_duplicates_pairs(
    broker: str, tmp_path: Path, env_and_settings: tuple[dict, Settings]
) -> None:
    env, settings = env_and_settings
    data_dir = tmp_path / "data"
    worker = LookalikeProcess("worker", data_dir, env).start()
    try:
        uploads = [
            ImageUploaded(
                image_id=f"{category}-{seed}",
                listing_id=f"l-{seed}",
                seller_id="s",
                category=category,
                image=InlineSource(data=image_bytes(category, seed)),
            )
            for category in CATEGORIES
            for seed in range(4)
        ]
        with UploadPublisher(settings, broker) as publisher:
            for event in uploads:
                publisher.publish(event)
            publisher.flush()
        wait_for(lambda: worker.indexed() == len(uploads), 120, "catalogue indexed")

        searches = []
        for event in uploads[:6]:
            response = httpx.post(
                f"{worker.url}/search", json={"image_id": event.image_id, "k": 5}, timeout=60
            )
            assert response.status_code == 200, response.text
            searches.append(response.json())

        # Each search gets a click at rank 2 then rank 4 (12 pairs), plus noise: a replayed
        # click, a double click, a click on an image the search did not show, and a click for a
        # search that never happened.
        first_half, second_half, expected = [], [], {}
        for number, search in enumerate(searches):
            for rank in (2, 4):
                result = search["results"][rank - 1]
                click = Click(search_id=search["search_id"], image_id=result["image_id"], rank=rank)
                (first_half if number < 3 else second_half).append(click)
                expected[TrainingPair.id_for(search["search_id"], result["image_id"])] = (
                    search,
                    rank,
                )
        first_half.append(first_half[0])  # the same click event twice
        second_half.append(second_half[0].model_copy(update={"click_id": "double-click"}))
        second_half.append(
            Click(search_id=searches[0]["search_id"], image_id="never-shown", rank=1)
        )
        second_half.append(Click(search_id="no-such-search", image_id="circles-0", rank=1))

        _send(settings, broker, first_half)
        wait_for(lambda: len(_pairs_on_disk(data_dir)) >= 6, 60, "the first half's pairs")
        worker.kill()  # SIGKILL: no clean shutdown, no final commit
        _send(settings, broker, second_half)  # the stream goes on while the worker is down
        worker = LookalikeProcess("worker", data_dir, env, port=worker.port).start()

        wait_for(lambda: len(_pairs_on_disk(data_dir)) >= len(expected), 90, "all pairs")
        stats = wait_for(
            lambda: (s := worker.stats())["dead_letters_by_stage"].get("join") == 2 and s,
            60,
            "two clicks dead-lettered by the join",
        )
        pairs = _pairs_on_disk(data_dir)
        assert {p.pair_id for p in pairs} == set(expected)
        assert _lines_on_disk(data_dir) == len(expected), "a pair was written twice"
        for pair in pairs:
            search, rank = expected[pair.pair_id]
            shown = [r["image_id"] for r in search["results"]]
            assert pair.query.image_id == search["query"]["image_id"]
            assert pair.positive_rank == rank and pair.positive == shown[rank - 1]
            assert pair.model_version == search["model_version"]
            # Negatives: shown above the click and not clicked (rank 2 was clicked first).
            assert pair.negatives == [shown[0]] if rank == 2 else [shown[0], shown[2]]

        reasons = [
            d["reason"]
            for d in httpx.get(f"{worker.url}/dead-letters", timeout=30).json()["dead_letters"]
            if d["stage"] == "join"
        ]
        assert any("never-shown" in r and "not among the 5 results" in r for r in reasons)
        assert any("no-such-search" in r and "unknown" in r for r in reasons)

        online = stats["online"][searches[0]["model_version"]]
        assert online["searches"] == 6 and online["clicks"] == 12
        assert online["ctr"] == 1.0 and online["mrr"] == 0.5  # every first click at rank 2

        # Training reads the catalogue through the running worker (it holds embedded Qdrant):
        # stored vectors for the head, stored records (-> blob bytes) for the last block.
        for extra in ([], ["--tail"]):
            trained = subprocess.run(
                [sys.executable, "-m", "lookalike", "train", "--data-dir", str(data_dir)]
                + ["--port", str(worker.port), "--out", str(tmp_path / f"model{len(extra)}")]
                + ["--epochs", "1", "--json", *extra],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert trained.returncode == 0, trained.stderr[-2000:]
            summary = json.loads(trained.stdout.strip().splitlines()[-1])
            assert summary["pairs"] == 12 and summary["skipped"] == {
                "query_missing": 0,
                "positive_missing": 0,
            }
    finally:
        assert worker.stop() == 0, worker.log_tail()
