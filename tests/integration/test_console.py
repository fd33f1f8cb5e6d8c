"""The console in a real browser against a real worker: headless Debian chromium (installed by
scripts/setup.sh) driven by Playwright, a real Tansu broker, a real `lookalike worker`
subprocess with the default encoder and the embedded index, and tokens on the API.

It uploads a query image and sees its neighbours, clicks a result and finds the click on the
clicks topic (and the click loop counting it), confirms an alert and finds the category changed
in the index, watches the pipeline, starts and aborts a rollout with the admin token, is refused
what a read token may not see, reads the API reference, compares /metrics with /stats, and
finally works against the same worker restarted without tokens (open API on loopback).

Screenshots of each view are written to a temporary folder, and to docs/ (the README shows
them) when LOOKALIKE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from imagegen import CATEGORIES, image_bytes
from prometheus_client.parser import text_string_to_metric_families

from lookalike.api import ROUTES
from lookalike.events import ImageUploaded, InlineSource
from lookalike.kafka.publisher import UploadPublisher
from lookalike.kafka.topic_reader import read_topic
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

CHROMIUM = "/usr/bin/chromium"
# The page runs under its Content-Security-Policy (no eval): waits are given as functions.
READ, ADMIN = "console-read-token", "console-admin-token"
PER_CATEGORY = 8
SIZE = 160  # pixels of the synthetic catalogue images
WAIT_MS = 60_000
DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Stack:
    worker: LookalikeProcess
    settings: Settings
    bootstrap: str
    env: dict[str, str]
    files: Path
    shots: Path
    uploads: int  # messages published to the uploads topic

    def get(self, path: str, token: str | None = ADMIN) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(f"{self.worker.url}{path}", headers=headers, timeout=30)
        response.raise_for_status()
        return response.json() if "json" in response.headers["Content-Type"] else response.text


def _upload(image_id: str, category: str, data: bytes, seller: str) -> ImageUploaded:
    return ImageUploaded(
        image_id=image_id,
        listing_id=f"l-{image_id}",
        seller_id=seller,
        category=category,
        image=InlineSource(data=data),
    )


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("console")
    prefix = f"console-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_VALIDATION_MIN_EXAMPLES="3",
        LOOKALIKE_COMPILE="false",  # start-up in seconds; the compiled path is tested elsewhere
        LOOKALIKE_API_READ_TOKENS=READ,
        LOOKALIKE_API_ADMIN_TOKENS=ADMIN,
    )
    worker = LookalikeProcess("worker", root / "data", env).start()
    settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=root / "client")
    with UploadPublisher(settings, broker) as publisher:
        for category in CATEGORIES:
            for seed in range(PER_CATEGORY):
                data = image_bytes(category, seed, size=SIZE)
                publisher.publish(
                    _upload(f"{category}-{seed}", category, data, f"seller-{seed % 3}")
                )
        publisher.publish_raw(b"broken", b"{this is not an event")  # a dead letter: parse
        publisher.flush()
    stack = Stack(
        worker, settings, broker, env, root / "files", root / "shots", PER_CATEGORY * 3 + 1
    )
    stack.files.mkdir()
    stack.shots.mkdir()
    catalogue = PER_CATEGORY * len(CATEGORIES)
    wait_for(lambda: stack.get("/stats")["worker"]["events_consumed"] == stack.uploads, 120, "all")
    # An upload that does not look like its declared category: an alert to review.
    with UploadPublisher(settings, broker) as publisher:
        publisher.publish(
            _upload("wrong-1", "circles", image_bytes("stripes", 500, size=SIZE), "cheater")
        )
        publisher.flush()
    stack.uploads += 1
    wait_for(lambda: stack.get("/alerts?seller_id=cheater")["alerts"], 60, "the alert")
    serving = stack.get("/stats")["serving_version"]
    assert stack.get("/stats")["indexed"][serving] == catalogue + 1
    try:
        yield stack
    finally:
        assert stack.worker.stop() == 0, stack.worker.log_tail()  # restarted by the last test


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/setup.sh (as root) or apt-get install chromium"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The page runs under its own Content-Security-Policy: a violation is a bug of the page.
    page.on(
        "console",
        lambda m: (
            m.type == "error" and "Content Security Policy" in m.text and errors.append(m.text)
        ),
    )
    page.on("dialog", lambda dialog: dialog.accept())  # the rollout steps ask to confirm
    page.goto(f"{stack.worker.url}/#search")
    yield page
    context.close()
    assert not errors, errors  # no script error, no policy violation, on any view


def shot(page: Any, stack: Stack, name: str, full_page: bool = True) -> None:
    path = stack.shots / f"console-{name}.png"
    page.evaluate("() => { const m = document.querySelector('#message'); if (m) m.hidden = true; }")
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("LOOKALIKE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(path, DOCS / path.name)


def use_token(page: Any, token: str, role: str) -> None:
    page.fill("#token", token)
    page.click("#token-save")
    page.wait_for_function(
        "role => document.querySelector('#role').dataset.role === role", arg=role
    )


def topic(stack: Stack, name: str) -> list[Any]:
    """The topic's records, read in another thread (Playwright's sync API holds an event loop
    in this one)."""
    with ThreadPoolExecutor(1) as reader:
        return reader.submit(read_topic, stack.bootstrap, name).result()


def text_has(page: Any, selector: str, text: str, timeout: float | None = None) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.textContent || '').includes(t)",
        arg=[selector, text],
        timeout=timeout,
    )


def search_by_id(page: Any, image_id: str) -> list[dict[str, str]]:
    """Search by id through the form; the results once this search's thumbnails are shown."""
    before = page.get_attribute("#search-status", "data-search-id")
    page.fill("#image-id", image_id)
    page.click("#search-by-id")
    page.wait_for_function(
        "before => document.querySelector('#search-status').dataset.searchId !== before",
        arg=before,
    )
    page.wait_for_function(
        "() => document.querySelectorAll('.result img[src^=\"blob:\"]').length >= 5"
    )
    return results(page)


