"""Ways to learn from the same clicks, measured on the README's split (holdout mAP, Recall@k).

    .venv/bin/python benchmarks/learning_variants.py --api http://127.0.0.1:16300 \\
        --data-dir demo/data --holdout demo/sets/holdout --cache /tmp/variants \\
        [--variants head,tail1,tail3-aug,...] [--views 4] [--cut 3] [--threads 1]

Once the maps are cached (``--cache``), ``--api`` is not needed: the run reads only the cache,
the pairs and the holdout. ``--set FIELD=VALUE`` changes a field of every variant run (e.g.
``--set batch=64``) and names the result after it.

Reads the pairs the worker wrote (held-out pairs by id, as `lookalike train`), the catalogue
images' sources through the running worker (`POST /vectors` records), the kept query images,
and the labelled holdout. Every image goes once through the frozen EfficientNet-Lite0 trunk up
to ``--cut`` blocks before its head (fp32; ``--views`` augmented views of the training images
too), kept in ``--cache``; each variant then trains only what lies after the cut, on those maps.
Uses no label in training: categories appear only in the holdout's scoring, in the purity of
pseudo-labels (``--sets``, measured after the fact) and in the simulated buyer of
``--second-round`` (as in ``lookalike simulate-clicks``). One JSON line per
variant (holdout metrics, held-out clicks MRR, seconds per epoch) to stdout and
``CACHE/results.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import _pseudo_labels as pl
import httpx
import numpy as np
import torch
from _click_graph import GraphSettings, communities
from _offline_clicks import second_round
from torch import nn
from tqdm import tqdm

from lookalike.clicks import read_pairs
from lookalike.encoders import configure_threads, load_encoder
from lookalike.encoders.finetuned import ProjectionHead
from lookalike.evaluation import click_scores, labelled_images, pair_key, retrieval_metrics
from lookalike.events import TrainingPair
from lookalike.images import BlobStore, decode_image
from lookalike.index import open_index
from lookalike.settings import Settings
from lookalike.training.augment import Augmentation, view_pixels
from lookalike.training.pair_data import ApiVectors, IndexVectors, split_pairs


@dataclass(frozen=True)
class Variant:
    name: str
    blocks: int = 0  # MBConv blocks trained before the head convolution; -1: head only
    # nce | groups | nce+groups: groups on the batch's own images (proxies, as first measured);
    # proxy / supcon (with or without nce+): on ``group_batch`` labelled images per step.
    loss: str = "nce"
    temperature: float = 2.0
    group_temperature: float = 0.1
    hard_negatives: int = 0  # base neighbours of other click communities, never clicked
    anchor: float = 0.0  # weight of 1 - cos(tuned, base) on the batch's images
    # Pseudo-labels for "groups" / "proxy" / "supcon" (see _pseudo_labels): "louvain" (click
    # communities; "louvain:R": at resolution R over every row, lower is coarser), "kmeans:K"
    # (click components as one point), "merge:K", "spectral:K"; in the vectors of ``space``:
    # "base", "head" (an InfoNCE head trained first on the pairs), or a .npy file of an
    # earlier variant's table vectors (--save-vectors). "labels": the true
    # categories of every table image (needs --sets): not a click variant but the ceiling
    # that labels would give the same training, to measure the clicks' variants against.
    logged: bool = True  # the logged negatives (results shown above a click) in InfoNCE
    two_hop: bool = False  # also pairs two clicks apart (see two_hop_pairs)
    distill: float = 0.0  # weight of neighbour_distillation on the batch's images
    distill_temperature: float = 0.05
    pseudo: str = "louvain"
    space: str = "base"
    group_weight: float = 1.0
    group_batch: int = 256  # "proxy" / "supcon": labelled images drawn per step for that term
    propagate: int = 0  # label unclicked catalogue images by a k-NN vote of this k (0: no)
    keep_agree: float = 0.0  # keep an image's pseudo-label only if this share of its 10 NN agree
    views: int = 1  # augmented views drawn from (1: the plain image only)
    epochs: int = 15
    lr: float = 2e-3
    tail_lr: float = 3e-4
    batch: int = 256
    seed: int = 0  # batch order, view and group draws (--set seed=1: a repeat of the variant)


VARIANTS = {
    v.name: v
    for v in [
        Variant("base", blocks=-1, epochs=0),  # untrained: the base encoder itself
        Variant("head", blocks=-1, epochs=25),
        Variant("head-hard", blocks=-1, epochs=25, hard_negatives=5),
        Variant("tail0-hard", blocks=0, hard_negatives=5),
        Variant("tail3-aug-5ep", blocks=3, views=5, epochs=5),
        # the same with 4x the steps (batch 64): holdout mAP 0.740; then, as a second round,
        # tail3-proxy-merge20-base --space <its saved vectors> --set keep_agree=0.9 --set batch=64
        # (pseudo-labels clustered in its vectors): 0.764, the best measured
        Variant("tail3-aug-5ep-b64", blocks=3, views=5, epochs=5, batch=64),
        Variant("tail3-groups-aug-5ep", blocks=3, loss="nce+groups", views=5, epochs=5),
        Variant("tail0", blocks=0),
        Variant("tail0-groups", blocks=0, loss="nce+groups"),
        Variant("tail0-groups-hard", blocks=0, loss="nce+groups", hard_negatives=5),
        Variant("tail3", blocks=3),
        Variant("tail3-groups", blocks=3, loss="nce+groups"),
        Variant("tail3-groups-aug", blocks=3, loss="nce+groups", views=5),
        Variant("tail3-groups-aug-anchor", blocks=3, loss="nce+groups", views=5, anchor=1.0),
        Variant("tail3-groups-hard-aug", blocks=3, loss="nce+groups", views=5, hard_negatives=5),
        Variant("groups-only-tail3", blocks=3, loss="groups", views=5),
    ]
}
# Coarser pseudo-labels (see _pseudo_labels), e.g. "head-proxy-kmeans15-head-prop": what trains
# (head: 25 epochs; tail3: 3 blocks, 5 views, 5 epochs), the pseudo-label term beside InfoNCE,
# the clustering and its k, the space it clusters in, and whether unclicked catalogue images
# get labels by a 10-NN vote (needs --gallery).
for _what, _shape in {
    "head": {"blocks": -1, "epochs": 25},
    "tail3": {"blocks": 3, "views": 5, "epochs": 5},
}.items():
    for _loss in ("proxy", "supcon"):
        for _method in ("kmeans", "merge", "spectral"):
            for _k in (10, 15, 20, 30):
                for _space in ("base", "head"):
                    for _prop in (0, 10):
                        _name = f"{_what}-{_loss}-{_method}{_k}-{_space}" + (
                            "-prop" if _prop else ""
                        )
                        VARIANTS[_name] = Variant(
                            _name,
                            loss=f"nce+{_loss}",
                            pseudo=f"{_method}:{_k}",
                            space=_space,
                            propagate=_prop,
                            **_shape,
                        )


# --- the image table: trunk maps of every image, cached -------------------------------------
class MapTable:
    """Trunk maps (fp16) of every image key, ``views`` per training image (view 0: plain)."""

    def __init__(self, encoder: Any, cut: int, cache: Path) -> None:
        self.encoder = encoder
        self.cut = cut
        self.cache = cache
        self.trunk = encoder.trainable_tail(cut).trunk
        cache.mkdir(parents=True, exist_ok=True)

    def build(self, reads: Any, views: int, aug: Augmentation, tag: str) -> dict:
        """``reads``: key -> how to read its bytes, or a function that returns that (called
        only when the maps are not cached yet, so a cached run needs no worker)."""
        path = self.cache / f"maps-{tag}-cut{self.cut}-v{views}-{aug.digest()}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
        reads = reads() if callable(reads) else reads
        keys, maps = [], []
        size = self.encoder.preprocessing.resize
        for key, read in tqdm(list(reads.items()), desc=f"trunk maps ({tag})", unit="img"):
            data = read()
            if data is None:
                continue
            image = decode_image(data, max_pixels=50_000_000, target_size=size)
            pixels = [
                view_pixels(image, key, view, self.encoder.preprocessing, aug)
                for view in range(views)
            ]
            with torch.no_grad():
                batch = self.encoder.preprocessing.normalize(torch.stack(pixels))
                maps.append(self.trunk(batch).half())
            keys.append(key)
        table = {"keys": keys, "maps": torch.stack(maps)}  # (N, V, C, H, W)
        torch.save(table, path)
        return table


def image_reads(
    pairs: list[TrainingPair], api: str | None, data_dir: Path, blobs: BlobStore
) -> dict:
    """How to read each pair image: its source reference as indexed under the version that
    served the pairs' searches (through the worker at ``api``, else from the index on disk)."""
    ids = sorted(
        {p.positive for p in pairs}
        | {n for p in pairs for n in p.negatives}
        | {p.query.image_id for p in pairs if p.query.image_id}
    )
    version = pairs[0].model_version
    if api:
        with httpx.Client(base_url=api, timeout=120) as client:
            records = ApiVectors(client).payloads(version, ids)
    else:
        index = open_index(Settings(data_dir=data_dir))
        try:
            records = IndexVectors(index).payloads(version, ids)
        finally:
            index.close()
    reads: dict[str, Any] = {}
    for image_id, record in records.items():
        if record.get("source_kind") == "file":
            file = Path(str(record["source"]).removeprefix("file:"))
            reads[image_id] = file.read_bytes
        else:
            reads[image_id] = lambda sha=record.get("content_sha256"): blobs.get(sha)
    for sha in {p.query.content_sha256 for p in pairs if p.query.content_sha256}:
        reads[f"sha:{sha}"] = lambda sha=sha: blobs.get(sha)
    return reads


