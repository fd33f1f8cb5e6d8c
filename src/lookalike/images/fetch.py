"""Obtain the raw bytes of an image from an :data:`~lookalike.events.ImageSource`.

Every failure is a :class:`~lookalike.errors.FetchError` whose reason says what went wrong, so
the worker can dead-letter the event. Bytes are not inspected here: an empty body is passed on
and rejected by :func:`lookalike.images.decode.decode_image`.

URLs are fetched concurrently by one pooled async client (HTTP/2 where an https server offers
it) on the fetcher's own event loop thread, so callers stay blocking and the worker's Faust loop
never carries HTTP work: :meth:`ImageFetcher.fetch_many` fetches a micro-batch's URLs at once,
at most ``per_host`` from one host, each under its own total deadline and byte cap. Every
connection goes through :mod:`.url_guard`: only public addresses (or those in
``LOOKALIKE_FETCH_ALLOW``), checked after DNS resolution on the address actually connected, on
every redirect hop. A refusal is a :class:`~lookalike.errors.FetchRefused` (a dead letter).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import stat
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..errors import ConfigurationError, FetchError
from ..events import FileSource, InlineSource, UrlSource
from .url_guard import (
    ALLOW_SETTING,
    AddressPolicy,
    Resolver,
    check_url,
    guarded_async_client,
    system_resolver,
)

if TYPE_CHECKING:
    from ..events import ImageSource
    from ..settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = "lookalike/0.1"
MAX_REDIRECTS = 5
T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; blocking callers hand it coroutines."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self, last: Coroutine[Any, Any, None]) -> None:
        """Cancel what still runs, run ``last`` (closing the client), stop the loop."""

        async def finish() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await last

        try:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("the URL fetch loop did not close in time")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class ImageFetcher:
    """Fetches image bytes from URLs, inline payloads and files under an image root.

    Thread-safe: the worker's decode threads, its rollout backfill and the API share one. URLs
    go through a single pooled async client on the fetcher's own loop thread (started at the
    first URL); ``policy`` decides which addresses they may reach (default: public ones only).
    """

    def __init__(
        self,
        image_root: Path | None,
        timeout: float,
        max_bytes: int,
        *,
        max_connections: int = 64,
        per_host: int = 16,
        http2: bool = True,
        policy: AddressPolicy | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if per_host < 1 or max_connections < 1:
            raise ValueError("per_host and max_connections must be >= 1")
        # realpath once, so containment checks compare fully resolved paths.
        self.image_root = Path(os.path.realpath(image_root)) if image_root is not None else None
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self.per_host = per_host
        self.http2 = http2
        self.policy = policy if policy is not None else AddressPolicy()
        self.resolver = resolver
        self._start_lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None
        self._client: httpx.AsyncClient | None = None
        #: host:port -> how many of its URLs may be fetched at once (on the loop thread only).
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageFetcher:
        """The fetcher of the worker, its rollout backfill and `lookalike train --tail`: one
        guard for every URL fetched."""
        try:
            policy = AddressPolicy.from_allow_list(settings.fetch_allow)
        except ValueError as exc:
            raise ConfigurationError(f"{ALLOW_SETTING}: {exc}") from None
        return cls(
            image_root=settings.image_root,
            timeout=settings.fetch_timeout,
            max_bytes=settings.max_image_bytes,
            max_connections=settings.fetch_connections,
            per_host=settings.fetch_per_host,
            http2=settings.fetch_http2,
            policy=policy,
        )

    # --- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            loop_thread.close(self._close_client())

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _loop(self) -> _LoopThread:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the image fetcher is closed")
            if self._loop_thread is None:
                self._loop_thread = _LoopThread("url-fetch")
            return self._loop_thread

    def _async_client(self) -> httpx.AsyncClient:
        # Created on the loop thread, at the first URL. Every connection goes through the guard:
        # resolved once, each address checked, the checked IP connected (no DNS rebinding), on
        # every redirect hop.
        if self._client is None:
            self._client = guarded_async_client(
                self.policy,
                http2=self.http2,
                resolver=self.resolver,
                headers={
                    "User-Agent": USER_AGENT,
                    # Images are already compressed; identity avoids gzip bombs inflating.
                    "Accept-Encoding": "identity",
                    "Accept": "image/*,*/*;q=0.8",
                },
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
                # Redirects are followed by _fetch_url itself, see there.
                follow_redirects=False,
            )
        return self._client

    # --- dispatch --------------------------------------------------------------------------------
    def fetch(self, source: ImageSource) -> bytes:
        """Return the image bytes of ``source`` or raise :class:`FetchError`. Blocking."""
        if isinstance(source, UrlSource):
            return self._loop().run(self._fetch_url(str(source.url)))
        if isinstance(source, InlineSource):
            return self._fetch_inline(source.data)
        if isinstance(source, FileSource):
            return self._fetch_file(source.path)
        raise FetchError(f"unsupported image source {type(source).__name__}")

    def fetch_many(self, sources: Sequence[ImageSource]) -> list[bytes | Exception]:
        """The bytes of each source, or the exception fetching it raised (a
        :class:`FetchError` for bad input), in order. URLs are fetched at once, at most
        ``per_host`` from one host; each has the whole deadline from when its turn comes.
        Blocking."""
        results: list[bytes | Exception] = []
        urls: dict[int, str] = {}
        for n, source in enumerate(sources):
            if isinstance(source, UrlSource):
                urls[n] = str(source.url)
                results.append(b"")
                continue
            try:
                results.append(self.fetch(source))
            except Exception as exc:
                results.append(exc)
        if urls:
            fetched = self._loop().run(self._fetch_urls(list(urls.values())))
            for n, outcome in zip(urls, fetched, strict=True):
                results[n] = outcome
        return results

    # --- inline ----------------------------------------------------------------------------------
    def _fetch_inline(self, data: bytes) -> bytes:
        if len(data) > self.max_bytes:
            raise FetchError(self._too_large("inline image", len(data)))
        return data

    # --- file ------------------------------------------------------------------------------------
    def _fetch_file(self, path: str) -> bytes:
        root = self.image_root
        if root is None:
            raise FetchError(
                f"file references are disabled, cannot read {path!r}: set LOOKALIKE_IMAGE_ROOT "
                "to the directory that holds the images (or publish the bytes inline)"
            )
        try:
            # join() keeps an absolute path as is; realpath resolves '..' and every symlink,
            # so the containment check below sees where the file really is.
            resolved = os.path.realpath(os.path.join(root, path))
        except (ValueError, OSError) as exc:  # e.g. embedded NUL byte
            raise FetchError(f"invalid file path {path!r}: {exc}") from None
        if os.path.commonpath([str(root), resolved]) != str(root):
            raise FetchError(
                f"file path {path!r} is outside the image root {root} (LOOKALIKE_IMAGE_ROOT)"
            )
        # O_NOFOLLOW: the last component was resolved above, so a symlink here means it was
        # swapped in since. O_NONBLOCK: opening a FIFO must not block the worker thread.
        flags = (
            os.O_RDONLY
            | getattr(os, "O_NOFOLLOW", 0)
            | getattr(os, "O_NONBLOCK", 0)
            | getattr(os, "O_CLOEXEC", 0)
            | getattr(os, "O_BINARY", 0)
        )
        try:
            fd = os.open(resolved, flags)
        except FileNotFoundError:
            raise FetchError(f"no such file {path!r} under the image root {root}") from None
        except OSError as exc:
            raise FetchError(f"cannot open file {path!r}: {exc.strerror or exc}") from None
        try:
            # fstat the descriptor, not the path, so the checks apply to the file actually read.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FetchError(f"file path {path!r} is not a regular file")
            if st.st_size > self.max_bytes:
                raise FetchError(self._too_large(f"file {path!r}", st.st_size))
            with os.fdopen(fd, "rb", closefd=False) as fh:
                # +1: notice a file that grew after fstat.
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:
            raise FetchError(f"cannot read file {path!r}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            raise FetchError(self._too_large(f"file {path!r}", len(data), at_least=True))
        return data

    # --- url -------------------------------------------------------------------------------------
    async def _fetch_urls(self, urls: list[str]) -> list[bytes | Exception]:
        async def one(url: str) -> bytes | Exception:
            try:
                async with self._slot(url):
                    return await self._fetch_url(url)
            except Exception as exc:
                return exc

        return list(await asyncio.gather(*(one(url) for url in urls)))

    def _slot(self, url: str) -> asyncio.Semaphore:
        try:
            parsed = httpx.URL(url)
            host = f"{parsed.host}:{parsed.port}"
        except (httpx.InvalidURL, TypeError, ValueError):
            host = ""  # refused by check_url in _fetch_url, with the reason
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(self.per_host)
        return slot

    async def _fetch_url(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        check_url(url, self.policy)  # the raw text: backslashes, spaces, credentials
        client = self._async_client()
        try:
            request = client.build_request("GET", url)
            # Redirects are followed here rather than by httpx: httpx reads every intermediate
            # redirect body in full, unbounded by max_bytes or by our total deadline.
            for _ in range(MAX_REDIRECTS + 1):
                self._check_deadline(deadline, url)
                # A clear refusal before any I/O (scheme, credentials, literal addresses); the
                # guarded connection repeats the address check on what it actually connects.
                check_url(request.url, self.policy)
                # Each hop gets only the time that is left, for connect and for every read; the
                # whole hop is also bounded, so no single read can outlast the deadline.
                remaining = max(0.001, deadline - time.monotonic())
                request.extensions["timeout"] = httpx.Timeout(remaining).as_dict()
                async with asyncio.timeout(remaining):
                    response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.next_request is None:
                        return await self._read_body(response, url, deadline)
                    request = response.next_request
                finally:
                    await response.aclose()  # unread bodies are dropped with the connection
            raise FetchError(f"too many redirects (more than {MAX_REDIRECTS}) fetching {url}")
        except (httpx.TimeoutException, TimeoutError):
            raise FetchError(self._timed_out(url)) from None
        except httpx.ConnectError as exc:
            raise FetchError(f"{url} is unreachable: {exc}") from None
        except httpx.TransportError as exc:  # protocol errors, resets, unsupported scheme
            raise FetchError(f"network error fetching {url}: {type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # bad redirect target, decoding, ...
            raise FetchError(f"error fetching {url}: {type(exc).__name__}: {exc}") from None

    async def _read_body(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        status = response.status_code
        if status >= 400:
            phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
            raise FetchError(f"HTTP {status}{phrase} fetching {url}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(self._too_large(url, int(declared)))
        body = bytearray()
        # The read timeout only bounds each single read; a server dripping bytes is stopped by
        # the total deadline (checked after every chunk, and bounding the whole read). No chunk
        # size: httpx would buffer until it is reached, hiding a drip from the check.
        async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise FetchError(self._too_large(url, len(body), at_least=True))
                self._check_deadline(deadline, url)
        return bytes(body)

    # --- reasons ---------------------------------------------------------------------------------
    def _check_deadline(self, deadline: float, url: str) -> None:
        if time.monotonic() > deadline:
            raise FetchError(self._timed_out(url))

    def _timed_out(self, url: str) -> str:
        return f"timed out after {self.timeout:g} s fetching {url} (LOOKALIKE_FETCH_TIMEOUT)"

    def _too_large(self, what: str, size: int, *, at_least: bool = False) -> str:
        qualifier = "at least " if at_least else ""
        return (
            f"{what} is {qualifier}{size} bytes, over the limit of {self.max_bytes} bytes "
            "(LOOKALIKE_MAX_IMAGE_BYTES)"
        )
