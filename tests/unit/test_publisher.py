"""UploadPublisher's producer settings, and what it sends through a real broker (Tansu on
loopback): batches of image events arrive whole, in order per image."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from imagegen import image_bytes

from lookalike.events import ImageUploaded, InlineSource
from lookalike.kafka.local_broker import start_local_broker, stop_local_broker
from lookalike.kafka.publisher import UploadPublisher, native_crc32c, producer_options
from lookalike.kafka.topic_reader import read_topic
from lookalike.settings import Settings


def test_producer_options_follow_the_settings(settings_env: Path) -> None:
    options = producer_options(Settings(publish_batch_bytes=262_144, publish_linger=0.02))
    assert options["batch_size"] == 262_144
    assert options["linger_ms"] == 20
    # Per-image order survives retries: one request in flight, every replica acknowledges.
    assert options["max_in_flight_requests_per_connection"] == 1
    assert options["acks"] == "all"
    assert options["security_protocol"] == "PLAINTEXT"


def test_defaults_batch_image_events(settings_env: Path) -> None:
    options = producer_options(Settings())
    assert options["batch_size"] == 1_048_576  # dozens of ~40 KB events per request
    assert options["linger_ms"] == 5
    # A batch is never larger than a request may be.
    small = producer_options(Settings(max_message_bytes=100_000, publish_batch_bytes=1_048_576))
    assert small["batch_size"] == small["max_request_size"] == 100_000


def test_checksums_are_computed_in_c() -> None:
    """The `crc32c` package is a dependency: without it kafka-python computes CRC-32C over every
    byte in Python (about 160 image events/s)."""
    assert native_crc32c()


@pytest.fixture
def broker(settings_env: Path) -> Iterator[str]:
    settings = Settings(data_dir=settings_env / "broker")
    local, _ = start_local_broker(settings)
    try:
        yield local.bootstrap
    finally:
        stop_local_broker(settings)


def test_a_batch_of_image_events_arrives_whole_and_in_order(
    settings_env: Path, broker: str
) -> None:
    settings = Settings(kafka_bootstrap=broker, topic_partitions=2)
    data = image_bytes("circles", 0)
    events = [
        ImageUploaded(
            image_id=f"img-{n % 5}",
            listing_id="l",
            seller_id="s",
            category="c",
            sequence=n,
            image=InlineSource(data=data),
        )
        for n in range(200)
    ]
    with UploadPublisher(settings, broker) as publisher:
        assert publisher._producer.config["batch_size"] == 1_048_576
        for event in events:
            publisher.publish(event)
        publisher.flush()
    records = read_topic(broker, settings.uploads_topic, idle_seconds=1.0)
    assert len(records) == 200
    by_image: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = json.loads(record.value or b"")
        assert record.key == value["image_id"].encode()
        by_image.setdefault(value["image_id"], []).append(value["sequence"])
    assert by_image == {f"img-{i}": list(range(i, 200, 5)) for i in range(5)}