# --- the model after the cut ------------------------------------------------------------------
class Tuned(nn.Module):
    """What follows the cut: frozen blocks (and, for a head only, the frozen head convolution),
    then what trains (blocks, head convolution), then the projection head. ``pre`` is fixed, so
    training computes it once per image view; ``post`` is what trains."""

    def __init__(self, encoder: Any, cut: int, blocks: int) -> None:
        super().__init__()
        model = copy.deepcopy(encoder.model)
        split = type(encoder).trainable_tail(_Holder(model, encoder), cut)
        tail = split.tail
        trained = max(blocks, 0)
        self.frozen = nn.ModuleList(list(tail.blocks)[: cut - trained])
        tail.blocks = nn.ModuleList(list(tail.blocks)[cut - trained :])
        self.head_only = blocks < 0
        self.tail = tail  # trained unless head_only
        for parameter in [*self.frozen.parameters()] + (
            [*tail.parameters()] if self.head_only else []
        ):
            parameter.requires_grad_(False)
        self.head = ProjectionHead(encoder.dim, encoder.dim)
        with torch.no_grad():
            self.head.net.weight.copy_(torch.eye(encoder.dim))
            self.head.net.bias.zero_()

    def pre(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps.float()
        for block in self.frozen:
            x = block(x, drop_connect_rate=None)
        return self.tail(x) if self.head_only else x

    def post(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(x if self.head_only else self.tail(x)), dim=1)

    def base(self, maps: torch.Tensor) -> torch.Tensor:
        """The base's own vector (unnormalised) for these maps (meaningful untrained)."""
        x = self.pre(maps)
        return x if self.head_only else self.tail(x)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.post(self.pre(maps))


def precompute(model: Tuned, maps: torch.Tensor) -> torch.Tensor:
    """``model.pre`` of every view of every image, once (N, V, ...)."""
    with torch.no_grad():
        flat = maps.flatten(0, 1)
        out = torch.cat([model.pre(part) for part in flat.split(256)])
    return out.unflatten(0, maps.shape[:2])


class _Holder:
    """Lets ``trainable_tail`` split a copy of the model instead of the encoder's own."""

    def __init__(self, model: nn.Module, encoder: Any) -> None:
        self.model = model
        self.name = encoder.name


def embed(model: Tuned, maps: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(part) for part in maps.split(128)]).numpy()


