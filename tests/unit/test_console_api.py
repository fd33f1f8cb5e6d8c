"""What the console stands on, in this process: the route table is what the app serves, the
OpenAPI document is valid and covers it, real answers fit the documented models, the page and
its files are served (and ship with the package), /metrics agrees with /stats, and thumbnails
are made under the same fetch guard as indexing. The page itself is driven in a browser by
tests/integration/test_console.py."""

from __future__ import annotations

import io
import json
import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imagegen import image_bytes
from inprocess_api import ADMIN, READ, Api, close_api, make_runtime, open_api
from openapi_spec_validator import validate
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from lookalike import console
from lookalike.api import ROUTES
from lookalike.api.models import (
    AlertsAnswer,
    ClickAnswer,
    DeadLettersAnswer,
    HealthAnswer,
    ReadyAnswer,
    ReviewedAlert,
    SearchAnswer,
    StoredAlert,
)
from lookalike.api.openapi import openapi_document
from lookalike.errors import FetchError
from lookalike.events import CategoryAlert, ConsumedMessage, DeadLetter, Neighbour
from lookalike.index import IndexPoint
from lookalike.streams.runtime import Runtime

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path_factory.mktemp("console") / "data")
    alert = CategoryAlert(
        image_id="stripes-0",
        listing_id="l-0",
        seller_id="seller-a",
        declared_category="stripes",
        predicted_category="circles",
        confidence=0.9,
        model_version=rt.encoder.version,
        votes={"circles": 0.9, "stripes": 0.1},
        evidence=[Neighbour(image_id="circles-0", score=0.9, category="circles")],
        source_event_id="e1",
    )
    assert rt.alerts.add(alert)
    rt.ledger.record(  # a dead letter, as the worker's writer leaves it
        DeadLetter.for_message(
            ConsumedMessage("uploads", 0, 7, b"https://x/a.jpg"), FetchError("HTTP 404")
        )
    )
    yield rt
    rt.close()


@pytest.fixture
def api(runtime: Runtime) -> Iterator[Api]:
    opened = open_api(runtime)
    yield opened
    close_api(opened)


@pytest.fixture
def secured(runtime: Runtime) -> Iterator[Api]:
    opened = open_api(runtime, api_read_tokens=SecretStr(READ), api_admin_tokens=SecretStr(ADMIN))
    yield opened
    close_api(opened)


# --- the route table, the app and the document ---------------------------------------------------


def test_the_route_table_is_what_the_app_serves(api: Api) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in api.client.server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == {(route.method, route.path) for route in ROUTES}


def test_the_openapi_document_is_valid_and_covers_every_route(api: Api) -> None:
    status, document, _ = api.call("GET", "/openapi.json", token=None)
    assert status == 200 and document == json.loads(json.dumps(openapi_document()))
    validate(document)
    documented = {
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    }
    assert documented == {(route.method, route.path) for route in ROUTES}
    schemas = document["components"]["schemas"]
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["x-role"] == route.role
        assert (operation["security"] == []) == (route.role == "open")
        assert str(route.status) in operation["responses"]
        for model in (route.body, route.form, route.answer):
            if model is not None:  # every field of every request model is described
                assert set(model.model_fields) <= set(schemas[model.__name__]["properties"])
        if route.query is not None:
            names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            assert names == set(route.query.model_fields)
        for name in re.findall(r"{(\w+)}", route.path):
            assert {"name": name, "in": "path"}.items() <= operation["parameters"][0].items()
    search = document["paths"]["/search"]["post"]["requestBody"]["content"]
    assert set(search) == {"application/json", "multipart/form-data", "image/*"}
    assert "image" in search["multipart/form-data"]["schema"]["required"]


def test_answers_fit_their_documented_models(api: Api) -> None:
    status, body, _ = api.call("GET", "/health")
    HealthAnswer.model_validate(body)
    status, body, _ = api.call("GET", "/ready")
    assert ReadyAnswer.model_validate(body).ready
    status, body, _ = api.call(
        "POST", "/search", data={"image": image_bytes("circles", 9), "k": "3"}
    )
    answer = SearchAnswer.model_validate(body)
    assert answer.results[0].category == "circles" and answer.results[0].rank == 1
    status, body, _ = api.call("POST", "/search", json={"image_id": "circles-0", "k": 2})
    SearchAnswer.model_validate(body)
    click = {"search_id": answer.search_id, "image_id": answer.results[0].image_id, "rank": 1}
    status, body, _ = api.call("POST", "/clicks", json=click)
    assert status == 202 and ClickAnswer.model_validate(body).accepted
    status, body, _ = api.call("GET", "/dead-letters?limit=5")
    assert DeadLettersAnswer.model_validate(body).dead_letters[0].stage == "fetch"
    status, body, _ = api.call("GET", "/alerts")
    alerts = AlertsAnswer.model_validate(body).alerts
    assert [a.image_id for a in alerts] == ["stripes-0"]
    status, body, _ = api.call("GET", f"/alerts/{alerts[0].alert_id}")
    assert StoredAlert.model_validate(body).status == "open"
    status, body, _ = api.call(
        "POST", f"/alerts/{alerts[0].alert_id}/review", json={"decision": "dismissed"}
    )
    reviewed = ReviewedAlert.model_validate(body)
    assert reviewed.status == "dismissed" and reviewed.index_corrected is False


# --- the page and its files ---------------------------------------------------------------------


