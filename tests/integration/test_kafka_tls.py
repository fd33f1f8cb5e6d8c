"""Kafka over mutual TLS, for real: Tansu has no TLS, so a TLS-terminating proxy (ours, in a
thread) sits in front of a Tansu process that advertises the proxy's address. The publisher
(kafka-python), the worker's producer (aiokafka with what Faust derives from our credentials),
the topic reader (aiokafka) and the broker probe connect with the TLS settings only; the proxy
requires a client certificate signed by the test CA. SASL is not tried: no broker here speaks
it (tests/unit/test_kafka_security.py checks its mapping)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from lookalike.events import ImageUploaded, UrlSource
from lookalike.kafka.local_broker import free_port, port_open, tansu_binary
from lookalike.kafka.probe import probe_broker
from lookalike.kafka.publisher import UploadPublisher
from lookalike.kafka.security import aiokafka_options
from lookalike.kafka.topic_reader import read_topic
from lookalike.settings import Settings
from lookalike.streams.app import broker_credentials

from .stack import wait_for


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TlsProxy:
    """Accepts TLS (client certificate required) on ``port``, forwards plain TCP to Tansu."""

    def __init__(self, context: ssl.SSLContext, port: int, upstream: int) -> None:
        self.context = context
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = port
        self.handshakes = 0
        self.refused = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        self.handshakes += 1
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        _pipe(upstream, client)

    def close(self) -> None:
        self.listener.close()


@dataclass
class TlsBroker:
    bootstrap: str
    proxy: TlsProxy
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("lookalike-client")
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client_cert.private_key_pem.write_to_path(str(paths["key"]))

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no entry

    plain, proxy_port = free_port(), free_port()
    tansu = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{plain}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy_port}",  # clients come back through the proxy
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: port_open("127.0.0.1", plain), 15, "tansu")
    proxy = TlsProxy(context, proxy_port, plain)  # where Tansu tells clients to connect
    try:
        yield TlsBroker(f"127.0.0.1:{proxy_port}", proxy, paths["ca"], paths["cert"], paths["key"])
    finally:
        proxy.close()
        tansu.kill()
        tansu.wait()


async def _send_as_the_worker(settings: Settings, bootstrap: str) -> None:
    """The worker's producer: aiokafka with exactly what Faust derives from our credentials."""
    auth = credentials_to_aiokafka_auth(broker_credentials(settings), None)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **auth)
    await producer.start()
    try:
        await producer.send_and_wait(settings.uploads_topic, b"from-the-worker")
    finally:
        await producer.stop()


def test_publisher_worker_reader_and_probe_over_mutual_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        topic_prefix=f"tls-{uuid.uuid4().hex[:6]}",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls_broker.ca,
        kafka_ssl_certfile=tls_broker.cert,
        kafka_ssl_keyfile=tls_broker.key,
    )
    event = ImageUploaded(
        image_id="over-tls",
        listing_id="l",
        seller_id="s",
        category="c",
        image=UrlSource(url="https://cdn.example.com/a.jpg"),  # type: ignore[arg-type]
    )
    with UploadPublisher(settings, tls_broker.bootstrap) as publisher:
        publisher.publish(event).get(timeout=30)
    asyncio.run(_send_as_the_worker(settings, tls_broker.bootstrap))
    records = read_topic(
        tls_broker.bootstrap, settings.uploads_topic, client_options=aiokafka_options(settings)
    )
    values = sorted(r.value for r in records if r.value)
    assert values == [b"from-the-worker", event.to_json_bytes()]
    assert probe_broker(tls_broker.bootstrap, settings, timeout=5) is None
    assert tls_broker.proxy.handshakes >= 3

    # Without the client certificate, the same broker is refused.
    refused_before = tls_broker.proxy.refused
    anonymous = settings.model_copy(update={"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None})
    assert probe_broker(tls_broker.bootstrap, anonymous, timeout=3) is not None
    assert tls_broker.proxy.refused > refused_before
