"""The closed learning loop end to end: a real broker, a real `lookalike worker` (EfficientNet-
Lite0, embedded index on disk), buyers' clicks through the API, and `lookalike learn run` as a
scheduler would start it.

* a candidate that cannot beat the serving version by the margin is refused: no rollout starts,
  the serving version stays, and the decision says why; the next run, with no new clicks, skips;
* with the margin at 0 the loop trains on the clicks the worker collected, judges the candidate
  on the labelled holdout, rolls it out (dual-write + backfill inside the worker) and promotes it
  on its own through the worker's gate: searches then answer with the fine-tuned version.

The synthetic categories are easy (Lite0 ranks the holdout perfectly, mAP 1.0), so the promoted
candidate ties the serving version there (a tie passes a margin of 0; any loss is refused).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from imagegen import image_bytes

from lookalike.clicks import read_pairs
from lookalike.clicks.simulate import simulate_clicks
from lookalike.events import ImageUploaded, InlineSource
from lookalike.kafka.publisher import UploadPublisher
from lookalike.settings import Settings
from lookalike.training import TrainConfig
from lookalike.training.pair_data import is_held_out

from .stack import LookalikeProcess, clean_env, wait_for

CATEGORIES = ("circles", "stripes", "checkers", "triangles")


def write_images(folder: Path, seeds: range) -> list[tuple[Path, str]]:
    files = []
    for category in CATEGORIES:
        (folder / category).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            path = folder / category / f"{seed}.jpg"
            path.write_bytes(image_bytes(category, seed))
            files.append((path, category))
    return files


@pytest.fixture(scope="module")
def loop_stack(
    broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LookalikeProcess, Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("learn")
    prefix = f"learn-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_COMPILE="false",
        LOOKALIKE_BATCH_SIZE="8",
        LOOKALIKE_CLICK_GRACE="3",
        LOOKALIKE_VALIDATION_ENABLED="false",
    )
    worker = LookalikeProcess("worker", root / "data", env).start()
    settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=root / "client")
    uploads = [
        ImageUploaded(
            image_id=f"{category}-{seed}",
            listing_id=f"l-{category}-{seed}",
            seller_id="s",
            category=category,
            image=InlineSource(data=image_bytes(category, seed)),
        )
        for category in CATEGORIES
        for seed in range(10)
    ]
    with UploadPublisher(settings, broker) as publisher:
        for event in uploads:
            publisher.publish(event)
        publisher.flush()
    wait_for(lambda: worker.indexed() == len(uploads), 180, "catalogue indexed")
    holdout = root / "holdout"
    write_images(holdout, range(500, 506))
    learn_env = env | {
        "LOOKALIKE_LEARN_HOLDOUT_DIR": str(holdout),
        "LOOKALIKE_LEARN_MIN_NEW_PAIRS": "20",
        "LOOKALIKE_LEARN_EPOCHS": "3",
        "LOOKALIKE_LEARN_TAIL": "false",
    }
    try:
        yield worker, root, learn_env
    finally:
        assert worker.stop() == 0, worker.log_tail()


def buyers_click(worker: LookalikeProcess, queries: list[tuple[Path, str]], seed: int) -> int:
    """Buyers search with the query images and click same-category results; returns the pairs
    now on disk once the worker has written this round's."""
    pairs_dir = worker.data_dir / "training-pairs"
    before = len(read_pairs(pairs_dir)) if pairs_dir.exists() else 0
    with httpx.Client(base_url=worker.url, timeout=60) as client:
        report = simulate_clicks(client, queries, k=8, seed=seed)
    assert report.failed_searches == 0 and report.clicks >= len(queries)
    return wait_for(
        lambda: (
            (n := len(read_pairs(pairs_dir)) if pairs_dir.exists() else 0) >= before + report.clicks
            and n
        ),
        90,
        "this round's pairs on disk",
    )


