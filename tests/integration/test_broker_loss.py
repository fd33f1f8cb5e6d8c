"""The broker goes away under `lookalike up`: real `up` processes, their real Tansu broker, killed
with SIGKILL. The worker says so once, /ready says not ready and why, searches and clicks do not
hang, the worker exits with status 3 after LOOKALIKE_BROKER_LOST_EXIT, and SIGTERM stops it
within LOOKALIKE_SHUTDOWN_GRACE however stuck it is. A refused second `up` leaves the first
one's broker alone, and an `up` that finds its broker gone says loudly what was lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from imagegen import image_bytes

from lookalike.events import ImageUploaded, InlineSource
from lookalike.kafka.local_broker import free_port, running_broker
from lookalike.kafka.publisher import UploadPublisher
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

LOST_EXIT, GRACE = 8, 5


def _alive(pid: int) -> bool:
    try:
        return b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _publish(bootstrap: str, tmp_path: Path, image_id: str) -> None:
    settings = Settings(data_dir=tmp_path / "client")
    with UploadPublisher(settings, bootstrap) as publisher:
        publisher.publish(
            ImageUploaded(
                image_id=image_id,
                listing_id="l",
                seller_id="s",
                category="circles",
                image=InlineSource(data=image_bytes("circles", 7)),
            )
        )
        publisher.flush()


def _timed(call: object) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    return time.monotonic() - started, response


def test_broker_loss_second_up_and_a_fresh_broker(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(
        LOOKALIKE_COMPILE="false",
        LOOKALIKE_BROKER_LOST_EXIT=str(LOST_EXIT),
        LOOKALIKE_SHUTDOWN_GRACE=str(GRACE),
        LOOKALIKE_SEARCH_LOG_TIMEOUT="1",
    )
    first = LookalikeProcess("up", data_dir, env).start()
    broker = running_broker(data_dir / "broker.json")
    assert broker is not None

    # A second `up` on the same data dir is refused, and the first one's broker keeps running.
    second = subprocess.run(
        [sys.executable, "-m", "lookalike", "up", "--data-dir", str(data_dir)]
        + ["--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 1, second.stderr
    assert "another `lookalike up`" in second.stderr and str(data_dir) in second.stderr
    assert _alive(broker.pid)
    _publish(broker.bootstrap, tmp_path, "still-works")
    wait_for(
        lambda: httpx.get(f"{first.url}/images/still-works", timeout=10).status_code == 200,
        60,
        "the first up to go on indexing",
    )

    # The broker dies.
    lines_before = len(first.log_path.read_text().splitlines())
    killed_at = time.monotonic()
    os.kill(broker.pid, signal.SIGKILL)
    ready = wait_for(
        lambda: (r := httpx.get(f"{first.url}/ready", timeout=5)).status_code == 503 and r.json(),
        LOST_EXIT,
        "/ready to say the broker is gone",
    )
    assert ready["checks"]["broker"]["ok"] is False and broker.bootstrap in ready["error"]
    assert httpx.get(f"{first.url}/health", timeout=5).status_code == 200  # alive, not ready
    took, search = _timed(
        lambda: httpx.post(
            f"{first.url}/search", json={"image_id": "still-works", "k": 3}, timeout=20
        )
    )
    assert search.status_code == 200 and search.json()["logged"] is False and took < 5
    took, click = _timed(
        lambda: httpx.post(
            f"{first.url}/clicks",
            json={"search_id": search.json()["search_id"], "image_id": "x", "rank": 1},
            timeout=20,
        )
    )
    assert click.status_code == 503 and "broker" in click.json()["error"] and took < 5

    # It exits with status 3 after LOOKALIKE_BROKER_LOST_EXIT, saying why.
    assert first.process is not None
    code = first.process.wait(timeout=LOST_EXIT + GRACE + 30)
    assert code == 3, first.log_tail()
    assert time.monotonic() - killed_at < LOST_EXIT + GRACE + 15
    log = first.log_path.read_text()
    assert log.count("cannot reach the Kafka broker") == 1  # said once
    assert "LOOKALIKE_BROKER_LOST_EXIT" in log and "status 3" in log
    outage = log.splitlines()[lines_before:]
    assert len(outage) < 150, f"{len(outage)} log lines while the broker was gone"

    # The next `up` finds the broker gone: it says loudly that unconsumed events were lost.
    third = LookalikeProcess("up", data_dir, env, port=first.port).start()
    loud = [line for line in third.log_path.read_text().splitlines() if "IS GONE" in line]
    assert len(loud) == 1 and str(broker.pid) in loud[0]
    assert "LOST" in loud[0] and "lookalike publish" in loud[0]
    assert httpx.get(f"{third.url}/images/still-works", timeout=10).status_code == 200

    # SIGTERM stops it within the grace period, even with its broker gone (a stuck stop).
    fresh = running_broker(data_dir / "broker.json")
    assert fresh is not None and fresh.pid != broker.pid
    os.kill(fresh.pid, signal.SIGKILL)
    time.sleep(2)
    assert third.process is not None
    asked = time.monotonic()
    third.process.send_signal(signal.SIGTERM)
    third.process.wait(timeout=GRACE + 20)
    assert time.monotonic() - asked < GRACE + 5, third.log_tail()
