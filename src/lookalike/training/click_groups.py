"""Groups of images that buyers treat as one kind of thing, from the clicks alone.

The click graph links each query image to the images clicked for it. One round of clicks, all
collected on one model's results, falls apart into many small communities (the README's split:
74 for 10 categories), because a click only ever links an image to that model's top 10. Once a
fine-tuned model serves, its clicks link what the first model kept apart, and the graph of both
rounds has a few large communities that are nearly pure (Louvain at resolution 0.3: 20 groups
over 1,932 images, 95% of each group's images in its majority category, measured with the
labels after the fact: ``benchmarks/click_groups.py``). ``contrastive.GroupProxies`` pulls
each group together beside the pairs' own loss.
Nothing here reads a category.
"""

from __future__ import annotations

from collections import Counter

import networkx as nx
import numpy as np
import torch

#: Images in a smaller community get no group: too little evidence to pull them anywhere.
MIN_GROUP = 5


def click_groups(
    queries: torch.Tensor, positives: torch.Tensor, rows: int, resolution: float
) -> np.ndarray:
    """Louvain community of each of ``rows`` table rows in the graph whose edges are clicks
    (query row - clicked row, weighted by how many clicks link them), numbered largest first;
    -1 for a row in a community of fewer than ``MIN_GROUP`` images. Lower ``resolution``:
    fewer, larger communities."""
    graph = nx.Graph()
    graph.add_nodes_from(range(rows))
    for (a, b), clicks in Counter(zip(queries.tolist(), positives.tolist(), strict=True)).items():
        if a != b:
            weight = graph.get_edge_data(a, b, {"weight": 0})["weight"]
            graph.add_edge(a, b, weight=weight + clicks)
    found = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=0)
    big = sorted((c for c in found if len(c) >= MIN_GROUP), key=lambda c: (-len(c), min(c)))
    out = np.full(rows, -1, dtype=np.int64)
    for number, part in enumerate(big):
        out[sorted(part)] = number
    return out


__all__ = ["MIN_GROUP", "click_groups"]
