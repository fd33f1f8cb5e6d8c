"""Unit tests for lookalike.consumers.alerts: the SQLite alert store and the alert writer
(send to the topic, then store; a replayed upload raises its alert once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lookalike.consumers.alerts import AlertStore, AlertWriter
from lookalike.events import CategoryAlert, Neighbour

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REVIEW_FIELDS = ("status", "reviewed_at", "note")


def make_alert(
    image_id: str,
    event_id: str | None = None,
    *,
    seller: str = "s1",
    declared: str = "shoes",
    predicted: str = "bags",
    minutes: int = 0,
) -> CategoryAlert:
    return CategoryAlert(
        image_id=image_id,
        listing_id=f"listing-{image_id}",
        seller_id=seller,
        declared_category=declared,
        predicted_category=predicted,
        confidence=0.93,
        model_version="m-v1",
        votes={predicted: 0.95, declared: 0.05},
        prototype_scores={predicted: 0.9, declared: 0.2},
        evidence=[
            Neighbour(image_id="n-1", score=0.97, category=predicted, seller_id="s7"),
            Neighbour(image_id="ex-1", score=0.91, category=predicted, exemplar=True),
        ],
        source_event_id=event_id or f"evt-{image_id}",
        raised_at=T0 + timedelta(minutes=minutes),
    )


def record_of(row: dict) -> CategoryAlert:
    return CategoryAlert.model_validate({k: v for k, v in row.items() if k not in REVIEW_FIELDS})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "a.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[AlertStore]:
    s = AlertStore(path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def filled(store: AlertStore) -> list[CategoryAlert]:
    """Four alerts, added out of time order."""
    alerts = [
        make_alert("img-2", seller="s1", declared="shoes", predicted="bags", minutes=2),
        make_alert("img-0", seller="s1", declared="hats", predicted="shoes", minutes=0),
        make_alert("img-3", seller="s2", declared="bags", predicted="shoes", minutes=3),
        make_alert("img-1", seller="s2", declared="shirts", predicted="dresses", minutes=1),
    ]
    for a in alerts:
        assert store.add(a) is True
    return alerts


# --- store -----------------------------------------------------------------------------------


def test_add_once_per_upload(store: AlertStore) -> None:
    first = make_alert("img-1", "evt-9")
    assert store.add(first) is True
    replay = make_alert("img-1", "evt-9", predicted="hats")  # a new alert id, same upload
    assert replay.alert_id != first.alert_id
    assert store.add(replay) is False
    assert store.add(first) is False
    rows = store.list()
    assert [r["alert_id"] for r in rows] == [first.alert_id]
    assert rows[0]["predicted_category"] == "bags"
    assert store.get(replay.alert_id) is None
    # A new upload of the same image (a new event) may raise a new alert.
    assert store.add(make_alert("img-1", "evt-10")) is True
    assert store.counts() == {"open": 2}


def test_exists(store: AlertStore) -> None:
    assert not store.exists("img-1", "evt-1")
    store.add(make_alert("img-1", "evt-1"))
    assert store.exists("img-1", "evt-1")
    assert not store.exists("img-1", "evt-2")
    assert not store.exists("img-2", "evt-1")


def test_list_latest_first_with_limit(store: AlertStore, filled: list[CategoryAlert]) -> None:
    assert [r["image_id"] for r in store.list()] == ["img-3", "img-2", "img-1", "img-0"]
    assert [r["image_id"] for r in store.list(limit=2)] == ["img-3", "img-2"]
    row = store.list()[0]
    assert row["status"] == "open"
    assert row["reviewed_at"] is None and row["note"] is None
    assert record_of(row) == filled[2]


def test_list_filters(store: AlertStore, filled: list[CategoryAlert]) -> None:
    def ids(**kw: str) -> list[str]:
        return [r["image_id"] for r in store.list(**kw)]

    assert ids(seller_id="s1") == ["img-2", "img-0"]
    assert ids(seller_id="nobody") == []
    # category matches the declared or the predicted category
    assert ids(category="shoes") == ["img-3", "img-2", "img-0"]
    assert ids(category="dresses") == ["img-1"]
    assert ids(category="shoes", seller_id="s2") == ["img-3"]
    assert ids(status="open") == ["img-3", "img-2", "img-1", "img-0"]
    assert ids(status="confirmed") == []
    store.review(filled[0].alert_id, "confirmed", "2024-05-02T00:00:00+00:00", None)
    assert ids(status="confirmed") == ["img-2"]
    assert ids(status="open", category="shoes") == ["img-3", "img-0"]


def test_get(store: AlertStore, filled: list[CategoryAlert]) -> None:
    row = store.get(filled[1].alert_id)
    assert row is not None
    assert record_of(row) == filled[1]
    assert row["evidence"][1] == {
        "image_id": "ex-1",
        "score": 0.91,
        "category": "shoes",
        "seller_id": None,
        "exemplar": True,
    }
    assert store.get("no-such-alert") is None


def test_review(store: AlertStore, filled: list[CategoryAlert]) -> None:
    target = filled[3].alert_id
    assert store.review(target, "dismissed", "2024-05-02T10:00:00+00:00", "a shirt, really")
    row = store.get(target)
    assert row is not None
    assert (row["status"], row["reviewed_at"], row["note"]) == (
        "dismissed",
        "2024-05-02T10:00:00+00:00",
        "a shirt, really",
    )
    assert store.review("no-such-alert", "confirmed", "2024-05-02T10:00:00+00:00", None) is False
    store.review(filled[0].alert_id, "confirmed", "2024-05-02T11:00:00+00:00", None)
    assert store.counts() == {"open": 2, "dismissed": 1, "confirmed": 1}
    # A second review overrides the first.
    store.review(target, "confirmed", "2024-05-03T10:00:00+00:00", None)
    assert store.counts() == {"open": 2, "confirmed": 2}
    assert store.get(target)["note"] is None  # type: ignore[index]


def test_counts_empty(store: AlertStore) -> None:
    assert store.counts() == {}
    assert store.list() == []


def test_survives_reopen(path: Path) -> None:
    first = AlertStore(path)
    alerts = [make_alert(f"img-{i}", minutes=i) for i in range(3)]
    for a in alerts:
        first.add(a)
    first.review(alerts[0].alert_id, "confirmed", "2024-05-02T00:00:00+00:00", "yes")
    first.close()

    reopened = AlertStore(path)
    try:
        assert [r["alert_id"] for r in reopened.list()] == [a.alert_id for a in alerts[::-1]]
        assert reopened.counts() == {"open": 2, "confirmed": 1}
        assert reopened.get(alerts[0].alert_id)["note"] == "yes"  # type: ignore[index]
        assert reopened.exists("img-1", "evt-img-1")
        assert reopened.add(make_alert("img-1")) is False  # still a replay after a restart
    finally:
        reopened.close()


# --- writer ----------------------------------------------------------------------------------


class FakeSend:
    """An async producer send: records (key, value), or raises while ``failing``."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def __call__(self, key: bytes | None, value: bytes) -> None:
        if self.failing:
            raise ConnectionError("broker unreachable")
        self.sent.append((key, value))


