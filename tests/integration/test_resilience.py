"""Nothing stops the stream, nothing is lost, nobody gets in: a real broker process, a real
`lookalike worker` process, real files on a real (small, mounted) disk.

- One message too large for any dead letter must not hold its partition: the messages after it
  on the same partition are indexed.
- A full disk is infrastructure, not bad input: valid images wait (offsets held) and are all
  indexed once the disk has room again; nothing is dead-lettered.
- URLs that point at the worker's machine are refused, in every spelling.
- Every API error is JSON with a fitting status.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from imagegen import image_bytes
from kafka import KafkaProducer

from lookalike.errors import InvalidEvent
from lookalike.events import ImageUploaded, InlineSource, UrlSource
from lookalike.kafka.publisher import UploadPublisher
from lookalike.kafka.topic_reader import read_topic
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

TMPFS_BYTES = 2 << 20


@dataclass
class Disk:
    """The worker's blob folder: a real 2 MiB tmpfs when the test may mount one, else a flag
    file that makes writes there fail with ENOSPC (see full_disk_lookalike.py)."""

    path: Path
    mounted: bool
    flag: Path

    def fill(self) -> None:
        if not self.mounted:
            self.flag.touch()
            return
        with open(self.path / "filler", "wb") as filler:
            with contextlib.suppress(OSError):  # ENOSPC: full, as wanted
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
        with pytest.raises(OSError) as info:  # the disk really is full
            (self.path / "probe").write_bytes(b"\0" * 4096)
        assert info.value.errno == errno.ENOSPC

    def free(self) -> None:
        if self.mounted:
            (self.path / "filler").unlink()
            (self.path / "probe").unlink(missing_ok=True)
        else:
            self.flag.unlink()


@contextlib.contextmanager
def small_disk(root: Path) -> Iterator[Disk]:
    path = root / "blobs"
    path.mkdir()
    flag = root / "disk-is-full"
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(path)],
        capture_output=True,
    )
    disk = Disk(path, mount.returncode == 0, flag)
    try:
        yield disk
    finally:
        if disk.mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


@dataclass
class Stack:
    worker: LookalikeProcess
    settings: Settings
    bootstrap: str
    disk: Disk
    canary_url: str
    canary_requests: list[str]

    def publish(self, events: list[ImageUploaded]) -> None:
        with UploadPublisher(self.settings, self.bootstrap) as publisher:
            for event in events:
                publisher.publish(event)
            publisher.flush()

    def indexed(self, image_id: str) -> bool:
        response = httpx.get(f"{self.worker.url}/images/{image_id}", timeout=10)
        return response.status_code == 200

    def letters(self) -> list[dict]:
        records = read_topic(self.bootstrap, self.settings.dead_letters_topic)
        return [json.loads(r.value) for r in records if r.value]


@contextlib.contextmanager
def canary_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server that records every request: nothing may reach it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            requests.append(self.path)
            body = image_bytes("circles", 5)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("resilience")
    prefix = f"res-{uuid.uuid4().hex[:8]}"
    with small_disk(root) as disk, canary_server() as (canary, canary_requests):
        env = clean_env(
            LOOKALIKE_KAFKA_BOOTSTRAP=broker,
            LOOKALIKE_TOPIC_PREFIX=prefix,
            LOOKALIKE_APP_ID=prefix,
            LOOKALIKE_BATCH_SIZE="8",
            LOOKALIKE_COMPILE="false",
            LOOKALIKE_FETCH_TIMEOUT="2",
            LOOKALIKE_RETRY_MAX_DELAY="1",
            LOOKALIKE_BLOB_DIR=str(disk.path),
            LOOKALIKE_MAX_IMAGE_BYTES="3000000",
            FULL_DISK_FLAG=str(disk.flag),
        )
        launcher = None
        if not disk.mounted:  # no tmpfs here: the same ENOSPC, raised at the write
            launcher = [sys.executable, str(Path(__file__).with_name("full_disk_lookalike.py"))]
        worker = LookalikeProcess("worker", root / "data", env, launcher=launcher).start()
        settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=root / "client")
        try:
            yield Stack(worker, settings, broker, disk, canary, canary_requests)
        finally:
            code = worker.stop()
            assert code == 0, worker.log_tail()


def upload(image_id: str, data: bytes, **extra: object) -> ImageUploaded:
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"l-{image_id}",
        seller_id="seller-r",
        category="circles",
        image=InlineSource(data=data),
        **extra,  # type: ignore[arg-type]
    )


def test_oversized_message_does_not_hold_its_partition(stack: Stack) -> None:
    """A 5 MB inline upload and 100 KB of attributes, from a producer that ignores our limits,
    then valid uploads on the same partition (same key): they must be indexed."""
    huge = json.loads(upload("huge", b"x").to_json_bytes())
    huge["image"]["data"] = base64.b64encode(os.urandom(3_750_000)).decode()
    huge_value = json.dumps(huge).encode()
    wide = json.loads(upload("wide", image_bytes("circles", 1)).to_json_bytes())
    wide["attributes"] = {"notes": "n" * 100_000}
    after = [upload(f"after-huge-{n}", image_bytes("circles", 10 + n)) for n in range(3)]
    hostile = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=16 << 20)
    key = b"one-partition"
    futures = [
        hostile.send(stack.settings.uploads_topic, key=key, value=value)
        for value in [huge_value, json.dumps(wide).encode()]
        + [event.to_json_bytes() for event in after]
    ]
    hostile.flush()
    offsets = [f.get(timeout=30).offset for f in futures]
    hostile.close()

    wait_for(lambda: all(stack.indexed(e.image_id) for e in after), 120, "the uploads after it")
    letters = {
        letter["source_offset"]: letter
        for letter in stack.letters()
        if letter["source_topic"] == stack.settings.uploads_topic
    }
    big = letters[offsets[0]]
    assert big["stage"] == "validate" and "LOOKALIKE_MAX_MESSAGE_BYTES" in big["reason"]
    assert big["payload_truncated"] and big["payload_size"] == len(huge_value)
    assert big["payload_sha256"] == hashlib.sha256(huge_value).hexdigest()
    assert len(big["payload"]) <= 65_536
    assert Path(big["payload_file"]).read_bytes() == huge_value  # the whole value, on disk
    assert "LOOKALIKE_MAX_ATTRIBUTES_BYTES" in letters[offsets[1]]["reason"]
    assert not any(offset in letters for offset in offsets[2:])

    # Our own publisher refuses both before they reach the topic.
    with UploadPublisher(stack.settings, stack.bootstrap) as publisher:
        with pytest.raises(InvalidEvent, match="LOOKALIKE_MAX_MESSAGE_BYTES"):
            publisher.publish(ImageUploaded.model_validate_json(huge_value))
        with pytest.raises(InvalidEvent, match="LOOKALIKE_MAX_ATTRIBUTES_BYTES"):
            publisher.publish(ImageUploaded.model_validate(wide))


def test_full_disk_loses_nothing(stack: Stack) -> None:
    dead_before = stack.worker.stats()["dead_letters"]
    images = [upload(f"disk-{n}", image_bytes("stripes", 40 + n)) for n in range(6)]
    stack.disk.fill()
    try:
        stack.publish(images)
        ready = wait_for(
            lambda: (
                (r := httpx.get(f"{stack.worker.url}/ready", timeout=10)).status_code == 503
                and r.json()
            ),
            60,
            "/ready to say the disk is full",
        )
        assert "the disk is full" in ready["checks"]["storage"]["reason"], ready
        assert "LOOKALIKE_BLOB_DIR" in ready["error"]
        consumed = stack.worker.stats()["worker"]["events_consumed"]
        time.sleep(5)  # retried several times (pauses of at most 1 s): nothing lost meanwhile
        assert not any(stack.indexed(e.image_id) for e in images)
        assert stack.worker.stats()["dead_letters"] == dead_before
        assert stack.worker.stats()["worker"]["events_consumed"] == consumed  # held, not acked
    finally:
        stack.disk.free()
    wait_for(lambda: all(stack.indexed(e.image_id) for e in images), 60, "all six indexed")
    assert stack.worker.stats()["dead_letters"] == dead_before
    assert httpx.get(f"{stack.worker.url}/ready", timeout=10).status_code == 200
    log = stack.worker.log_path.read_text()
    said = [line for line in log.splitlines() if "the disk is full" in line]
    assert len(said) == 1, said  # said once, not once per retry
    assert "recovered after" in log


def test_urls_to_the_workers_machine_are_refused(stack: Stack) -> None:
    host, port = stack.canary_url.split(":")
    api_port = stack.worker.port
    targets = {
        "api": f"http://127.0.0.1:{api_port}/stats",
        "decimal": f"http://2130706433:{port}/a.jpg",
        "hex": f"http://0x7f000001:{port}/a.jpg",
        "short": f"http://127.1:{port}/a.jpg",
        "localhost": f"http://localhost:{port}/a.jpg",
        "ipv6": f"http://[::1]:{port}/a.jpg",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}/a.jpg",
        "broker": f"http://{stack.bootstrap}/",
    }
    events = [
        ImageUploaded(
            image_id=f"ssrf-{name}",
            listing_id="l",
            seller_id="s",
            category="c",
            image=UrlSource(url=url),  # type: ignore[arg-type]
        )
        for name, url in targets.items()
    ]
    stack.publish(events)

    def refused() -> dict[str, dict]:
        found = {letter["image_id"]: letter for letter in stack.letters()}
        return found if all(e.image_id in found for e in events) else {}

    letters = wait_for(refused, 60, "every URL dead-lettered")
    for event in events:
        letter = letters[event.image_id]
        assert letter["stage"] == "fetch" and letter["error_type"] == "ForbiddenAddress", letter
        assert "LOOKALIKE_FETCH_ALLOW" in letter["reason"]
    assert stack.canary_requests == []  # nothing reached the machine's own servers


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/search", {"json": {"image_id": "after-huge-0", "k": None}}, 400),
        ("POST", "/search", {"json": {"image_id": "x", "filter": {"category": 5}}}, 400),
        ("GET", "/dead-letters?limit=abc", {}, 400),
        ("GET", f"/dead-letters?limit={10**20}", {}, 400),
        ("POST", "/rollout/promote", {"json": {"eval_dir": 5}}, 400),
        ("GET", "/nowhere", {}, 404),
        ("PUT", "/search", {}, 405),
        (
            "POST",
            "/search",
            {"content": b"\xff" * 3_100_000, "headers": {"Content-Type": "image/jpeg"}},
            413,
        ),
        (
            "POST",
            "/clicks",
            {
                "content": gzip.compress(b'{"search_id": "' + b" " * 30_000_000 + b'"}'),
                "headers": {"Content-Encoding": "gzip", "Content-Type": "application/json"},
            },
            413,
        ),
    ],
)
def test_api_errors_are_json(
    stack: Stack, method: str, path: str, kwargs: dict, status: int
) -> None:
    response = httpx.request(method, f"{stack.worker.url}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]
