"""Coarse pseudo-labels from clicks alone, for losses that pull a group together.

Louvain over the click graph finds many small, pure communities (one run: 73 for 10
categories, 93% pure), and a proxy loss over them pushes apart communities that belong
together. These group images more coarsely, from the same clicks and an encoder's vectors, and
read no category:

- :func:`merge_communities`: average-linkage merging of click communities by the cosine of their
  mean vectors (a click between two communities counts as extra similarity), down to ``k``;
- :func:`constrained_kmeans`: spherical k-means over click components (images linked by clicks
  move together, weighted by their size);
- :func:`spectral`: the click graph plus mutual nearest neighbours, its normalised Laplacian's
  first eigenvectors, k-means on them; :func:`eigengap` suggests ``k`` from the same spectrum;
- :func:`propagate`: labels of images left out (unclicked catalogue images) by a k-NN vote, kept
  only where the vote is clear.

``purity`` and friends take the categories to measure a clustering after the fact; nothing
that builds one reads them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np
from _click_graph import click_edges, click_graph, mutual_neighbours

from lookalike.events import TrainingPair


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def components(pairs: Sequence[TrainingPair], keys: Sequence[str]) -> np.ndarray:
    """Connected component of the click graph per key (singletons get their own)."""
    index = {k: i for i, k in enumerate(keys)}
    out = np.full(len(keys), -1)
    for number, part in enumerate(nx.connected_components(click_graph(pairs, keys))):
        for key in part:
            out[index[key]] = number
    return out


def louvain(pairs: Sequence[TrainingPair], keys: Sequence[str], resolution: float, seed=0):
    """Louvain communities of the click graph alone (numbers per key)."""
    index = {k: i for i, k in enumerate(keys)}
    out = np.full(len(keys), -1)
    found = nx.community.louvain_communities(
        click_graph(pairs, keys), weight="weight", resolution=resolution, seed=seed
    )
    for number, part in enumerate(sorted(found, key=len, reverse=True)):
        for key in part:
            out[index[key]] = number
    return out


def _kmeans(x: np.ndarray, k: int, weights: np.ndarray | None = None, seed=0, iters=100):
    """Spherical k-means (k-means++ start, best of 10 starts by weighted cosine)."""
    rng = np.random.default_rng(seed)
    x = _normalise(x)
    w = np.ones(len(x)) if weights is None else weights.astype(float)
    best, best_score = None, -np.inf
    for _ in range(10):
        centres = [x[rng.choice(len(x), p=w / w.sum())]]
        for _ in range(1, k):
            d = np.clip(1 - np.max(x @ np.array(centres).T, axis=1), 0, None) * w
            centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[0])
        c = np.array(centres)
        assign = np.zeros(len(x), dtype=int)
        for _ in range(iters):
            assign_new = np.argmax(x @ c.T, axis=1)
            for j in range(k):
                members = assign_new == j
                if members.any():
                    c[j] = (x[members] * w[members, None]).sum(0)
            c = _normalise(c)
            if np.array_equal(assign_new, assign):
                break
            assign = assign_new
        score = float((np.sum(x * c[assign], axis=1) * w).sum())
        if score > best_score:
            best, best_score = assign, score
    return best


def constrained_kmeans(
    pairs: Sequence[TrainingPair], keys: Sequence[str], vectors: np.ndarray, k: int, seed=0
) -> np.ndarray:
    """Spherical k-means where each click component moves as one point (its mean vector,
    weighted by its size)."""
    comp = components(pairs, keys)
    n = comp.max() + 1
    means = np.zeros((n, vectors.shape[1]))
    np.add.at(means, comp, vectors)
    sizes = np.bincount(comp, minlength=n)
    return _kmeans(means, k, sizes, seed)[comp]


def merge_communities(
    groups: np.ndarray,
    vectors: np.ndarray,
    k: int,
    graph_links: np.ndarray | None = None,
    link_weight: float = 0.0,
) -> np.ndarray:
    """Average-linkage merging of ``groups`` (one number per image) by the mean cosine between
    their images, plus ``link_weight`` x clicks between them per image pair, down to ``k``."""
    numbers = np.unique(groups)
    member = [np.flatnonzero(groups == g) for g in numbers]
    x = _normalise(vectors)
    sums = np.array([x[m].sum(0) for m in member])
    sizes = np.array([len(m) for m in member], dtype=float)
    # average pairwise cosine between groups a, b = sums_a . sums_b / (n_a n_b)
    dot = sums @ sums.T
    links = np.zeros_like(dot) if graph_links is None else graph_links.astype(float).copy()
    alive = list(range(len(member)))
    label = np.arange(len(member))
    while len(alive) > k:
        a_idx = np.array(alive)
        sim = dot[np.ix_(a_idx, a_idx)] / np.outer(sizes[a_idx], sizes[a_idx])
        sim = sim + link_weight * links[np.ix_(a_idx, a_idx)] / np.outer(sizes[a_idx], sizes[a_idx])
        np.fill_diagonal(sim, -np.inf)
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        a, b = a_idx[i], a_idx[j]
        dot[a, :] += dot[b, :]
        dot[:, a] += dot[:, b]
        links[a, :] += links[b, :]
        links[:, a] += links[:, b]
        sizes[a] += sizes[b]
        label[label == b] = a
        alive.remove(b)
    renumber = {old: new for new, old in enumerate(alive)}
    per_group = np.array([renumber[label[i]] for i in range(len(member))])
    out = np.empty(len(groups), dtype=int)
    for i, m in enumerate(member):
        out[m] = per_group[i]
    return out


def group_links(pairs: Sequence[TrainingPair], keys: Sequence[str], groups: np.ndarray):
    """Clicks between each two groups (symmetric matrix over group numbers)."""
    index = {k: i for i, k in enumerate(keys)}
    n = groups.max() + 1
    links = np.zeros((n, n))
    for (query, clicked), count in click_edges(pairs).items():
        if query in index and clicked in index:
            a, b = groups[index[query]], groups[index[clicked]]
            if a != b:
                links[a, b] += count
                links[b, a] += count
    return links


def affinity(
    pairs: Sequence[TrainingPair],
    keys: Sequence[str],
    vectors: np.ndarray,
    neighbours: int = 10,
    neighbour_weight: float = 0.2,
) -> np.ndarray:
    index = {k: i for i, k in enumerate(keys)}
    w = np.zeros((len(keys), len(keys)))
    for (query, clicked), count in click_edges(pairs).items():
        if query in index and clicked in index and query != clicked:
            w[index[query], index[clicked]] += count
            w[index[clicked], index[query]] += count
    for i, j, cosine in mutual_neighbours(_normalise(vectors).astype(np.float32), neighbours):
        w[i, j] += neighbour_weight * max(cosine, 0.0)
        w[j, i] += neighbour_weight * max(cosine, 0.0)
    return w


def _spectrum(w: np.ndarray, count: int):
    d = w.sum(1)
    inv = 1 / np.sqrt(np.maximum(d, 1e-12))
    m = inv[:, None] * w * inv[None, :]
    values, vectors = np.linalg.eigh(m)
    return values[::-1][:count], vectors[:, ::-1][:, :count]


def spectral(w: np.ndarray, k: int, seed=0) -> np.ndarray:
    _, vectors = _spectrum(w, k)
    return _kmeans(vectors, k, seed=seed)


def eigengap(w: np.ndarray, low: int = 5, high: int = 40) -> tuple[int, list[float]]:
    """The k in [low, high] after which the normalised affinity's eigenvalues drop most."""
    values, _ = _spectrum(w, high + 1)
    gaps = values[low - 1 : high] - values[low : high + 1]
    return int(low + np.argmax(gaps)), [round(float(v), 4) for v in values]


