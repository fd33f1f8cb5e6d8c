"""Category validation on the running stack: a mismatched upload raises an alert with evidence,
a correct one does not, a brand-new category is not judged, one exemplar makes a new category
work, and a confirmed alert corrects the index."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imagegen import CATEGORIES, image_bytes

from lookalike.events import ImageUploaded, InlineSource
from lookalike.kafka.publisher import UploadPublisher
from lookalike.kafka.topic_reader import read_topic
from lookalike.settings import Settings

from .stack import LookalikeProcess, clean_env, wait_for

PER_CATEGORY = 8


class Stack:
    def __init__(self, worker: LookalikeProcess, settings: Settings, bootstrap: str) -> None:
        self.worker, self.settings, self.bootstrap = worker, settings, bootstrap

    def upload(self, image_id: str, declared: str, data: bytes, seller: str = "s1") -> None:
        with UploadPublisher(self.settings, self.bootstrap) as publisher:
            publisher.publish(
                ImageUploaded(
                    image_id=image_id,
                    listing_id=f"l-{image_id}",
                    seller_id=seller,
                    category=declared,
                    image=InlineSource(data=data),
                )
            )
            publisher.flush()

    def alerts(self, **params: str) -> list[dict]:
        return httpx.get(f"{self.worker.url}/alerts", params=params, timeout=10).json()["alerts"]

    def wait_indexed(self, image_id: str) -> dict:
        return wait_for(
            lambda: (
                (r := httpx.get(f"{self.worker.url}/images/{image_id}", timeout=10)).status_code
                == 200
                and r.json()
            ),
            60,
            f"{image_id} indexed",
        )


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("alerts")
    prefix = f"va-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        LOOKALIKE_KAFKA_BOOTSTRAP=broker,
        LOOKALIKE_TOPIC_PREFIX=prefix,
        LOOKALIKE_APP_ID=prefix,
        LOOKALIKE_VALIDATION_MIN_EXAMPLES="3",
    )
    worker = LookalikeProcess("worker", root / "data", env).start()
    settings = Settings(kafka_bootstrap=broker, topic_prefix=prefix, data_dir=root / "client")
    stack = Stack(worker, settings, broker)
    with UploadPublisher(settings, broker) as publisher:
        for category in CATEGORIES:
            for seed in range(PER_CATEGORY):
                publisher.publish(
                    ImageUploaded(
                        image_id=f"{category}-{seed}",
                        listing_id=f"l-{category}-{seed}",
                        seller_id="catalogue",
                        category=category,
                        image=InlineSource(data=image_bytes(category, seed)),
                    )
                )
        publisher.flush()
    wait_for(lambda: worker.indexed() == PER_CATEGORY * len(CATEGORIES), 120, "catalogue")
    try:
        yield stack
    finally:
        assert worker.stop() == 0


def test_mismatched_upload_raises_an_alert_with_evidence(stack: Stack) -> None:
    stack.upload("wrong-1", "circles", image_bytes("stripes", 500), seller="cheater")
    alert = wait_for(lambda: stack.alerts(seller_id="cheater"), 60, "an alert")[0]
    assert alert["image_id"] == "wrong-1"
    assert alert["declared_category"] == "circles"
    assert alert["predicted_category"] == "stripes"
    assert 0.85 <= alert["confidence"] <= 1.0
    assert alert["evidence"] and alert["evidence"][0]["category"] == "stripes"
    assert alert["evidence"][0]["image_id"].startswith("stripes-")
    assert alert["status"] == "open"
    # The upload is indexed all the same, and the alert is on the alerts topic.
    assert stack.wait_indexed("wrong-1")["category"] == "circles"
    on_topic = [
        json.loads(r.value) for r in read_topic(stack.bootstrap, stack.settings.alerts_topic)
    ]
    assert [a["image_id"] for a in on_topic].count("wrong-1") == 1


def test_correct_upload_and_brand_new_category_raise_none(stack: Stack) -> None:
    stack.upload("right-1", "checkers", image_bytes("checkers", 501), seller="honest")
    stack.upload("new-1", "triangles", image_bytes("triangles", 1), seller="pioneer")
    stack.wait_indexed("right-1")
    stack.wait_indexed("new-1")
    assert stack.alerts(seller_id="honest") == []
    assert stack.alerts(seller_id="pioneer") == []
    validation = stack.worker.stats()["validation"]
    assert validation.get("cannot_judge", 0) >= 1 and validation.get("ok", 0) >= 1


def test_one_exemplar_makes_a_new_category_work(stack: Stack, tmp_path: Path) -> None:
    exemplar = tmp_path / "triangle.jpg"
    exemplar.write_bytes(image_bytes("triangles", 7))
    response = httpx.post(
        f"{stack.worker.url}/exemplars",
        timeout=60,
        files={"image": ("t.jpg", exemplar.read_bytes())},
        data={"category": "triangles"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["exemplars"] == 1
    stack.upload("tri-as-circle", "circles", image_bytes("triangles", 8), seller="mixup")
    alert = wait_for(lambda: stack.alerts(seller_id="mixup"), 60, "an alert")[0]
    assert alert["predicted_category"] == "triangles"
    assert any(e["exemplar"] for e in alert["evidence"])


def test_confirmed_alert_corrects_the_index(stack: Stack) -> None:
    stack.upload("wrong-2", "checkers", image_bytes("circles", 502), seller="fixme")
    alert = wait_for(lambda: stack.alerts(seller_id="fixme"), 60, "an alert")[0]
    reviewed = httpx.post(
        f"{stack.worker.url}/alerts/{alert['alert_id']}/review",
        json={"decision": "confirmed", "note": "it is circles"},
        timeout=30,
    )
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["status"] == "confirmed" and reviewed.json()["index_corrected"]
    record = httpx.get(f"{stack.worker.url}/images/wrong-2", timeout=10).json()
    assert record["category"] == "circles" and record["declared_category"] == "checkers"
    assert stack.alerts(status="confirmed")[0]["alert_id"] == alert["alert_id"]
    bad = httpx.post(
        f"{stack.worker.url}/alerts/{alert['alert_id']}/review",
        json={"decision": "maybe"},
        timeout=10,
    )
    assert bad.status_code == 400
