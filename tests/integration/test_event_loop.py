"""Inference runs off the event loop: while the model works on a large batch, the worker keeps
answering HTTP and stays in its consumer group (no rebalance)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
from imagegen import CATEGORIES, image_bytes

from lookalike.events import ImageUploaded, InlineSource
from lookalike.kafka.publisher import UploadPublisher
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

BATCH = 64


def test_api_stays_responsive_while_a_batch_is_embedded(broker: str, tmp_path: Path) -> None:
    prefix = f"loop-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_BATCH_SIZE=str(BATCH),
        LOOKALIKE_BATCH_MAX_WAIT="2.0",
        # Plain eager fp32: slow batches make a blocked loop impossible to miss.
        LOOKALIKE_PRECISION="fp32",
        LOOKALIKE_COMPILE="false",
    )
    worker = LookalikeProcess("worker", tmp_path / "data", env).start()
    try:
        events = [
            ImageUploaded(
                image_id=f"img-{i}",
                listing_id=f"l-{i}",
                seller_id="s",
                category=CATEGORIES[i % 3],
                image=InlineSource(data=image_bytes(CATEGORIES[i % 3], i, size=256)),
            )
            for i in range(2 * BATCH)
        ]
        latencies: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    client.get(f"{worker.url}/health").raise_for_status()
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            settings = Settings(
                kafka_bootstrap=broker, topic_prefix=prefix, data_dir=tmp_path / "client"
            )
            with UploadPublisher(settings, broker) as publisher:
                for event in events:
                    publisher.publish(event)
                publisher.flush()
            wait_for(lambda: worker.indexed() == len(events), 180, "all images indexed")
        finally:
            stop.set()
            prober.join()

        stats = worker.stats()["worker"]
        batch_seconds = stats["last_batch_seconds"]
        # A blocked loop would stall /health for a whole batch; it must answer far sooner.
        assert batch_seconds > 1.0, f"batch too quick ({batch_seconds}s) to prove anything"
        assert max(latencies) < batch_seconds / 2, (max(latencies), batch_seconds)
        assert len(latencies) > 10
        log = worker.log_path.read_text()
        assert "Heartbeat failed" not in log
        assert log.count("partitions assigned:") == 1, "the worker was rebalanced"
    finally:
        assert worker.stop() == 0
