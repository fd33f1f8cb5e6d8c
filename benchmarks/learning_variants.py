"""Ways to learn from the same clicks, measured on the README's split (holdout mAP, Recall@k).

    .venv/bin/python benchmarks/learning_variants.py --api http://127.0.0.1:16300 \\
        --data-dir demo/data --holdout demo/sets/holdout --cache /tmp/variants \\
        [--variants head,tail1,tail3-aug,...] [--views 4] [--cut 3] [--threads 1]

Reads the pairs the worker wrote (held-out pairs by id, as `lookalike train`), the catalogue
images' sources through the running worker (`POST /vectors` records), the kept query images,
and the labelled holdout. Every image goes once through the frozen EfficientNet-Lite0 trunk up
to ``--cut`` blocks before its head (fp32; ``--views`` augmented views of the training images
too), kept in ``--cache``; each variant then trains only what lies after the cut, on those maps.
Uses no label in training: categories appear only in the holdout's scoring. One JSON line per
variant (holdout metrics, held-out clicks MRR, seconds per epoch) to stdout and
``CACHE/results.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from _click_graph import GraphSettings, communities
from torch import nn
from tqdm import tqdm

from lookalike.clicks import read_pairs
from lookalike.encoders import configure_threads, load_encoder
from lookalike.encoders.finetuned import ProjectionHead
from lookalike.evaluation import click_scores, labelled_images, pair_key, retrieval_metrics
from lookalike.events import TrainingPair
from lookalike.images import BlobStore, decode_image
from lookalike.training.augment import Augmentation, view_pixels
from lookalike.training.pair_data import ApiVectors, split_pairs


@dataclass(frozen=True)
class Variant:
    name: str
    blocks: int = 0  # MBConv blocks trained before the head convolution; -1: head only
    loss: str = "nce"  # nce | groups | nce+groups
    temperature: float = 2.0
    group_temperature: float = 0.1
    hard_negatives: int = 0  # base neighbours of other click communities, never clicked
    anchor: float = 0.0  # weight of 1 - cos(tuned, base) on the batch's images
    views: int = 1  # augmented views drawn from (1: the plain image only)
    epochs: int = 15
    lr: float = 2e-3
    tail_lr: float = 3e-4
    batch: int = 256


VARIANTS = {
    v.name: v
    for v in [
        Variant("base", blocks=-1, epochs=0),  # untrained: the base encoder itself
        Variant("head", blocks=-1, epochs=25),
        Variant("head-hard", blocks=-1, epochs=25, hard_negatives=5),
        Variant("tail0-hard", blocks=0, hard_negatives=5),
        Variant("tail3-aug-5ep", blocks=3, views=5, epochs=5),
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


# --- the image table: trunk maps of every image, cached -------------------------------------
class MapTable:
    """Trunk maps (fp16) of every image key, ``views`` per training image (view 0: plain)."""

    def __init__(self, encoder: Any, cut: int, cache: Path) -> None:
        self.encoder = encoder
        self.cut = cut
        self.cache = cache
        self.trunk = encoder.trainable_tail(cut).trunk
        cache.mkdir(parents=True, exist_ok=True)

    def build(self, reads: dict[str, Any], views: int, aug: Augmentation, tag: str) -> dict:
        path = self.cache / f"maps-{tag}-cut{self.cut}-v{views}-{aug.digest()}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
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


def image_reads(pairs: list[TrainingPair], api: str, version: str, blobs: BlobStore) -> dict:
    ids = sorted(
        {p.positive for p in pairs}
        | {n for p in pairs for n in p.negatives}
        | {p.query.image_id for p in pairs if p.query.image_id}
    )
    with httpx.Client(base_url=api, timeout=120) as client:
        records = ApiVectors(client).payloads(version, ids)
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
        negatives.append(negs)
    width = max(1, max(len(n) for n in negatives))
    padded = torch.full((len(negatives), width), -1, dtype=torch.long)
    for i, row in enumerate(negatives):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return Batchable(torch.tensor(queries), torch.tensor(positives), padded, groups)


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
    return loss


def train(variant: Variant, encoder: Any, cut: int, table: dict, data: Batchable, base_plain):
    model = Tuned(encoder, cut, variant.blocks)
    maps = precompute(model, table["maps"][:, : variant.views])
    n_groups = int(data.groups.max()) + 1
    proxies = None
    params: list[dict] = [{"params": model.head.parameters(), "lr": variant.lr}]
    if variant.blocks >= 0:
        params.append({"params": model.tail.parameters(), "lr": variant.tail_lr})
    if "groups" in variant.loss and n_groups > 0:
        # Proxies start at each community's mean base vector: the base's own geometry.
        means = torch.zeros(n_groups, base_plain.shape[1])
        known = data.groups >= 0
        means.index_add_(0, data.groups[known], base_plain[known])
        proxies = nn.Parameter(nn.functional.normalize(means, dim=1))
        params.append({"params": [proxies], "lr": variant.lr})
    optimizer = torch.optim.AdamW(params, weight_decay=1e-4)
    model.eval()  # batch norm keeps the base's statistics
    generator = torch.Generator().manual_seed(0)
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
MIXES = (0.0, 0.2, 0.35, 0.5)


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
    parser.add_argument("--api", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--cut", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    encoder = load_encoder("efficientnet-lite0", precision="fp32")
    pairs = read_pairs(args.data_dir / "training-pairs")
    train_pairs, held = split_pairs(pairs, 0.1)
    blobs = BlobStore(args.data_dir / "blobs")
    maps = MapTable(encoder, args.cut, args.cache)
    table = maps.build(
        image_reads(pairs, args.api, encoder.version, blobs), args.views, Augmentation(), "pairs"
    )
    hold_files = labelled_images(args.holdout)
    hold = maps.build({str(f): f.read_bytes for f, _ in hold_files}, 1, Augmentation(), "holdout")
    labels = [c for _, c in hold_files]
    rows = {k: i for i, k in enumerate(table["keys"])}
    reference = Tuned(encoder, args.cut, -1)
    base_plain = nn.functional.normalize(_base(reference, table["maps"][:, 0]), dim=1)
    # Clicks only (no base-neighbour links): purer communities here (0.93 of each community's
    # images share its majority category, vs 0.74 with the neighbour links), if fragmented.
    graph = communities(
        train_pairs,
        table["keys"],
        base_plain.numpy(),
        GraphSettings(neighbour_weight=0.0, resolution=1.0),
    )
    print(
        json.dumps(
            {
                "pairs": len(pairs),
                "train": len(train_pairs),
                "held": len(held),
                "images": len(rows),
                "communities": len(set(graph.values())),
                "in_communities": len(graph),
            }
        ),
        flush=True,
    )
    for name in args.variants.split(","):
        variant = VARIANTS[name]
        if args.epochs:
            variant = replace(variant, epochs=args.epochs)
        data = prepare(train_pairs, rows, base_plain.numpy(), table["keys"], variant, graph)
        model, per_epoch = train(variant, encoder, args.cut, table, data, base_plain)
        result = {"variant": asdict(variant), "seconds_per_epoch": round(per_epoch, 1)}
        result |= score(model, reference, hold, labels, held, table, rows)
        line = json.dumps(result)
        print(line, flush=True)
        with open(args.cache / "results.jsonl", "a") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
