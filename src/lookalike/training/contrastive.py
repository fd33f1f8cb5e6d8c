"""Contrastive training of a projection head on click pairs (InfoNCE), optionally with a second
term that pulls together the groups the click graph forms (``GroupProxies``).

For each pair the query must score its clicked image above every other candidate in the batch:
the other pairs' clicked images (in-batch negatives) and every logged negative in the batch
(results shown above a click and skipped). Candidates that another pair of the *same query*
clicked are masked out: they are positives too, not negatives.

Training state (head, optimiser, epoch, RNG) is saved after every epoch, so a stopped run
resumes where it was; the result is a fine-tuned encoder checkpoint (``encoders/finetuned``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..encoders.finetuned import ProjectionHead
from ..errors import ConfigurationError
from .click_groups import MIN_GROUP, click_groups
from .pair_data import PairTensors

log = logging.getLogger(__name__)

STATE_FILE = "train-state.pt"
#: The group term: NormSoftmax over one learned proxy per group, on this many grouped images
#: per step, at this temperature (as measured in benchmarks/learning_variants.py).
PROXY_BATCH = 256
PROXY_TEMPERATURE = 0.1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 25
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    #: High on purpose: other buyers' clicks in a batch are often just as relevant to this
    #: query (false negatives), and a soft softmax does not tear those apart.
    temperature: float = 2.0
    #: None: as wide as the base, starting as the identity (the base encoder's own ranking),
    #: which generalises better from few clicks than a random projection does.
    out_dim: int | None = None
    hidden_dim: int | None = None
    #: > 0: also fine-tune the base's last block (its ``trainable_tail``) at this rate.
    tail_learning_rate: float = 0.0
    #: With a tail: how many blocks before the base's last stage train too (0: that stage only).
    tail_blocks: int = 0
    #: With a tail: augmented views per image (1: the image as served only); each step draws
    #: one of them for every image of the batch.
    views: int = 1
    #: Share of the pairs held out of training (by pair id: see ``pair_data.split_pairs``) and
    #: scored afterwards, base and candidate alike, from images each model embeds itself.
    holdout_fraction: float = 0.1
    #: > 0: also pull together the communities of the click graph found at this Louvain
    #: resolution (``click_groups``; lower: fewer, larger groups). 0: the pairs alone.
    click_groups: float = 0.0
    #: A fine-tuned checkpoint (its path) whose head and trained blocks the run starts from,
    #: instead of the base's: a later round of clicks continues the serving model rather than
    #: starting over (``training.run.warm_start``). None: start from the base.
    init_from: str | None = None
    seed: int = 0


@dataclass
class EpochReport:
    epoch: int
    loss: float
    seconds: float = 0.0


def pair_accuracy(head: nn.Module | None, data: PairTensors) -> float | None:
    """Share of pairs whose clicked image outscores all its logged negatives (pairs without
    negatives don't count). ``head=None`` measures the base vectors."""
    has_negatives = data.negatives[:, 0] >= 0
    if not bool(has_negatives.any()):
        return None
    with torch.no_grad():
        vectors = (
            data.vectors
            if head is None
            else torch.cat([head(part) for part in data.vectors.split(512)])
        )
        vectors = nn.functional.normalize(vectors, dim=1)
        q = vectors[data.queries[has_negatives]]
        pos = (q * vectors[data.positives[has_negatives]]).sum(1)
        negs = data.negatives[has_negatives]
        neg_scores = torch.einsum("pd,pmd->pm", q, vectors[negs.clamp(min=0)])
        neg_scores = neg_scores.masked_fill(negs < 0, -float("inf"))
        return float((pos > neg_scores.max(1).values).float().mean())


def info_nce(
    head: nn.Module, data: PairTensors, batch: torch.Tensor, temperature: float
) -> torch.Tensor:
    queries = data.queries[batch]
    positives = data.positives[batch]
    logged = data.negatives[batch].flatten()
    candidates, inverse = torch.unique(
        torch.cat([positives, logged[logged >= 0]]), return_inverse=True
    )
    targets = inverse[: len(positives)]
    q = nn.functional.normalize(head(data.rows(queries)), dim=1)
    c = nn.functional.normalize(head(data.rows(candidates)), dim=1)
    logits = q @ c.T / temperature
    # Another pair of the same query clicked this candidate: a positive, so not a negative.
    same_query = queries[:, None] == queries[None, :]
    mask = torch.zeros_like(logits, dtype=torch.bool)
    rows, cols = torch.nonzero(same_query, as_tuple=True)
    mask[rows, targets[cols]] = True
    mask[torch.arange(len(batch)), targets] = False
    logits = logits.masked_fill(mask, -float("inf"))
    return nn.functional.cross_entropy(logits, targets)


class GroupProxies(nn.Module):
    """The group term: one learned proxy per group, each starting at its group's mean vector
    (``start``: a normalised vector per table row under the untrained model); each of
    ``PROXY_BATCH`` grouped rows drawn at random must score its group's proxy above the
    others' (NormSoftmax)."""

    def __init__(self, groups: torch.Tensor, start: torch.Tensor) -> None:
        super().__init__()
        self.groups = groups
        self.grouped = torch.nonzero(groups >= 0).flatten()
        means = torch.zeros(int(groups.max()) + 1, start.shape[1])
        means.index_add_(0, groups[self.grouped], start[self.grouped])
        self.proxies = nn.Parameter(nn.functional.normalize(means, dim=1))

    def loss(self, model: nn.Module, data: PairTensors, generator: torch.Generator) -> torch.Tensor:
        order = torch.randperm(len(self.grouped), generator=generator)
        pick = self.grouped[order[:PROXY_BATCH]]
        vectors = nn.functional.normalize(model(data.rows(pick)), dim=1)
        logits = vectors @ nn.functional.normalize(self.proxies, dim=1).T / PROXY_TEMPERATURE
        return nn.functional.cross_entropy(logits, self.groups[pick])

    def summary(self) -> dict[str, int]:
        return {
            "groups": len(self.proxies),
            "grouped_images": len(self.grouped),
            "images": len(self.groups),
        }


def check_start(
    start: Mapping[str, Any], head_config: Mapping[str, Any], tail: bool, where: str | None
) -> None:
    """A checkpoint to start from must have the head this run builds and have trained the
    base's blocks exactly when this run trains them."""
    where = where or "the checkpoint"
    if start["head_config"] != head_config:
        raise ConfigurationError(
            f"{where} has a head {start['head_config']}, this run builds "
            f"{dict(head_config)}: give the --dim and --hidden it was trained with"
        )
    if tail != bool(start.get("tail_state")):
        raise ConfigurationError(
            f"{where} was trained with{'out' if tail else ''} the base's blocks (--tail): "
            "train the same parts to continue it"
        )


class Trainer:
    """``tail``: the base's last block (a copy: training changes it), when the data rows are
    the trunk's feature maps; None when they are base vectors."""

    def __init__(
        self,
        config: TrainConfig,
        data: PairTensors,
        digest: str,
        out_dir: Path,
        tail: nn.Module | None = None,
        start: Mapping[str, Any] | None = None,
    ) -> None:
        """``start``: a fine-tuned checkpoint's contents to start from (``head_config``,
        ``head_state``, ``tail_state``), already checked against the base it was trained on."""
        self.config = config
        self.data = data
        self.digest = digest
        self.state_path = out_dir / STATE_FILE
        self.train_rows = torch.arange(len(data))
        torch.manual_seed(config.seed)
        self.tail = tail
        first = data.rows(torch.zeros(1, dtype=torch.long))
        in_dim = int(tail(first).shape[1]) if tail else int(data.vectors.shape[1])
        self.head = (
            ProjectionHead.identity(in_dim)
            if config.out_dim is None and config.hidden_dim is None
            else ProjectionHead(in_dim, config.out_dim or in_dim, config.hidden_dim)
        )
        if start is not None:
            self._start_from(start)
        params: list[dict] = [{"params": self.head.parameters(), "lr": config.learning_rate}]
        if tail is not None:
            params.append({"params": tail.parameters(), "lr": config.tail_learning_rate})
        # The model stays in eval mode: batch norm keeps the base's statistics.
        self.model: nn.Module = nn.Sequential(tail, self.head) if tail else self.head
        self.groups = self._groups()
        if self.groups is not None:
            params.append({"params": self.groups.parameters(), "lr": config.learning_rate})
        self.optimizer = torch.optim.AdamW(params, weight_decay=config.weight_decay)
        self.epoch = 0
        self.history: list[EpochReport] = []
        self.generator = torch.Generator().manual_seed(config.seed + 1)

    def _start_from(self, start: Mapping[str, Any]) -> None:
        check_start(start, self.head.config, self.tail is not None, self.config.init_from)
        self.head.load_state_dict(start["head_state"])
        if self.tail is not None:
            self.tail.load_state_dict(start["tail_state"])

    def _groups(self) -> GroupProxies | None:
        if not self.config.click_groups:
            return None
        rows = len(self.data.vectors)
        groups = click_groups(
            self.data.queries, self.data.positives, rows, self.config.click_groups
        )
        if not (groups >= 0).any():
            log.warning(
                "the clicks form no group of %d images or more: training on the pairs alone",
                MIN_GROUP,
            )
            return None
        log.info(
            "click groups: %d over %d of %d images (Louvain resolution %s)",
            int(groups.max()) + 1,
            int((groups >= 0).sum()),
            rows,
            self.config.click_groups,
        )
        return GroupProxies(torch.from_numpy(groups), torch.from_numpy(self.embed_rows()))

    def embed_rows(self, chunk: int = 256) -> np.ndarray:
        """The model's normalised vector of every table row (view 0: the image as served)."""
        with torch.no_grad():
            parts = [
                nn.functional.normalize(self.model(self.data.served(rows)), dim=1)
                for rows in torch.arange(len(self.data.vectors)).split(chunk)
            ]
        return torch.cat(parts).numpy()

    # --- resumable state ---------------------------------------------------------------------
    def resume(self) -> bool:
        """Load saved state for the same config and pairs; False when there is none."""
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        if state["config"] != asdict(self.config) or state["digest"] != self.digest:
            raise ConfigurationError(
                f"{self.state_path} belongs to another run (different settings or pairs): use "
                "another --out folder, or --restart to start over"
            )
        self.head.load_state_dict(state["head"])
        if self.groups is not None:
            self.groups.load_state_dict(state["groups"])
        if self.tail is not None:
            if state.get("tail") is None:
                raise ConfigurationError(f"{self.state_path} holds no tail state: use --restart")
            self.tail.load_state_dict(state["tail"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]
        self.history = [EpochReport(**h) for h in state["history"]]
        return True

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(
            {
                "config": asdict(self.config),
                "digest": self.digest,
                "head": self.head.state_dict(),
                "tail": self.tail.state_dict() if self.tail is not None else None,
                "groups": self.groups.state_dict() if self.groups is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "epoch": self.epoch,
                "history": [asdict(h) for h in self.history],
            },
            tmp,
        )
        tmp.replace(self.state_path)  # atomic: a crash keeps the previous epoch's state

    # --- training ----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.train_rows) // self.config.batch_size))

    def run(
        self,
        on_step: Callable[[float], None] | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
    ) -> list[EpochReport]:
        while self.epoch < self.config.epochs:
            started = time.perf_counter()
            order = self.train_rows[torch.randperm(len(self.train_rows), generator=self.generator)]
            losses = []
            for start in range(0, len(order), self.config.batch_size):
                batch = order[start : start + self.config.batch_size]
                if len(batch) < 2:
                    continue
                loss = info_nce(self.model, self.data, batch, self.config.temperature)
                if self.groups is not None:
                    loss = loss + self.groups.loss(self.model, self.data, self.generator)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item())
                if on_step is not None:
                    on_step(losses[-1])
            self.epoch += 1
            report = EpochReport(
                self.epoch,
                sum(losses) / max(1, len(losses)),
                round(time.perf_counter() - started, 2),
            )
            self.history.append(report)
            self._save_state()
            if on_epoch is not None:
                on_epoch(report)
        return self.history

    def _trained(self) -> str:
        if self.tail is None:
            return "head"
        if self.config.tail_blocks:
            return f"head, last block and {self.config.tail_blocks} blocks before it"
        return "head and last block"

    def summary(self) -> dict[str, Any]:
        seconds = [h.seconds for h in self.history if h.seconds]
        grouped = {"click_groups": self.groups.summary()} if self.groups is not None else {}
        return grouped | {
            "train_pairs": len(self.train_rows),
            "epochs": self.epoch,
            "final_loss": round(self.history[-1].loss, 4) if self.history else None,
            "seconds_per_epoch": round(sum(seconds) / len(seconds), 2) if seconds else None,
            "trained": self._trained(),
            "config": asdict(self.config),
        }
