"""Kafka TLS/SASL settings -> the arguments of each client library (Faust on aiokafka, kafka-python,
aiokafka). No broker here speaks TLS or SASL (Tansu has neither), so these check the mapping
through the libraries' own code: Faust's credentials_to_aiokafka_auth, the clients' accepted
configuration keys, and real TLS contexts loading real (test CA) certificates."""

from __future__ import annotations

import inspect
import ssl
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaProducer

from lookalike.errors import ConfigurationError
from lookalike.kafka.security import aiokafka_options, kafka_python_options, ssl_context
from lookalike.settings import Settings
from lookalike.streams.app import broker_credentials, create_app


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    client = ca.issue_cert("lookalike-worker")
    paths = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)


def faust_auth(s: Settings) -> dict:
    return dict(credentials_to_aiokafka_auth(broker_credentials(s), None))


def test_plaintext_by_default(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert kafka_python_options(s) == {"security_protocol": "PLAINTEXT"}
    assert aiokafka_options(s) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(s) is None and faust_auth(s) == {"security_protocol": "PLAINTEXT"}


def test_mutual_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    s = settings(
        tmp_path,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certs["ca"],
        kafka_ssl_certfile=certs["cert"],
        kafka_ssl_keyfile=certs["key"],
    )
    assert kafka_python_options(s) == {
        "security_protocol": "SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(certs["ca"]),
        "ssl_certfile": str(certs["cert"]),
        "ssl_keyfile": str(certs["key"]),
        "ssl_password": None,
    }
    auth = faust_auth(s)
    assert auth["security_protocol"] == "SSL"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # our CA only, not the system's trust store
    options = aiokafka_options(s)
    assert options["security_protocol"] == "SSL" and isinstance(
        options["ssl_context"], ssl.SSLContext
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls(tmp_path: Path, certs: dict[str, Path], mechanism: str) -> None:
    s = settings(
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=certs["ca"],
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="indexer",
        kafka_sasl_password="s3cret",
    )
    auth = faust_auth(s)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("indexer", "s3cret")
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    options = kafka_python_options(s)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == mechanism
    assert (
        options["sasl_plain_username"] == "indexer" and options["sasl_plain_password"] == "s3cret"
    )
    assert options["ssl_cafile"] == str(certs["ca"])
    assert aiokafka_options(s)["sasl_mechanism"] == mechanism
    assert "s3cret" not in repr(s)


def test_sasl_without_tls(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    auth = faust_auth(s)
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None
    assert "ssl_cafile" not in kafka_python_options(s)


def test_the_worker_app_carries_the_credentials(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        max_message_bytes=2_000_000,
    )
    app = create_app(s, "kafka1:9093")
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["sasl_mechanism"] == "PLAIN" and auth["sasl_plain_username"] == "u"
    assert app.conf.producer_max_request_size == 2_000_000


def test_every_option_is_one_the_clients_take(tmp_path: Path, certs: dict[str, Path]) -> None:
    s = settings(
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=certs["ca"],
        kafka_ssl_certfile=certs["cert"],
        kafka_ssl_keyfile=certs["key"],
        kafka_ssl_key_password="x",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    for client in (KafkaProducer, KafkaAdminClient):
        assert set(kafka_python_options(s)) <= set(client.DEFAULT_CONFIG), client
    for client in (AIOKafkaConsumer, AIOKafkaProducer):
        assert set(aiokafka_options(s)) <= set(inspect.signature(client).parameters), client


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "LOOKALIKE_KAFKA_SASL_MECHANISM"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "LOOKALIKE_KAFKA_SASL_USERNAME",
        ),
        ({"kafka_ssl_cafile": "ca"}, "set it to SSL or SASL_SSL"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"},
            "no such file",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "key"},
            "LOOKALIKE_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_inconsistent_settings_name_what_to_fix(
    tmp_path: Path, certs: dict[str, Path], overrides: dict, words: str
) -> None:
    for key in ("kafka_ssl_cafile", "kafka_ssl_keyfile"):
        if overrides.get(key) in ("ca", "key"):
            overrides[key] = certs[overrides[key]]
    with pytest.raises(ConfigurationError, match=words):
        kafka_python_options(settings(tmp_path, **overrides))


def test_a_client_key_that_does_not_load_is_a_configuration_error(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    s = settings(
        tmp_path,
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=certs["cert"],
        kafka_ssl_keyfile=certs["ca"],  # a certificate, not a key
    )
    with pytest.raises(ConfigurationError, match="LOOKALIKE_KAFKA_SSL_CERTFILE"):
        ssl_context(s)


def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("LOOKALIKE_KAFKA_SASL_PASSWORD", "pw")
    options = kafka_python_options(Settings(data_dir=tmp_path))
    assert options["sasl_plain_password"] == "pw" and options["sasl_mechanism"] == "SCRAM-SHA-256"
