"""`lookalike up` owns the embedded stack: it starts the local broker, survives a SIGKILL of the
worker without losing or duplicating images, and stops what it started on SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from imagegen import CATEGORIES, image_bytes

from lookalike.kafka.local_broker import running_broker

from .stack import LookalikeProcess, clean_env, wait_for

IMAGES_PER_CATEGORY = 30


def _write_catalogue(folder: Path) -> int:
    for category in CATEGORIES:
        (folder / category).mkdir(parents=True)
        for seed in range(IMAGES_PER_CATEGORY):
            (folder / category / f"{seed:03d}.jpg").write_bytes(image_bytes(category, seed))
    (folder / "README.txt").write_text("not an image: publish skips it")
    return IMAGES_PER_CATEGORY * len(CATEGORIES)


def _publish(
    folder: Path, data_dir: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "publish",
            str(folder),
            "--category-from-folder",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_publish_without_a_broker_says_what_to_do(tmp_path: Path) -> None:
    out = _publish(tmp_path, tmp_path / "empty-data", clean_env(), "--wait", "1")
    assert out.returncode == 1
    assert "lookalike up" in out.stderr and "LOOKALIKE_KAFKA_BOOTSTRAP" in out.stderr


def test_sigkill_mid_ingest_then_restart_indexes_each_image_exactly_once(tmp_path: Path) -> None:
    total = _write_catalogue(tmp_path / "catalogue")
    data_dir = tmp_path / "data"
    # Small batches so ingesting takes long enough to be interrupted.
    env = clean_env(LOOKALIKE_BATCH_SIZE="3", LOOKALIKE_BATCH_MAX_WAIT="0.2")
    up = LookalikeProcess("up", data_dir, env).start()
    broker = running_broker(data_dir / "broker.json")
    assert broker is not None, "lookalike up should start a local broker"

    published = _publish(tmp_path / "catalogue", data_dir, env)
    assert published.returncode == 0, published.stderr
    assert f"sent {total} upload events" in published.stdout

    at_kill = wait_for(
        lambda: (n := up.indexed()) >= 6 and n, 120, "ingest to start", interval=0.05
    )
    up.kill()
    assert at_kill < total, "the worker finished before it could be killed mid-ingest"
    assert _pid_alive(broker.pid), "the broker must outlive a killed worker"

    restarted = LookalikeProcess("up", data_dir, env, port=up.port).start()
    assert b"reusing local broker" in restarted.log_path.read_bytes()
    wait_for(lambda: restarted.indexed() == total, 180, f"{total} images indexed")
    time.sleep(3)  # let any replayed batch land: the count must not move past the total
    stats = restarted.stats()
    assert stats["indexed"][stats["serving_version"]] == total
    assert stats["dead_letters"] == 0

    # Every image is there exactly once, with its category from its folder.
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike",
            "search",
            str(tmp_path / "catalogue" / "stripes" / "007.jpg"),
            "--k",
            "5",
            "--port",
            str(restarted.port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    results = json.loads(search.stdout)["results"]
    assert results[0]["attributes"]["filename"] == "007.jpg"
    assert results[0]["category"] == "stripes"

    assert restarted.stop() == 0, restarted.log_tail()
    wait_for(lambda: not _pid_alive(broker.pid), 15, "the broker to stop")
    assert not (data_dir / "broker.json").exists()


def test_up_migrates_an_index_of_an_earlier_release(tmp_path: Path) -> None:
    """A data dir written by lookalike before 0.2 (qdrant-client's local mode): `lookalike up`
    moves it to the embedded engine first, and serves what it held."""
    from qdrant_client import QdrantClient

    from lookalike.encoders import load_encoder
    from lookalike.images import decode_image
    from lookalike.index import IndexPoint, QdrantIndex
    from lookalike.indexing import ClockRecord, ClockStore
    from lookalike.rollout import VersionRegistry

    data_dir = tmp_path / "data"
    encoder = load_encoder("efficientnet-lite0")
    images = {f"{c}-{s}": image_bytes(c, s) for c in CATEGORIES for s in range(4)}
    vectors = encoder.embed_images([decode_image(b, max_pixels=10**7) for b in images.values()])
    old = QdrantIndex(QdrantClient(path=str(data_dir / "qdrant")))
    VersionRegistry(old).bootstrap(encoder.version, "efficientnet-lite0", encoder.dim)
    old.ensure_collection(encoder.version, encoder.dim)
    old.upsert(
        encoder.version,
        [
            IndexPoint(i, v, {"image_id": i, "category": i.split("-")[0], "seller_id": "s"})
            for i, v in zip(images, vectors, strict=True)
        ],
    )
    old.set_serving(encoder.version)
    ClockStore(old).put_many([ClockRecord("gone", (1, 2, "e"), "removed", "sold")])
    old.close()

    up = LookalikeProcess("up", data_dir, clean_env(LOOKALIKE_COMPILE="false")).start()
    try:
        stats = up.stats()
        assert stats["serving_version"] == encoder.version
        assert stats["indexed"] == {encoder.version: len(images)}
        assert stats["tombstones"] == 1
        assert b"migrating it to the embedded engine" in up.log_path.read_bytes()
        assert (data_dir / "qdrant.migrated").is_dir() and (data_dir / "index").is_dir()
        similar = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "lookalike",
                    "search",
                    "--id",
                    "stripes-1",
                    "--k",
                    "3",
                    "--port",
                    str(up.port),
                ],
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert [r["category"] for r in similar["results"]] == ["stripes"] * 3
    finally:
        assert up.stop() == 0, up.log_tail()
