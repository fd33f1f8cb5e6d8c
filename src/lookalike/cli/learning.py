"""`lookalike simulate-clicks`, `lookalike pairs` and `lookalike train`: the click loop's CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from ..errors import LookalikeError
from .common import (
    api_client,
    data_dir_option,
    fail,
    port_option,
    print_json,
    settings_from,
    setup_logging,
    show_progress,
)


@click.command("simulate-clicks")
@click.argument("queries_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--limit", type=int, default=None, help="At most this many queries.")
@click.option("--k", default=10, show_default=True, help="Results per search.")
@click.option("--seed", default=0, show_default=True, help="Seed of the buyers' choices.")
@click.option(
    "--continue-prob",
    default=0.85,
    show_default=True,
    help="Position bias: chance a buyer reads on to the next result.",
)
@port_option
def simulate_clicks_command(
    queries_dir: Path, limit: int | None, k: int, seed: int, continue_prob: float, port: int | None
) -> None:
    """Play buyers against the running API: each image of QUERIES_DIR (a sub-folder per
    category) is searched for, and results of the same category are clicked with a position
    bias. Clicks go through POST /clicks, so the worker turns them into training pairs."""
    import httpx
    from tqdm import tqdm

    from ..clicks.simulate import BuyerModel, simulate_clicks
    from ..evaluation import labelled_images

    settings = settings_from(api_port=port)
    try:
        queries = labelled_images(queries_dir, limit)
    except LookalikeError as exc:
        fail(str(exc))
    try:
        with (
            api_client(settings) as client,
            tqdm(total=len(queries), unit="search", disable=not show_progress()) as bar,
        ):
            report = simulate_clicks(
                client,
                queries,
                k=k,
                buyer=BuyerModel(continue_prob=continue_prob),
                seed=seed,
                on_search=lambda: bar.update(1),
            )
    except httpx.TransportError as exc:
        fail(f"cannot reach the lookalike API at {settings.base_api_url} ({exc}); is it up?")
    print_json(report.as_json())
    if report.failed_searches:
        fail(f"{report.failed_searches} searches failed")


pairs_option = click.option(
    "--pairs",
    "pairs_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Pairs file or folder [default: LOOKALIKE_PAIRS_DIR, i.e. {data dir}/training-pairs].",
)


@click.command("pairs")
@pairs_option
@data_dir_option
def pairs_command(pairs_path: Path | None, data_dir: Path | None) -> None:
    """Count the training pairs on disk, per date and per model version."""
    from ..clicks import iter_pairs

    settings = settings_from(data_dir=data_dir)
    path = pairs_path or settings.training_pairs_dir
    if not path.exists():
        fail(f"{path} does not exist: no pairs written yet (run a worker and send clicks)")
    by_date: Counter[str] = Counter()
    by_version: Counter[str] = Counter()
    negatives = 0
    for pair in iter_pairs(path):
        by_date[pair.clicked_at.date().isoformat()] += 1
        by_version[pair.model_version] += 1
        negatives += len(pair.negatives)
    total = sum(by_date.values())
    print_json(
        {
            "path": str(path),
            "pairs": total,
            "negatives_per_pair": round(negatives / total, 2) if total else None,
            "by_date": dict(sorted(by_date.items())),
            "by_model_version": dict(by_version),
        }
    )


@click.command("train")
@pairs_option
@click.option(
    "--base",
    default=None,
    help="Base encoder, the one that indexed the catalogue [default: LOOKALIKE_ENCODER].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the checkpoint (model.pt) and the resumable training state.",
)
@click.option("--epochs", default=25, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--lr", "learning_rate", default=2e-3, show_default=True)
@click.option("--temperature", default=2.0, show_default=True)
@click.option(
    "--dim",
    "out_dim",
    type=int,
    default=None,
    help="Output dimensions [default: the base's, starting from the identity].",
)
@click.option("--hidden", "hidden_dim", type=int, default=None, help="MLP hidden width.")
@click.option(
    "--tail",
    is_flag=True,
    help="Also fine-tune the base's last block (EfficientNet-Lite: the head convolution). "
    "Re-reads every pair's images from their sources (slower; better with enough clicks).",
)
@click.option("--tail-lr", default=3e-4, show_default=True, help="Learning rate of the block.")
@click.option(
    "--tail-blocks",
    default=0,
    show_default=True,
    help="With --tail: also fine-tune this many blocks before the last stage.",
)
@click.option(
    "--views",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="With --tail: augmented views per image (crops, flips, mild colour), each image read "
    "once and run through the trunk once per view.",
)
@click.option(
    "--click-groups",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Also pull together the communities of the click graph, found at this Louvain "
    "resolution (lower: fewer, larger groups; measured best in the README: 0.1 on two rounds "
    "of clicks, 0.3 on three). For pairs that hold a second round of clicks, on a fine-tuned "
    "model's results: one round's graph falls into many small communities. 0: the pairs alone.",
)
@click.option(
    "--keep-base",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="The base's weight in the saved encoder's vector: it serves normalize(w x base + "
    "(1-w) x tuned), which keeps the base's recall (0: the tuned vector alone; not with "
    "--dim). Re-running a finished --out with another weight re-saves it without training.",
)
@click.option(
    "--interpolate-base",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="The base's share of every trained weight in the saved model, the rest the trained "
    "weights' (weight-space ensembling, WiSE-FT): one model that keeps more of the base's "
    "recall (README: 0.2-0.3 measured best; 0: the trained weights; not with --dim or --hidden). "
    "Re-running a finished --out with another share re-saves it without training.",
)
@click.option(
    "--init",
    "init_from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Start from this fine-tuned checkpoint (its head and trained blocks) instead of the "
    "base: a later round of clicks continues the serving model instead of starting over. "
    "Same --base, --tail-blocks and --dim it was trained with.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--restart", is_flag=True, help="Ignore saved training state in --out.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (progress bars go to stderr)."
)
@data_dir_option
@port_option
def train_command(
    pairs_path: Path | None,
    base: str | None,
    out_dir: Path,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    out_dim: int | None,
    hidden_dim: int | None,
    tail: bool,
    tail_lr: float,
    tail_blocks: int,
    views: int,
    click_groups: float,
    keep_base: float,
    interpolate_base: float,
    init_from: Path | None,
    seed: int,
    restart: bool,
    as_json: bool,
    data_dir: Path | None,
    port: int | None,
) -> None:
    """Fine-tune on click pairs: a projection head on the frozen base encoder, contrastive loss
    (InfoNCE) with in-batch and logged negatives. Saves OUT/model.pt, loadable as an encoder
    (LOOKALIKE_ENCODER=OUT/model.pt, `lookalike eval --encoder OUT/model.pt`). Stopped runs
    resume from the last finished epoch."""
    from ..training import TrainConfig, train_from_pairs

    settings = settings_from(data_dir=data_dir, api_port=port)
    setup_logging(settings, "warning" if as_json else None)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        temperature=temperature,
        out_dim=out_dim,
        hidden_dim=hidden_dim,
        tail_learning_rate=tail_lr if tail else 0.0,
        tail_blocks=tail_blocks if tail else 0,
        views=views,
        click_groups=click_groups,
        init_from=str(init_from.resolve()) if init_from else None,
        seed=seed,
    )
    try:
        summary = train_from_pairs(
            settings,
            pairs_path or settings.training_pairs_dir,
            base or settings.encoder,
            out_dir,
            config,
            keep_base=keep_base,
            interpolate_base=interpolate_base,
            restart=restart,
            progress=show_progress(),
        )
    except LookalikeError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"{exc}: no training pairs there yet")
    if as_json:
        click.echo(json.dumps(summary))
        return
    print_json(summary)
    click.echo(
        f"\nsaved {summary['model']} ({summary['version']}); evaluate it with "
        f"`lookalike eval DIR --encoder {summary['model']}`"
    )


@click.command("split-dataset")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--parts",
    default="gallery=0.5,queries=0.3,holdout=0.2",
    show_default=True,
    help="Names and shares of the disjoint parts.",
)
@click.option("--seed", default=0, show_default=True)
def split_dataset_command(dataset_dir: Path, out_dir: Path, parts: str, seed: int) -> None:
    """Split a labelled folder into disjoint labelled folders of symlinks (per category), e.g.
    a gallery to index, queries to simulate clicks with and a held-out set to evaluate on."""
    from ..evaluation import split_labelled

    try:
        shares = {
            name.strip(): float(share) for name, share in (p.split("=") for p in parts.split(","))
        }
        counts = split_labelled(dataset_dir, out_dir, shares, seed)
    except ValueError:
        fail(f"--parts must look like gallery=0.5,queries=0.3,holdout=0.2, not {parts!r}")
    except LookalikeError as exc:
        fail(str(exc))
    print_json(
        {
            name: {"images": sum(c.values()), "path": str(out_dir / name)}
            for name, c in counts.items()
        }
    )


COMMANDS = [simulate_clicks_command, pairs_command, train_command, split_dataset_command]
