"""Publishing events: the producer API a marketplace calls (kafka-python).

Upload events are keyed by image id, so every event about one image lands on one partition, in
order; clicks are keyed by search id, beside their search. The publisher is an edge: it refuses
an event over the size limits (LOOKALIKE_MAX_MESSAGE_BYTES, LOOKALIKE_MAX_ATTRIBUTES_*) with the
reason, instead of sending what the worker would dead-letter. TLS/SASL come from the settings.

Throughput (inline image events are tens of KB): kafka-python checksums every record batch with
CRC-32C, in pure Python unless the ``crc32c`` C package is installed (a dependency of ours:
measured about 160 events/s without it); batches of ``LOOKALIKE_PUBLISH_BATCH_BYTES`` per
partition with a short linger fill each produce request instead of sending events one by one
(Kafka's 16 KB default batch holds none of them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.record import util as record_util

from ..errors import BrokerUnavailable, InvalidEvent
from ..events import Click, EventLimits, ImageAttributesChanged, ImageRemoved, ImageUploaded
from ..settings import Settings
from .security import kafka_python_options

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, settings: Settings | None = None
) -> None:
    """Create missing topics (brokers differ on auto-creation, so never rely on it)."""
    security = kafka_python_options(settings) if settings is not None else {}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="lookalike-admin", **security
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap}: {exc}") from None
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", missing)
    finally:
        admin.close()


def native_crc32c() -> bool:
    """Whether kafka-python checksums record batches in C (the ``crc32c`` package)."""
    return getattr(record_util, "crc32c_c", None) is not None


def producer_options(settings: Settings) -> dict[str, Any]:
    """KafkaProducer keyword arguments for image events, from the settings."""
    return {
        "acks": "all",
        "retries": 5,
        # Keeps per-image order under retries; big batches make up for the one request.
        "max_in_flight_requests_per_connection": 1,
        "max_request_size": settings.max_message_bytes,
        # A batch never needs to exceed a request; a bigger event still goes, alone.
        "batch_size": min(settings.publish_batch_bytes, settings.max_message_bytes),
        "linger_ms": round(settings.publish_linger * 1000),
        **kafka_python_options(settings),
    }


class UploadPublisher:
    """Sends ImageUploaded, ImageAttributesChanged and ImageRemoved events to the uploads topic,
    keyed by image id (so one image's events stay in order). Use as a context manager."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.topic = settings.uploads_topic
        self.limits = EventLimits.from_settings(settings)
        ensure_topics(bootstrap, settings.all_topics, settings.topic_partitions, settings)
        if not native_crc32c():
            log.warning(
                "kafka-python computes CRC-32C in pure Python here (about 160 image events/s): "
                "pip install crc32c"
            )
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="lookalike-publisher",
                **producer_options(settings),
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap}: {exc}") from None

    def publish(self, event: ImageUploaded | ImageAttributesChanged | ImageRemoved) -> Any:
        """Queue one event; returns kafka-python's future (``.get()`` waits for the ack).
        Raises :class:`~lookalike.errors.InvalidEvent` for an event over the size limits."""
        value = event.to_json_bytes()
        try:
            self.limits.check_message(value)
            self.limits.check_event(event)
        except InvalidEvent as exc:
            raise InvalidEvent(f"not sent: image {event.image_id}: {exc.reason}") from None
        return self._producer.send(self.topic, key=event.image_id.encode("utf-8"), value=value)

    def publish_raw(self, key: bytes | None, value: bytes) -> Any:
        """Send bytes as they are (for replaying dead letters, or testing bad input); only the
        message size limit applies."""
        try:
            self.limits.check_message(value)
        except InvalidEvent as exc:
            raise InvalidEvent(f"not sent: {exc.reason}") from None
        return self._producer.send(self.topic, key=key, value=value)

    def flush(self, timeout: float | None = 60.0) -> None:
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise BrokerUnavailable(f"could not deliver events: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=10)

    def __enter__(self) -> UploadPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClickPublisher(UploadPublisher):
    """Sends Click events (keyed by search id) to the clicks topic, for front ends that report
    clicks through Kafka rather than POST /clicks."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        super().__init__(settings, bootstrap)
        self.topic = settings.clicks_topic

    def publish(self, click: Click) -> Any:  # type: ignore[override]
        return self._producer.send(
            self.topic, key=click.search_id.encode("utf-8"), value=click.model_dump_json().encode()
        )
