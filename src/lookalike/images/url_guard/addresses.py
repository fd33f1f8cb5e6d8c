"""What the guard allows: IP literals in every spelling, the forbidden ranges (IPv4, IPv6 and
the IPv6 forms that embed an IPv4 address), the allow-list."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import httpx

from ...errors import ForbiddenAddress, ForbiddenURL

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> addresses. Sync on purpose: the async backend runs it in a worker thread,
# exactly as asyncio's own getaddrinfo does.
Resolver: TypeAlias = Callable[[str, int], Sequence[IPAddress]]

ALLOW_SETTING: Final = "LOOKALIKE_FETCH_ALLOW"
_ALLOW_HINT: Final = f"{ALLOW_SETTING} (comma-separated host names, *.domain wildcards, CIDRs)"


# --- errors (classes in lookalike.errors: a refused fetch is a FetchError, so a dead letter) ----
def forbidden(url_or_host: str, address: IPAddress | str, why: str) -> ForbiddenAddress:
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


def is_localhost_name(host: str) -> bool:
    # RFC 6761: "localhost" and everything under it is loopback, whatever DNS says; some
    # resolvers (nss-myhostname, systemd-resolved) synthesize it without asking DNS.
    name = _normalize_host(host)
    return name == "localhost" or name.endswith(".localhost")


LOCALHOST_ADDRESSES: Final[tuple[IPAddress, ...]] = (
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
            raise forbidden(host if host is not None else str(address), address, reason)

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
