"""Pseudo-labels from clicks alone: groups of images that buyers treat as one kind of thing.

Clicks only ever link an image to what the serving model showed beside it, so the click graph
falls into many small communities (one run of the README's loop: 73 for 10 categories, 93% of
each community's images in its majority category). A model trained on those clicks puts the
communities of one kind near each other, so merging communities whose images lie close in *its*
vectors gives a few large groups, and dropping the images whose nearest neighbours mostly sit in
another group keeps the groups pure (measured after the fact: purity 0.85, 11 groups). A second
training round then pulls each group together (``contrastive.GroupProxies``). Nothing here reads
a category.
"""

from __future__ import annotations

from collections import Counter

import networkx as nx
import numpy as np
import torch

#: Louvain's resolution on the click graph (1: its default modularity).
RESOLUTION = 1.0


def click_communities(queries: torch.Tensor, positives: torch.Tensor, rows: int) -> np.ndarray:
    """Louvain community of each table row in the graph whose edges are clicks (query row ->
    clicked row, weighted by how many clicks link them), numbered largest first; a row no click
    names (a logged negative only) is a community of its own."""
    graph = nx.Graph()
    graph.add_nodes_from(range(rows))
    for (a, b), clicks in Counter(zip(queries.tolist(), positives.tolist(), strict=True)).items():
        if a != b:
            weight = graph.get_edge_data(a, b, {"weight": 0})["weight"]
            graph.add_edge(a, b, weight=weight + clicks)
    found = nx.community.louvain_communities(graph, weight="weight", resolution=RESOLUTION, seed=0)
    out = np.empty(rows, dtype=int)
    for number, part in enumerate(sorted(found, key=lambda c: (-len(c), min(c)))):
        out[list(part)] = number
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def merge_groups(groups: np.ndarray, vectors: np.ndarray, count: int) -> np.ndarray:
    """Average-linkage merging of ``groups`` (one number per row, -1: none) by the mean cosine
    between their rows' ``vectors``, down to ``count`` groups (numbered 0..count-1)."""
    numbers = [g for g in np.unique(groups) if g >= 0]
    members = [np.flatnonzero(groups == g) for g in numbers]
    x = _normalise(vectors)
    sums = np.array([x[m].sum(0) for m in members])
    sizes = np.array([len(m) for m in members], dtype=float)
    dot = sums @ sums.T  # mean cosine between groups a and b = dot[a, b] / (n_a n_b)
    alive = list(range(len(members)))
    label = np.arange(len(members))
    while len(alive) > count:
        live = np.array(alive)
        similarity = dot[np.ix_(live, live)] / np.outer(sizes[live], sizes[live])
        np.fill_diagonal(similarity, -np.inf)
        i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
        a, b = live[i], live[j]
        dot[a, :] += dot[b, :]
        dot[:, a] += dot[:, b]
        sizes[a] += sizes[b]
        label[label == b] = a
        alive.remove(b)
    renumber = {old: new for new, old in enumerate(alive)}
    out = np.full(len(groups), -1)
    for number, rows in enumerate(members):
        out[rows] = renumber[label[number]]
    return out


def keep_agreeing(
    groups: np.ndarray, vectors: np.ndarray, neighbours: int = 10, agree: float = 0.9
) -> np.ndarray:
    """``groups`` with -1 for each row fewer than ``agree`` of whose ``neighbours`` nearest
    (among the labelled rows) share its group: the ambiguous rows at a group's edge."""
    out = np.full(len(groups), -1)
    labelled = np.flatnonzero(groups >= 0)
    if len(labelled) <= neighbours:
        return out
    x = _normalise(vectors[labelled])
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, neighbours, axis=1)[:, :neighbours]
    own = groups[labelled]
    share = (own[nearest] == own[:, None]).mean(1)
    out[labelled[share >= agree]] = own[share >= agree]
    return out


def pseudo_labels(
    queries: torch.Tensor,
    positives: torch.Tensor,
    vectors: np.ndarray,
    count: int,
    agree: float = 0.9,
) -> np.ndarray:
    """A group per table row (-1: none) from the clicks (``queries`` -> ``positives``, rows of
    the table) and a tuned model's ``vectors`` of those rows."""
    communities = click_communities(queries, positives, len(vectors))
    return keep_agreeing(merge_groups(communities, vectors, count), vectors, agree=agree)
