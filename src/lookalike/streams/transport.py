"""Faust's Kafka transport, with the consumer's fetch wait as a setting.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` written into the call: when
a partition has nothing new, the broker may hold each fetch that long before answering. With
few uploads arriving that is most of the time an upload spends before the worker sees it.
:class:`LookalikeApp` builds the same consumer and sets the wait from
``LOOKALIKE_KAFKA_FETCH_WAIT`` before the consumer starts (aiokafka hands it to its fetcher at
start). aiokafka keeps it in a private attribute: its presence is checked, failing loudly
rather than silently running with Faust's wait.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

#: mode names a service's logger after the module defining its class: these subclasses log under
#: Faust's names, so its start/stop chatter stays at warning with the rest of Faust's
#: (lookalike.logs.LIBRARIES).
_CONSUMER_LOG = logging.getLogger("faust.transport.drivers.aiokafka.lookalike")
_APP_LOG = logging.getLogger("faust.app.lookalike")


class FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = _CONSUMER_LOG

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "kafka_fetch_wait", None)
        if wait is not None:
            set_fetch_wait(consumer, wait)
        return consumer


def set_fetch_wait(consumer: aiokafka.AIOKafkaConsumer, seconds: float) -> None:
    """Set the longest time the broker may hold a fetch of ``consumer`` (not started yet)."""
    if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
        raise RuntimeError(
            "cannot set the Kafka fetch wait (LOOKALIKE_KAFKA_FETCH_WAIT): aiokafka "
            f"{aiokafka.__version__} keeps it elsewhere; check the faust-streaming/aiokafka pins"
        )
    consumer._fetch_max_wait_ms = round(seconds * 1000)


class FetchWaitConsumer(faust_aiokafka.Consumer):
    logger = _CONSUMER_LOG

    def _new_consumer_thread(self) -> FetchWaitConsumerThread:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FetchWaitTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = FetchWaitConsumer


class LookalikeApp(faust.App):
    """faust.App whose consumer waits at most ``kafka_fetch_wait`` seconds per empty fetch."""

    logger = _APP_LOG

    def __init__(self, *args: Any, kafka_fetch_wait: float, **kwargs: Any) -> None:
        self.kafka_fetch_wait = kafka_fetch_wait
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return FetchWaitTransport(self.conf.broker_consumer, self)
