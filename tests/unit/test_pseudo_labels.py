"""Pseudo-labels from clicks alone, and the second training round that pulls their groups
together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lookalike.training import TrainConfig, Trainer
from lookalike.training.pseudo_labels import (
    click_communities,
    keep_agreeing,
    merge_groups,
    pseudo_labels,
)

from .test_training import CLUSTERS, click_pairs


def purity(groups: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled rows in their group's majority label."""
    kept = groups >= 0
    majority = {
        g: Counter(labels[kept & (groups == g)].tolist()).most_common(1)[0][1]
        for g in set(groups[kept].tolist())
    }
    return sum(majority.values()) / int(kept.sum())


def test_click_communities_follow_the_clicks_and_keep_unclicked_rows_apart() -> None:
    # Rows 0-3 clicked among themselves, rows 4-7 too; row 8 only ever a logged negative.
    queries = torch.tensor([0, 0, 1, 2, 4, 4, 5, 6])
    positives = torch.tensor([1, 2, 3, 3, 5, 6, 7, 7])
    groups = click_communities(queries, positives, 9)
    assert len(set(groups[:4])) == 1 and len(set(groups[4:8])) == 1
    assert len({groups[0], groups[4], groups[8]}) == 3
    assert groups[8] == groups.max()  # numbered largest first


def test_merging_joins_the_communities_whose_vectors_lie_together() -> None:
    rng = np.random.default_rng(0)
    kinds = np.repeat([0, 1], 60)
    centres = rng.normal(size=(2, 16)) * 3
    vectors = centres[kinds] + rng.normal(size=(120, 16))
    fragments = np.arange(120) // 10  # 12 communities of 10, six per kind
    merged = merge_groups(fragments, vectors, 2)
    assert set(merged.tolist()) == {0, 1}
    assert purity(merged, kinds) == 1.0
    assert (merge_groups(np.full(5, -1), vectors[:5], 2) == -1).all()


def test_rows_whose_neighbours_sit_in_another_group_lose_their_label() -> None:
    rng = np.random.default_rng(1)
    kinds = np.repeat([0, 1], 30)
    vectors = np.array([[5.0, 0.0], [0.0, 5.0]])[kinds] + rng.normal(size=(60, 2)) * 0.3
    groups = kinds.copy()
    groups[3] = 1  # labelled with the other group, but it lies among group 0's rows
    kept = keep_agreeing(groups, vectors, neighbours=10, agree=0.9)
    assert kept[3] == -1
    assert (kept[np.arange(60) != 3] == kinds[np.arange(60) != 3]).all()
    assert (keep_agreeing(groups[:5], vectors[:5]) == -1).all()  # too few rows to judge


def test_pseudo_labels_recover_the_kinds_buyers_click_together() -> None:
    data, labels = click_pairs(n_pairs=600)
    # A tuned model's vectors: the category signal alone (what training on clicks brings out).
    signal = data.vectors[:, :8].numpy()
    groups = pseudo_labels(data.queries, data.positives, signal, CLUSTERS, agree=0.9)
    assert len(set(groups.tolist()) - {-1}) == CLUSTERS
    assert (groups >= 0).mean() > 0.8
    assert purity(groups, labels) > 0.95


def test_the_second_round_pulls_each_group_to_its_proxy_and_resumes(tmp_path: Path) -> None:
    data, labels = click_pairs(n_pairs=300)
    groups = torch.tensor(labels)
    groups[::7] = -1  # some rows without a pseudo-label
    config = TrainConfig(epochs=15, batch_size=64, pseudo_groups=CLUSTERS)
    trainer = Trainer(config, data, "d", tmp_path, groups=groups)
    assert trainer.groups is not None

    def to_proxies() -> tuple[float, float]:
        """(share of rows nearest their own group's proxy, mean cosine to it)"""
        vectors = torch.from_numpy(trainer.embed_rows())
        proxies = torch.nn.functional.normalize(trainer.groups.proxies.detach(), dim=1)
        cosines = (vectors @ proxies.T).numpy()
        own = cosines[np.arange(len(labels)), labels]
        return float((cosines.argmax(1) == labels).mean()), float(own.mean())

    nearest_before, cosine_before = to_proxies()
    history = trainer.run()
    assert history[-1].loss < history[0].loss
    assert trainer.summary()["pseudo_labels"] == {
        "groups": CLUSTERS,
        "labelled_images": int((groups >= 0).sum()),
        "images": len(labels),
    }
    # Each row lies nearer its own group's proxy (unlabelled rows too).
    nearest, cosine = to_proxies()
    assert nearest > max(0.95, nearest_before), (nearest_before, nearest)
    assert cosine > cosine_before + 0.1, (cosine_before, cosine)
    # The proxies are part of the resumable state.
    resumed = Trainer(config, data, "d", tmp_path, groups=groups)
    assert resumed.resume() and resumed.groups is not None
    assert torch.equal(resumed.groups.proxies, trainer.groups.proxies)
