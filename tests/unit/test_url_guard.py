"""Tests for url_guard.

Traffic rule: the only forbidden destination that ever receives packets is loopback (test
servers on 127.0.0.1 / ::1). Private, link-local, ULA, ... are exercised at the policy level or
through a fake resolver with a delegate backend that records instead of connecting.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.images import url_guard
from lookalike.images.url_guard import (
    AddressPolicy,
    AsyncGuardedBackend,
    AsyncGuardedTransport,
    FetchRefused,
    ForbiddenAddress,
    ForbiddenURL,
    GuardedBackend,
    GuardedTransport,
    IPAddress,
    check_url,
    guarded_async_client,
    guarded_client,
    parse_ip_literal,
)

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
PUBLIC_V4 = "93.184.216.34"  # never contacted: only handed to recording/mock delegates
BODY = b"image-bytes"


# --- local servers (loopback only) -------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner: LocalServer = self.server.owner  # type: ignore[attr-defined]
        owner.requests.append((self.path, self.headers.get("Host")))
        if self.path.startswith("/redirect?to="):
            target = urllib.parse.unquote(self.path.split("=", 1)[1])
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalServer:
    """Threaded HTTP(S) server on a loopback address that counts TCP connections."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        owner = self
        self.connections = 0
        self.requests: list[tuple[str, str | None]] = []
        self.sni: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda sslobj, name, ctx: self.sni.append(name)  # type: ignore[assignment,misc]

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                owner.connections += 1
                if tls is not None:
                    sock = tls.wrap_socket(sock, server_side=True)
                return sock, addr

        self.httpd = Server((host, 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.host = host
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def other_server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def server6() -> Iterator[LocalServer]:
    try:
        srv = LocalServer("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep plain "control" clients direct, so they demonstrate what the guard stops.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)


# --- fakes -------------------------------------------------------------------------------------
class FakeResolver:
    """Maps names to fixed answers; a list of answers is served one per call (rebinding)."""

    def __init__(self, table: dict[str, Sequence[str] | list[Sequence[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        answer = self.table.get(host.rstrip(".").lower())
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):  # successive answers
            n = sum(1 for c in self.calls if c == host)
            answer = answer[min(n, len(answer)) - 1]
        return [ipaddress.ip_address(a) for a in answer]  # type: ignore[arg-type]


OK_RESPONSE = [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n", b"\r\n", b"ok"]


class RecordingBackend(httpcore.MockBackend):
    """Delegate that records the connect target and answers from memory: nothing is sent."""

    def __init__(self) -> None:
        super().__init__(list(OK_RESPONSE))
        self.hosts: list[str] = []

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.hosts.append(host)
        return super().connect_tcp(host, port, *args, **kwargs)


class AsyncRecordingBackend(httpcore.AsyncMockBackend):
    def __init__(self) -> None:
        super().__init__(list(OK_RESPONSE))
        self.hosts: list[str] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.hosts.append(host)
        return await super().connect_tcp(host, port, *args, **kwargs)


# --- odd literal forms of loopback -------------------------------------------------------------
# (host as written in the URL, which test server it would reach if unguarded)
LOOPBACK_FORMS = [
    ("127.0.0.1", 4),
    ("2130706433", 4),
    ("0x7f000001", 4),
    ("017700000001", 4),
    ("127.1", 4),
    ("0x7f.0.0.1", 4),
    ("127.0.0.1.", 4),
    ("0", 4),  # 0.0.0.0: Linux connects that to the local host
    ("0.0.0.0", 4),
    ("[::ffff:127.0.0.1]", 4),
    ("[::ffff:7f00:1]", 4),
    ("localhost", 4),
    ("LOCALHOST.", 4),
    ("images.localhost", 4),
    ("[::1]", 6),
    ("[::]", 6),
    ("[0:0:0:0:0:0:0:1]", 6),
]
FORM_IDS = [f for f, _ in LOOPBACK_FORMS]


def _target(
    form: str, family: int, server: LocalServer, server6: LocalServer | None
) -> tuple[str, LocalServer]:
    srv = server if family == 4 else server6
    assert srv is not None
    return f"http://{form}:{srv.port}/img.png", srv


@pytest.fixture
def server6_optional() -> Iterator[LocalServer | None]:
    try:
        srv = LocalServer("::1")
    except OSError:
        yield None
        return
    yield srv
    srv.close()


@pytest.mark.parametrize(("form", "family"), LOOPBACK_FORMS, ids=FORM_IDS)
def test_control_unguarded_client_reaches_loopback(
    form: str, family: int, server: LocalServer, server6_optional: LocalServer | None
) -> None:
    """Documents the threat: each form really reaches the loopback server without the guard."""
    if family == 6 and server6_optional is None:
        pytest.skip("no IPv6 loopback")
    url, srv = _target(form, family, server, server6_optional)
    with httpx.Client(trust_env=False) as plain:
        try:
            response = plain.get(url)
        except httpx.ConnectError as exc:
            pytest.skip(f"{form} does not reach loopback on this host: {exc}")
    assert response.content == BODY
    assert srv.connections >= 1


@pytest.mark.parametrize(("form", "family"), LOOPBACK_FORMS, ids=FORM_IDS)
def test_guarded_client_refuses_loopback_forms(
    form: str, family: int, server: LocalServer, server6_optional: LocalServer | None
) -> None:
    srv6 = server6_optional or server  # without IPv6 the refusal must still happen
    url, srv = _target(form, family, server, srv6)
    with guarded_client(AddressPolicy()) as client, pytest.raises(ForbiddenAddress) as info:
        client.get(url)
    assert srv.connections == 0 and server.connections == 0
    assert url_guard.ALLOW_SETTING in str(info.value)
    assert info.value.reason
    # The pre-flight says the same, without any I/O.
    with pytest.raises(ForbiddenAddress):
        check_url(url, AddressPolicy())


@pytest.mark.parametrize(("form", "family"), LOOPBACK_FORMS, ids=FORM_IDS)
async def test_async_guarded_client_refuses_loopback_forms(
    form: str, family: int, server: LocalServer, server6_optional: LocalServer | None
) -> None:
    url, srv = _target(form, family, server, server6_optional or server)
    async with guarded_async_client(AddressPolicy()) as client:
        with pytest.raises(ForbiddenAddress):
            await client.get(url)
    assert srv.connections == 0 and server.connections == 0


@pytest.mark.parametrize("http2", [False, True])
async def test_async_guarded_client_refuses_names_resolving_to_loopback(
    server: LocalServer, http2: bool
) -> None:
    resolver = FakeResolver({"evil.test": ["127.0.0.1"], "dual.test": [PUBLIC_V4, "127.0.0.1"]})
    async with guarded_async_client(AddressPolicy(), http2=http2, resolver=resolver) as client:
        for name in ("evil.test", "dual.test"):
            with pytest.raises(ForbiddenAddress):
                await client.get(f"http://{name}:{server.port}/")
    assert server.connections == 0


def test_guarded_client_refuses_names_resolving_to_loopback(server: LocalServer) -> None:
    # dual.test: one public and one loopback record -> refused outright (no connect at all).
    resolver = FakeResolver({"evil.test": ["127.0.0.1"], "dual.test": [PUBLIC_V4, "127.0.0.1"]})
    with guarded_client(AddressPolicy(), resolver=resolver) as client:
        for name in ("evil.test", "dual.test", "EVIL.TEST."):
            with pytest.raises(ForbiddenAddress) as info:
                client.get(f"http://{name}:{server.port}/")
            assert "127.0.0.1" in str(info.value)
    assert server.connections == 0


# --- allow-list: how the project's own tests will serve images ---------------------------------
def test_allow_list_cidr_lets_loopback_through(server: LocalServer) -> None:
    policy = AddressPolicy.from_allow_list("127.0.0.1/32")
    with guarded_client(policy) as client:
        assert client.get(f"http://127.0.0.1:{server.port}/a.png").content == BODY
        # Same destination written differently: the policy is about the address.
        assert client.get(f"http://2130706433:{server.port}/a.png").content == BODY
        with pytest.raises(ForbiddenAddress):  # /32 means just that address
            client.get(f"http://127.0.0.2:{server.port}/a.png")
    assert server.connections == 2


async def test_allow_list_cidr_async(server: LocalServer) -> None:
    policy = AddressPolicy.from_env({"LOOKALIKE_FETCH_ALLOW": " 127.0.0.1/32 , other.test"})
    async with guarded_async_client(policy, http2=True) as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/a.png")
    assert response.content == BODY


def test_allow_list_by_host_name(server: LocalServer) -> None:
    resolver = FakeResolver(
        {"images.test": ["127.0.0.1"], "a.cdn.test": ["127.0.0.1"], "cdn.test": ["127.0.0.1"]}
    )
    policy = AddressPolicy.from_allow_list(["images.test", "*.cdn.test"])
    with guarded_client(policy, resolver=resolver) as client:
        assert client.get(f"http://images.test:{server.port}/x").content == BODY
        assert client.get(f"http://a.cdn.test:{server.port}/x").content == BODY
        with pytest.raises(ForbiddenAddress):  # the wildcard does not cover the apex
            client.get(f"http://cdn.test:{server.port}/x")
    # The Host header is the URL's host name, not the IP we connected to.
    assert [h for _, h in server.requests] == [
        f"images.test:{server.port}",
        f"a.cdn.test:{server.port}",
    ]


def test_allow_list_localhost_name(server: LocalServer) -> None:
    with guarded_client(AddressPolicy.from_allow_list("localhost")) as client:
        assert client.get(f"http://localhost:{server.port}/x").content == BODY


def test_tries_each_checked_address_in_order(server: LocalServer) -> None:
    # Nothing listens on 127.0.0.2 (server binds 127.0.0.1): refused, then the next one.
    resolver = FakeResolver({"multi.test": ["127.0.0.2", "127.0.0.1"]})
    policy = AddressPolicy.from_allow_list("127.0.0.0/8")
    with guarded_client(policy, resolver=resolver) as client:
        assert client.get(f"http://multi.test:{server.port}/").content == BODY


# --- redirects ---------------------------------------------------------------------------------
def _redirect_targets(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/secret",
        f"http://2130706433:{port}/secret",
        f"http://[::ffff:127.0.0.1]:{port}/secret",
        f"http://localhost:{port}/secret",
        f"http://evil.test:{port}/secret",
    ]


@pytest.fixture
def redirect_setup(
    server: LocalServer, other_server: LocalServer
) -> tuple[AddressPolicy, FakeResolver]:
    # server is "allowed.test" (allow-listed); other_server stands for an internal service.
    resolver = FakeResolver({"allowed.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]})
    return AddressPolicy.from_allow_list("allowed.test"), resolver


def _redirect_url(server: LocalServer, target: str) -> str:
    return f"http://allowed.test:{server.port}/redirect?to={urllib.parse.quote(target, safe='')}"


def test_redirect_hop_to_loopback_refused_when_httpx_follows(
    server: LocalServer,
    other_server: LocalServer,
    redirect_setup: tuple[AddressPolicy, FakeResolver],
) -> None:
    policy, resolver = redirect_setup
    with guarded_client(policy, resolver=resolver, follow_redirects=True) as client:
        for target in _redirect_targets(other_server.port):
            with pytest.raises(ForbiddenAddress):
                client.get(_redirect_url(server, target))
        # A redirect that stays on the allowed host is fine.
        ok = client.get(_redirect_url(server, f"http://allowed.test:{server.port}/img"))
        assert ok.content == BODY
    assert other_server.connections == 0
    assert len(server.requests) == len(_redirect_targets(0)) + 2


def test_redirect_hop_refused_in_manual_redirect_loop(
    server: LocalServer,
    other_server: LocalServer,
    redirect_setup: tuple[AddressPolicy, FakeResolver],
) -> None:
    """The project follows redirects itself (send(stream=True) + next_request)."""
    policy, resolver = redirect_setup
    with guarded_client(policy, resolver=resolver, follow_redirects=False) as client:
        for target in _redirect_targets(other_server.port):
            request = client.build_request("GET", _redirect_url(server, target))
            with pytest.raises(ForbiddenAddress):
                for _ in range(3):
                    response = client.send(request, stream=True)
                    try:
                        if response.next_request is None:
                            pytest.fail("redirect was not followed")
                        check_url(response.next_request.url, policy, resolver=resolver)
                        request = response.next_request
                    finally:
                        response.close()
    assert other_server.connections == 0


def test_redirect_hop_refused_by_backend_even_without_preflight(
    server: LocalServer,
    other_server: LocalServer,
    redirect_setup: tuple[AddressPolicy, FakeResolver],
) -> None:
    policy, resolver = redirect_setup
    with guarded_client(policy, resolver=resolver) as client:
        response = client.get(_redirect_url(server, f"http://evil.test:{other_server.port}/"))
        assert response.next_request is not None
        with pytest.raises(ForbiddenAddress):
            client.send(response.next_request)
    assert other_server.connections == 0


async def test_async_redirect_hop_to_loopback_refused(
    server: LocalServer,
    other_server: LocalServer,
    redirect_setup: tuple[AddressPolicy, FakeResolver],
) -> None:
    policy, resolver = redirect_setup
    async with guarded_async_client(policy, resolver=resolver, follow_redirects=True) as client:
        for target in _redirect_targets(other_server.port):
            with pytest.raises(ForbiddenAddress):
                await client.get(_redirect_url(server, target))
    assert other_server.connections == 0


# --- DNS rebinding -----------------------------------------------------------------------------
def test_rebinding_resolve_once_and_connect_to_checked_ip() -> None:
    resolver = FakeResolver({"rebind.test": [[PUBLIC_V4], ["127.0.0.1"]]})
    delegate = RecordingBackend()
    transport = GuardedTransport(AddressPolicy(), resolver=resolver, delegate=delegate)
    with httpx.Client(transport=transport) as client:
        response = client.get("http://rebind.test/img.png")
        assert response.content == b"ok"
    # One lookup; the delegate got the checked IP literal, never the name to resolve again.
    assert resolver.calls == ["rebind.test"]
    assert delegate.hosts == [PUBLIC_V4]

    # A later connection resolves again, sees loopback and refuses: nothing is connected.
    transport2 = GuardedTransport(AddressPolicy(), resolver=resolver, delegate=delegate)
    with httpx.Client(transport=transport2) as client, pytest.raises(ForbiddenAddress):
        client.get("http://rebind.test/img.png")
    assert delegate.hosts == [PUBLIC_V4]


async def test_rebinding_async() -> None:
    resolver = FakeResolver({"rebind.test": [[PUBLIC_V4], ["127.0.0.1"]]})
    delegate = AsyncRecordingBackend()
    transport = AsyncGuardedTransport(AddressPolicy(), resolver=resolver, delegate=delegate)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://rebind.test/")).content == b"ok"
    assert resolver.calls == ["rebind.test"]
    assert delegate.hosts == [PUBLIC_V4]


def test_rebinding_defeats_a_check_then_connect_design(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the check lives in the backend: a URL pre-check alone is bypassed by rebinding."""
    resolver = FakeResolver({"rebind.test": [[PUBLIC_V4], ["127.0.0.1"]]})
    check_url(f"http://rebind.test:{server.port}/", AddressPolicy(), resolver=resolver)  # passes

    real = socket.getaddrinfo

    def second_answer(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":  # the OS lookup at connect time gets the rebound answer
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", second_answer)
    with httpx.Client(trust_env=False) as naive:
        assert naive.get(f"http://rebind.test:{server.port}/").content == BODY
    assert server.connections == 1
    # The guarded client checks the address it actually connects to.
    with guarded_client(AddressPolicy()) as client, pytest.raises(ForbiddenAddress):
        client.get(f"http://rebind.test:{server.port}/")
    assert server.connections == 1


# --- names resolving to private / link-local (never contacted) ----------------------------------
INTERNAL_NAMES = {
    "metadata.test": ["169.254.169.254"],
    "intranet.test": ["10.1.2.3"],
    "office.test": ["192.168.1.10"],
    "docker.test": ["172.17.0.2"],
    "cgnat.test": ["100.64.0.7"],
    "ula.test": ["fd00::1"],
    "linklocal6.test": ["fe80::1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "nat64.test": ["64:ff9b::a9fe:a9fe"],
    "sixtofour.test": ["2002:a00:1::1"],
    "zero.test": ["0.0.0.0"],
    "mixed.test": [PUBLIC_V4, "10.0.0.1"],
    "mixed6.test": ["2606:4700::1111", "fd12:3456::1"],
}


@pytest.mark.parametrize("name", sorted(INTERNAL_NAMES))
def test_names_resolving_to_internal_addresses_are_refused(name: str) -> None:
    resolver = FakeResolver(INTERNAL_NAMES)  # type: ignore[arg-type]
    delegate = RecordingBackend()
    transport = GuardedTransport(AddressPolicy(), resolver=resolver, delegate=delegate)
    client = httpx.Client(transport=transport, follow_redirects=True)
    with client, pytest.raises(ForbiddenAddress) as info:
        client.get(f"http://{name}/latest/meta-data/")
    assert delegate.hosts == []  # no connection attempted at all
    assert f"'{name}'" in str(info.value)  # suggests allow-listing the name
    with pytest.raises(ForbiddenAddress):
        check_url(f"https://{name}/x.png", AddressPolicy(), resolver=resolver)


@pytest.mark.parametrize("name", sorted(INTERNAL_NAMES))
async def test_names_resolving_to_internal_addresses_are_refused_async(name: str) -> None:
    delegate = AsyncRecordingBackend()
    backend = AsyncGuardedBackend(
        AddressPolicy(),
        resolver=FakeResolver(INTERNAL_NAMES),
        delegate=delegate,  # type: ignore[arg-type]
    )
    with pytest.raises(ForbiddenAddress):
        await backend.connect_tcp(name, 443, timeout=5)
    assert delegate.hosts == []


def test_allow_listed_private_cdn_is_connected_by_ip() -> None:
    resolver = FakeResolver({"cdn.internal": ["10.20.0.5"], "other.internal": ["10.30.0.5"]})
    delegate = RecordingBackend()
    policy = AddressPolicy.from_allow_list("10.20.0.0/16")
    with httpx.Client(
        transport=GuardedTransport(policy, resolver=resolver, delegate=delegate)
    ) as c:
        assert c.get("http://cdn.internal/i.png").content == b"ok"
        with pytest.raises(ForbiddenAddress):
            c.get("http://other.internal/i.png")
    assert delegate.hosts == ["10.20.0.5"]


def test_unresolvable_name_is_a_connect_error() -> None:
    backend = GuardedBackend(
        AddressPolicy(), resolver=FakeResolver({}), delegate=RecordingBackend()
    )
    client = httpx.Client(transport=GuardedTransport(AddressPolicy(), resolver=FakeResolver({})))
    with client, pytest.raises(httpx.ConnectError):
        client.get("http://nowhere.test/")
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("nowhere.test", 80)


def test_unix_sockets_refused() -> None:
    with pytest.raises(FetchRefused):
        GuardedBackend(AddressPolicy()).connect_unix_socket("/var/run/docker.sock")


async def test_unix_sockets_refused_async() -> None:
    with pytest.raises(FetchRefused):
        await AsyncGuardedBackend(AddressPolicy()).connect_unix_socket("/var/run/docker.sock")


# --- TLS: SNI, certificate verification and Host stay with the URL's host name -----------------
@pytest.fixture
def tls_setup() -> Iterator[tuple[LocalServer, ssl.SSLContext]]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("images.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = LocalServer(tls=server_ctx)
    yield srv, client_ctx
    srv.close()


def test_tls_sni_and_host_use_url_hostname(tls_setup: tuple[LocalServer, ssl.SSLContext]) -> None:
    srv, client_ctx = tls_setup
    resolver = FakeResolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    policy = AddressPolicy.from_allow_list("images.test, other.test")
    with guarded_client(policy, resolver=resolver, verify=client_ctx) as client:
        response = client.get(f"https://images.test:{srv.port}/x.png")
        assert response.content == BODY
        # Cert is for images.test only: verification is against the URL host, not the IP.
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            client.get(f"https://other.test:{srv.port}/x.png")
    assert srv.sni[0] == "images.test"
    assert srv.requests[0][1] == f"images.test:{srv.port}"


async def test_tls_async_http2_client(tls_setup: tuple[LocalServer, ssl.SSLContext]) -> None:
    srv, client_ctx = tls_setup
    resolver = FakeResolver({"images.test": ["127.0.0.1"]})
    policy = AddressPolicy.from_allow_list("images.test")
    async with guarded_async_client(
        policy, http2=True, resolver=resolver, verify=client_ctx
    ) as client:
        response = await client.get(f"https://images.test:{srv.port}/x.png")
    assert response.content == BODY
    assert response.http_version == "HTTP/1.1"  # server offers no h2; ALPN fell back
    assert srv.sni == ["images.test"]


# --- proxies and client construction -----------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"proxy": "http://127.0.0.1:3128"},
        {"mounts": {"all://": None}},
        {"transport": httpx.HTTPTransport()},
    ],
)
def test_bypass_arguments_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="bypass"):
        guarded_client(AddressPolicy(), **kwargs)
    with pytest.raises(ValueError, match="bypass"):
        guarded_async_client(AddressPolicy(), **kwargs)


def test_uds_refused() -> None:
    with pytest.raises(ValueError, match="uds"):
        GuardedTransport(AddressPolicy(), uds="/var/run/docker.sock")


def test_trust_env_defaults_off() -> None:
    with guarded_client(AddressPolicy()) as client:
        assert client.trust_env is False


def test_env_proxy_is_never_used(
    server: LocalServer, other_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = other_server  # a loopback "proxy" that would see the request if one were used
    for var in ("HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
    url = f"http://127.0.0.1:{server.port}/x"
    # Control: a plain client honours the env proxy.
    with httpx.Client(trust_env=True) as plain:
        plain.get(url)
    assert proxy.connections == 1 and server.connections == 0
    # Guarded, even when asked to trust the environment: direct, checked connection.
    policy = AddressPolicy.from_allow_list("127.0.0.1/32")
    with guarded_client(policy, trust_env=True) as client:
        assert client.get(url).content == BODY
    assert proxy.connections == 1 and server.connections == 1


def test_install_backend_fails_closed_on_unexpected_pool() -> None:
    with pytest.raises(RuntimeError, match="version"):
        url_guard.clients._install_backend(object(), httpcore.ConnectionPool, object())


def test_transport_kwargs_reach_the_transport() -> None:
    client = guarded_client(AddressPolicy(), limits=httpx.Limits(max_connections=3), http2=True)
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections == 3 and pool._http2 is True
    assert isinstance(pool._network_backend, GuardedBackend)
    client.close()


# --- check_url ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/stat",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http://user:pw@example.com/a.png",
        "http://example.com@127.0.0.1/a.png",
        "http://example.com:80@evil.test/",
        "http://example.com\\@127.0.0.1/",
        "http://exa mple.com/",
        "http://example.com/\r\nHost: x",
        "http:///a.png",
    ],
)
def test_check_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ForbiddenURL):
        check_url(url, AddressPolicy())


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.png",
        "http://93.184.216.34/a.png",
        "https://[2606:4700::1111]/a",
        "HTTPS://Example.COM./a.png",
    ],
)
def test_check_url_accepts_public_urls(url: str) -> None:
    assert check_url(url, AddressPolicy()).host


def test_check_url_ports() -> None:
    policy = AddressPolicy.from_allow_list("images.test, 10.0.0.0/8", allowed_ports={80, 443})
    check_url("https://example.com/a.png", policy)
    with pytest.raises(ForbiddenURL, match="port 9092"):
        check_url("http://example.com:9092/", policy)
    check_url("http://images.test:8000/", policy)  # allow-listed: any port
    check_url("http://10.1.1.1:9092/", policy)
    resolver = FakeResolver({"example.com": [PUBLIC_V4]})
    backend = GuardedBackend(policy, resolver=resolver, delegate=RecordingBackend())
    with pytest.raises(ForbiddenURL):
        backend.connect_tcp("example.com", 9092)


def test_check_url_unresolvable_name_with_resolver() -> None:
    with pytest.raises(httpx.ConnectError):
        check_url("http://nowhere.test/", AddressPolicy(), resolver=FakeResolver({}))


# --- AddressPolicy -----------------------------------------------------------------------------
REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "198.19.255.255",
    "192.0.0.9",
    "192.0.0.170",
    "192.88.99.1",
    "::1",
    "::",
    "fc00::1",
    "fd00::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "2001:2::1",
    "2001:10::1",
    "5f00::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "::127.0.0.1",
    "::10.0.0.1",
    "64:ff9b::127.0.0.1",
    "64:ff9b::10.0.0.1",
    "64:ff9b::169.254.169.254",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::",
    "2002:c0a8:101::1",
    # Teredo, server 65.54.227.120; client 127.0.0.1 / 10.0.0.1 (inverted in the last 32 bits)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    # Teredo with a private server address
    "2001:0:a00:1:8000:63bf:3fff:fdd2",
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.169.0.0",
    "11.0.0.1",
    "223.255.255.255",
    "2606:4700::1111",
    "2a00:1450:4001::1",
    "2620:4f:8000::1",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
    "::8.8.8.8",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo to 8.8.8.8 via 65.54.227.120
]


@pytest.mark.parametrize("address", REFUSED)
def test_policy_refuses(address: str) -> None:
    ip = ipaddress.ip_address(address)
    policy = AddressPolicy()
    assert policy.classify(ip) is not None
    assert not policy.allows(ip)
    with pytest.raises(ForbiddenAddress) as info:
        policy.check_address(ip, "img.example.com")
    assert "LOOKALIKE_FETCH_ALLOW" in str(info.value)


@pytest.mark.parametrize("address", ALLOWED)
def test_policy_allows(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert AddressPolicy().classify(ip) is None
    AddressPolicy().check_address(ip, "img.example.com")


def test_policy_messages_name_the_range_and_the_setting() -> None:
    with pytest.raises(ForbiddenAddress) as info:
        AddressPolicy().check_address(IPv4("169.254.169.254"), "metadata.test")
    msg = str(info.value)
    assert "link-local" in msg and "'metadata.test'" in msg and "'169.254.169.254/32'" in msg
    assert isinstance(info.value, FetchRefused)
    assert info.value.address == IPv4("169.254.169.254")
    v6 = AddressPolicy.classify(IPv6("::ffff:10.0.0.1"))
    assert v6 is not None and "10.0.0.1" in v6 and "private" in v6


def test_allow_list_parsing() -> None:
    policy = AddressPolicy.from_allow_list(
        "Images.Test., *.CDN.example.com, 10.20.0.0/16, 127.0.0.1, [::1], 127.1, fd00::/8,,"
    )
    assert policy.allow_hosts == frozenset({"images.test", "*.cdn.example.com"})
    assert ipaddress.ip_network("10.20.0.0/16") in policy.allow_networks
    assert ipaddress.ip_network("127.0.0.1/32") in policy.allow_networks
    assert ipaddress.ip_network("::1/128") in policy.allow_networks
    assert policy.host_allowed("IMAGES.test.")
    assert policy.host_allowed("a.cdn.example.com") and policy.host_allowed("a.b.cdn.example.com")
    assert not policy.host_allowed("cdn.example.com")
    assert not policy.host_allowed("evilcdn.example.com")
    assert not policy.host_allowed("images.test.evil.com")
    assert policy.allows(IPv4("10.20.3.4")) and not policy.allows(IPv4("10.21.0.1"))
    assert policy.allows(IPv6("::ffff:127.0.0.1"))  # same destination as 127.0.0.1
    assert not policy.allows(IPv4("127.0.0.2"))
    assert policy.allows(IPv6("fd12::1"))
    assert policy.allows(IPv4("10.0.0.1"), host="images.test")
    assert AddressPolicy.from_allow_list("") == AddressPolicy()
    assert AddressPolicy.from_env({}) == AddressPolicy()


@pytest.mark.parametrize(
    "entry", ["*", "http://x.com", "10.0.0.0/33", "host:8080", "a..b", "*.*.x"]
)
def test_allow_list_rejects_bad_entries(entry: str) -> None:
    with pytest.raises(ValueError):
        AddressPolicy.from_allow_list(entry)


def test_addresses_are_not_host_patterns() -> None:
    with pytest.raises(ValueError, match="allow_networks"):
        AddressPolicy(allow_hosts=frozenset({"127.0.0.1"}))


# --- literal parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("10.1", "10.0.0.1"),
        ("169.16689662", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::1", "::1"),
        ("fe80::1%25eth0", "fe80::1%eth0"),
        ("example.com", None),
        ("localhost", None),
        ("127.0.0.256", None),
        ("08.1.1.1", None),
        ("4294967296", None),
        ("1.2.3.4.5", None),
        ("0x", None),
        ("", None),
        ("1..2", None),
        ("256.1", None),
        ("1.2.65536", None),
        ("127.0.0.1..", None),
        ("[::1", None),
    ],
)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (None if parsed is None else str(parsed)) == expected


def _inet_aton_forms(n: int) -> st.SearchStrategy[str]:
    b = n.to_bytes(4, "big")

    def fmt(x: int, style: str) -> str:
        return {"d": str(x), "x": hex(x), "o": "0" + oct(x)[2:] if x else "0"}[style]

    styles = st.sampled_from("dxo")
    full = st.tuples(*[styles] * 4).map(
        lambda s: ".".join(fmt(v, c) for v, c in zip(b, s, strict=True))
    )
    one = styles.map(lambda c: fmt(n, c))
    two = st.tuples(styles, styles).map(lambda s: f"{fmt(b[0], s[0])}.{fmt(n & 0xFFFFFF, s[1])}")
    three = st.tuples(styles, styles, styles).map(
        lambda s: f"{fmt(b[0], s[0])}.{fmt(b[1], s[1])}.{fmt(n & 0xFFFF, s[2])}"
    )
    return st.one_of(full, one, two, three)


@given(st.integers(0, 2**32 - 1).flatmap(lambda n: st.tuples(st.just(n), _inet_aton_forms(n))))
@settings(max_examples=300, deadline=None)
def test_parse_ip_literal_matches_inet_aton(case: tuple[int, str]) -> None:
    n, text = case
    assert parse_ip_literal(text) == IPv4(n)
    assert socket.inet_aton(text) == n.to_bytes(4, "big")  # the OS agrees


# --- hypothesis: consistency with ipaddress.is_global ------------------------------------------
# Documented differences from the stdlib (whose tables also vary between Python patch releases):
_V4_STRICTER = [ipaddress.ip_network(n) for n in ("192.0.0.0/24", "192.88.99.0/24", "224.0.0.0/4")]


def _expected_v4(ip: IPv4) -> bool:
    # Stricter than stdlib: all of 192.0.0.0/24, the 6to4 relay anycast range and multicast.
    if any(ip in net for net in _V4_STRICTER):
        return False
    return ip.is_global


def _expected(ip: IPAddress) -> bool:
    if isinstance(ip, IPv4):
        return _expected_v4(ip)
    v = int(ip)
    low32 = IPv4(v & 0xFFFFFFFF)
    # Embedding forms: judged by the embedded IPv4 (stdlib judges the IPv6 prefix).
    if ip in ipaddress.ip_network("::ffff:0:0/96") or ip in ipaddress.ip_network("::/96"):
        return _expected_v4(low32)
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return _expected_v4(low32)
    if ip in ipaddress.ip_network("2002::/16"):
        return _expected_v4(IPv4((v >> 80) & 0xFFFFFFFF))
    if ip in ipaddress.ip_network("2001::/32"):
        return _expected_v4(IPv4((v >> 64) & 0xFFFFFFFF)) and _expected_v4(IPv4(~v & 0xFFFFFFFF))
    # Only 2000::/3 is global unicast (stdlib: everything not listed, e.g. ff0e::/16, 4000::/3).
    if ip not in ipaddress.ip_network("2000::/3"):
        return False
    # Refused regardless of stdlib version: 3fff::/20 (RFC 9637 documentation), all of the rest
    # of 2001::/23 (newer stdlib marks a few anycast blocks in it global).
    if ip in ipaddress.ip_network("3fff::/20") or ip in ipaddress.ip_network("2001::/23"):
        return False
    return ip.is_global


def _within(cidr: str) -> st.SearchStrategy[IPAddress]:
    net = ipaddress.ip_network(cidr)
    return st.integers(0, net.num_addresses - 1).map(lambda o: net.network_address + o)


_INTERESTING = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "100.0.0.0/8",
    "172.0.0.0/8",
    "192.0.0.0/8",
    "198.0.0.0/8",
    "8.8.8.0/24",
]
_INTERESTING6 = [
    "::/96",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "2002::/16",
    "2001::/32",
    "2001::/23",
    "2001:db8::/32",
    "3fff::/20",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "100::/64",
    "2000::/3",
    "2606:4700::/32",
    "2620:4f:8000::/48",
    "5f00::/16",
    "::/8",
]
V4 = st.one_of(st.integers(0, 2**32 - 1).map(IPv4), st.sampled_from(_INTERESTING).flatmap(_within))  # type: ignore[arg-type]
V4_ints = V4.map(int)


def _embedded() -> st.SearchStrategy[IPAddress]:
    mid = st.integers(0, 2**32 - 1)
    return st.one_of(
        V4_ints.map(lambda a: IPv6((0xFFFF << 32) | a)),
        V4_ints.map(lambda a: IPv6(a)),
        V4_ints.map(lambda a: IPv6((0x64FF9B << 96) | a)),
        st.tuples(V4_ints, st.integers(0, 2**80 - 1)).map(
            lambda t: IPv6((0x2002 << 112) | (t[0] << 80) | t[1])
        ),
        st.tuples(V4_ints, V4_ints, mid).map(  # Teredo: server, client (inverted), flags/port
            lambda t: IPv6((0x20010000 << 96) | (t[0] << 64) | (t[2] << 32) | (~t[1] & 0xFFFFFFFF))
        ),
    )


V6 = st.one_of(
    st.integers(0, 2**128 - 1).map(IPv6),
    st.sampled_from(_INTERESTING6).flatmap(_within),  # type: ignore[arg-type]
    _embedded(),
)


@given(st.one_of(V4, V6))
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_policy_consistent_with_is_global(ip: IPAddress) -> None:
    assert (AddressPolicy.classify(ip) is None) == _expected(ip), ip


@given(V4)
@settings(max_examples=500, deadline=None)
def test_allow_listed_address_always_allowed(ip: IPv4) -> None:
    policy = AddressPolicy(allow_networks=(ipaddress.ip_network(f"{ip}/32"),))
    assert policy.allows(ip)
    assert policy.allows(IPv6((0xFFFF << 32) | int(ip)))  # ::ffff:a.b.c.d form too
