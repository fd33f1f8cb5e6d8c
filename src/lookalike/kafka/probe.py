"""Is a Kafka broker answering? One metadata round trip, bounded in time, with the same TLS/SASL
settings as every other client. Used by the worker's broker monitor."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient

from ..settings import Settings
from .security import kafka_python_options

#: kafka-python logs every failed connection attempt; the probe says what matters itself.
logging.getLogger("kafka").setLevel(logging.CRITICAL)


def probe_broker(bootstrap: str, settings: Settings, timeout: float = 5.0) -> str | None:
    """None when a broker at ``bootstrap`` answers a metadata request within ``timeout``
    seconds; otherwise why not."""
    ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="lookalike-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            **kafka_python_options(settings),
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        admin.describe_cluster()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()
