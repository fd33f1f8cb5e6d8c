"""Groups of images from the click graph alone, and the training term that pulls them together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.training import TrainConfig, Trainer
from lookalike.training.click_groups import MIN_GROUP, click_groups

from .test_training import CLUSTERS, click_pairs


def purity(groups: np.ndarray, labels: np.ndarray) -> float:
    """Share of grouped rows in their group's majority label."""
    kept = groups >= 0
    majority = [
        Counter(labels[groups == g].tolist()).most_common(1)[0][1]
        for g in set(groups[kept].tolist())
    ]
    return sum(majority) / int(kept.sum())


def cliques(sizes: list[int], bridges: int = 1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Clicks within each clique of rows (all pairs), ``bridges`` clicks between neighbours."""
    queries, positives, start = [], [], 0
    for size in sizes:
        for a in range(start, start + size):
            for b in range(a + 1, start + size):
                queries.append(a)
                positives.append(b)
        start += size
    ends = np.cumsum(sizes)
    for end in ends[:-1]:
        for _ in range(bridges):
            queries.append(int(end) - 1)
            positives.append(int(end))
    return torch.tensor(queries), torch.tensor(positives), int(ends[-1])


def test_groups_follow_the_clicks_and_small_communities_get_none() -> None:
    queries, positives, rows = cliques([8, 6, 3], bridges=0)
    groups = click_groups(queries, positives, rows + 1, resolution=1.0)  # + a row never clicked
    assert list(groups[:8]) == [0] * 8 and list(groups[8:14]) == [1] * 6  # largest first
    assert (groups[14:] == -1).all()  # 3 clicked together, and 1 alone: under MIN_GROUP
    assert MIN_GROUP > 3


def test_a_lower_resolution_gives_fewer_larger_groups() -> None:
    queries, positives, rows = cliques([6, 6, 6, 6], bridges=3)
    fine = click_groups(queries, positives, rows, resolution=1.0)
    coarse = click_groups(queries, positives, rows, resolution=0.05)
    assert len(set(fine.tolist())) == 4
    assert len(set(coarse.tolist())) < 4


def test_training_pulls_each_click_group_together_and_resumes(tmp_path: Path) -> None:
    data, labels = click_pairs(n_pairs=600)  # clicks within a category, 4 categories
    config = TrainConfig(epochs=15, batch_size=64, click_groups=0.3)
    trainer = Trainer(config, data, "d", tmp_path)
    assert trainer.groups is not None
    groups = trainer.groups.groups.numpy()
    assert len(set(groups.tolist()) - {-1}) == CLUSTERS
    assert purity(groups, labels) == 1.0 and (groups >= 0).mean() > 0.9

    def to_proxies() -> tuple[float, float]:
        """(share of grouped rows nearest their own group's proxy, mean cosine to it)"""
        vectors = torch.from_numpy(trainer.embed_rows())[groups >= 0]
        own = groups[groups >= 0]
        proxies = torch.nn.functional.normalize(trainer.groups.proxies.detach(), dim=1)
        cosines = (vectors @ proxies.T).numpy()
        return float((cosines.argmax(1) == own).mean()), float(
            cosines[np.arange(len(own)), own].mean()
        )

    nearest_before, cosine_before = to_proxies()
    history = trainer.run()
    assert history[-1].loss < history[0].loss
    assert trainer.summary()["click_groups"] == {
        "groups": CLUSTERS,
        "grouped_images": int((groups >= 0).sum()),
        "images": len(labels),
    }
    nearest, cosine = to_proxies()
    assert nearest > max(0.95, nearest_before), (nearest_before, nearest)
    assert cosine > cosine_before + 0.1, (cosine_before, cosine)
    resumed = Trainer(config, data, "d", tmp_path)  # the proxies are part of the state
    assert resumed.resume() and resumed.groups is not None
    assert torch.equal(resumed.groups.proxies, trainer.groups.proxies)


def test_clicks_too_scattered_for_a_group_train_the_pairs_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, _ = click_pairs(n_items=400, n_pairs=20)  # 20 clicks: no community of 5
    trainer = Trainer(TrainConfig(epochs=1, click_groups=0.3), data, "d", tmp_path)
    assert trainer.groups is None
    assert "no group of 5 images or more" in caplog.text
    assert "click_groups" not in trainer.summary()