def _mixed(base: torch.Tensor, tuned: torch.Tensor, mix: float) -> np.ndarray:
    """The served vector when base and tuned are mixed: normalize(mix*base + (1-mix)*tuned)."""
    return nn.functional.normalize(mix * base + (1 - mix) * tuned, dim=1).numpy()


# --- training -------------------------------------------------------------------------------
@dataclass
class Batchable:
    queries: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor  # (P, M) logged, then hard; -1 padded
    groups: torch.Tensor  # community per table row, -1 none


def prepare(
    pairs: list[TrainingPair],
    rows: dict[str, int],
    base: np.ndarray,
    keys: list[str],
    variant: Variant,
    graph: dict[str, int],
) -> Batchable:
    groups = torch.tensor([graph.get(k, -1) for k in keys])
    clicked: dict[str, set[str]] = {}
    for pair in pairs:
        clicked.setdefault(pair_key(pair), set()).add(pair.positive)
    usable = [p for p in pairs if pair_key(p) in rows and p.positive in rows]
    sims = base @ base.T if variant.hard_negatives else None
    queries, positives, negatives = [], [], []
    for pair in usable:
        q = rows[pair_key(pair)]
        negs = [rows[n] for n in pair.negatives if n in rows]
        if sims is not None:
            negs += _hard(q, rows[pair.positive], sims, groups, clicked[pair_key(pair)], rows)[
                : variant.hard_negatives
            ]
        queries.append(q)
        positives.append(rows[pair.positive])
        negatives.append(negs if variant.logged else [])
    if variant.two_hop:
        for a, b in two_hop_pairs(usable, rows):
            queries.append(a)
            positives.append(b)
            negatives.append([])
    width = max(1, max(len(n) for n in negatives))
    padded = torch.full((len(negatives), width), -1, dtype=torch.long)
    for i, row in enumerate(negatives):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return Batchable(torch.tensor(queries), torch.tensor(positives), padded, groups)


