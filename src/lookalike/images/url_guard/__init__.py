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

from ...errors import FetchRefused, ForbiddenAddress, ForbiddenURL
from .addresses import ALLOW_SETTING, AddressPolicy, IPAddress, Resolver, parse_ip_literal
from .backends import AsyncGuardedBackend, GuardedBackend, system_resolver
from .clients import (
    AsyncGuardedTransport,
    GuardedTransport,
    check_url,
    guarded_async_client,
    guarded_client,
)

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