def lookalike(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lookalike", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def learn(worker: LookalikeProcess, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """`lookalike learn run --json ...`: the decisions it printed."""
    place = ["--data-dir", str(worker.data_dir), "--port", str(worker.port)]
    out = lookalike(env, "learn", "run", "--json", *args, *place)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def status(worker: LookalikeProcess, env: dict[str, str]) -> list[dict[str, Any]]:
    out = lookalike(env, "learn", "status", "--json", "--data-dir", str(worker.data_dir))
    return json.loads(out)["decisions"]


def test_a_candidate_short_of_the_margin_is_refused_and_nothing_rolls_out(
    loop_stack: tuple[LookalikeProcess, Path, dict[str, str]],
) -> None:
    worker, root, env = loop_stack
    serving = worker.stats()["serving_version"]
    buyers_click(worker, write_images(root / "queries-0", range(100, 106)), seed=0)

    decisions = learn(worker, env, "--margin", "0.5")
    assert [d["kind"] for d in decisions] == ["refused"]
    refused = decisions[0]
    assert "below the margin 0.5" in refused["reason"] or "worse" in refused["reason"]
    holdout = refused["details"]["holdout"]
    assert holdout["images"] == 24 and set(holdout["models"]) == {"serving", "candidate"}
    for metric in ("map", "recall_at_1", "recall_at_5", "recall_at_10", "ndcg_at_10"):
        estimate = holdout["models"]["candidate"][metric]
        assert estimate["low"] <= estimate["value"] <= estimate["high"]
    # Held-out clicks are chosen by a hash of the (random) pair ids: a few pairs may hold none.
    held = [
        p
        for p in read_pairs(worker.data_dir / "training-pairs")
        if is_held_out(p.pair_id, TrainConfig().holdout_fraction)
    ]
    clicks = refused["details"]["held_out_clicks"]
    assert clicks["pairs"] <= len(held)  # those whose images every model could read
    if clicks["pairs"]:
        assert clicks["models"].keys() == {"serving", "candidate"}
    # Nothing rolled out: the worker serves what it served, and has no candidate.
    assert worker.stats()["serving_version"] == serving
    rollout = httpx.get(f"{worker.url}/rollout/status", timeout=60).json()
    assert rollout["candidate"] is None
    trained = status(worker, env)[1]
    assert trained["kind"] == "trained" and trained["candidate"] == refused["candidate"]
    assert trained["details"]["seconds_per_epoch"] > 0

    # No new clicks since that candidate: the next scheduled run skips, and says why.
    again = learn(worker, env)
    assert [d["kind"] for d in again] == ["skipped"]
    assert again[0]["reason"].startswith("0 new pairs since the last candidate")


def test_the_loop_trains_rolls_out_and_promotes_on_its_own(
    loop_stack: tuple[LookalikeProcess, Path, dict[str, str]],
) -> None:
    worker, root, env = loop_stack
    serving = worker.stats()["serving_version"]
    buyers_click(worker, write_images(root / "queries-1", range(200, 206)), seed=1)

    decisions = learn(worker, env, "--margin", "0", "--wait")
    kinds = [d["kind"] for d in decisions]
    assert kinds[0] == "rollout_started" and kinds[-1] == "promoted", decisions
    assert set(kinds[1:-1]) <= {"backfilling"}
    candidate = decisions[0]["candidate"]
    assert candidate.startswith("finetuned-efficientnet-lite0-") and candidate != serving
    promoted = decisions[-1]
    assert promoted["details"]["promotion"]["serving"] == candidate
    evaluation = promoted["details"]["promotion"]["evaluation"]
    assert evaluation["passed"] and evaluation["candidate"]["map"] >= evaluation["serving"]["map"]

    # The worker now searches with the fine-tuned version; the old one is kept for a rollback.
    assert worker.stats()["serving_version"] == candidate
    search = httpx.post(
        f"{worker.url}/search", json={"image_id": "circles-1", "k": 5}, timeout=60
    ).json()
    assert search["model_version"] == candidate
    assert all(r["image_id"].startswith("circles-") for r in search["results"][:3])
    rollout = httpx.get(f"{worker.url}/rollout/status", timeout=60).json()
    assert rollout["previous"] == serving and rollout["candidate"] is None
    log = [d["kind"] for d in status(worker, env)]
    assert log[:2] == ["promoted", "backfilling"] or log[:2] == ["promoted", "rollout_started"]
    assert "trained" in log and "refused" in log  # the first test's candidate stays on record


def test_with_continue_the_next_candidate_starts_from_the_serving_model(
    loop_stack: tuple[LookalikeProcess, Path, dict[str, str]],
) -> None:
    """Once the version served before is retired, and with LOOKALIKE_LEARN_CONTINUE, the next
    candidate starts from the fine-tuned checkpoint the loop promoted above (its head), not
    from the base, and the decision log says so (and that it was pulled back towards the base,
    with LOOKALIKE_LEARN_INTERPOLATE_BASE)."""
    worker, root, env = loop_stack
    rollout = httpx.get(f"{worker.url}/rollout/status", timeout=60).json()
    serving = next(r for r in rollout["versions"] if r["state"] == "serving")
    assert serving["encoder"].endswith("model.pt"), serving  # the candidate promoted above
    buyers_click(worker, write_images(root / "queries-2", range(300, 306)), seed=2)
    # The version served before is still written (for a rollback): no candidate is trained
    # that the worker would refuse to roll out, and the decision says what to do.
    waiting = learn(worker, env)
    assert [d["kind"] for d in waiting] == ["skipped"], waiting
    assert "still dual-written: `lookalike rollout retire`" in waiting[0]["reason"]
    lookalike(env, "rollout", "retire", "--port", str(worker.port))

    continued = {"LOOKALIKE_LEARN_CONTINUE": "true", "LOOKALIKE_LEARN_INTERPOLATE_BASE": "0.2"}
    decisions = learn(worker, env | continued, "--margin", "0")
    assert [d["kind"] for d in decisions] in (["rollout_started"], ["refused"]), decisions
    trained = next(d for d in status(worker, env) if d["kind"] == "trained")
    assert trained["details"]["config"]["init_from"] == serving["encoder"]
    assert f"continuing {serving['version']}" in trained["reason"]
    # Saved with a fifth of each weight taken back from the base (its identity head).
    assert trained["details"]["interpolate_base"] == 0.2
    assert "0.2 of each weight the base's" in trained["reason"]
