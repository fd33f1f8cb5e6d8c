"""Bootstrap intervals, per-query metrics, held-out click scores and the pair split: each
against values worked out by hand or by a slower obvious method."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from lookalike.evaluation import (
    bootstrap,
    click_scores,
    compare_scores,
    paired_difference,
    per_query_metrics,
    retrieval_metrics,
)
from lookalike.events import PairQuery, TrainingPair
from lookalike.training.pair_data import is_held_out, split_pairs


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_values() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap(rng.normal(0.5, 0.2, 50))
    large = bootstrap(rng.normal(0.5, 0.2, 5000))
    assert small.low < small.value < small.high and small.n == 50
    assert large.low < 0.5 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    # about 1.96 * sd / sqrt(n) on each side
    assert large.high - large.low == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(5000), rel=0.15)
    assert bootstrap(np.array([])).n == 0


def test_paired_difference_sees_a_small_consistent_gain_that_separate_intervals_hide() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, 400)  # queries differ a lot from each other
    base = difficulty
    better = np.clip(difficulty + 0.02 + rng.normal(0, 0.005, 400), 0, None)
    a, b = bootstrap(base), bootstrap(better)
    assert a.high > b.low  # the two intervals overlap
    gain = paired_difference(better, base)
    assert gain.low > 0 and gain.value == pytest.approx(0.02, abs=0.003)
    with pytest.raises(ValueError):
        paired_difference(better[:10], base)


def test_per_query_metrics_average_to_the_summary() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [str(i % 4) for i in range(60)]
    per_query = per_query_metrics(vectors, labels)
    summary = retrieval_metrics(vectors, labels)
    assert len(per_query["map"]) == summary.queries == 60
    for name in ("recall_at_1", "recall_at_10", "map", "ndcg_at_10"):
        assert per_query[name].mean() == pytest.approx(getattr(summary, name))
    report = compare_scores({"a": per_query, "b": per_query}, "a")
    assert report["difference"]["b"]["map"]["value"] == 0.0
    assert report["models"]["a"]["map"]["value"] == pytest.approx(summary.map, abs=1e-4)


def pair(n: int, query: str, positive: str, negatives: list[str]) -> TrainingPair:
    now = datetime.now(UTC)
    return TrainingPair(
        pair_id=f"p{n}",
        search_id=f"s{n}",
        query=PairQuery(image_id=query),
        positive=positive,
        positive_rank=len(negatives) + 1,
        negatives=negatives,
        model_version="v",
        served_at=now,
        clicked_at=now,
        click_id=f"c{n}",
    )


def test_click_scores_rank_the_clicked_image_in_the_pool_by_hand() -> None:
    vectors = {
        "q": np.array([1.0, 0.0]),
        "a": np.array([0.9, 0.1]),  # clicked by q
        "b": np.array([0.95, 0.05]),  # also clicked by q: not a miss for a
        "c": np.array([0.99, 0.01]),  # shown above a and skipped: ranks above it
        "d": np.array([0.0, 1.0]),
        "r": np.array([0.0, 1.0]),  # another query
    }
    pairs = [pair(0, "q", "a", ["c"]), pair(1, "q", "b", []), pair(2, "r", "d", ["a"])]
    scores = click_scores(pairs, vectors)
    # q->a: pool {a, b, c, d} less b: c ranks above a -> rank 2; q->b: c above -> 2;
    # r->d: d first.
    assert scores["reciprocal_rank"].tolist() == [0.5, 0.5, 1.0]
    assert scores["hit_at_10"].tolist() == [1.0, 1.0, 1.0]
    assert scores["beats_logged_negatives"].tolist() == [0.0, 1.0]
    # a pair whose clicked image has no vector is left out
    assert len(click_scores([*pairs, pair(3, "q", "gone", [])], vectors)["reciprocal_rank"]) == 3


def test_held_out_pairs_are_chosen_by_id_and_stay_held_out() -> None:
    pairs = [pair(n, "q", "a", []) for n in range(2000)]
    train, held = split_pairs(pairs, 0.1)
    assert len(train) + len(held) == 2000 and 150 < len(held) < 250
    more_train, more_held = split_pairs(
        [*pairs, *(pair(n, "q", "a", []) for n in range(2000, 2500))], 0.1
    )
    assert {p.pair_id for p in held} <= {p.pair_id for p in more_held}
    assert not {p.pair_id for p in more_train} & {p.pair_id for p in more_held}
    assert not is_held_out("x", 0.0) and is_held_out("x", 1.0)
