"""Contrastive training of the projection head: it learns what clicks say, and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lookalike.errors import ConfigurationError
from lookalike.evaluation import retrieval_metrics
from lookalike.training import PairTensors, TrainConfig, Trainer, info_nce, pair_accuracy

CLUSTERS, SIGNAL_DIMS, NOISE_DIMS = 4, 8, 56


def base_vectors(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A weak category signal in a few dimensions, drowned by noise in the others: the base
    encoder ranks poorly; a learned projection can fix that by down-weighting the noise."""
    centres = rng.normal(size=(CLUSTERS, SIGNAL_DIMS)) * 0.6
    signal = centres[labels] + rng.normal(size=(len(labels), SIGNAL_DIMS)) * 0.2
    noise = rng.normal(size=(len(labels), NOISE_DIMS))
    vectors = np.hstack([signal, noise]).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def click_pairs(n_items: int = 400, n_pairs: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLUSTERS, n_items)
    vectors = base_vectors(labels, np.random.default_rng(99))
    queries, positives, negatives = [], [], []
    for _ in range(n_pairs):
        q = int(rng.integers(n_items))
        same = np.flatnonzero(labels == labels[q])
        other = np.flatnonzero(labels != labels[q])
        queries.append(q)
        positives.append(int(rng.choice(same[same != q])))
        negatives.append(rng.choice(other, 2, replace=False).tolist())
    data = PairTensors(
        vectors=torch.from_numpy(vectors),
        queries=torch.tensor(queries),
        positives=torch.tensor(positives),
        negatives=torch.tensor(negatives),
    )
    return data, labels


def test_training_on_clicks_improves_held_out_category_ranking(tmp_path: Path) -> None:
    data, _ = click_pairs()
    rng = np.random.default_rng(7)
    held_labels = rng.integers(0, CLUSTERS, 300)
    held_out = base_vectors(held_labels, np.random.default_rng(99))  # same centres, new items
    before = retrieval_metrics(held_out, list(held_labels)).map
    trainer = Trainer(TrainConfig(epochs=15, batch_size=64, temperature=0.5), data, "d", tmp_path)
    history = trainer.run()
    with torch.no_grad():
        projected = nn.functional.normalize(trainer.head(torch.from_numpy(held_out)), dim=1)
    after = retrieval_metrics(projected.numpy(), list(held_labels)).map
    assert history[-1].loss < history[0].loss
    assert after > before + 0.1, (before, after)
    held_clicks, _ = click_pairs(n_pairs=200, seed=5)  # new clicks on the same catalogue
    assert pair_accuracy(trainer.head, held_clicks) > pair_accuracy(None, held_clicks) + 0.1
    assert trainer.summary()["seconds_per_epoch"] > 0


def test_identity_start_reproduces_the_base_ranking(tmp_path: Path) -> None:
    data, _ = click_pairs(n_pairs=100)
    trainer = Trainer(TrainConfig(epochs=1), data, "d", tmp_path)
    with torch.no_grad():
        assert torch.allclose(trainer.head(data.vectors), data.vectors, atol=1e-6)
    assert pair_accuracy(trainer.head, data) == pair_accuracy(None, data)


