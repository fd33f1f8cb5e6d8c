"""Kafka TLS and SASL from the ``LOOKALIKE_KAFKA_*`` settings, as each client library wants them.

Three clients talk to Kafka: the worker (Faust, on aiokafka: ``broker_credentials``, built in
:mod:`lookalike.streams.app` from :func:`ssl_context` and :func:`sasl`), the publisher and
topic admin (kafka-python: :func:`kafka_python_options`), and the topic reader and broker probe
(aiokafka directly: :func:`aiokafka_options`). One set of settings drives all three.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from ..settings import Settings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class SaslLogin:
    mechanism: str  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    username: str
    password: str


def check(settings: Settings) -> None:
    """Raise :class:`ConfigurationError` naming the setting that is missing or does not fit."""
    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        missing = [
            name
            for name, value in (
                ("LOOKALIKE_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
                ("LOOKALIKE_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("LOOKALIKE_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"LOOKALIKE_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
            )
    if protocol not in TLS_PROTOCOLS and (
        settings.kafka_ssl_cafile or settings.kafka_ssl_certfile or settings.kafka_ssl_keyfile
    ):
        raise ConfigurationError(
            f"TLS files are set but LOOKALIKE_KAFKA_SECURITY_PROTOCOL={protocol}: set it to SSL "
            "or SASL_SSL to use them"
        )
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise ConfigurationError(
            "LOOKALIKE_KAFKA_SSL_KEYFILE is set without LOOKALIKE_KAFKA_SSL_CERTFILE"
        )
    for name, path in (
        ("LOOKALIKE_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
        ("LOOKALIKE_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
        ("LOOKALIKE_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
    ):
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{name}: no such file {path}")


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (None otherwise): the CA file (or the system's trust
    store), the client certificate for mutual TLS, host name checking."""
    check(settings)
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                _secret(settings.kafka_ssl_key_password),
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"cannot load the Kafka client certificate {settings.kafka_ssl_certfile} "
                f"(LOOKALIKE_KAFKA_SSL_CERTFILE / _KEYFILE / _KEY_PASSWORD): {exc}"
            ) from None
    return context


def sasl(settings: Settings) -> SaslLogin | None:
    check(settings)
    if settings.kafka_security_protocol not in SASL_PROTOCOLS:
        return None
    assert settings.kafka_sasl_mechanism and settings.kafka_sasl_username
    return SaslLogin(
        settings.kafka_sasl_mechanism,
        settings.kafka_sasl_username,
        _secret(settings.kafka_sasl_password) or "",
    )


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer / KafkaAdminClient."""
    check(settings)
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        options.update(
            ssl_check_hostname=settings.kafka_ssl_check_hostname,
            ssl_cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            ssl_certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            ssl_keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            ssl_password=_secret(settings.kafka_ssl_key_password),
        )
    login = sasl(settings)
    if login is not None:
        options.update(
            sasl_mechanism=login.mechanism,
            sasl_plain_username=login.username,
            sasl_plain_password=login.password,
        )
    return options


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (AIOKafkaConsumer, AIOKafkaClient)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    login = sasl(settings)
    if login is not None:
        options.update(
            sasl_mechanism=login.mechanism,
            sasl_plain_username=login.username,
            sasl_plain_password=login.password,
        )
    return options