def two_hop_pairs(pairs: list[TrainingPair], rows: dict[str, int]) -> list[tuple[int, int]]:
    """Rows two clicks apart: two images one query clicked, two queries that clicked one image
    (one run: 968 and 1,443 such pairs, 95% of either within a category, vs 98% of clicks)."""
    by_query: dict[str, set[int]] = {}
    by_clicked: dict[str, set[int]] = {}
    for pair in pairs:
        by_query.setdefault(pair_key(pair), set()).add(rows[pair.positive])
        by_clicked.setdefault(pair.positive, set()).add(rows[pair_key(pair)])
    found = set()
    for linked in [*by_query.values(), *by_clicked.values()]:
        ordered = sorted(linked)
        found |= {(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]}
    return sorted(found)


def _hard(q: int, pos: int, sims: np.ndarray, groups: torch.Tensor, clicked: set, rows: dict):
    """The query's nearest images under the base that sit in another community than its click
    and that it never clicked."""
    clicked_rows = {rows[c] for c in clicked if c in rows}
    target = int(groups[pos])
    if target < 0:
        return []
    order = np.argsort(-sims[q])[:60]
    return [
        int(r)
        for r in order
        if r != q
        and int(r) not in clicked_rows
        and int(groups[r]) >= 0
        and int(groups[r]) != target
    ]


def batch_loss(
    model: Tuned,
    proxies: nn.Parameter | None,
    maps: torch.Tensor,
    base: torch.Tensor,
    data: Batchable,
    batch: torch.Tensor,
    variant: Variant,
    generator: torch.Generator,
) -> torch.Tensor:
    q, p = data.queries[batch], data.positives[batch]
    logged = data.negatives[batch].flatten()
    rows, inverse = torch.unique(torch.cat([q, p, logged[logged >= 0]]), return_inverse=True)
    view = torch.randint(0, maps.shape[1], (len(rows),), generator=generator)
    emb = model.post(maps[rows, view])
    qi, pi = inverse[: len(q)], inverse[len(q) : 2 * len(q)]
    loss = emb.sum() * 0.0
    if "nce" in variant.loss:
        candidates = torch.unique(torch.cat([pi, inverse[2 * len(q) :]]))
        logits = emb[qi] @ emb[candidates].T / variant.temperature
        target = (candidates[None, :] == pi[:, None]).float().argmax(1)
        same_query = (q[:, None] == q[None, :]) & (pi[:, None] != pi[None, :])
        mask = torch.zeros_like(logits, dtype=torch.bool)
        a, b = torch.nonzero(same_query, as_tuple=True)
        mask[a, (candidates[None, :] == pi[b][:, None]).float().argmax(1)] = True
        mask[torch.arange(len(q)), target] = False
        loss = loss + nn.functional.cross_entropy(logits.masked_fill(mask, -1e9), target)
    if "groups" in variant.loss and proxies is not None:
        groups = data.groups[rows]
        known = groups >= 0
        if bool(known.any()):
            logits = emb[known] @ nn.functional.normalize(proxies, dim=1).T
            loss = loss + nn.functional.cross_entropy(
                logits / variant.group_temperature, groups[known]
            )
    if variant.anchor:
        loss = loss + variant.anchor * (1 - (emb * base[rows]).sum(1)).mean()
    if variant.distill:
        loss = loss + variant.distill * neighbour_distillation(
            emb, base[rows], variant.distill_temperature
        )
    if variant.loss.split("+")[-1] in ("proxy", "supcon"):
        loss = loss + variant.group_weight * group_loss(
            model, proxies, maps, data, variant, generator
        )
    return loss


