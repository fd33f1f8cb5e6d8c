"""Obtain the raw bytes of an image from an :data:`~lookalike.events.ImageSource`.

Every failure is a :class:`~lookalike.errors.FetchError` whose reason says what went wrong, so
the worker can dead-letter the event. Bytes are not inspected here: an empty body is passed on
and rejected by :func:`lookalike.images.decode.decode_image`.

URLs are fetched through :mod:`.url_guard`: only public addresses (or those in
``LOOKALIKE_FETCH_ALLOW``), checked after DNS resolution on the address actually connected, on
every redirect hop. A refusal is a :class:`~lookalike.errors.FetchRefused` (a dead letter).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from ..errors import ConfigurationError, FetchError
from ..events import FileSource, InlineSource, UrlSource
from .url_guard import (
    ALLOW_SETTING,
    AddressPolicy,
    Resolver,
    check_url,
    guarded_client,
    system_resolver,
)

if TYPE_CHECKING:
    from ..events import ImageSource
    from ..settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = "lookalike/0.1"
MAX_REDIRECTS = 5


class ImageFetcher:
    """Fetches image bytes from URLs, inline payloads and files under an image root.

    One instance is shared by the worker's decode threads: it holds a single pooled
    :class:`httpx.Client`, which is thread-safe, and no other mutable state. ``policy`` decides
    which addresses URLs may reach (default: public addresses only).
    """

    def __init__(
        self,
        image_root: Path | None,
        timeout: float,
        max_bytes: int,
        *,
        max_connections: int = 20,
        policy: AddressPolicy | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        # realpath once, so containment checks compare fully resolved paths.
        self.image_root = Path(os.path.realpath(image_root)) if image_root is not None else None
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.policy = policy if policy is not None else AddressPolicy()
        # Every connection goes through the guard: resolved once, each address checked, the
        # checked IP connected (no DNS rebinding), on every redirect hop.
        self._client = guarded_client(
            self.policy,
            resolver=resolver,
            headers={
                "User-Agent": USER_AGENT,
                # Images are already compressed; identity avoids gzip bombs inflating in memory.
                "Accept-Encoding": "identity",
                "Accept": "image/*,*/*;q=0.8",
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            # Redirects are followed by _fetch_url itself, see there.
            follow_redirects=False,
        )

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
            max_connections=max(10, 2 * settings.decode_threads),
            policy=policy,
        )

    # --- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- dispatch --------------------------------------------------------------------------------
    def fetch(self, source: ImageSource) -> bytes:
        """Return the image bytes of ``source`` or raise :class:`FetchError`."""
        if isinstance(source, UrlSource):
            return self._fetch_url(str(source.url))
        if isinstance(source, InlineSource):
            return self._fetch_inline(source.data)
        if isinstance(source, FileSource):
            return self._fetch_file(source.path)
        raise FetchError(f"unsupported image source {type(source).__name__}")

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
    def _fetch_url(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        check_url(url, self.policy)  # the raw text: backslashes, spaces, credentials
        try:
            request = self._client.build_request("GET", url)
            # Redirects are followed here rather than by httpx: httpx reads every intermediate
            # redirect body in full, unbounded by max_bytes or by our total deadline.
            for _ in range(MAX_REDIRECTS + 1):
                self._check_deadline(deadline, url)
                # A clear refusal before any I/O (scheme, credentials, literal addresses); the
                # guarded connection repeats the address check on what it actually connects.
                check_url(request.url, self.policy)
                # Each hop gets only the time that is left, for connect and for every read.
                request.extensions["timeout"] = httpx.Timeout(
                    max(0.001, deadline - time.monotonic())
                ).as_dict()
                response = self._client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.next_request is None:
                        return self._read_body(response, url, deadline)
                    request = response.next_request
                finally:
                    response.close()  # unread redirect bodies are dropped with the connection
            raise FetchError(f"too many redirects (more than {MAX_REDIRECTS}) fetching {url}")
        except httpx.TimeoutException:
            raise FetchError(self._timed_out(url)) from None
        except httpx.ConnectError as exc:
            raise FetchError(f"{url} is unreachable: {exc}") from None
        except httpx.TransportError as exc:  # protocol errors, resets, unsupported scheme
            raise FetchError(f"network error fetching {url}: {type(exc).__name__}: {exc}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # bad redirect target, decoding, ...
            raise FetchError(f"error fetching {url}: {type(exc).__name__}: {exc}") from None

    def _read_body(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        status = response.status_code
        if status >= 400:
            phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
            raise FetchError(f"HTTP {status}{phrase} fetching {url}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(self._too_large(url, int(declared)))
        body = bytearray()
        # The read timeout only bounds each single read; a server dripping bytes is stopped by
        # checking the total deadline after every chunk. No chunk size: httpx would buffer
        # until it is reached, hiding a drip from the check.
        for chunk in response.iter_bytes():
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
