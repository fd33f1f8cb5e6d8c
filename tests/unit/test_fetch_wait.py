"""The worker's Kafka consumer waits at most LOOKALIKE_KAFKA_FETCH_WAIT per empty fetch (Faust
writes 1.5 s into its aiokafka consumer): checked on the consumer Faust itself builds."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiokafka
import pytest

from lookalike.settings import Settings
from lookalike.streams.app import create_app
from lookalike.streams.transport import FetchWaitConsumerThread, set_fetch_wait


async def built_consumer(settings: Settings) -> aiokafka.AIOKafkaConsumer:
    app = create_app(settings, "127.0.0.1:1")
    thread = app.consumer._new_consumer_thread()
    assert isinstance(thread, FetchWaitConsumerThread)
    return thread._create_worker_consumer(app.transport)


@pytest.mark.parametrize(("seconds", "millis"), [(0.05, 50), (0.0, 0), (2.0, 2000)])
async def test_the_worker_consumer_takes_the_setting(
    settings_env: Path, seconds: float, millis: int
) -> None:
    consumer = await built_consumer(Settings(kafka_fetch_wait=seconds))
    assert consumer._fetch_max_wait_ms == millis


async def test_the_default_is_well_below_faust_s(settings_env: Path) -> None:
    consumer = await built_consumer(Settings())
    assert consumer._fetch_max_wait_ms == 50


def test_a_changed_aiokafka_fails_loudly() -> None:
    class Elsewhere:
        pass

    with pytest.raises(RuntimeError, match="LOOKALIKE_KAFKA_FETCH_WAIT"):
        set_fetch_wait(Elsewhere(), 0.05)  # type: ignore[arg-type]


async def test_the_fetcher_uses_it(settings_env: Path) -> None:
    """aiokafka hands the value to its fetcher when the consumer starts: check the fetcher of
    a started consumer (against a real broker there is nothing else to look at)."""
    from lookalike.kafka.local_broker import start_local_broker, stop_local_broker

    broker_settings = Settings(data_dir=settings_env / "broker")
    broker, _ = start_local_broker(broker_settings)
    try:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        set_fetch_wait(consumer, 0.03)
        await consumer.start()
        try:
            assert consumer._fetcher._fetch_max_wait_ms == 30
        finally:
            # aiokafka's group-less coordinator cancels its own task on close.
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()
    finally:
        stop_local_broker(broker_settings)