def results(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        ".result",
        """cards => cards.map(c => ({
            id: c.dataset.imageId,
            category: c.querySelector('.category').textContent,
            loaded: (c.querySelector('img').getAttribute('src') || '').startsWith('blob:'),
        }))""",
    )


def test_a_query_image_finds_its_neighbours_and_a_click_reaches_the_click_loop(
    page: Any, stack: Stack
) -> None:
    assert page.text_content("#role") == "token needed"  # the API has tokens; none given yet
    use_token(page, ADMIN, "admin")
    query = stack.files / "query-circles.jpg"
    query.write_bytes(image_bytes("circles", 900, size=SIZE))
    page.set_input_files("#pick", str(query))
    page.wait_for_selector(".result img[src^='blob:']")
    page.wait_for_function(
        "() => document.querySelectorAll('.result img[src^=\"blob:\"]').length === 12"
    )
    found = results(page)
    assert len(found) == 12 and all(r["loaded"] for r in found)
    assert [r["category"] for r in found[:5]] == ["circles"] * 5, found
    search_id = page.get_attribute("#search-status", "data-search-id")
    assert search_id
    shot(page, stack, "search")

    # A buyer opens the first result: the page reports it as a marketplace front end would.
    page.click(".result .open >> nth=0")
    page.wait_for_selector(".result.clicked")

    def the_click() -> dict | None:
        clicks = [json.loads(r.value) for r in topic(stack, stack.settings.clicks_topic)]
        return next((c for c in clicks if c["search_id"] == search_id), None)

    click = wait_for(the_click, 60, "the click on the clicks topic")
    assert (click["image_id"], click["rank"]) == (found[0]["id"], 1)
    assert click["session_id"].startswith("console-")
    # The click loop joins it to the logged search: the version's CTR counts it.
    version = stack.get("/stats")["serving_version"]
    wait_for(
        lambda: stack.get("/stats")["online"].get(version, {}).get("clicked_searches", 0) >= 1,
        60,
        "the click loop to count the click",
    )


def test_more_like_this_searches_by_the_result_id(page: Any, stack: Stack) -> None:
    before = page.get_attribute("#search-status", "data-search-id")
    target = results(page)[1]["id"]
    page.click(".result .more >> nth=1")
    page.wait_for_function(
        "before => document.querySelector('#search-status').dataset.searchId !== before",
        arg=before,
    )
    page.wait_for_selector(".result img[src^='blob:']")
    assert page.input_value("#image-id") == target
    ids = [r["id"] for r in results(page)]
    assert target not in ids and len(ids) == 12  # more like it, never itself