def propagate(
    labels: np.ndarray, known: np.ndarray, vectors: np.ndarray, k: int = 10, agree: float = 0.7
) -> np.ndarray:
    """Labels (``-1`` unknown) for rows of ``vectors`` past ``known``: the majority of their
    ``k`` nearest among the ``known`` rows where at least ``agree`` of them share it."""
    x = _normalise(vectors)
    ref = x[: len(known)] if len(known) else x[:0]
    out = np.full(len(x) - len(known), -1)
    sims = x[len(known) :] @ ref.T
    nearest = np.argsort(-sims, axis=1)[:, :k]
    for i, row in enumerate(nearest):
        votes = Counter(int(labels[r]) for r in row if labels[r] >= 0)
        if votes:
            label, n = votes.most_common(1)[0]
            if n >= agree * k:
                out[i] = label
    return out


def agreeing(labels: np.ndarray, vectors: np.ndarray, k: int = 10, agree: float = 0.5):
    """``labels`` with those set to -1 whose ``k`` nearest neighbours mostly (less than
    ``agree`` of them) carry another label: the ambiguous images at a group's edge."""
    x = _normalise(vectors)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, k, axis=1)[:, :k]
    share = (labels[nearest] == labels[:, None]).mean(1)
    return np.where((share >= agree) & (labels >= 0), labels, -1)


def purity(groups: Sequence[int], categories: Sequence[str | None]) -> dict:
    """Measured with labels after the fact: how many groups, how many images they cover, the
    share of images in their group's majority category (purity), the share of each category in
    its largest group (completeness), and NMI."""
    pairs = [(g, c) for g, c in zip(groups, categories, strict=True) if g >= 0 and c]
    if not pairs:
        return {}
    by_group: dict[int, list[str]] = {}
    by_cat: dict[str, list[int]] = {}
    for g, c in pairs:
        by_group.setdefault(g, []).append(c)
        by_cat.setdefault(c, []).append(g)
    n = len(pairs)
    pure = sum(Counter(v).most_common(1)[0][1] for v in by_group.values()) / n
    complete = sum(Counter(v).most_common(1)[0][1] for v in by_cat.values()) / n
    joint = Counter(pairs)
    pg = {g: len(v) / n for g, v in by_group.items()}
    pc = {c: len(v) / n for c, v in by_cat.items()}
    mi = sum(m / n * np.log((m / n) / (pg[g] * pc[c])) for (g, c), m in joint.items())
    hg = -sum(p * np.log(p) for p in pg.values())
    hc = -sum(p * np.log(p) for p in pc.values())
    return {
        "groups": len(by_group),
        "covered": n,
        "purity": round(pure, 3),
        "completeness": round(complete, 3),
        "nmi": round(float(2 * mi / (hg + hc)) if hg + hc else 0.0, 3),
    }


def sizes_at_least(groups: np.ndarray, smallest: int) -> np.ndarray:
    """``groups`` with those under ``smallest`` images set to -1 and the rest renumbered."""
    counts = Counter(int(g) for g in groups if g >= 0)
    keep = sorted((g for g, c in counts.items() if c >= smallest), key=lambda g: -counts[g])
    renumber = {g: i for i, g in enumerate(keep)}
    return np.array([renumber.get(int(g), -1) for g in groups])


def as_mapping(keys: Sequence[str], groups: np.ndarray) -> Mapping[str, int]:
    return {k: int(g) for k, g in zip(keys, groups, strict=True) if g >= 0}
