"""httpcore network backends that resolve a host once, check every address and connect to the
checked address itself (no second resolution: no DNS rebinding)."""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import httpcore

from ...errors import FetchRefused, ForbiddenAddress
from .addresses import (
    LOCALHOST_ADDRESSES,
    AddressPolicy,
    IPAddress,
    Resolver,
    forbidden,
    is_localhost_name,
    parse_ip_literal,
)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """All TCP addresses for ``host`` from the system resolver, in its order, deduplicated."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        seen.setdefault(ipaddress.ip_address(sockaddr[0]), None)
    return list(seen)


def literal_targets(host: str) -> list[IPAddress] | None:
    """Addresses a host denotes without DNS (IP literal, localhost), else None."""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    if is_localhost_name(host):
        return list(LOCALHOST_ADDRESSES)
    return None


def resolve_sync(resolver: Resolver, host: str, port: int) -> list[IPAddress]:
    try:
        addresses = [
            ipaddress.ip_address(a) if isinstance(a, str) else a for a in resolver(host, port)
        ]
    except (OSError, UnicodeError) as exc:  # gaierror, bad IDNA: like a failed connect
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: no addresses")
    return addresses


# --- httpcore network backends -----------------------------------------------------------------
def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _vet(
    policy: AddressPolicy, host: str, port: int, addresses: Sequence[IPAddress]
) -> list[IPAddress]:
    label = _host_port(host, port)
    policy.check_port(label, host, port, addresses)
    try:
        policy.check_addresses(host, addresses)
    except ForbiddenAddress as exc:  # name the port too: "api.internal:8080"
        raise forbidden(label, exc.address, exc.why) from None
    return list(addresses)


def _refuse_unix_socket(path: str) -> FetchRefused:
    return FetchRefused(f"refused to connect to unix socket {path!r}: guarded clients only use TCP")


class GuardedBackend(httpcore.NetworkBackend):
    """Sync httpcore backend: resolve once, check every address, connect to the checked IP.

    ``delegate`` does the actual connecting (default ``httpcore.SyncBackend``); it only ever
    sees IP literals, never a name it could resolve again.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolver,
        delegate: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.delegate = delegate if delegate is not None else httpcore.SyncBackend()

    def resolve_and_check(self, host: str, port: int) -> list[IPAddress]:
        addresses = literal_targets(host)
        if addresses is None:
            addresses = resolve_sync(self.resolver, host, port)
        return _vet(self.policy, host, port, addresses)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = self.resolve_and_check(host, port)
        last_error: Exception | None = None
        for address in addresses:  # in resolver order, like socket.create_connection
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}")
            try:
                return self.delegate.connect_tcp(
                    str(address),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None  # addresses is never empty
        raise last_error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise _refuse_unix_socket(path)

    def sleep(self, seconds: float) -> None:
        self.delegate.sleep(seconds)


async def _run_resolver(resolver: Resolver, host: str, port: int) -> list[IPAddress]:
    def call() -> list[IPAddress]:
        return resolve_sync(resolver, host, port)

    try:  # anyio >= 4.1
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except TypeError:  # pragma: no cover - anyio 4.0
        return await anyio.to_thread.run_sync(call, cancellable=True)


class _SocketCachingStream(httpcore.AsyncNetworkStream):
    """A network stream that looks its raw socket up once.

    httpcore's pool asks every idle connection whether it is still usable ("is_readable") on
    each request it assigns; anyio answers by building all of a socket's attributes, with a
    getpeername system call, every time. That was a third of the fetcher's CPU at 16
    connections (py-spy); asking a poll object registered once is one system call.
    """

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket = stream.get_extra_info("socket")
        self._poller: select.poll | None = None
        if self._socket is not None and hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(self._socket.fileno(), select.POLLIN)

    def _readable(self) -> bool:
        """Data or EOF waiting on an idle connection: the server closed it."""
        assert self._poller is not None
        return self._socket.fileno() == -1 or bool(self._poller.poll(0))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _SocketCachingStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._socket
        if info == "is_readable" and self._poller is not None:
            return self._readable()
        return self._stream.get_extra_info(info)


class AsyncGuardedBackend(httpcore.AsyncNetworkBackend):
    """Async twin of :class:`GuardedBackend` (asyncio or trio, via anyio).

    The resolver runs in a worker thread (as asyncio's own getaddrinfo does) and counts
    against the connect timeout.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolver,
        delegate: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.delegate = delegate if delegate is not None else httpcore.AnyIOBackend()

    async def resolve_and_check(
        self, host: str, port: int, timeout: float | None = None
    ) -> list[IPAddress]:
        addresses = literal_targets(host)
        if addresses is None:
            try:
                with anyio.fail_after(timeout):
                    addresses = await _run_resolver(self.resolver, host, port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"timed out resolving {host!r}") from None
        return _vet(self.policy, host, port, addresses)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else anyio.current_time() + timeout
        addresses = await self.resolve_and_check(host, port, timeout)
        last_error: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else deadline - anyio.current_time()
            if remaining is not None and remaining <= 0:
                raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}")
            try:
                stream = await self.delegate.connect_tcp(
                    str(address),
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
            else:
                return _SocketCachingStream(stream)
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise _refuse_unix_socket(path)

    async def sleep(self, seconds: float) -> None:
        await self.delegate.sleep(seconds)


# --- httpx transports and clients --------------------------------------------------------------
# Keyword arguments that belong to the transport: with transport= given, httpx.Client ignores
# them, so they must be routed here or they would silently do nothing.