def test_filters_narrow_the_results(page: Any, stack: Stack) -> None:
    before = page.get_attribute("#search-status", "data-search-id")
    page.fill("#filter-category", "checkers")
    page.fill("#k", "5")
    page.click("#search-again")  # the last search (by id), with the filter
    page.wait_for_function(
        "before => document.querySelector('#search-status').dataset.searchId !== before",
        arg=before,
    )
    found = results(page)
    assert len(found) == 5 and {r["category"] for r in found} == {"checkers"}
    page.fill("#filter-category", "")
    page.fill("#k", "12")


def test_confirming_an_alert_corrects_the_category_in_the_index(page: Any, stack: Stack) -> None:
    page.click("a[data-view=alerts]")
    card = ".alert[data-image-id='wrong-1']"
    page.wait_for_selector(f"{card} .upload img[src^='blob:']")
    page.wait_for_function(
        f"() => document.querySelectorAll(\"{card} .evidence img[src^='blob:']\").length >= 4"
    )
    assert page.text_content(f"{card} .declared") == "circles"
    assert page.text_content(f"{card} .predicted") == "stripes"
    shares = page.eval_on_selector_all(f"{card} .vote", "vs => vs.map(v => v.dataset.category)")
    assert shares[0] == "stripes"  # the largest share first
    shot(page, stack, "alerts")
    page.fill(f"{card} .note", "the picture shows stripes")
    page.click(f"{card} button.confirm")
    page.wait_for_selector(f"{card}.confirmed .reviewed")
    assert "corrected to stripes" in page.text_content(f"{card} .reviewed")
    record = stack.get("/images/wrong-1")
    assert record["category"] == "stripes" and record["declared_category"] == "circles"
    assert (
        stack.get("/alerts?seller_id=cheater")["alerts"][0]["note"] == "the picture shows stripes"
    )


def test_the_pipeline_view_shows_indexing_lag_and_dead_letters(page: Any, stack: Stack) -> None:
    page.click("a[data-view=pipeline]")
    page.wait_for_selector("#ready-state.good")
    page.wait_for_function(
        "n => [...document.querySelectorAll('#indexed .count')].some(c => c.textContent === n)",
        arg=str(PER_CATEGORY * len(CATEGORIES) + 1),
    )
    page.wait_for_selector(f"#lag .lag[data-topic='{stack.settings.uploads_topic}']")
    page.wait_for_function(
        "() => !document.querySelector('#events-rate').textContent.startsWith('–')"
    )
    page.wait_for_selector("#dead-letters .badge:text('parse')")
    assert "malformed JSON" in page.text_content("#dead-letters")
    assert "parse" in page.text_content("#dead-letter-stages")
    shot(page, stack, "pipeline")


def test_the_rollout_view_starts_and_aborts_a_candidate(page: Any, stack: Stack) -> None:
    page.click("a[data-view=rollout]")
    page.wait_for_selector("#versions .state-serving")
    page.fill("#rollout-encoder", "efficientnet-lite1")
    page.click("#rollout-start button")
    page.wait_for_selector("#backfill-progress")
    page.wait_for_function(
        "() => document.querySelector('#candidate').textContent.includes('backfill done')",
        timeout=180_000,
    )
    page.wait_for_selector("#gate.good")  # the gate as it is now: the candidate may be promoted
    candidate = stack.get("/rollout/status?quick=1")["candidate"]
    assert candidate and candidate.startswith("efficientnet-lite1")
    shot(page, stack, "rollout")
    page.click("#rollout-abort")
    page.wait_for_function(
        "() => document.querySelector('#candidate').textContent.includes('No candidate')"
    )
    states = {v["version"]: v["state"] for v in stack.get("/versions")["versions"]}
    assert states[candidate] == "aborted"


def test_the_api_reference_lists_every_route(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.worker.url}/docs")
    page.wait_for_selector(".operation[data-path]")
    drawn = page.eval_on_selector_all(
        ".operation[data-path]", "ops => ops.map(o => [o.dataset.method, o.dataset.path])"
    )
    assert sorted((m.upper(), p) for m, p in drawn) == sorted((r.method, r.path) for r in ROUTES)
    shot(page, stack, "docs", full_page=False)  # the first screen of a long page
    page.goto(f"{stack.worker.url}/#search")