def neighbour_distillation(tuned: torch.Tensor, base: torch.Tensor, t: float) -> torch.Tensor:
    """KL(base || tuned) of each image's softmax over its similarities to the batch's other
    images: keeps who the base finds near (its neighbour lists), not where its vectors lie."""
    eye = torch.eye(len(tuned), dtype=torch.bool)
    target = nn.functional.softmax((base @ base.T / t).masked_fill(eye, -1e9), dim=1)
    log_tuned = nn.functional.log_softmax((tuned @ tuned.T / t).masked_fill(eye, -1e9), dim=1)
    return nn.functional.kl_div(log_tuned, target, reduction="batchmean")


def group_loss(
    model: Tuned,
    proxies: nn.Parameter | None,
    maps: torch.Tensor,
    data: Batchable,
    variant: Variant,
    generator: torch.Generator,
) -> torch.Tensor:
    """The pseudo-label term on ``group_batch`` labelled images drawn at random (any labelled
    image, clicked or propagated): NormSoftmax over group proxies ("proxy"), or supervised
    contrastive between two views of each ("supcon", same group = positive)."""
    labelled = torch.nonzero(data.groups >= 0).flatten()
    pick = labelled[torch.randperm(len(labelled), generator=generator)[: variant.group_batch]]
    groups = data.groups[pick]
    view = torch.randint(0, maps.shape[1], (len(pick),), generator=generator)
    emb = model.post(maps[pick, view])
    if variant.loss.endswith("proxy") and proxies is not None:
        logits = emb @ nn.functional.normalize(proxies, dim=1).T / variant.group_temperature
        return nn.functional.cross_entropy(logits, groups)
    other = torch.randint(0, maps.shape[1], (len(pick),), generator=generator)
    both = torch.cat([emb, model.post(maps[pick, other])])
    labels = torch.cat([groups, groups])
    logits = both @ both.T / variant.group_temperature
    eye = torch.eye(len(both), dtype=torch.bool)
    logits = logits.masked_fill(eye, -1e9)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -((log_prob * positive).sum(1) / positive.sum(1).clamp(min=1)).mean()


def train(variant: Variant, encoder: Any, cut: int, table: dict, data: Batchable, base_plain):
    model = Tuned(encoder, cut, variant.blocks)
    maps = precompute(model, table["maps"][:, : variant.views])
    n_groups = int(data.groups.max()) + 1
    proxies = None
    params: list[dict] = [{"params": model.head.parameters(), "lr": variant.lr}]
    if variant.blocks >= 0:
        params.append({"params": model.tail.parameters(), "lr": variant.tail_lr})
    if ("groups" in variant.loss or "proxy" in variant.loss) and n_groups > 0:
        # Proxies start at each community's mean base vector: the base's own geometry.
        means = torch.zeros(n_groups, base_plain.shape[1])
        known = data.groups >= 0
        means.index_add_(0, data.groups[known], base_plain[known])
        proxies = nn.Parameter(nn.functional.normalize(means, dim=1))
        params.append({"params": [proxies], "lr": variant.lr})
    optimizer = torch.optim.AdamW(params, weight_decay=1e-4)
    model.eval()  # batch norm keeps the base's statistics
    generator = torch.Generator().manual_seed(variant.seed)
    seconds = []
    for _ in tqdm(range(variant.epochs), desc=variant.name, unit="epoch"):
        started = time.perf_counter()
        order = torch.randperm(len(data.queries), generator=generator)
        for start in range(0, len(order), variant.batch):
            batch = order[start : start + variant.batch]
            if len(batch) < 2:
                continue
            loss = batch_loss(model, proxies, maps, base_plain, data, batch, variant, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return model, float(np.mean(seconds)) if seconds else 0.0


# --- the run --------------------------------------------------------------------------------
MIXES = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)


