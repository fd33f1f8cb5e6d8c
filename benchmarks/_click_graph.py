"""The click graph: which images buyers linked, and the groups it implies.

Nodes are images: catalogue images by id, uploaded query images by ``sha:<digest>``. A click
links its query to the clicked image. Alone the graph is too sparse to say much past a pair (one
run of the README's loop: 1,747 images in 186 components, most a query and its few clicks), so
each image is also linked to its mutual nearest neighbours under the base encoder, with a lower
weight: clicks say which neighbourhoods belong together, the base says what lies near.
Communities of that graph (Louvain, seeded) are the groups training pulls together: images
buyers treat as the same kind of thing. Nothing here reads a category.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from lookalike.events import TrainingPair


def query_key(pair: TrainingPair) -> str:
    """A pair's query as a node: its image id, or the digest of the uploaded image."""
    return pair.query.image_id or f"sha:{pair.query.content_sha256}"


@dataclass(frozen=True)
class GraphSettings:
    #: Each image is linked to those of its ``neighbours`` nearest that have it among theirs.
    neighbours: int = 10
    #: Weight of a neighbour link against one click (a click weighs 1).
    neighbour_weight: float = 0.5
    #: Louvain resolution: lower gives fewer, larger communities.
    resolution: float = 0.5
    #: Images in a smaller community are not pulled towards any group (too little evidence).
    min_community: int = 5
    seed: int = 0


def click_edges(pairs: Sequence[TrainingPair]) -> Counter[tuple[str, str]]:
    """(query, clicked image) -> how many clicks link them."""
    return Counter((query_key(p), p.positive) for p in pairs)


def mutual_neighbours(vectors: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for every i < j that are among each other's k nearest."""
    n = len(vectors)
    if n < 2 or k <= 0:
        return []
    k = min(k, n - 1)
    nearest = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, 1024):
        sims = vectors[start : start + 1024] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        nearest[start : start + 1024] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    sets = [set(row) for row in nearest.tolist()]
    return [
        (i, j, float(vectors[i] @ vectors[j]))
        for i in range(n)
        for j in sets[i]
        if i < j and i in sets[j]
    ]


def click_graph(pairs: Sequence[TrainingPair], keys: Sequence[str]) -> nx.Graph:
    """``keys`` as nodes, each click between two of them an edge weighted by its count."""
    graph = nx.Graph()
    graph.add_nodes_from(keys)
    known = set(keys)
    for (query, clicked), count in click_edges(pairs).items():
        if query in known and clicked in known and query != clicked:
            graph.add_edge(query, clicked, weight=float(count))
    return graph


def communities(
    pairs: Sequence[TrainingPair],
    keys: Sequence[str],
    vectors: np.ndarray,
    settings: GraphSettings,
) -> dict[str, int]:
    """Community number of each image (``keys``, with base ``vectors`` in the same order) that
    belongs to a community of at least ``min_community`` images; others are left out."""
    graph = click_graph(pairs, keys)
    for i, j, cosine in mutual_neighbours(vectors, settings.neighbours):
        a, b = keys[i], keys[j]
        extra = settings.neighbour_weight * max(cosine, 0.0)
        weight = graph.get_edge_data(a, b, {"weight": 0.0})["weight"] + extra
        graph.add_edge(a, b, weight=weight)
    found = nx.community.louvain_communities(
        graph, weight="weight", resolution=settings.resolution, seed=settings.seed
    )
    big = sorted((c for c in found if len(c) >= settings.min_community), key=len, reverse=True)
    return {key: number for number, group in enumerate(big) for key in sorted(group)}
