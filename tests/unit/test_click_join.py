"""The click -> search join and the pair files: dedupe, negatives, rejections, restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lookalike.clicks import ClickJoin, PairFileWriter, read_pairs
from lookalike.events import Click, ConsumedMessage, SearchServed, ServedResult, TrainingPair

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def served(search_id: str = "s1", version: str = "v1", n: int = 5, **kw) -> SearchServed:
    return SearchServed(
        search_id=search_id,
        query_type="image",
        query_content_sha256="ab" * 32,
        model_version=version,
        results=[
            ServedResult(image_id=f"img{r}", rank=r, score=1 - r / 10) for r in range(1, n + 1)
        ],
        served_at=kw.pop("served_at", T0),
        **kw,
    )


def click(image_id: str, search_id: str = "s1", after: float = 5.0, **kw) -> Click:
    return Click(
        search_id=search_id,
        image_id=image_id,
        rank=kw.pop("rank", 1),
        clicked_at=T0 + timedelta(seconds=after),
        **kw,
    )


def source(offset: int, value: bytes = b"{}") -> ConsumedMessage:
    return ConsumedMessage("lookalike.clicks", 0, offset, value)


@pytest.fixture()
def join(tmp_path: Path) -> ClickJoin:
    return ClickJoin(tmp_path / "clicks.sqlite", window=600, grace=30)


def test_click_becomes_a_pair_with_skipped_results_above_as_negatives(join: ClickJoin) -> None:
    join.add_search(served())
    outcome = join.add_click(click("img3", rank=7), source(0), received_at=0)
    assert outcome.kind == "paired" and outcome.pair is not None
    pair = outcome.pair
    assert pair.positive == "img3"
    assert pair.positive_rank == 3  # the served rank, not the reported one
    assert pair.negatives == ["img1", "img2"]
    assert pair.query.content_sha256 == "ab" * 32
    assert pair.model_version == "v1"
    assert pair.pair_id == TrainingPair.id_for("s1", "img3")
    # A second click further down: the earlier click is not a negative.
    second = join.add_click(click("img5"), source(1), received_at=0).pair
    assert second is not None and second.negatives == ["img1", "img2", "img4"]


def test_duplicate_clicks_make_one_pair(join: ClickJoin) -> None:
    join.add_search(served())
    first = click("img2")
    assert join.add_click(first, source(0), received_at=0).kind == "paired"
    assert join.add_click(first, source(0), received_at=0).kind == "duplicate"  # replay
    double = click("img2", after=6)  # a double click: new click id, same search and image
    assert join.add_click(double, source(1), received_at=0).kind == "duplicate"
    assert len(join.unsent()) == 1


def test_click_before_its_search_waits_then_joins(join: ClickJoin) -> None:
    assert join.add_click(click("img1"), source(0), received_at=0).kind == "pending"
    outcomes = join.add_search(served())
    assert [o.kind for o in outcomes] == ["paired"]
    assert join.counts()["pending"] == 0


def test_unknown_search_expires_to_a_rejection(join: ClickJoin) -> None:
    join.add_click(click("img1", search_id="nope"), source(4), received_at=100.0)
    assert join.expire(now=120.0) == []  # still within the grace period
    [rejected] = join.expire(now=131.0)
    assert "unknown" in rejected.reason and rejected.source.offset == 4
    assert join.counts()["pending"] == 0


def test_click_on_an_image_not_shown_or_too_late_is_rejected(join: ClickJoin) -> None:
    join.add_search(served())
    not_shown = join.add_click(click("other"), source(0), received_at=0)
    assert not_shown.kind == "rejected" and "not among the 5 results" in not_shown.rejected.reason
    late = join.add_click(click("img1", after=601), source(1), received_at=0)
    assert late.kind == "rejected" and "click window" in late.rejected.reason


def test_online_metrics_per_version(join: ClickJoin) -> None:
    for i in range(4):
        join.add_search(served(f"a{i}", "v1"))
    join.add_search(served("b0", "v2"))
    join.add_click(click("img2", "a0"), source(0), received_at=0)  # first click at rank 2
    join.add_click(click("img1", "a0"), source(1), received_at=0)  # second: not in MRR
    join.add_click(click("img1", "a1"), source(2), received_at=0)
    metrics = join.online_metrics()
    assert metrics["v1"] == {
        "searches": 4,
        "clicked_searches": 2,
        "clicks": 3,
        "ctr": 0.5,
        "mrr": round((1 / 2 + 1 / 1) / 4, 4),
    }
    assert metrics["v2"]["ctr"] == 0.0 and metrics["v2"]["mrr"] == 0.0


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "clicks.sqlite"
    first = ClickJoin(path, window=600, grace=30)
    first.add_search(served())
    first.add_click(click("img1"), source(0), received_at=0)
    first.close()
    again = ClickJoin(path, window=600, grace=30)
    assert again.add_search(served()) == []  # replayed search: not counted twice
    assert again.add_click(click("img1"), source(0), received_at=0).kind == "duplicate"
    assert again.online_metrics()["v1"]["searches"] == 1
    assert [p.positive for p in again.unsent()] == ["img1"]  # never confirmed sent
    again.mark_sent([p.pair_id for p in again.unsent()])
    assert again.unsent() == []


def _pair(n: int, day: int = 21) -> TrainingPair:
    moment = datetime(2026, 11, day, 10, tzinfo=UTC)
    return TrainingPair(
        pair_id=f"p{n}",
        search_id=f"s{n}",
        query={"image_id": f"q{n}"},
        positive=f"img{n}",
        positive_rank=1,
        negatives=[],
        model_version="v1",
        served_at=moment,
        clicked_at=moment,
        click_id=f"c{n}",
    )


def test_pair_files_are_partitioned_by_date_and_deduplicated(tmp_path: Path) -> None:
    writer = PairFileWriter(tmp_path)
    assert writer.append([_pair(1), _pair(2, day=22), _pair(1)]) == 2
    assert writer.append([_pair(2, day=22), _pair(3)]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-11-21", "date=2026-11-22"]
    assert [p.pair_id for p in read_pairs(tmp_path)] == ["p1", "p3", "p2"]
    # A new writer (a restart) knows what is on disk.
    assert PairFileWriter(tmp_path).append([_pair(1), _pair(4)]) == 1


def test_pair_files_cut_a_half_written_line(tmp_path: Path) -> None:
    PairFileWriter(tmp_path).append([_pair(1)])
    file = tmp_path / "date=2026-11-21" / "pairs.jsonl"
    with open(file, "a") as handle:
        handle.write(_pair(2).model_dump_json()[:40])  # a crash mid-append
    writer = PairFileWriter(tmp_path)
    assert file.read_text().count("\n") == 1 and file.read_text().endswith("\n")
    assert writer.append([_pair(2)]) == 1  # the re-sent pair is written whole
    assert [p.pair_id for p in read_pairs(tmp_path)] == ["p1", "p2"]
