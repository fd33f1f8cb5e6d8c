"""`lookalike eval` and `validate-eval`: retrieval quality and validation calibration on
labelled folders."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import LookalikeError
from ..settings import Settings
from ..tuning import Tuning
from .common import fail, settings_from, setup_logging, show_progress


@click.command("eval")
@click.argument(
    "dataset_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--gallery",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Gallery folder (with --queries): queries not in the gallery.",
)
@click.option(
    "--queries",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Query folder (with --gallery).",
)
@click.option("--encoder", default=None, help="[default: LOOKALIKE_ENCODER]")
@click.option(
    "--against",
    default=None,
    help="A second encoder (name or model.pt) to compare with --encoder on DATASET_DIR: both in "
    "fp32, each metric with its 95% bootstrap interval and the paired difference.",
)
@click.option(
    "--anchor-slots",
    type=click.IntRange(0, 10),
    default=0,
    help="With --against: score both as search serves them with LOOKALIKE_SEARCH_ANCHOR_SLOTS=N "
    "and --encoder as the anchor (its top N kept on each first page of 10).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (progress bars go to stderr)."
)
def eval_command(
    dataset_dir: Path | None,
    gallery: Path | None,
    queries: Path | None,
    encoder: str | None,
    against: str | None,
    anchor_slots: int,
    as_json: bool,
) -> None:
    """Retrieval quality on labelled folders (a sub-folder per category, category =
    relevance): Recall@1/5/10, Precision@10, mAP, nDCG@10. Each image of DATASET_DIR queries all
    the others; or --gallery DIR --queries DIR."""
    from ..encoders import configure_threads, encoder_from_settings
    from ..evaluation import evaluate

    settings = settings_from(encoder=encoder)
    setup_logging(settings, "warning")
    if (dataset_dir is None) == (gallery is None and queries is None):
        fail("give DATASET_DIR, or --gallery DIR --queries DIR")
    if against is not None:
        if dataset_dir is None:
            fail("--against compares on DATASET_DIR (not --gallery/--queries)")
        _compare(settings, dataset_dir, against, anchor_slots, as_json)
        return
    if anchor_slots:
        fail("--anchor-slots scores --against with --encoder as the anchor: give --against")
    try:
        configure_threads(settings.torch_threads)
        model = encoder_from_settings(settings)
        metrics = evaluate(
            model, dataset_dir, gallery=gallery, queries=queries, progress=show_progress()
        )
    except LookalikeError as exc:
        fail(str(exc))
    report = {"model_version": model.version, **metrics.as_dict()}
    if as_json:
        click.echo(json.dumps(report))
        return
    for key, value in report.items():
        click.echo(f"{key:<16} {value:.4f}" if isinstance(value, float) else f"{key:<16} {value}")


def _compare(
    settings: Settings, dataset_dir: Path, against: str, anchor_slots: int, as_json: bool
) -> None:
    from ..encoders import configure_threads
    from ..evaluation import compare_on_folder
    from ..training import fp32_encoder

    try:
        configure_threads(settings.torch_threads)
        encoders = {"base": fp32_encoder(settings, settings.encoder)}
        encoders["other"] = fp32_encoder(settings, against)
        report = compare_on_folder(
            encoders,
            dataset_dir,
            "base",
            progress=show_progress(),
            anchor="base",
            anchor_slots=anchor_slots,
        )
    except LookalikeError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{'':<16} {'--encoder':<24} {'--against':<24} difference")
    for metric, base in report["models"]["base"].items():
        other = report["models"]["other"][metric]
        diff = report["difference"]["other"][metric]
        click.echo(f"{metric:<16} {_interval(base):<24} {_interval(other):<24} {_interval(diff)}")


def _interval(estimate: dict[str, float]) -> str:
    return f"{estimate['value']:.4f} [{estimate['low']:.4f}, {estimate['high']:.4f}]"


@click.command("validate-eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--mislabel-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Share of wrong categories.",
)
@click.option("--batch-size", type=int, default=None, help="[default: LOOKALIKE_BATCH_SIZE]")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--threshold", type=float, default=None, help="[default: LOOKALIKE_VALIDATION_THRESHOLD]"
)
@click.option("--encoder", default=None, help="[default: LOOKALIKE_ENCODER]")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (progress bars go to stderr)."
)
def validate_eval_command(
    dataset_dir: Path,
    mislabel_rate: float,
    batch_size: int | None,
    seed: int,
    threshold: float | None,
    encoder: str | None,
    as_json: bool,
) -> None:
    """Inject wrong categories into DATASET_DIR (a folder per category), run the validator as the
    stream does, and print precision, recall and the precision/recall curve over thresholds."""
    from ..encoders import configure_threads, encoder_from_settings
    from ..validation import ValidationSettings
    from ..validation.calibration import validate_eval

    settings = settings_from(encoder=encoder, validation_threshold=threshold)
    setup_logging(settings, "warning")
    try:
        configure_threads(settings.torch_threads)
        model = encoder_from_settings(settings)
        model.warm_up()
        report = validate_eval(
            dataset_dir,
            model,
            ValidationSettings.from_settings(settings),
            mislabel_rate=mislabel_rate,
            seed=seed,
            batch_size=batch_size or Tuning.choose(settings, model.device.type).batch_size,
            progress=show_progress(),
        )
    except LookalikeError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(
        f"{report['images']} images, {report['mislabelled']} mislabelled "
        f"({mislabel_rate:.0%}), {report['cannot_judge']} could not be judged"
    )
    click.echo(
        f"at threshold {report['threshold']}: precision {report['precision']:.3f}, "
        f"recall {report['recall']:.3f}, {report['flagged']} alerts\n"
    )
    click.echo(f"{'threshold':>9} {'alerts':>7} {'precision':>9} {'recall':>7}")
    for point in report["curve"]:
        click.echo(
            f"{point['threshold']:>9.2f} {point['flagged']:>7} "
            f"{point['precision']:>9.3f} {point['recall']:>7.3f}"
        )


COMMANDS = [eval_command, validate_eval_command]
