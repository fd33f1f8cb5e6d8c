"""Read a whole topic from the beginning, without a consumer group (inspection and tests).

The end of a topic is found by idleness, not by the high watermark: some Kafka-compatible
brokers (Tansu) report a wrong high watermark.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def read_topic_async(
    bootstrap: str,
    topic: str,
    idle_seconds: float = 2.0,
    client_options: dict[str, Any] | None = None,
) -> list[TopicRecord]:
    """``client_options``: TLS/SASL (:func:`lookalike.kafka.security.aiokafka_options`)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,  # some records are large (dead letters of 1 MiB)
        **(client_options or {}),
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # also loads the topic's metadata
            return []
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[TopicRecord] = []
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_seconds * 1000))
            if not batch:
                break
            for messages in batch.values():
                records.extend(TopicRecord(m.partition, m.offset, m.key, m.value) for m in messages)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            # aiokafka's no-group coordinator re-raises the cancellation of its own helper task
            # when that task never got to run; only a cancellation of *this* task matters.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise


def read_topic(
    bootstrap: str,
    topic: str,
    idle_seconds: float = 2.0,
    client_options: dict[str, Any] | None = None,
) -> list[TopicRecord]:
    return asyncio.run(read_topic_async(bootstrap, topic, idle_seconds, client_options))
