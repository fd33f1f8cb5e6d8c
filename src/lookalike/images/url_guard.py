"""Guard outgoing HTTP fetches of untrusted URLs against SSRF.

Image URLs come from untrusted upload events. Without a guard a worker can be made to fetch
its own API, the Kafka broker, loopback, private networks or the cloud metadata service
(169.254.169.254), directly or through a redirect.

The guard works at the point where a TCP connection is opened, not at the URL level:

* :class:`GuardedBackend` / :class:`AsyncGuardedBackend` are httpcore network backends. httpcore
  hands them the URL's host name; they resolve it exactly once, check *every* address with an
  :class:`AddressPolicy`, and connect to the checked IP literal itself. The OS never resolves
  the name again, so DNS rebinding between "check" and "connect" is impossible.
* httpcore still does TLS on top of the returned stream with ``server_hostname`` = the URL's
  host, and httpx still sends ``Host:`` from the URL, so SNI, certificate verification and
  virtual hosting are unchanged.
* Every new connection goes through the backend, so every redirect hop to a new origin is
  checked, whether httpx follows redirects or the caller does.

:func:`check_url` is an optional pre-flight that gives a clear error before any I/O; it is not
a substitute for the backend (a name can resolve differently a moment later).

Allow-list (setting ``LOOKALIKE_FETCH_ALLOW``, comma-separated): exact host names,
``*.example.com`` wildcards (any depth of subdomain, not the apex itself), and IPs/CIDRs. A
listed host may resolve to anything; a listed CIDR permits those addresses for any host name.

Proxies: the guard checks the address it connects to. Through a proxy that is the proxy's
address, and the proxy resolves the target, so a guarded client must not use one. httpx only
mounts environment proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) when no ``transport`` is given,
so passing our transport already disables them; we also default ``trust_env=False`` so that
behaviour does not hang on that detail, and so SSL_CERT_FILE/SSL_CERT_DIR in the environment do
not change trust roots silently. ``proxy=``, ``mounts=``, ``transport=`` and ``uds=`` are
refused. If egress must go through a proxy, enforce SSRF rules at the proxy instead.

Version notes: httpx's transports take no network backend argument (as of httpx 0.28), so
:class:`GuardedTransport` sets the private ``_network_backend`` of the pool that
``httpx.HTTPTransport`` built. That is checked at construction, failing loudly, and is covered
by the tests. Tested with httpx 0.27.2 / 0.28.1 and httpcore 1.0.x.
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import anyio
import httpcore
import httpx

from ..errors import FetchRefused, ForbiddenAddress, ForbiddenURL

__all__ = [
    "ALLOW_SETTING",
    "AddressPolicy",
    "AsyncGuardedBackend",
    "AsyncGuardedTransport",
    "FetchRefused",
    "ForbiddenAddress",
    "ForbiddenURL",
    "GuardedBackend",
    "GuardedTransport",
    "IPAddress",
    "Resolver",
    "check_url",
    "guarded_async_client",
    "guarded_client",
    "parse_ip_literal",
    "system_resolver",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> addresses. Sync on purpose: the async backend runs it in a worker thread,
# exactly as asyncio's own getaddrinfo does.
Resolver: TypeAlias = Callable[[str, int], Sequence[IPAddress]]

ALLOW_SETTING: Final = "LOOKALIKE_FETCH_ALLOW"
_ALLOW_HINT: Final = f"{ALLOW_SETTING} (comma-separated host names, *.domain wildcards, CIDRs)"


# --- errors (classes in lookalike.errors: a refused fetch is a FetchError, so a dead letter) ----
def _forbidden(url_or_host: str, address: IPAddress | str, why: str) -> ForbiddenAddress:
    return ForbiddenAddress(
        url_or_host,
        address,
        why,
        f"refused to connect to {url_or_host} ({address}): {why}. If this destination "
        f"is trusted, add {_allow_suggestion(url_or_host, address)} to {_ALLOW_HINT}",
    )


def _allow_suggestion(url_or_host: str, address: IPAddress | str) -> str:
    entries = []
    host = _host_of(url_or_host)
    if host and parse_ip_literal(host) is None:
        entries.append(repr(host))
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        mapped = _mapped_v4(address)
        address = mapped if mapped is not None else address
        entries.append(repr(f"{address}/{address.max_prefixlen}"))
    return " or ".join(entries) or "the host name"


def _host_of(url_or_host: str) -> str:
    # Accepts a URL, "host:port", "[v6]:port" or a bare host.
    text = url_or_host if "://" in url_or_host else f"http://{url_or_host}"
    try:
        return httpx.URL(text).host
    except (httpx.InvalidURL, TypeError, ValueError):
        return url_or_host


# --- address literals --------------------------------------------------------------------------
_DEC: Final = re.compile(r"[0-9]+")
_OCT: Final = re.compile(r"0[0-7]*")
_HEX: Final = re.compile(r"0[xX][0-9a-fA-F]+")


def _parse_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """IPv4 in the forms C ``inet_aton`` (and so ``getaddrinfo``) accepts.

    ``2130706433``, ``0x7f000001``, ``017700000001``, ``127.1``, ``0x7f.0.0.1`` all mean
    127.0.0.1 to the OS; the strict ``ipaddress`` parser rejects them and would let them pass
    as "host names".
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if _HEX.fullmatch(part):
            numbers.append(int(part[2:], 16))
        elif _OCT.fullmatch(part):
            numbers.append(int(part, 8))
        elif _DEC.fullmatch(part) and part[0] != "0":
            numbers.append(int(part, 10))
        else:
            return None
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_ip_literal(host: str) -> IPAddress | None:
    """Return the address a host string denotes literally, or None for a DNS name.

    Accepts ``[v6]`` brackets, a single trailing dot, IPv6 zone ids and every IPv4 form that
    ``inet_aton`` accepts.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if not text:
        return None
    if ":" in text:
        try:
            # httpx leaves a zone id percent-encoded ("fe80::1%25eth0"); decode it.
            return ipaddress.IPv6Address(text.replace("%25", "%", 1))
        except ValueError:
            return None
    return _parse_inet_aton(text)


def _normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def _is_localhost_name(host: str) -> bool:
    # RFC 6761: "localhost" and everything under it is loopback, whatever DNS says; some
    # resolvers (nss-myhostname, systemd-resolved) synthesize it without asking DNS.
    name = _normalize_host(host)
    return name == "localhost" or name.endswith(".localhost")


_LOCALHOST_ADDRESSES: Final[tuple[IPAddress, ...]] = (
    ipaddress.IPv4Address("127.0.0.1"),
    ipaddress.IPv6Address("::1"),
)


# --- classification tables ---------------------------------------------------------------------
def _nets(*items: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in items)


# IANA IPv4 special-purpose registry entries that are not globally reachable, plus multicast,
# reserved and broadcast. Deliberately stricter than ipaddress.is_global (see test exceptions):
# all of 192.0.0.0/24, the deprecated 6to4 relay anycast and multicast are refused too.
_V4_FORBIDDEN: Final = _nets(
    ("0.0.0.0/8", "in 'this network' 0.0.0.0/8 (connects to the local host)"),
    ("10.0.0.0/8", "a private address (10.0.0.0/8)"),
    ("100.64.0.0/10", "a carrier-grade NAT shared address (100.64.0.0/10)"),
    ("127.0.0.0/8", "a loopback address (127.0.0.0/8)"),
    ("169.254.0.0/16", "a link-local address (169.254.0.0/16, includes cloud metadata)"),
    ("172.16.0.0/12", "a private address (172.16.0.0/12)"),
    ("192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)"),
    ("192.0.2.0/24", "a documentation address (192.0.2.0/24)"),
    ("192.88.99.0/24", "the deprecated 6to4 relay anycast range (192.88.99.0/24)"),
    ("192.168.0.0/16", "a private address (192.168.0.0/16)"),
    ("198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"),
    ("198.51.100.0/24", "a documentation address (198.51.100.0/24)"),
    ("203.0.113.0/24", "a documentation address (203.0.113.0/24)"),
    ("224.0.0.0/4", "a multicast address (224.0.0.0/4)"),
    ("240.0.0.0/4", "a reserved or broadcast address (240.0.0.0/4)"),
)

_V6_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_V6_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_V6_COMPAT: Final = ipaddress.IPv6Network("::/96")
_V6_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_V6_6TO4: Final = ipaddress.IPv6Network("2002::/16")
_V6_TEREDO: Final = ipaddress.IPv6Network("2001::/32")

# Inside 2000::/3 (outside it everything is refused, except the embedding forms above).
_V6_FORBIDDEN_IN_GLOBAL: Final = _nets(
    ("2001:db8::/32", "a documentation address (2001:db8::/32)"),
    ("3fff::/20", "a documentation address (3fff::/20)"),
    ("2001::/23", "an IETF protocol assignment (2001::/23)"),  # after Teredo, see below
)

# Outside 2000::/3, named only for clearer messages.
_V6_NAMED: Final = _nets(
    ("::1/128", "the IPv6 loopback address (::1)"),
    ("::/128", "the unspecified IPv6 address (::)"),
    ("fc00::/7", "a unique-local (private) IPv6 address (fc00::/7)"),
    ("fe80::/10", "a link-local IPv6 address (fe80::/10)"),
    ("fec0::/10", "a deprecated site-local IPv6 address (fec0::/10)"),
    ("ff00::/8", "a multicast IPv6 address (ff00::/8)"),
    ("64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48)"),
    ("100::/64", "a discard-only IPv6 address (100::/64)"),
)


def _mapped_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address) and address in _V6_MAPPED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _classify_v4(address: ipaddress.IPv4Address) -> str | None:
    for net, reason in _V4_FORBIDDEN:
        if address in net:
            return reason
    return None


def _classify_embedded(label: str, v4: ipaddress.IPv4Address) -> str | None:
    inner = _classify_v4(v4)
    return None if inner is None else f"{label} embedding {v4}, which is {inner}"


def _classify_v6(address: ipaddress.IPv6Address) -> str | None:
    value = int(address)
    if address in _V6_MAPPED:
        # The kernel sends ::ffff:a.b.c.d as plain IPv4 to a.b.c.d.
        return _classify_embedded(
            "an IPv4-mapped address", ipaddress.IPv4Address(value & 0xFFFFFFFF)
        )
    if value == 0:
        return "the unspecified IPv6 address (::)"
    if value == 1:
        return "the IPv6 loopback address (::1)"
    if address in _V6_COMPAT:
        return _classify_embedded(
            "an IPv4-compatible address", ipaddress.IPv4Address(value & 0xFFFFFFFF)
        )
    if address in _V6_NAT64:
        # A NAT64 gateway translates it to the embedded IPv4 address.
        return _classify_embedded("a NAT64 address", ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _V6_6TO4:
        return _classify_embedded(
            "a 6to4 address", ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
        )
    if address in _V6_TEREDO:
        # Teredo: server IPv4 in bits 32-63, client IPv4 (bit-inverted) in the last 32 bits.
        server = ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~value & 0xFFFFFFFF)
        return _classify_embedded("a Teredo address", server) or _classify_embedded(
            "a Teredo address", client
        )
    if address not in _V6_GLOBAL_UNICAST:
        for net, reason in _V6_NAMED:
            if address in net:
                return reason
        return "not a global unicast IPv6 address (outside 2000::/3)"
    for net, reason in _V6_FORBIDDEN_IN_GLOBAL:
        if address in net:
            return reason
    return None


def _strip_scope(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(int(address))
    return address


# --- policy ------------------------------------------------------------------------------------
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_PATTERN: Final = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}")


@dataclass(frozen=True)
class AddressPolicy:
    """Decides which addresses a fetch may connect to.

    Default: only globally routable unicast addresses. ``allow_hosts`` (exact names or
    ``*.suffix`` wildcards) and ``allow_networks`` override the refusal. ``allowed_ports``,
    when set, restricts ports for destinations that are not allow-listed (None: any port).
    """

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    allowed_ports: frozenset[int] | None = None

    # Split once so matching is cheap.
    _exact_hosts: frozenset[str] = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = frozenset(_normalize_host(h) for h in self.allow_hosts)
        for host in hosts:
            if parse_ip_literal(host) is not None:  # "2130706433" must not dodge a host match
                raise ValueError(f"{host!r} is an address: put it in allow_networks")
            if not _HOST_PATTERN.fullmatch(host):
                raise ValueError(
                    f"invalid host pattern {host!r} in the fetch allow-list: use a host name, "
                    "'*.domain' or a CIDR (IDN names in punycode)"
                )
        object.__setattr__(self, "allow_hosts", hosts)
        object.__setattr__(self, "allow_networks", tuple(self.allow_networks))
        object.__setattr__(
            self, "_exact_hosts", frozenset(h for h in hosts if not h.startswith("*."))
        )
        object.__setattr__(
            self,
            "_suffixes",
            tuple(h[1:] for h in hosts if h.startswith("*.")),  # ".domain"
        )

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_allow_list(
        cls, entries: str | Iterable[str], *, allowed_ports: Iterable[int] | None = None
    ) -> AddressPolicy:
        """Build from ``"cdn.internal, *.img.example.com, 10.20.0.0/16, 127.0.0.1"``."""
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in items:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            literal = parse_ip_literal(entry) if "/" not in entry else None
            if literal is not None:  # e.g. "127.1": same address the OS would use
                networks.append(ipaddress.ip_network(literal))
            elif "/" in entry:
                raise ValueError(f"invalid CIDR {entry!r} in the fetch allow-list")
            else:
                hosts.add(entry)
        ports = frozenset(allowed_ports) if allowed_ports is not None else None
        return cls(frozenset(hosts), tuple(networks), ports)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, allowed_ports: Iterable[int] | None = None
    ) -> AddressPolicy:
        env = os.environ if environ is None else environ
        return cls.from_allow_list(env.get(ALLOW_SETTING, ""), allowed_ports=allowed_ports)

    # --- decisions -----------------------------------------------------------------------------
    @staticmethod
    def classify(address: IPAddress) -> str | None:
        """Why ``address`` is refused by default (ignoring the allow-list), or None if global."""
        address = _strip_scope(address)
        if isinstance(address, ipaddress.IPv4Address):
            return _classify_v4(address)
        return _classify_v6(address)

    def host_allowed(self, host: str) -> bool:
        name = _normalize_host(host)
        return name in self._exact_hosts or any(name.endswith(s) for s in self._suffixes)

    def network_allowed(self, address: IPAddress) -> bool:
        address = _strip_scope(address)
        # ::ffff:a.b.c.d is the very same IPv4 destination, so an IPv4 entry covers it.
        candidates = [address] + [m for m in (_mapped_v4(address),) if m is not None]
        return any(
            a in net for a in candidates for net in self.allow_networks if a.version == net.version
        )

    def allows(self, address: IPAddress, host: str | None = None) -> bool:
        if host is not None and self.host_allowed(host):
            return True
        return self.network_allowed(address) or self.classify(address) is None

    def check_address(self, address: IPAddress, host: str | None = None) -> None:
        """Raise :class:`ForbiddenAddress` unless ``address`` (reached as ``host``) is allowed."""
        if host is not None and self.host_allowed(host):
            return
        if self.network_allowed(address):
            return
        reason = self.classify(address)
        if reason is not None:
            raise _forbidden(host if host is not None else str(address), address, reason)

    def check_addresses(self, host: str, addresses: Sequence[IPAddress]) -> None:
        """Refuse if *any* resolved address is forbidden.

        Not "connect to the allowed ones": a name that mixes public and internal records is
        misconfigured or hostile, and refusing outright makes the outcome independent of
        record order and of which address happens to answer.
        """
        if self.host_allowed(host):
            return
        for address in addresses:
            self.check_address(address, host)

    def check_port(
        self, url_or_host: str, host: str, port: int, addresses: Sequence[IPAddress] = ()
    ) -> None:
        """Raise :class:`ForbiddenURL` if ``port`` is outside ``allowed_ports``.

        Allow-listed destinations (host, or every address in an allowed CIDR) may use any
        port: that is how local test servers on random ports are reached.
        """
        if self.allowed_ports is None or port in self.allowed_ports or self.host_allowed(host):
            return
        if addresses and all(self.network_allowed(a) for a in addresses):
            return
        allowed = ", ".join(str(p) for p in sorted(self.allowed_ports))
        raise ForbiddenURL(
            url_or_host,
            f"port {port} is not allowed (allowed: {allowed}; destinations listed in "
            f"{ALLOW_SETTING} may use any port)",
        )


# --- resolution --------------------------------------------------------------------------------
def system_resolver(host: str, port: int) -> list[IPAddress]:
    """All TCP addresses for ``host`` from the system resolver, in its order, deduplicated."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        seen.setdefault(ipaddress.ip_address(sockaddr[0]), None)
    return list(seen)


def _literal_targets(host: str) -> list[IPAddress] | None:
    """Addresses a host denotes without DNS (IP literal, localhost), else None."""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    if _is_localhost_name(host):
        return list(_LOCALHOST_ADDRESSES)
    return None


def _resolve_sync(resolver: Resolver, host: str, port: int) -> list[IPAddress]:
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
        raise _forbidden(label, exc.address, exc.why) from None
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
        addresses = _literal_targets(host)
        if addresses is None:
            addresses = _resolve_sync(self.resolver, host, port)
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
        return _resolve_sync(resolver, host, port)

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
        addresses = _literal_targets(host)
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
    addresses = _literal_targets(host)
    if addresses is None and resolver is not None and not policy.host_allowed(host):
        try:
            addresses = _resolve_sync(resolver, host, port)
        except httpcore.ConnectError as exc:  # what the client itself would raise
            raise httpx.ConnectError(str(exc)) from exc
    policy.check_port(raw, host, port, addresses or ())
    if addresses is not None:
        try:
            policy.check_addresses(host, addresses)
        except ForbiddenAddress as exc:
            raise _forbidden(raw, exc.address, exc.why) from None
    return parsed
