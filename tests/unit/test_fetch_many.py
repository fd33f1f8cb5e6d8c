"""ImageFetcher.fetch_many: a micro-batch's URLs fetched at once through one pooled client,
bounded per host, each under its own deadline and byte cap, with the URL guard; refusals and
failures come back in place as FetchErrors (dead letters), the rest as bytes, in order.

Real HTTP/1.1 keep-alive servers on loopback (allow-listed, as LOOKALIKE_FETCH_ALLOW would)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lookalike.errors import FetchError, FetchRefused
from lookalike.events import InlineSource, UrlSource
from lookalike.images import ImageFetcher
from lookalike.images.url_guard import AddressPolicy

BODY = b"\xff\xd8 an image " * 50
LOOPBACK = AddressPolicy.from_allow_list("127.0.0.1/32")


@dataclass
class InFlight:
    """Requests in flight, and the most at once."""

    now: int = 0
    most: int = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1


@dataclass
class CountingServer:
    """Answers every GET after ``delay`` seconds; counts requests in flight (its own, and with
    ``together``, those of every server sharing it) and connections."""

    delay: float = 0.15
    own: InFlight = field(default_factory=InFlight)
    together: InFlight = field(default_factory=InFlight)
    connections: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def most_in_flight(self) -> int:
        return self.own.most

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    server.own.enter()
                    server.together.enter()
                    server.connections.add(self.client_address[1])
                try:
                    time.sleep(server.delay)
                    if self.path.startswith("/missing"):
                        self.send_error(404)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow answer (the timeout tests)
                finally:
                    with server.lock:
                        server.own.leave()
                        server.together.leave()

        return Handler

    def url(self, path: str) -> UrlSource:
        return UrlSource(url=f"http://127.0.0.1:{self.port}{path}")


@pytest.fixture
def servers() -> Iterator[tuple[CountingServer, CountingServer]]:
    running = []
    together, lock = InFlight(), threading.Lock()
    for _ in range(2):
        counting = CountingServer(together=together, lock=lock)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), counting.handler())
        httpd.daemon_threads = True
        counting.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        running.append((counting, httpd, thread))
    try:
        yield running[0][0], running[1][0]
    finally:
        for _, httpd, thread in running:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)


def test_urls_are_fetched_at_once_bounded_per_host(
    servers: tuple[CountingServer, CountingServer],
) -> None:
    a, b = servers
    with ImageFetcher(None, timeout=5, max_bytes=10_000, per_host=3, policy=LOOPBACK) as fetcher:
        sources = [a.url(f"/{n}.jpg") for n in range(12)] + [b.url(f"/{n}.jpg") for n in range(6)]
        results = fetcher.fetch_many(sources)
    assert results == [BODY] * 18
    # At most 3 at a time from each host, and each host did get 3 at once.
    assert a.most_in_flight == 3 and b.most_in_flight == 3
    # The two hosts were fetched side by side: more in flight at once than one host allows
    # (counted, not timed: a busy machine stretches the clock, not the overlap).
    assert a.together.most > 3
    # One pooled client: connections were kept alive and reused, never more than 3 per host.
    assert len(a.connections) <= 3 and len(b.connections) <= 3


def test_failures_and_refusals_come_back_in_place(
    servers: tuple[CountingServer, CountingServer],
) -> None:
    a, _ = servers
    with ImageFetcher(None, timeout=5, max_bytes=10_000, policy=LOOPBACK) as fetcher:
        results = fetcher.fetch_many(
            [
                a.url("/ok.jpg"),
                InlineSource(data=b"inline bytes"),
                a.url("/missing.jpg"),
                UrlSource(url="http://169.254.169.254/latest/meta-data/"),  # refused, no I/O
                InlineSource(data=b"x" * 10_001),  # over the byte cap
                a.url("/ok-again.jpg"),
            ]
        )
    assert results[0] == BODY and results[5] == BODY
    assert results[1] == b"inline bytes"
    assert isinstance(results[2], FetchError) and "HTTP 404" in results[2].reason
    assert isinstance(results[3], FetchRefused) and results[3].stage == "fetch"
    assert "LOOKALIKE_FETCH_ALLOW" in results[3].reason
    assert isinstance(results[4], FetchError) and "LOOKALIKE_MAX_IMAGE_BYTES" in results[4].reason


def test_without_the_allow_list_loopback_is_refused(
    servers: tuple[CountingServer, CountingServer],
) -> None:
    a, _ = servers
    with ImageFetcher(None, timeout=5, max_bytes=10_000) as fetcher:
        results = fetcher.fetch_many([a.url("/1.jpg"), a.url("/2.jpg")])
    assert all(isinstance(r, FetchRefused) for r in results)
    assert a.most_in_flight == 0  # nothing reached the server


def test_the_deadline_starts_when_the_urls_turn_comes(
    servers: tuple[CountingServer, CountingServer],
) -> None:
    """Four URLs one at a time, 0.15 s each: 0.6 s in all, past the 0.4 s deadline, yet none
    timed out, because waiting for the host's slot is not fetching."""
    a, _ = servers
    with ImageFetcher(None, timeout=0.4, max_bytes=10_000, per_host=1, policy=LOOPBACK) as f:
        started = time.monotonic()
        results = f.fetch_many([a.url(f"/{n}.jpg") for n in range(4)])
        assert time.monotonic() - started >= 0.6
    assert results == [BODY] * 4
    assert a.most_in_flight == 1


def test_a_slow_url_times_out_alone(servers: tuple[CountingServer, CountingServer]) -> None:
    a, b = servers
    a.delay = 1.0
    with ImageFetcher(None, timeout=0.3, max_bytes=10_000, policy=LOOPBACK) as fetcher:
        results = fetcher.fetch_many([a.url("/slow.jpg"), b.url("/fast.jpg")])
    assert isinstance(results[0], FetchError) and "timed out after 0.3 s" in results[0].reason
    assert results[1] == BODY


def test_batches_from_several_threads_share_the_client(
    servers: tuple[CountingServer, CountingServer],
) -> None:
    a, _ = servers
    a.delay = 0.02
    with ImageFetcher(None, timeout=5, max_bytes=10_000, per_host=4, policy=LOOPBACK) as fetcher:
        with ThreadPoolExecutor(3) as pool:
            batches = list(
                pool.map(
                    lambda n: fetcher.fetch_many([a.url(f"/{n}-{i}.jpg") for i in range(8)]),
                    range(6),
                )
            )
    assert batches == [[BODY] * 8] * 6
    assert a.most_in_flight <= 4  # the bound holds across callers


def test_a_closed_fetcher_refuses_urls_but_still_reads_inline() -> None:
    fetcher = ImageFetcher(None, timeout=1, max_bytes=100, policy=LOOPBACK)
    fetcher.close()
    assert fetcher.fetch(InlineSource(data=b"abc")) == b"abc"
    with pytest.raises(RuntimeError, match="closed"):
        fetcher.fetch(UrlSource(url="http://127.0.0.1:9/a.jpg"))
