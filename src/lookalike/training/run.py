"""`lookalike train`: read pairs, resolve their vectors, train, save a loadable checkpoint."""

from __future__ import annotations

import copy
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from ..clicks import read_pairs
from ..encoders import Encoder, encoder_from_settings, model_version_id
from ..encoders.base import TrainableTail, file_digest
from ..encoders.finetuned import save_checkpoint
from ..errors import ConfigurationError
from ..events import TrainingPair
from ..images import BlobStore, ImageFetcher
from ..index import open_index
from ..settings import Settings
from .contrastive import STATE_FILE, TrainConfig, Trainer
from .pair_data import (
    ApiVectors,
    IndexVectors,
    PairTensors,
    VectorSource,
    build_pair_tensors,
    pairs_digest,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"


def _vector_source(settings: Settings, stack: ExitStack) -> VectorSource:
    """The running worker's API if one answers (it holds embedded Qdrant), else the index."""
    client = stack.enter_context(
        httpx.Client(base_url=settings.base_api_url, timeout=120, headers=settings.client_headers())
    )
    try:
        client.get("/health").raise_for_status()
        log.info("reading stored vectors through the worker at %s", settings.base_api_url)
        return ApiVectors(client)
    except httpx.HTTPError:
        index = open_index(settings)
        stack.callback(index.close)
        log.info("no worker answers at %s: reading the index directly", settings.base_api_url)
        return IndexVectors(index)


def _pair_tensors(
    settings: Settings,
    pairs: list[TrainingPair],
    base: Encoder,
    config: TrainConfig,
    progress: bool,
) -> tuple[PairTensors, TrainableTail | None]:
    """The pairs as tensors, and the base's trainable last block (None: a head only)."""
    with ExitStack() as stack:
        source = _vector_source(settings, stack)
        tail = config.tail_learning_rate > 0
        split = base.trainable_tail() if tail else None
        if tail and split is None:
            raise ConfigurationError(f"{base.name} has no trainable last block: train a head only")
        fetcher = stack.enter_context(ImageFetcher.from_settings(settings)) if tail else None
        bar = tqdm(desc="reading images", unit="img", disable=not progress)

        def read(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        data = build_pair_tensors(
            pairs,
            base,
            source,
            BlobStore(settings.blobs_path),
            max_pixels=settings.max_image_pixels,
            fetcher=fetcher,
            tail=tail,
            progress=read,
        )
        bar.close()
    if data.skipped and any(data.skipped.values()):
        log.warning("skipped pairs whose images could not be found: %s", data.skipped)
    return data, split


def _train(trainer: Trainer, config: TrainConfig, progress: bool) -> None:
    remaining = (config.epochs - trainer.epoch) * trainer.steps_per_epoch()
    with tqdm(total=remaining, desc="training", unit="step", disable=not progress) as steps:

        def on_step(loss: float) -> None:
            steps.update(1)
            steps.set_postfix(loss=f"{loss:.3f}")

        def on_epoch(report: Any) -> None:
            log.info(
                "epoch %d: loss %.4f, holdout pair accuracy %s",
                report.epoch,
                report.loss,
                f"{report.holdout_accuracy:.3f}" if report.holdout_accuracy is not None else "-",
            )

        trainer.run(on_step, on_epoch)


def train_from_pairs(
    settings: Settings,
    pairs_path: Path,
    base_name: str,
    out_dir: Path,
    config: TrainConfig,
    *,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise ConfigurationError(f"no training pairs under {pairs_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = encoder_from_settings(settings, base_name, compile=False)
    log.info("%d training pairs; base encoder %s", len(pairs), base.version)
    data, split = _pair_tensors(settings, pairs, base, config, progress)
    # A copy: the base encoder itself stays as it is.
    trainer = Trainer(
        config, data, pairs_digest(pairs), out_dir, copy.deepcopy(split.tail) if split else None
    )
    if restart:
        (out_dir / STATE_FILE).unlink(missing_ok=True)
    elif trainer.resume():
        log.info("resuming from epoch %d of %d", trainer.epoch, config.epochs)
    _train(trainer, config, progress)
    summary = trainer.summary() | {"skipped": data.skipped, "base_version": base.version}
    model_path = save_checkpoint(
        out_dir / MODEL_FILE,
        base,
        trainer.head,
        metadata=summary,
        tail_state=trainer.tail.state_dict() if trainer.tail is not None else None,
    )
    version = model_version_id(
        f"finetuned-{base.name}", file_digest(model_path), base.preprocessing
    )
    return summary | {"model": str(model_path), "version": version}
