"""Result pages that keep the anchor's best matches (lookalike.search.blending), and the same
pages scored offline (lookalike.evaluation.metrics.anchored_orders)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.evaluation import per_query_metrics
from lookalike.evaluation.metrics import anchored_orders, leave_one_out_orders, ranking_metrics
from lookalike.search.blending import blend_pages


def test_the_anchor_takes_the_last_places_of_the_page() -> None:
    primary = list("abcdefghijklmn")
    assert blend_pages(primary, list("xyz"), 10, 2) == list("abcdefghxyijklmn")


def test_anchor_items_the_primary_already_shows_cost_nothing() -> None:
    primary = list("abcdefghijkl")
    assert blend_pages(primary, list("ca"), 10, 2) == primary
    # one shown, one not: only one place is given up
    assert blend_pages(primary, list("bz"), 10, 2) == list("abcdefghizjkl")


def test_an_anchor_item_further_down_moves_up_onto_the_page() -> None:
    primary = list("abcdefghijkl")
    assert blend_pages(primary, list("lk"), 10, 2) == list("abcdefghlkij")


@pytest.mark.parametrize("slots", [0, 1, 3, 10])
def test_a_blended_page_is_a_reordering_that_holds_the_anchor_top(slots: int) -> None:
    rng = np.random.default_rng(slots)
    primary = rng.permutation(40).tolist()
    anchor = rng.permutation(40).tolist()
    blended = blend_pages(primary, anchor, 10, slots)
    assert sorted(blended) == list(range(40))
    assert set(anchor[:slots]) <= set(blended[:10])
    kept = [item for item in primary if item not in anchor[:slots]]
    assert (
        blended[: 10 - slots] == kept[: 10 - slots]
        or blended[: 10 - slots] == primary[: 10 - slots]
    )


def test_ranking_metrics_are_per_query_metrics_on_the_same_rankings() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [f"c{i % 4}" for i in range(60)]
    direct = per_query_metrics(vectors, labels)
    orders = leave_one_out_orders(vectors)
    # leave-one-out orders index the gallery with the query removed: map back to full rows
    again = ranking_metrics(orders, labels, labels)
    for name, values in direct.items():
        np.testing.assert_allclose(values, again[name])


def test_anchor_slots_bring_back_the_anchor_recall_at_10() -> None:
    # 30 images, three categories. The primary model ranks the other categories first (a model
    # that learnt the wrong thing); the anchor ranks the query's own category first.
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    n = len(labels)
    wrong = np.array(
        [
            [j for j in range(n) if j != i and labels[j] != labels[i]]
            + [j for j in range(n) if j != i and labels[j] == labels[i]]
            for i in range(n)
        ]
    )
    right = np.array(
        [
            [j for j in range(n) if j != i and labels[j] == labels[i]]
            + [j for j in range(n) if j != i and labels[j] != labels[i]]
            for i in range(n)
        ]
    )
    plain = ranking_metrics(wrong, labels, labels)
    kept = ranking_metrics(anchored_orders(wrong, right, 1), labels, labels)
    assert plain["recall_at_10"].mean() == 0.0  # the 20 wrong ones fill the page
    assert kept["recall_at_10"].mean() == 1.0
    assert kept["map"].mean() > plain["map"].mean()
    assert list(anchored_orders(wrong, right, 1)[0][:10]) == list(wrong[0][:9]) + [right[0][0]]
    assert (anchored_orders(wrong, right, 0) == wrong).all()
