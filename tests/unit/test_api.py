"""The HTTP API as it runs in a worker: the real Faust app and aiohttp server, the real views,
models and middlewares, and a real runtime (tiny encoder, embedded Qdrant). Only Kafka is faked
(a recording send that can play a broker that never answers); a worker process with a real
broker covers the same paths in tests/integration.

Every error must be JSON ``{"error": ...}`` with a fitting status, never a 500 for bad input;
a property-based fuzz test sends generated requests to every route to hold that."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagegen import image_bytes
from inprocess_api import ADMIN, MAX_IMAGE, MAX_JSON, READ, Api, close_api, make_runtime, open_api

from lookalike.api import ROUTES, check_exposure
from lookalike.errors import ConfigurationError
from lookalike.settings import Settings
from lookalike.streams.runtime import Runtime

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path_factory.mktemp("api") / "data")
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[Api]:
    opened = open_api(runtime)
    yield opened
    close_api(opened)


@pytest.fixture
def secured(runtime: Runtime) -> Iterator[Api]:
    from pydantic import SecretStr

    opened = open_api(
        runtime, api_read_tokens=SecretStr(f"{READ}, other"), api_admin_tokens=SecretStr(ADMIN)
    )
    yield opened
    close_api(opened)


def _is_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]


# --- what worked before keeps working ------------------------------------------------------------


def test_search_by_image_and_by_id(api: Api) -> None:
    status, body, _ = api.call(
        "POST", "/search", data={"image": image_bytes("circles", 1), "k": "3"}
    )
    assert status == 200, body
    assert body["results"][0]["image_id"] == "circles-1" and body["logged"] is True
    status, body, _ = api.call(
        "POST",
        "/search",
        json={"image_id": "circles-0", "k": 5, "filter": {"category": ["circles", "x"]}},
    )
    assert status == 200, body
    assert {r["category"] for r in body["results"]} == {"circles"}
    assert len(api.searches.sent) == 2  # both logged before they were answered
    status, body, _ = api.call(
        "POST",
        "/search?k=2&category=stripes",
        data=image_bytes("stripes", 0),
        headers={"Content-Type": "image/jpeg"},
    )
    assert status == 200 and len(body["results"]) == 2, body


def test_health_is_cheap_and_open(secured: Api) -> None:
    status, body, _ = secured.call("GET", "/health", token=None)
    assert (status, body) == (200, {"status": "ok"})


# --- bad input: 4xx JSON, never 500 (the inputs first) -----------------------------------

BAD_REQUESTS = [
    ("POST", "/search", {"json": {"image_id": "circles-0", "k": None}}, 400, "k"),
    ("POST", "/search", {"json": {"image_id": "circles-0", "k": "10"}}, 400, "k"),
    ("POST", "/search", {"json": {"image_id": "circles-0", "k": 10**9}}, 400, "k"),
    ("POST", "/search", {"json": {"image_id": 5}}, 400, "image_id"),
    ("POST", "/search", {"json": {"image_id": "c", "filter": {"category": 5}}}, 400, "category"),
    ("POST", "/search", {"json": {"image_id": "c", "filter": {"brand": "x"}}}, 400, "brand"),
    ("POST", "/search", {"json": {"image_id": "c", "filter": "shoes"}}, 400, "filter"),
    ("POST", "/search", {"json": {"image_id": "c", "filter": {"category": [1]}}}, 400, "category"),
    (
        "POST",
        "/search",
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
        "JSON",
    ),
    ("POST", "/search", {}, 400, "image"),
    ("POST", "/search?k=abc", {"data": b"x", "headers": {"Content-Type": "image/png"}}, 400, "k"),
    ("POST", "/search", {"data": {"image": b"not an image"}}, 422, "image"),
    ("POST", "/search", {"data": {"k": "3"}}, 400, "image"),
    ("GET", "/dead-letters?limit=abc", {}, 400, "limit"),
    ("GET", f"/dead-letters?limit={10**30}", {}, 400, "limit"),
    ("GET", "/dead-letters?limit=-1", {}, 400, "limit"),
    ("GET", "/alerts?limit=abc", {}, 400, "limit"),
    ("GET", "/alerts?status=maybe", {}, 400, "status"),
    ("POST", "/rollout/promote", {"json": {"eval_dir": 5}}, 400, "eval_dir"),
    ("POST", "/rollout/promote", {"json": {"force": "yes"}}, 400, "force"),
    ("POST", "/rollout/promote", {"json": {"eval_dir": "/no/such/dir"}}, 400, "eval_dir"),
    ("POST", "/rollout/start", {"json": {}}, 400, "encoder"),
    ("POST", "/rollout/start", {"json": {"encoder": "no-such-model"}}, 400, "no-such-model"),
    ("POST", "/rollout/retire", {"json": {"drop": "true"}}, 400, "drop"),
    ("POST", "/rollout/abort", {"json": {"now": True}}, 400, "now"),
    ("POST", "/vectors", {"json": {"version": "v", "image_ids": "a"}}, 400, "image_ids"),
    ("POST", "/vectors", {"json": {"version": "v", "image_ids": ["a"] * 1001}}, 400, "image_ids"),
    ("POST", "/vectors", {"json": {"version": "nope", "image_ids": ["a"]}}, 404, "nope"),
    ("POST", "/clicks", {"json": {"search_id": "s", "rank": 0}}, 400, "image_id"),
    ("POST", "/clicks", {"json": [1, 2]}, 400, "click"),
    ("POST", "/alerts/x/review", {"json": {"decision": "maybe"}}, 400, "decision"),
    ("POST", "/alerts/x/review", {"json": {"decision": "confirmed"}}, 404, "x"),
    ("GET", "/images/nope", {}, 404, "nope"),
    ("POST", "/exemplars", {"data": {"category": "x"}}, 400, "image"),
    ("GET", "/no-such-route", {}, 404, "no route"),
    ("GET", "/search", {}, 405, "POST"),
    ("DELETE", "/rollout/start", {}, 405, "allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    BAD_REQUESTS,
    ids=[f"{m} {p} {n}" for n, (m, p, *_) in enumerate(BAD_REQUESTS)],
)
def test_bad_requests_get_json_errors(
    api: Api, method: str, path: str, kwargs: dict, status: int, words: str
) -> None:
    got, body, _ = api.call(method, path, **kwargs)
    _is_error(got, body, status)
    assert words in body["error"], body


def test_bodies_over_their_limits_are_413_json(api: Api) -> None:
    raw = b"\xff" * (MAX_IMAGE + 1)
    status, body, _ = api.call("POST", "/search", data=raw, headers={"Content-Type": "image/jpeg"})
    _is_error(status, body, 413)
    assert "LOOKALIKE_MAX_IMAGE_BYTES" in body["error"]
    status, body, _ = api.call("POST", "/search", data={"image": b"x" * (MAX_IMAGE + (2 << 20))})
    _is_error(status, body, 413)  # aiohttp's own limit on a multipart body, answered as JSON
    status, body, _ = api.call("POST", "/clicks", json={"search_id": "s" * MAX_JSON})
    _is_error(status, body, 413)
    assert "LOOKALIKE_API_MAX_JSON_BYTES" in body["error"]


def test_gzip_body_cannot_inflate_past_the_cap(api: Api) -> None:
    click = {"search_id": "s1", "image_id": "circles-1", "rank": 1}
    status, body, _ = api.call(
        "POST",
        "/clicks",
        data=gzip.compress(json.dumps(click).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert status == 202, body  # compressed bodies are fine...
    bomb = gzip.compress(b'{"search_id": "' + b" " * 50_000_000 + b'"}')
    assert len(bomb) < 100_000
    status, body, _ = api.call(
        "POST",
        "/clicks",
        data=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    _is_error(status, body, 413)  # ...but counted after inflating, and stopped at the cap
    status, body, _ = api.call(
        "POST",
        "/clicks",
        data=b"\x1f\x8b not gzip at all",
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert 400 <= status < 500, body


# --- a broker that is gone must not hang searches or clicks --------------------------------------


def test_search_answers_unlogged_and_click_is_refused_when_kafka_hangs(api: Api) -> None:
    api.searches.down = api.clicks.down = True
    status, body, _ = api.call("POST", "/search", json={"image_id": "stripes-0", "k": 2})
    assert status == 200 and body["logged"] is False, body
    status, body, _ = api.call(
        "POST", "/clicks", json={"search_id": body["search_id"], "image_id": "x", "rank": 1}
    )
    _is_error(status, body, 503)
    assert "broker" in body["error"]
    api.searches.down = api.clicks.down = False
    status, stats, _ = api.call("GET", "/stats")
    assert stats["api"]["searches_unlogged"] == 1 and stats["api"]["clicks_refused"] == 1


# --- readiness -----------------------------------------------------------------------------------


def test_ready_says_what_is_failing(api: Api, runtime: Runtime) -> None:
    status, body, _ = api.call("GET", "/ready")
    assert status == 200 and body["ready"] is True
    assert set(body["checks"]) >= {"broker", "index", "encoder"}
    runtime.health.failing("storage", "cannot write image bytes to /x: the disk is full")
    try:
        status, body, _ = api.call("GET", "/ready")
        _is_error(status, body, 503)
        assert body["checks"]["storage"]["ok"] is False and "disk is full" in body["error"]
        status, stats, _ = api.call("GET", "/stats")
        assert status == 200 and stats["ready"]["ready"] is False
    finally:
        runtime.health.fine("storage")
    assert api.call("GET", "/ready")[0] == 200


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/search", {"json": {"image_id": "circles-0"}}),
        ("GET", "/images/circles-0", {}),
        ("POST", "/clicks", {"json": {"search_id": "s", "image_id": "c", "rank": 1}}),
    ],
)
def test_read_routes_take_read_and_admin_tokens(
    secured: Api, method: str, path: str, kwargs: dict
) -> None:
    status, body, headers = secured.call(method, path, token=None, **kwargs)
    _is_error(status, body, 401)
    assert headers.get("WWW-Authenticate") == "Bearer"
    _is_error(*secured.call(method, path, token="wrong", **kwargs)[:2], 401)
    for token in (READ, "other", ADMIN):
        status, body, _ = secured.call(method, path, token=token, **kwargs)
        assert status in (200, 202), body


ADMIN_ROUTES = [r for r in ROUTES if r.role == "admin"]


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=[f"{r.method} {r.path}" for r in ADMIN_ROUTES])
def test_admin_routes_refuse_read_tokens(secured: Api, route: Any) -> None:
    path = route.path.replace("{alert_id}", "a1")
    _is_error(*secured.call(route.method, path, token=None)[:2], 401)
    status, body, _ = secured.call(route.method, path, token=READ)
    _is_error(status, body, 403)
    status, body, _ = secured.call(route.method, path, token=ADMIN)
    assert status not in (401, 403, 500), body


def test_open_routes_need_no_token(secured: Api) -> None:
    assert secured.call("GET", "/health", token=None)[0] == 200
    assert secured.call("GET", "/ready", token=None)[0] == 200
    # An unknown route needs the highest role: it does not tell strangers what exists.
    _is_error(*secured.call("GET", "/secret", token=None)[:2], 401)


def test_tokens_are_never_shown(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, api_admin_tokens=ADMIN, api_read_tokens=READ)
    assert ADMIN not in repr(s) and READ not in repr(s) and ADMIN not in s.model_dump_json()
    assert s.client_headers() == {"Authorization": f"Bearer {ADMIN}"}
    assert Settings(data_dir=tmp_path, api_token="mine").client_headers()["Authorization"] == (
        "Bearer mine"
    )


@pytest.mark.parametrize(
    ("host", "tokens", "allow", "refused"),
    [
        ("127.0.0.1", None, False, False),
        ("::1", None, False, False),
        ("localhost", None, False, False),
        ("0.0.0.0", None, False, True),
        ("10.1.2.3", None, False, True),
        ("api.internal", None, False, True),
        ("0.0.0.0", ADMIN, False, False),
        ("0.0.0.0", None, True, False),
    ],
)
def test_an_open_api_is_only_served_on_loopback(
    tmp_path: Path, host: str, tokens: str | None, allow: bool, refused: bool
) -> None:
    s = Settings(
        data_dir=tmp_path, api_host=host, api_admin_tokens=tokens, allow_unauthenticated=allow
    )
    if refused:
        with pytest.raises(ConfigurationError, match="LOOKALIKE_API_ADMIN_TOKENS"):
            check_exposure(s)
    else:
        check_exposure(s)


# --- fuzz: generated requests to every route -----------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TEXT = st.text(max_size=30)
ALLOWED = {200, 202, 400, 404, 405, 409, 413, 415, 422}


def _shaped(model: Any) -> st.SearchStrategy[dict]:
    """Objects with the model's own field names (and a stray one), so values reach the checks
    of each field instead of all stopping at "extra fields not permitted"."""
    fields = {name: JSON for name in model.model_fields}
    return st.fixed_dictionaries({}, optional={**fields, "filter": JSON, "extra": JSON})


def _fill(path: str, value: str) -> str:
    from urllib.parse import quote

    for name in ("{image_id}", "{alert_id}", "{asset}"):
        path = path.replace(name, quote(value or "x", safe=""))
    return path


def _request_for(route: Any, data: st.DataObject) -> tuple[str, dict[str, Any]]:
    path = _fill(route.path, data.draw(TEXT, label="path parameter"))
    if route.query is not None and data.draw(st.booleans(), label="use query"):
        names = list(route.query.model_fields) + ["other"]
        query = data.draw(st.dictionaries(st.sampled_from(names), TEXT, max_size=4), label="query")
        path = f"{path}?" + "&".join(f"{k}={v}" for k, v in query.items())
    kind = data.draw(st.sampled_from(["json", "shaped", "raw", "form"]), label="body kind")
    if route.method == "GET":
        return path, {}
    if kind == "json":
        return path, {"json": data.draw(JSON, label="json")}
    if kind == "shaped" and route.body is not None:
        return path, {"json": data.draw(_shaped(route.body), label="shaped json")}
    if kind == "form":
        fields = data.draw(st.dictionaries(st.sampled_from(["k", "category", "image", "x"]), TEXT))
        files = {"image": data.draw(st.binary(max_size=200), label="file")}
        return path, {"data": {**fields, **files}}
    content_type = data.draw(
        st.sampled_from(
            ["application/json", "image/png", "text/plain", "application/x-www-form-urlencoded"]
        )
    )
    body = data.draw(st.binary(max_size=300), label="raw body")
    return path, {"data": body, "headers": {"Content-Type": content_type}}


def test_fuzz_every_route_answers_json_never_500(runtime: Runtime) -> None:
    api = open_api(runtime)
    try:

        @settings(
            max_examples=250,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        )
        @given(route=st.sampled_from(ROUTES), data=st.data())
        def check(route: Any, data: st.DataObject) -> None:
            path, kwargs = _request_for(route, data)
            json_answer = route.produces == ("application/json",)
            status, body, headers = api.call(route.method, path, raw=not json_answer, **kwargs)
            assert status in ALLOWED, (route.method, path, kwargs, status, body)
            if status >= 400:
                assert isinstance(body.get("error"), str) and body["error"], body
            elif json_answer:
                assert isinstance(body, dict)
            else:  # pages, assets, thumbnails, metrics: what the route table says
                media = headers["Content-Type"].split(";")[0]
                assert media in route.produces, (route.path, media)

        check()
    finally:
        close_api(api)
