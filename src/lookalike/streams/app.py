"""The Faust app and its topics. This module only builds them: agents are registered by
:mod:`.agents`, and the HTTP API is wired by :mod:`.worker`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT
from faust.types.auth import CredentialsT

from ..consumers import SendFn
from ..events import ConsumedMessage
from ..kafka import security
from ..settings import Settings
from .transport import LookalikeApp


def faust_broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """TLS and SASL for Faust's consumer and producer (LOOKALIKE_KAFKA_SECURITY_PROTOCOL...)."""
    context = security.ssl_context(settings)
    login = security.sasl(settings)
    if login is not None:  # SASL_PLAINTEXT, or SASL_SSL when there is a TLS context
        return faust.SASLCredentials(
            username=login.username,
            password=login.password,
            mechanism=login.mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(
    settings: Settings,
    bootstrap: str,
    web_options: Mapping[str, Any] | None = None,
    *,
    commit_every: int = 32,
) -> faust.App:
    """``web_options``: aiohttp Application options the API needs (middlewares, body cap).
    ``commit_every``: events between offset commits (the micro-batch size)."""
    return LookalikeApp(
        settings.app_id,
        kafka_fetch_wait=settings.kafka_fetch_wait,
        broker=faust_broker_urls(bootstrap),
        broker_credentials=broker_credentials(settings),
        # Every record we produce fits the brokers' limit (dead letters are cut to fit).
        producer_max_request_size=settings.max_message_bytes,
        store="memory://",  # no Faust tables hold durable state (see README: recovery)
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        producer_acks=-1,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        # Commit often: a restart then replays little (replays are harmless, just work).
        broker_commit_every=commit_every,
        broker_commit_interval=1.0,
        web_enabled=True,
        web_bind=settings.api_host,
        web_host=settings.api_host,
        web_port=settings.api_port,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_application_options=dict(web_options or {}),
    )


def consumed(event: EventT) -> ConsumedMessage:
    """A Faust event as the Faust-free steps see it."""
    message = event.message
    value = event.value if isinstance(event.value, bytes) else b""
    return ConsumedMessage(message.topic, message.partition, message.offset, value)


def _delivered_sender(topic: faust.TopicT) -> SendFn:
    async def send(key: bytes | None, value: bytes) -> None:
        delivered = await topic.send(key=key, value=value)
        await delivered  # resolve only once the broker has it: offsets are acked after this

    return send


@dataclass(frozen=True)
class Topics:
    """Every topic the worker reads, and a delivered send for every topic it writes.

    Bytes in, bytes out: parsing is ours, so a malformed message becomes a dead letter instead
    of a Faust deserialisation crash."""

    uploads: faust.TopicT
    #: One agent reads both: the click join's state changes one message at a time, in order.
    searches_and_clicks: faust.TopicT
    training_pairs: faust.TopicT
    send_dead_letter: SendFn
    send_alert: SendFn
    send_pair: SendFn
    log_search: SendFn
    send_click: SendFn

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> Topics:
        def raw(*names: str) -> faust.TopicT:
            return app.topic(
                *names,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.topic_partitions,
            )

        pairs = raw(settings.training_pairs_topic)
        return cls(
            uploads=raw(settings.uploads_topic),
            searches_and_clicks=raw(settings.searches_topic, settings.clicks_topic),
            training_pairs=pairs,
            send_dead_letter=_delivered_sender(raw(settings.dead_letters_topic)),
            send_alert=_delivered_sender(raw(settings.alerts_topic)),
            send_pair=_delivered_sender(pairs),
            log_search=_delivered_sender(raw(settings.searches_topic)),
            send_click=_delivered_sender(raw(settings.clicks_topic)),
        )
