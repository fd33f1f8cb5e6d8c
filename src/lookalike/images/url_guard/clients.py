"""httpx transports and clients on the guarded backends (no proxies, no environment trust), and
the pre-flight URL check."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import httpcore
import httpx

from ...errors import ForbiddenAddress, ForbiddenURL
from .addresses import AddressPolicy, Resolver, forbidden
from .backends import (
    AsyncGuardedBackend,
    GuardedBackend,
    literal_targets,
    resolve_sync,
    system_resolver,
)

_TRANSPORT_KWARGS: Final = frozenset(
    {"verify", "cert", "http1", "http2", "limits", "retries", "local_address", "socket_options"}
)
# Anything that would route requests around the guarded transport.
_BYPASS_KWARGS: Final = frozenset({"proxy", "proxies", "mounts", "transport", "uds", "app"})


def _refuse_bypass(kwargs: Mapping[str, Any]) -> None:
    bad = sorted(k for k in _BYPASS_KWARGS if kwargs.get(k) is not None)
    if bad:
        raise ValueError(
            f"{', '.join(bad)} cannot be used with a guarded client: requests would bypass the "
            "address check (a proxy resolves and connects on our behalf)"
        )


def _install_backend(pool: object, pool_type: type, backend: object) -> None:
    # httpx (<= 0.28) has no public way to pass a network backend to its transports; set the
    # pool's attribute before any connection exists. Fail loudly if httpcore changed shape,
    # rather than run unguarded.
    if not isinstance(pool, pool_type) or not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"cannot install the URL guard: unexpected httpcore pool {type(pool).__name__}; "
            "check the httpx/httpcore version pins of url_guard"
        )
    pool._network_backend = backend


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections go through :class:`GuardedBackend`."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolver,
        delegate: httpcore.NetworkBackend | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_bypass(kwargs)
        super().__init__(**kwargs)
        self.backend = GuardedBackend(policy, resolver=resolver, delegate=delegate)
        _install_backend(self._pool, httpcore.ConnectionPool, self.backend)


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through :class:`AsyncGuardedBackend`."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolver,
        delegate: httpcore.AsyncNetworkBackend | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_bypass(kwargs)
        super().__init__(**kwargs)
        self.backend = AsyncGuardedBackend(policy, resolver=resolver, delegate=delegate)
        _install_backend(self._pool, httpcore.AsyncConnectionPool, self.backend)


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    _refuse_bypass(kwargs)
    transport_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _TRANSPORT_KWARGS}
    return transport_kwargs, kwargs


def guarded_client(
    policy: AddressPolicy,
    *,
    resolver: Resolver = system_resolver,
    trust_env: bool = False,
    **httpx_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` that can only connect to addresses ``policy`` allows.

    Takes ``httpx.Client`` arguments; transport ones (verify, cert, http1, http2, limits,
    retries, local_address, socket_options) go to the guarded transport. ``proxy``, ``mounts``,
    ``transport`` and ``uds`` are refused. ``trust_env`` defaults to False (see module doc).
    """
    transport_kwargs, client_kwargs = _split_kwargs(dict(httpx_kwargs))
    transport = GuardedTransport(policy, resolver=resolver, trust_env=trust_env, **transport_kwargs)
    return httpx.Client(transport=transport, trust_env=trust_env, **client_kwargs)


def guarded_async_client(
    policy: AddressPolicy,
    *,
    http2: bool = False,
    resolver: Resolver = system_resolver,
    trust_env: bool = False,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """Async twin of :func:`guarded_client`."""
    transport_kwargs, client_kwargs = _split_kwargs(dict(kwargs))
    transport = AsyncGuardedTransport(
        policy, resolver=resolver, trust_env=trust_env, http2=http2, **transport_kwargs
    )
    return httpx.AsyncClient(transport=transport, trust_env=trust_env, **client_kwargs)


# --- pre-flight --------------------------------------------------------------------------------
_ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_BAD_CHARS: Final = re.compile(r"[\x00-\x20\x7f\\]")


def check_url(
    url: str | httpx.URL, policy: AddressPolicy, *, resolver: Resolver | None = None
) -> httpx.URL:
    """Reject obviously unacceptable URLs early, with a clear message. Returns the parsed URL.

    Checks the scheme (http/https only), refuses credentials in the URL, backslashes,
    whitespace and control characters (parsers disagree on them: ``http://a\\@127.0.0.1``),
    the port policy, and literal or localhost hosts. With ``resolver`` it also resolves a name
    and checks all its addresses. The guarded backend repeats the address check on the
    connection actually made, so this never needs to be trusted on its own.
    """
    raw = str(url)
    if isinstance(url, str) and _BAD_CHARS.search(raw):
        raise ForbiddenURL(raw, "the URL contains whitespace, control characters or a backslash")
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ForbiddenURL(raw, f"invalid URL: {exc}") from None
    if parsed.scheme not in _ALLOWED_SCHEMES:
        raise ForbiddenURL(raw, f"scheme {parsed.scheme!r} is not allowed (only http and https)")
    if parsed.userinfo:
        raise ForbiddenURL(raw, "credentials (user:password@) in the URL are not allowed")
    host = parsed.host
    if not host:
        raise ForbiddenURL(raw, "the URL has no host")
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[parsed.scheme]
    addresses = literal_targets(host)
    if addresses is None and resolver is not None and not policy.host_allowed(host):
        try:
            addresses = resolve_sync(resolver, host, port)
        except httpcore.ConnectError as exc:  # what the client itself would raise
            raise httpx.ConnectError(str(exc)) from exc
    policy.check_port(raw, host, port, addresses or ())
    if addresses is not None:
        try:
            policy.check_addresses(host, addresses)
        except ForbiddenAddress as exc:
            raise forbidden(raw, exc.address, exc.why) from None
    return parsed
