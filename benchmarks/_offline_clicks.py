"""A second round of the loop, offline: the same simulated buyers click on the results a tuned
model would serve.

The first round's clicks were collected on the base's index, so they only ever link an image to
the base's top 10: whatever the base ranks further away never gets a click, and a category the
base splits into several neighbourhoods stays split in the clicks. Here each kept query image
searches the catalogue again, ranked by a tuned model's vectors (the table rows saved by
``learning_variants.py --save-vectors``), and :class:`lookalike.clicks.simulate.BuyerModel`
clicks as ``lookalike simulate-clicks`` would (relevant = the query's category, read from the
split's folders by the simulated buyer only, as the simulator does). The pairs come out as the
worker's join would write them (negatives: shown above the click, not clicked).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from lookalike.clicks.simulate import BuyerModel
from lookalike.events import PairQuery, TrainingPair


def second_round(
    keys: Sequence[str],
    vectors: np.ndarray,
    categories: Sequence[str | None],
    *,
    passes: int = 3,
    k: int = 10,
    version: str = "offline-round-2",
) -> list[TrainingPair]:
    """Pairs of ``passes`` simulated buyers per uploaded query (``sha:`` keys) over the
    catalogue rows (every other key), ranked by ``vectors`` (one row per key)."""
    queries = [i for i, key in enumerate(keys) if key.startswith("sha:")]
    catalogue = np.array([i for i, key in enumerate(keys) if not key.startswith("sha:")])
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    top = np.argsort(-(x[queries] @ x[catalogue].T), axis=1)[:, :k]
    buyer = BuyerModel()
    now = datetime.now(UTC)
    pairs: list[TrainingPair] = []
    for seed in range(passes):
        rng = random.Random(seed)
        for number, (q, shown) in enumerate(zip(queries, top, strict=True)):
            results = [keys[catalogue[j]] for j in shown]
            relevant = [categories[catalogue[j]] == categories[q] for j in shown]
            clicked: set[str] = set()
            search = f"{version}-{seed}-{number}"
            for rank in buyer.clicked_ranks(relevant, rng):
                image = results[rank - 1]
                pairs.append(
                    TrainingPair(
                        pair_id=TrainingPair.id_for(search, image),
                        search_id=search,
                        query=PairQuery(content_sha256=keys[q].removeprefix("sha:")),
                        positive=image,
                        positive_rank=rank,
                        negatives=[r for r in results[: rank - 1] if r not in clicked],
                        model_version=version,
                        served_at=now,
                        clicked_at=now,
                        click_id=f"{search}-{rank}",
                    )
                )
                clicked.add(image)
    return pairs