def test_the_console_page_and_its_files_are_served_open(secured: Api) -> None:
    status, page, headers = secured.call("GET", "/", token=None, raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    html = page.decode()
    for name in re.findall(r'(?:src|href)="/console/([^"]+)"', html):
        status, body, headers = secured.call("GET", f"/console/{name}", token=None, raw=True)
        assert status == 200 and body == console.asset(name).body
        assert headers["Content-Type"].split(";")[0] == console.ASSETS[name]
    status, docs, _ = secured.call("GET", "/docs", token=None, raw=True)
    assert status == 200 and b"/console/docs.js" in docs
    # Only the listed files: no path leaves the folder (an unknown route needs a token).
    status, body, _ = secured.call("GET", "/console/..%2F__init__.py", token=None)
    assert status == 404 and "error" in body
    assert secured.call("GET", "/console/../../settings.py", token=None)[0] == 401
    status, body, _ = secured.call("GET", "/console/nope.js", token=None)
    assert status == 404


def test_the_console_files_ship_with_the_package_and_load_nothing_from_elsewhere() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["lookalike.console"]
    static = ROOT / "src" / "lookalike" / "console" / "static"
    on_disk = sorted(p.name for p in static.iterdir())
    assert on_disk == console.files()  # nothing unused, nothing missing
    for name in on_disk:
        assert any(fnmatch(f"static/{name}", g) for g in globs), name
        text = (static / name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name  # no CDN
        assert not re.search(r"\burl\((['\"]?)https?:", text), name
        assert "<script>" not in text  # the policy allows no inline script


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_need_a_read_token_and_agree_with_stats(secured: Api) -> None:
    status, body, _ = secured.call("GET", "/metrics", token=None)
    assert status == 401 and "token" in body["error"]
    status, _, _ = secured.call("POST", "/search", token=READ, json={"image_id": "circles-1"})
    assert status == 200
    status, text, headers = secured.call("GET", "/metrics", token=READ, raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    status, stats, _ = secured.call("GET", "/stats", token=ADMIN)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    for version, count in stats["indexed"].items():
        assert samples[("lookalike_indexed_images", (("version", version),))] == count
    for stage, count in stats["dead_letters_by_stage"].items():
        assert samples[("lookalike_dead_letters_total", (("stage", stage),))] == count
    for status_name, count in stats["alerts"].items():
        assert samples[("lookalike_alerts", (("status", status_name),))] == count
    logged = samples[("lookalike_searches_total", (("logged", "true"),))]
    assert logged == stats["api"]["searches_logged"] >= 1
    assert samples[("lookalike_search_duration_seconds_count", (("query", "image_id"),))] >= 1
    assert samples[("lookalike_ready", ())] == 1


# --- thumbnails -----------------------------------------------------------------------------------


def test_thumbnails_of_indexed_images(secured: Api) -> None:
    status, body, _ = secured.call("GET", "/thumbnails/circles-1?size=48", token=None)
    assert status == 401
    status, data, headers = secured.call(
        "GET", "/thumbnails/circles-1?size=48", token=READ, raw=True
    )
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(data)).size) == 48
    again = secured.call(
        "GET",
        "/thumbnails/circles-1?size=48",
        token=READ,
        raw=True,
        headers={"If-None-Match": headers["Etag"]},
    )
    assert again[0] == 304
    status, body, _ = secured.call("GET", "/thumbnails/nope", token=READ)
    assert status == 404 and "nope" in body["error"]
    status, body, _ = secured.call("GET", "/thumbnails/circles-1?size=5000", token=READ)
    assert status == 400 and "size" in body["error"]


def test_a_thumbnail_source_goes_through_the_fetch_guard(api: Api, runtime: Runtime) -> None:
    # An image indexed from a URL that now points at the worker's own machine (DNS changed,
    # say): the thumbnail is refused as indexing would refuse it, and no request is made.
    version = runtime.index.serving_version()
    assert version is not None
    payload: dict[str, Any] = {
        "image_id": "inside",
        "category": "circles",
        "source_kind": "url",
        "source": "http://127.0.0.1:9/secret.jpg",
        "content_sha256": "ab" * 32,
    }
    runtime.index.upsert(
        version, [IndexPoint("inside", np.ones(runtime.encoder.dim, np.float32), payload)]
    )
    status, body, _ = api.call("GET", "/thumbnails/inside")
    assert status == 422 and "refused" in body["error"] and "LOOKALIKE_FETCH_ALLOW" in body["error"]


def test_the_learning_loops_decisions_are_served_to_the_console(api: Api, runtime: Runtime) -> None:
    from lookalike.learning import DecisionLog

    assert api.call("GET", "/learn")[1] == {"decisions": []}  # the loop never ran here
    log = DecisionLog(runtime.settings.learn_path)
    log.record("trained", "head of efficientnet-lite0 on 40 pairs", "cand-1", {"pairs_total": 44})
    log.record("refused", "worse on the holdout: mAP 0.5 < serving 0.6", "cand-1")
    log.close()
    status, body, _ = api.call("GET", "/learn", params={"limit": 1})
    assert status == 200 and [d["kind"] for d in body["decisions"]] == ["refused"]
    assert body["decisions"][0]["reason"].startswith("worse on the holdout")
    assert api.call("GET", "/learn", params={"limit": 0})[0] == 400
    script = (ROOT / "src/lookalike/console/static/console.js").read_text()
    assert 'api("/learn?limit=10")' in script