def score(model: Tuned, reference: Tuned, hold: dict, labels, held, table, rows) -> dict:
    """Holdout metrics and held-out clicks MRR of the tuned vectors, and of their mixes with
    the base's (``mix_M``: normalize(M * base + (1 - M) * tuned))."""
    base_hold = nn.functional.normalize(_base(reference, hold["maps"][:, 0]), dim=1)
    plain = table["maps"][:, 0]
    base_rows = nn.functional.normalize(_base(reference, plain), dim=1)
    found: dict[str, Any] = {}
    tuned_hold = torch.from_numpy(embed(model, hold["maps"][:, 0]))
    tuned_plain = torch.from_numpy(embed(model, plain))
    for mix in MIXES:
        vectors = _mixed(base_hold, tuned_hold, mix)
        metrics = retrieval_metrics(vectors, labels).as_dict()
        tuned_rows = _mixed(base_rows, tuned_plain, mix)
        clicks = click_scores(held, {k: tuned_rows[i] for k, i in rows.items()})
        figures = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)} | {
            "held_out_clicks_mrr": round(float(clicks["reciprocal_rank"].mean()), 4)
        }
        if mix == 0:
            found |= figures | {"held_out_pairs": len(clicks["reciprocal_rank"])}
        else:
            found[f"mix_{mix}"] = {
                k: figures[k] for k in ("map", "recall_at_10", "held_out_clicks_mrr")
            }
    return found