def test_a_read_token_searches_but_sees_no_admin_view(page: Any, stack: Stack) -> None:
    use_token(page, READ, "read")
    assert search_by_id(page, "stripes-1")[0]["category"] == "stripes"
    page.click("a[data-view=alerts]")
    page.wait_for_selector("#alerts:has-text('admin token')")
    page.click("a[data-view=pipeline]")
    page.wait_for_selector("#ready-state")  # /ready is open
    page.wait_for_selector("#throughput:has-text('admin token')")
    use_token(page, "not-a-token", "none")
    assert page.text_content("#role") == "token refused"


def test_metrics_agree_with_stats_on_a_real_worker(stack: Stack) -> None:
    # Everything consumed and the lag measured since (every 5 s).
    def settled() -> dict | None:
        stats = stack.get("/stats")
        lag = stats["consumer_lag"]
        uploads = [p for p in lag["partitions"] if p["topic"] == stack.settings.uploads_topic]
        done = stats["worker"]["events_consumed"] == stack.uploads and uploads
        return stats if done and all(p["lag"] == 0 for p in uploads) else None

    wait_for(settled, 60, "the uploads consumed and the lag measured")
    text = stack.get("/metrics", token=READ)
    stats = stack.get("/stats")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    worker = stats["worker"]
    assert samples[("lookalike_events_consumed_total", ())] == worker["events_consumed"]
    for outcome in ("indexed", "updated", "removed"):
        key = ("lookalike_image_events_total", (("outcome", outcome),))
        assert samples[key] == worker[f"images_{outcome}"]
    assert samples[("lookalike_batches_total", ())] == worker["batches"] > 0
    for version, count in stats["indexed"].items():
        assert samples[("lookalike_indexed_images", (("version", version),))] == count
    for stage, count in stats["dead_letters_by_stage"].items():
        assert samples[("lookalike_dead_letters_total", (("stage", stage),))] == count
    assert stats["dead_letters_by_stage"]["parse"] == 1
    for status, count in stats["alerts"].items():
        assert samples[("lookalike_alerts", (("status", status),))] == count
    assert stats["alerts"]["confirmed"] == 1
    accepted = samples[("lookalike_clicks_received_total", (("outcome", "accepted"),))]
    assert accepted == stats["api"]["clicks_accepted"] >= 1
    for version, row in stats["online"].items():
        key = ("lookalike_online_clicked_searches_total", (("version", version),))
        assert samples[key] == row["clicked_searches"]
    assert samples[("lookalike_batch_stage_duration_seconds_count", (("stage", "embed"),))] >= 1
    # Lag is honest against Tansu: the uploads topic's end offsets add up to what was published
    # (Tansu itself answers "base offset of the last batch + 1"), and nothing is left to do.
    uploads = [
        p for p in stats["consumer_lag"]["partitions"] if p["topic"] == stack.settings.uploads_topic
    ]
    assert sum(p["end_offset"] for p in uploads) == stack.uploads
    for p in uploads:
        labels = (("partition", str(p["partition"])), ("topic", p["topic"]))
        assert samples[("lookalike_consumer_lag_messages", labels)] == 0
        assert samples[("lookalike_consumer_end_offset", labels)] == p["end_offset"]


def test_without_tokens_the_page_works_on_loopback(page: Any, stack: Stack) -> None:
    """The same worker, restarted with no tokens (an open API, allowed on loopback only)."""
    assert stack.worker.stop() == 0
    env = {k: v for k, v in stack.env.items() if "_TOKENS" not in k}
    stack.worker = LookalikeProcess(
        "worker", stack.worker.data_dir, env, port=stack.worker.port
    ).start()
    page.goto(f"{stack.worker.url}/#search")
    page.click("#token-forget")
    page.wait_for_function("() => document.querySelector('#role').textContent === 'open API'")
    assert search_by_id(page, "checkers-2")[0]["category"] == "checkers"
    page.click("a[data-view=alerts]")
    page.select_option("#alert-status", "confirmed")
    page.wait_for_selector(".alert.confirmed[data-image-id='wrong-1']")
