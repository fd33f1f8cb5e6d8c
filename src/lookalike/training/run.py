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
from ..encoders.finetuned import (
    check_keep_base,
    read_checkpoint,
    save_checkpoint,
    towards_base,
)
from ..errors import ConfigurationError, EncoderUnavailable
from ..evaluation import click_scores, compare_scores, resolvable
from ..events import TrainingPair
from ..images import BlobStore, ImageFetcher
from ..index import open_index
from ..settings import Settings
from .contrastive import STATE_FILE, TrainConfig, Trainer, check_start
from .pair_data import (
    ApiVectors,
    IndexVectors,
    PairTensors,
    VectorSource,
    build_pair_tensors,
    embed_pair_images,
    pairs_digest,
    split_pairs,
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
    indexed_version: str,
) -> tuple[PairTensors, TrainableTail | None]:
    """The pairs as tensors, and the base's trainable last block (None: a head only)."""
    with ExitStack() as stack:
        source = _vector_source(settings, stack)
        tail = config.tail_learning_rate > 0
        split = base.trainable_tail(config.tail_blocks) if tail else None
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
            indexed_version=indexed_version,
            tail_blocks=config.tail_blocks,
            views=config.views,
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
            log.info("epoch %d: loss %.4f (%.1f s)", report.epoch, report.loss, report.seconds)

        trainer.run(on_step, on_epoch)