async def test_writer_sends_then_stores(store: AlertStore) -> None:
    send = FakeSend()
    writer = AlertWriter(send, store)
    alert = make_alert("img-1", "evt-1")
    assert await writer.write(alert) is True
    assert len(send.sent) == 1
    key, value = send.sent[0]
    assert key == b"img-1"
    assert CategoryAlert.model_validate_json(value) == alert
    assert json.loads(value)["type"] == "category_alert"
    assert store.exists("img-1", "evt-1")
    assert record_of(store.get(alert.alert_id) or {}) == alert


async def test_writer_does_not_resend_a_replay(store: AlertStore) -> None:
    send = FakeSend()
    writer = AlertWriter(send, store)
    assert await writer.write(make_alert("img-1", "evt-1")) is True
    assert await writer.write(make_alert("img-1", "evt-1")) is False
    assert len(send.sent) == 1
    assert store.counts() == {"open": 1}
    assert await writer.write(make_alert("img-1", "evt-2")) is True  # a new upload
    assert len(send.sent) == 2


async def test_writer_stores_nothing_when_send_fails(store: AlertStore) -> None:
    send = FakeSend(failing=True)
    writer = AlertWriter(send, store)
    alert = make_alert("img-1", "evt-1")
    with pytest.raises(ConnectionError):
        await writer.write(alert)
    assert not store.exists("img-1", "evt-1")
    assert store.list() == []
    # The retry (the batch is processed again) sends and stores it.
    send.failing = False
    assert await writer.write(alert) is True
    assert len(send.sent) == 1
    assert store.exists("img-1", "evt-1")