def test_same_query_positives_are_not_negatives() -> None:
    vectors = torch.eye(4)
    # Two pairs of one query (row 0) clicking rows 1 and 2: each must not be the other's negative.
    data = PairTensors(
        vectors=vectors,
        queries=torch.tensor([0, 0]),
        positives=torch.tensor([1, 2]),
        negatives=torch.full((2, 1), -1),
    )
    head = nn.Identity()
    loss = info_nce(head, data, torch.tensor([0, 1]), temperature=1.0)
    # Each row's only unmasked candidate is its own positive: zero loss.
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_a_stopped_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    data, _ = click_pairs(n_pairs=300)
    config = TrainConfig(epochs=4, batch_size=64)
    straight = Trainer(config, data, "d", tmp_path / "straight")
    (tmp_path / "straight").mkdir()
    straight.run()

    (tmp_path / "resumed").mkdir()

    class Stopped(Exception):
        pass

    def stop_after_two(report) -> None:
        if report.epoch == 2:
            raise Stopped  # a crash or Ctrl-C after the second epoch's state was saved

    with pytest.raises(Stopped):
        Trainer(config, data, "d", tmp_path / "resumed").run(on_epoch=stop_after_two)
    second = Trainer(config, data, "d", tmp_path / "resumed")
    assert second.resume() and second.epoch == 2
    second.run()
    for a, b in zip(straight.head.parameters(), second.head.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [h.loss for h in second.history] == [h.loss for h in straight.history]

    with pytest.raises(ConfigurationError, match="another run"):
        Trainer(config, data, "other-pairs", tmp_path / "resumed").resume()


def test_a_warm_start_continues_the_checkpoint_it_is_given(tmp_path: Path) -> None:
    data, _ = click_pairs(n_pairs=300)
    first = Trainer(TrainConfig(epochs=4, batch_size=64), data, "d", tmp_path)
    first.run()
    start = {
        "head_config": first.head.config,
        "head_state": first.head.state_dict(),
        "tail_state": None,
    }
    config = TrainConfig(epochs=1, batch_size=64, init_from="round-1/model.pt")
    (tmp_path / "warm").mkdir()
    (tmp_path / "cold").mkdir()
    warm = Trainer(config, data, "d", tmp_path / "warm", start=start)
    for a, b in zip(first.head.parameters(), warm.head.parameters(), strict=True):
        assert torch.equal(a, b)
    cold = Trainer(TrainConfig(epochs=1, batch_size=64), data, "d", tmp_path / "cold")
    # Where the first run left off: lower loss in its first epoch than a run from the base.
    assert warm.run()[0].loss < cold.run()[0].loss
    narrow = TrainConfig(epochs=1, out_dim=16, init_from="round-1/model.pt")
    with pytest.raises(ConfigurationError, match="--dim"):
        Trainer(narrow, data, "d", tmp_path, start=start)
    with pytest.raises(ConfigurationError, match="--tail"):
        Trainer(config, data, "d", tmp_path, start=start | {"tail_state": {"w": torch.ones(1)}})


def test_reading_the_pairs_images_reports_progress_against_a_total(tmp_path: Path) -> None:
    """`train`'s image reading bar has a total: each batch of images read is reported with the
    number there are to read (query images kept by hash, here; one of them unreadable)."""
    from datetime import UTC, datetime

    from fakes import TinyEncoder
    from imagegen import image_bytes

    from lookalike.events import PairQuery, TrainingPair
    from lookalike.images import BlobStore
    from lookalike.training.pair_data import build_pair_tensors

    class Catalogue:
        def fetch(self, version: str, image_ids: list[str]) -> dict[str, np.ndarray]:
            return {i: np.ones(16, np.float32) for i in image_ids}

        def payloads(self, version: str, image_ids: list[str]) -> dict:
            return {}

    blobs = BlobStore(tmp_path / "blobs")
    shas = [blobs.put(image_bytes("circles", n)) for n in range(4)] + [blobs.put(b"not an image")]
    now = datetime.now(UTC)
    pairs = [
        TrainingPair(
            pair_id=f"p{n}",
            search_id=f"s{n}",
            query=PairQuery(content_sha256=sha),
            positive="a",
            positive_rank=1,
            negatives=["b"],
            model_version="v",
            served_at=now,
            clicked_at=now,
            click_id=f"c{n}",
        )
        for n, sha in enumerate(shas)
    ]
    reported: list[tuple[int, int]] = []
    data = build_pair_tensors(
        pairs,
        TinyEncoder(),
        Catalogue(),
        blobs,
        max_pixels=10**7,
        batch=2,
        progress=lambda done, total: reported.append((done, total)),
    )
    assert reported == [(2, 5), (2, 5), (1, 5)]
    assert len(data) == 4 and data.skipped == {"query_missing": 1, "positive_missing": 0}