def train_from_pairs(
    settings: Settings,
    pairs_path: Path,
    base_name: str,
    out_dir: Path,
    config: TrainConfig,
    *,
    keep_base: float = 0.0,
    interpolate_base: float = 0.0,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise ConfigurationError(f"no training pairs under {pairs_path}")
    return train_candidate(
        settings,
        pairs,
        base_name,
        out_dir,
        config,
        keep_base=keep_base,
        interpolate_base=interpolate_base,
        restart=restart,
        progress=progress,
    )


def check_interpolation(share: float, config: TrainConfig) -> None:
    """``share``: the base's share of every trained weight in the saved model (WiSE-FT)."""
    if not 0.0 <= share < 1.0:
        raise ConfigurationError(
            f"the base's share of the weights must be in [0, 1) (0: the tuned weights), not {share}"
        )
    if share and (config.out_dim is not None or config.hidden_dim is not None):
        raise ConfigurationError(
            "interpolating towards the base needs the head that starts as the base's own "
            "ranking (the identity): leave out --dim and --hidden"
        )


def warm_start(config: TrainConfig, base: Encoder) -> dict[str, Any] | None:
    """The checkpoint ``config.init_from`` names, checked to continue on this base with the
    same trained blocks and head (None: the run starts from the base); checked here, before
    minutes of reading images, not only by the trainer."""
    if config.init_from is None:
        return None
    try:
        checkpoint = read_checkpoint(Path(config.init_from))
    except EncoderUnavailable as exc:
        raise ConfigurationError(f"cannot start from it: {exc}") from None
    if checkpoint["base_version"] != base.version:
        raise ConfigurationError(
            f"{config.init_from} was trained on {checkpoint['base_version']}, not on "
            f"{base.version}: give the --base it was trained on"
        )
    if checkpoint.get("tail_state") and checkpoint.get("tail_blocks", 0) != config.tail_blocks:
        raise ConfigurationError(
            f"{config.init_from} trained {checkpoint.get('tail_blocks', 0)} blocks before the "
            f"last stage, this run {config.tail_blocks}: give the same --tail-blocks"
        )
    # The head a run builds: on the base's features, as wide as asked (default: the base's).
    head = {
        "in_dim": base.dim,
        "out_dim": config.out_dim or base.dim,
        "hidden_dim": config.hidden_dim,
    }
    check_start(checkpoint, head, config.tail_learning_rate > 0, config.init_from)
    return checkpoint


def fp32_encoder(settings: Settings, spec: str) -> Encoder:
    """``spec`` in float32, uncompiled: training and every comparison of models use the same
    arithmetic, whatever precision the worker serves in."""
    return encoder_from_settings(
        settings.model_copy(update={"precision": "fp32"}), spec, compile=False
    )


def train_candidate(
    settings: Settings,
    pairs: list[TrainingPair],
    base_name: str,
    out_dir: Path,
    config: TrainConfig,
    *,
    indexed_version: str | None = None,
    reference: tuple[str, Encoder] | None = None,
    keep_base: float = 0.0,
    interpolate_base: float = 0.0,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on the pairs not held out (``config.holdout_fraction``, by pair id), save
    ``out_dir/model.pt``, and score the candidate and ``reference`` (name, encoder; default the
    base) on the held-out pairs, both in fp32 from the same images. ``indexed_version``: the
    indexed version whose records name the images' sources (default: the base's).
    ``keep_base``: the base's weight in the saved encoder's vector (a serving choice, not a
    training one: a finished run re-saved with another weight does not retrain).
    ``interpolate_base``: the base's share of every trained weight in the saved model, the rest
    the trained weights' (weight-space ensembling with the base, WiSE-FT: it keeps more of the
    base's recall than the tuned weights do, at one model's cost); also a saving choice. The
    base is the pretrained encoder, also for a run that started from ``config.init_from``."""
    check_keep_base(keep_base)
    check_interpolation(interpolate_base, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_pairs, held_out = split_pairs(pairs, config.holdout_fraction)
    if not train_pairs:
        raise ConfigurationError(f"all {len(pairs)} pairs are held out: too few pairs to train")
    base = fp32_encoder(settings, base_name)
    start = warm_start(config, base)
    if keep_base and config.out_dim not in (None, base.dim):
        raise ConfigurationError(
            f"keeping the base mixes the tuned vector into the base's: train it {base.dim} "
            "wide (leave out --dim), or keep no base"
        )
    log.info(
        "%d training pairs (%d held out); base encoder %s%s",
        len(train_pairs),
        len(held_out),
        base.version,
        f", starting from {config.init_from}" if start else "",
    )
    indexed_version = indexed_version or base.version
    data, split = _pair_tensors(settings, train_pairs, base, config, progress, indexed_version)
    # A copy: the base encoder itself stays as it is.
    trainer = Trainer(
        config,
        data,
        pairs_digest(pairs),
        out_dir,
        copy.deepcopy(split.tail) if split else None,
        start=start,
    )
    if restart:
        (out_dir / STATE_FILE).unlink(missing_ok=True)
    elif trainer.resume():
        log.info("resuming from epoch %d of %d", trainer.epoch, config.epochs)
    _train(trainer, config, progress)
    summary = trainer.summary() | {
        "base_version": base.version,
        "keep_base": keep_base,
        "interpolate_base": interpolate_base,
    }
    model_path, version = _save(out_dir, base, trainer, summary, keep_base, interpolate_base)
    name, other = reference or ("base", base)
    candidate = fp32_encoder(settings, str(model_path))
    clicks = compare_on_held_out_clicks(
        settings, held_out, {name: other, "candidate": candidate}, indexed_version, progress
    )
    held_skipped = clicks.pop("skipped")
    skipped = {k: v + held_skipped.get(k, 0) for k, v in data.skipped.items()}
    return summary | {
        "pairs": len(data) + clicks["pairs"],
        "skipped": skipped,
        "held_out_clicks": clicks,
        "model": str(model_path),
        "version": version,
    }


def _save(
    out_dir: Path,
    base: Encoder,
    trainer: Trainer,
    summary: dict[str, Any],
    keep_base: float,
    interpolate_base: float,
) -> tuple[Path, str]:
    """The checkpoint (an encoder) and its version id."""
    head = trainer.head
    tail_state = trainer.tail.state_dict() if trainer.tail is not None else None
    if interpolate_base:
        head = copy.deepcopy(head)
        head_state, tail_state = towards_base(
            head.state_dict(), tail_state, base, trainer.config.tail_blocks, interpolate_base
        )
        head.load_state_dict(head_state)
    model_path = save_checkpoint(
        out_dir / MODEL_FILE,
        base,
        head,
        metadata=summary,
        tail_state=tail_state,
        tail_blocks=trainer.config.tail_blocks,
        keep_base=keep_base,
    )
    version = model_version_id(
        f"finetuned-{base.name}", file_digest(model_path), base.preprocessing
    )
    return model_path, version


def compare_on_held_out_clicks(
    settings: Settings,
    pairs: list[TrainingPair],
    encoders: dict[str, Encoder],
    indexed_version: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Click metrics of each encoder on the held-out pairs, each from images it embeds itself
    (fp32), over the pairs every encoder can resolve; differences are from the first."""
    if not pairs:
        return {"pairs": 0, "skipped": {}}
    log.info(
        "scoring %s on %d held-out pairs: re-reading and embedding their images",
        " and ".join(encoders),
        len(pairs),
    )
    with ExitStack() as stack:
        source = _vector_source(settings, stack)
        fetcher = stack.enter_context(ImageFetcher.from_settings(settings))
        bar = stack.enter_context(
            tqdm(desc="scoring held-out clicks", unit="img", disable=not progress)
        )

        def read(done: int, total: int) -> None:
            bar.total = total * len(encoders)
            bar.update(done)

        vectors = embed_pair_images(
            pairs,
            encoders,
            source,
            BlobStore(settings.blobs_path),
            fetcher,
            version=indexed_version,
            max_pixels=settings.max_image_pixels,
            progress=read,
        )
    common = set.intersection(*(set(resolvable(pairs, v)) for v in vectors.values()))
    kept = [p for i, p in enumerate(pairs) if i in common]
    missing = len(pairs) - len(kept)
    if not kept:
        return {"pairs": 0, "skipped": {"positive_missing": missing}}
    scores = {name: click_scores(kept, table) for name, table in vectors.items()}
    return {"pairs": len(kept), "skipped": {"positive_missing": missing}} | compare_scores(
        scores, next(iter(encoders))
    )