def _base(reference: Tuned, maps: torch.Tensor) -> torch.Tensor:
    """The untrained base's vectors for the same maps."""
    with torch.no_grad():
        return torch.cat([reference.base(part) for part in maps.split(128)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api", help="the worker (only to build the maps' cache; default: the index on disk)"
    )
    parser.add_argument(
        "--base",
        default="efficientnet-lite0",
        help="the base encoder (its maps need a --cache of their own)",
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--cut", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--gallery", type=Path, help="catalogue folder: unclicked images get maps (propagation)"
    )
    parser.add_argument(
        "--sets", type=Path, help="the split's folders: to measure pseudo-labels' purity only"
    )
    parser.add_argument("--save-vectors", type=Path, help="save each variant's table vectors")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE of variants")
    parser.add_argument(
        "--second-round",
        type=Path,
        action="append",
        default=[],
        help="train also on a second round of simulated clicks on these saved table vectors; "
        "again for a third round (on the vectors of a model the second round trained), ...",
    )
    parser.add_argument("--space", help="cluster pseudo-labels in these saved vectors (.npy)")
    args = parser.parse_args()
    configure_threads(args.threads)
    encoder = load_encoder(args.base, precision="fp32")
    pairs = read_pairs(args.data_dir / "training-pairs")
    train_pairs, held = split_pairs(pairs, 0.1)
    blobs = BlobStore(args.data_dir / "blobs")
    maps = MapTable(encoder, args.cut, args.cache)
    table = maps.build(
        lambda: image_reads(pairs, args.api, args.data_dir, blobs),
        args.views,
        Augmentation(),
        "pairs",
    )
    hold_files = labelled_images(args.holdout)
    hold = maps.build({str(f): f.read_bytes for f, _ in hold_files}, 1, Augmentation(), "holdout")
    labels = [c for _, c in hold_files]
    clicked_rows = len(table["keys"])
    if args.gallery:  # unclicked catalogue images, for pseudo-labels propagated to them
        known = {k[:36] for k in table["keys"]}
        extra = [f for f, _ in labelled_images(args.gallery) if f.stem not in known]
        more = maps.build(
            {f"file:{f}": f.read_bytes for f in extra}, args.views, Augmentation(), "extra"
        )
        table = {
            "keys": table["keys"] + more["keys"],
            "maps": torch.cat([table["maps"], more["maps"]]),
        }
    rows = {k: i for i, k in enumerate(table["keys"])}
    reference = Tuned(encoder, args.cut, -1)
    base_plain = nn.functional.normalize(_base(reference, table["maps"][:, 0]), dim=1)
    categories = _categories(table["keys"], args.sets) if args.sets else None
    for number, served in enumerate(args.second_round, start=2):
        # another round of simulated clicks, on a tuned model's ranking
        assert categories and args.gallery, "--second-round needs --sets and --gallery"
        more = second_round(
            table["keys"],
            table_vectors(served, table["keys"]),
            categories,
            version=f"offline-round-{number}",
        )
        relevant = np.mean(
            [categories[rows[p.positive]] == categories[rows[pair_key(p)]] for p in more]
        )
        print(
            json.dumps({"round": number, "pairs": len(more), "relevant": round(float(relevant), 3)})
        )
        train_pairs = train_pairs + more
    # Clicks only (no base-neighbour links): purer communities here (0.93 of each community's
    # images share its majority category, vs 0.74 with the neighbour links), if fragmented.
    graph = communities(
        train_pairs,
        table["keys"][:clicked_rows],
        base_plain[:clicked_rows].numpy(),
        GraphSettings(neighbour_weight=0.0, resolution=1.0),
    )
    print(
        json.dumps(
            {
                "pairs": len(pairs),
                "train": len(train_pairs),
                "held": len(held),
                "images": clicked_rows,
                "unclicked": len(rows) - clicked_rows,
                "communities": len(set(graph.values())),
                "in_communities": len(graph),
            }
        ),
        flush=True,
    )
    spaces: dict[str, np.ndarray] = {"base": base_plain.numpy()}
    for name in args.variants.split(","):
        variant = VARIANTS[name]
        if args.space:
            variant = replace(variant, name=f"{name}@{Path(args.space).stem}", space=args.space)
        if args.epochs:
            variant = replace(variant, epochs=args.epochs)
        for setting in args.set:  # field=value, e.g. group_weight=0.3 (named in the result)
            field, _, value = setting.partition("=")
            kind = type(getattr(variant, field))
            kind = (lambda v: v.lower() in ("1", "true", "yes")) if kind is bool else kind
            name = value if field == "name" else f"{variant.name}@{setting}"
            variant = replace(variant, **({field: kind(value)} | {"name": name}))
        data = prepare(train_pairs, rows, base_plain.numpy(), table["keys"], variant, graph)
        result: dict[str, Any] = {"variant": asdict(variant)}
        if variant.loss != "nce" or variant.hard_negatives:
            if variant.space not in spaces and variant.space.endswith(".npy"):
                # the table vectors of an earlier variant (--save-vectors), same --gallery
                spaces[variant.space] = table_vectors(Path(variant.space), table["keys"])
            elif variant.space not in spaces:
                head, _ = train(VARIANTS["head"], encoder, args.cut, table, data, base_plain)
                spaces[variant.space] = embed(head, table["maps"][:, 0])
            groups = pseudo_labels(
                variant, train_pairs, table["keys"], clicked_rows, spaces, categories
            )
            if variant.loss not in ("nce+groups", "groups"):  # those keep the first measure's
                data.groups = torch.from_numpy(groups)
            if categories:  # measured with the labels after the fact only
                result["pseudo_labels"] = pl.purity(data.groups.tolist(), categories)
                print(json.dumps(result["pseudo_labels"]), flush=True)
        model, per_epoch = train(variant, encoder, args.cut, table, data, base_plain)
        result["seconds_per_epoch"] = round(per_epoch, 1)
        result |= score(model, reference, hold, labels, held, table, rows)
        if args.save_vectors:
            args.save_vectors.mkdir(parents=True, exist_ok=True)
            saved = args.save_vectors / f"{variant.name}.npy"
            np.save(saved, embed(model, table["maps"][:, 0]))
            saved.with_suffix(".keys.json").write_text(json.dumps(table["keys"]))
            np.save(
                args.save_vectors / f"{variant.name}.holdout.npy", embed(model, hold["maps"][:, 0])
            )
        line = json.dumps(result)
        print(line, flush=True)
        with open(args.cache / "results.jsonl", "a") as out:
            out.write(line + "\n")


def table_vectors(path: Path, keys: list[str]) -> np.ndarray:
    """Saved table vectors (``--save-vectors``) in the order of this run's ``keys``: tables of
    another ``--cut`` or ``--base`` list the same images in another order."""
    vectors = np.load(path)
    saved_keys = path.with_suffix(".keys.json")
    if saved_keys.is_file():
        row = {key: i for i, key in enumerate(json.loads(saved_keys.read_text()))}
        return vectors[[row[key] for key in keys]]
    if len(vectors) != len(keys):
        raise SystemExit(f"{path} has {len(vectors)} rows for a table of {len(keys)}")
    print(f"{path}: no {saved_keys.name}, so assumed in this table's order (same --cache)")
    return vectors


def pseudo_labels(
    variant: Variant,
    pairs: list[TrainingPair],
    keys: list[str],
    clicked: int,
    spaces: dict,
    categories: list[str | None] | None,
) -> np.ndarray:
    """Pseudo-label per table row (-1: none) from the clicks and the vectors of
    ``variant.space``; rows past ``clicked`` (unclicked images) only by propagation. "labels":
    the true category of every row (the labelled ceiling, not a click variant)."""
    vectors = spaces[variant.space]
    method, _, k = variant.pseudo.partition(":")
    if method == "labels":
        if not categories:
            raise SystemExit("pseudo=labels needs --sets (the split's labelled folders)")
        names = sorted({c for c in categories if c})
        return np.array([names.index(c) if c else -1 for c in categories])
    clicked_keys, clicked_vectors = keys[:clicked], vectors[:clicked]
    if method == "louvain" and k:
        # Louvain at resolution k over every row's clicks (a later round clicks unclicked
        # catalogue images too), communities of >= 5 images
        return pl.sizes_at_least(pl.louvain(pairs, keys, float(k)), 5)
    if method == "louvain":
        found = communities(
            pairs,
            clicked_keys,
            clicked_vectors,
            GraphSettings(neighbour_weight=0.0, resolution=1.0),
        )
        groups = np.array([found.get(key, -1) for key in clicked_keys])
    elif method == "kmeans":
        groups = pl.constrained_kmeans(pairs, clicked_keys, clicked_vectors, int(k))
    elif method == "merge":
        louvain = pl.louvain(pairs, clicked_keys, 1.0)
        groups = pl.merge_communities(louvain, clicked_vectors, int(k))
    elif method == "spectral":
        groups = pl.spectral(pl.affinity(pairs, clicked_keys, clicked_vectors), int(k))
    else:
        raise ValueError(f"unknown pseudo-labels {variant.pseudo}")
    if variant.keep_agree:
        groups = pl.agreeing(groups, clicked_vectors, k=10, agree=variant.keep_agree)
    rest = np.full(len(keys) - clicked, -1)
    if variant.propagate and len(rest):
        rest = pl.propagate(np.concatenate([groups, rest]), groups, vectors, k=variant.propagate)
    return np.concatenate([groups, rest])


def _categories(keys: list[str], sets: Path) -> list[str | None]:
    """Category of each key from the split's folders: catalogue ids by file name (the id's
    first 36 characters), uploaded queries by content digest, files by path. Only to measure
    pseudo-labels after the fact."""
    by_stem = {f.stem: c for f, c in labelled_images(sets / "gallery")}
    by_sha = {
        f"sha:{hashlib.sha256(f.read_bytes()).hexdigest()}": c
        for f, c in labelled_images(sets / "queries")
    }
    by_file = {f"file:{f}": c for f, c in labelled_images(sets / "gallery")}
    return [by_sha.get(k) or by_file.get(k) or by_stem.get(k[:36]) for k in keys]


if __name__ == "__main__":
    main()
