"""Unit tests for lookalike.validation_eval (calibrating category validation on a labelled folder
with injected wrong categories), its `validate-eval` command, and lookalike.datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from fakes import TinyEncoder
from imagegen import CATEGORIES, image_bytes

import lookalike.cli
import lookalike.encoders
from lookalike.errors import ConfigurationError
from lookalike.evaluation import labelled_images
from lookalike.validation import ValidationSettings
from lookalike.validation.calibration import THRESHOLDS, validate_eval

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

PER_CATEGORY = 12
SETTINGS = ValidationSettings(min_examples=3, k=10)
BATCH = 6  # small micro-batches, so most images are judged against what came before


def evaluate(dataset: Path, encoder: TinyEncoder, **kw: Any) -> dict[str, Any]:
    return validate_eval(dataset, encoder, SETTINGS, batch_size=BATCH, progress=False, **kw)


def write_dataset(root: Path, per_category: int, categories: tuple[str, ...] = CATEGORIES) -> Path:
    for category in categories:
        folder = root / category
        folder.mkdir(parents=True)
        for seed in range(per_category):
            (folder / f"{seed:03d}.jpg").write_bytes(image_bytes(category, seed, size=64))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("labelled"), PER_CATEGORY)


@pytest.fixture(scope="module")
def encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture(scope="module")
def report(dataset: Path, encoder: TinyEncoder) -> dict[str, Any]:
    return evaluate(dataset, encoder, mislabel_rate=0.25, seed=3)


# --- validate_eval -------------------------------------------------------------------------


def test_counts(report: dict[str, Any], dataset: Path, encoder: TinyEncoder) -> None:
    images = len(CATEGORIES) * PER_CATEGORY
    assert report["images"] == images
    assert report["categories"] == len(CATEGORIES)
    assert report["mislabelled"] == round(0.25 * images) == 9
    assert report["mislabel_rate"] == 0.25
    assert report["seed"] == 3
    assert report["dataset"] == str(dataset)
    assert report["model_version"] == encoder.version
    assert report["settings"]["min_examples"] == SETTINGS.min_examples
    # The first batch is judged against an empty index; later ones mostly can be judged.
    assert BATCH <= report["cannot_judge"] < images // 2


def test_metrics_at_the_default_threshold(report: dict[str, Any]) -> None:
    assert report["threshold"] == SETTINGS.threshold
    assert 0.0 <= report["precision"] <= 1.0
    assert 0.0 <= report["recall"] <= 1.0
    assert 0.0 <= report["f1"] <= 1.0
    assert 0 <= report["flagged"] <= report["images"] - report["cannot_judge"]
    at_default = next(p for p in report["curve"] if p["threshold"] == SETTINGS.threshold)
    assert {k: at_default[k] for k in ("precision", "recall", "f1", "flagged")} == {
        k: report[k] for k in ("precision", "recall", "f1", "flagged")
    }


def test_curve(report: dict[str, Any]) -> None:
    curve = report["curve"]
    assert [p["threshold"] for p in curve] == THRESHOLDS
    assert THRESHOLDS == sorted(THRESHOLDS) and len(THRESHOLDS) >= 10
    for p in curve:
        assert 0.0 <= p["precision"] <= 1.0
        assert 0.0 <= p["recall"] <= 1.0
        assert 0 <= p["true_positives"] <= min(p["flagged"], report["mislabelled"])
        assert p["recall"] == pytest.approx(p["true_positives"] / report["mislabelled"], abs=1e-4)
        if p["flagged"]:
            assert p["precision"] == pytest.approx(p["true_positives"] / p["flagged"], abs=1e-4)
        else:
            assert p["precision"] == 1.0
    flagged = [p["flagged"] for p in curve]
    assert flagged == sorted(flagged, reverse=True)
    recalls = [p["recall"] for p in curve]
    assert recalls == sorted(recalls, reverse=True)
    # The tiny random encoder still flags something at the lowest threshold.
    assert flagged[0] > 0


def test_same_seed_same_result(report: dict[str, Any], dataset: Path, encoder: TinyEncoder) -> None:
    assert evaluate(dataset, encoder, mislabel_rate=0.25, seed=3) == report
    other = evaluate(dataset, encoder, mislabel_rate=0.25, seed=4)
    assert other["mislabelled"] == report["mislabelled"]
    assert other["seed"] == 4


def test_no_mislabels_no_true_positives(dataset: Path, encoder: TinyEncoder) -> None:
    clean = evaluate(dataset, encoder, mislabel_rate=0.0)
    assert clean["mislabelled"] == 0
    assert clean["recall"] == 0.0
    for p in clean["curve"]:
        assert p["true_positives"] == 0
        assert p["recall"] == 0.0
        assert p["precision"] == (1.0 if p["flagged"] == 0 else 0.0)


def test_one_category_is_refused(tmp_path: Path, encoder: TinyEncoder) -> None:
    single = write_dataset(tmp_path / "one", 3, ("circles",))
    with pytest.raises(ConfigurationError, match="two categories"):
        validate_eval(single, encoder, SETTINGS, progress=False)


# --- datasets --------------------------------------------------------------------------------


def test_labelled_images_round_robin(dataset: Path) -> None:
    pairs = labelled_images(dataset)
    assert len(pairs) == len(CATEGORIES) * PER_CATEGORY
    assert all(path.parent.name == category for path, category in pairs)
    assert [c for _, c in pairs[:3]] == sorted(CATEGORIES)
    assert {c for _, c in labelled_images(dataset, limit=3)} == set(CATEGORIES)
    assert len(labelled_images(dataset, limit=5)) == 5


def test_labelled_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a folder"):
        labelled_images(tmp_path / "nope")
    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(image_bytes("circles", 0))
    with pytest.raises(ConfigurationError, match="not a folder"):
        labelled_images(a_file)


def test_labelled_images_without_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no images"):
        labelled_images(tmp_path)  # empty
    (tmp_path / "loose.jpg").write_bytes(image_bytes("circles", 0))  # not in a category folder
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(ConfigurationError, match="no images"):
        labelled_images(tmp_path)


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def keep_torch_threads() -> Any:
    """The command sets torch's thread count for the process: put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cli_json_with_the_real_encoder(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch, keep_torch_threads: None
) -> None:
    small = write_dataset(settings_env / "small", 6)
    for key, value in {
        "LOOKALIKE_ENCODER": "efficientnet-lite0",
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_COMPILE": "false",
        "LOOKALIKE_PRECISION": "fp32",
        "LOOKALIKE_INFERENCE_BATCH": "4",
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(
        lookalike.cli.main, ["validate-eval", str(small), "--json", "--mislabel-rate", "0.2"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert {"precision", "recall", "threshold", "curve", "images"} <= set(report)
    assert report["images"] == 18
    assert report["mislabelled"] == round(0.2 * 18)
    assert report["model_version"].startswith("efficientnet-lite0-")
    assert report["threshold"] == ValidationSettings().threshold
    assert [p["threshold"] for p in report["curve"]] == THRESHOLDS
    assert 0.0 <= report["precision"] <= 1.0 and 0.0 <= report["recall"] <= 1.0


@pytest.fixture
def tiny_cli_encoder(monkeypatch: pytest.MonkeyPatch, settings_env: Path) -> Path:
    """The command loads TinyEncoder whatever the encoder setting (fast)."""
    monkeypatch.setattr(lookalike.encoders, "load_encoder", lambda *a, **kw: TinyEncoder())
    monkeypatch.setattr(lookalike.encoders, "configure_threads", lambda *a, **kw: 1)
    return settings_env


def test_cli_table_and_threshold_option(tiny_cli_encoder: Path) -> None:
    small = write_dataset(tiny_cli_encoder / "small", 6)
    result = CliRunner().invoke(
        lookalike.cli.main, ["validate-eval", str(small), "--threshold", "0.4", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "18 images, 2 mislabelled (10%)" in result.stdout
    assert "at threshold 0.4:" in result.stdout
    assert result.stdout.count("\n") >= len(THRESHOLDS) + 3


def test_cli_one_category_is_a_clean_error(tiny_cli_encoder: Path) -> None:
    single = write_dataset(tiny_cli_encoder / "one", 3, ("circles",))
    result = CliRunner().invoke(lookalike.cli.main, ["validate-eval", str(single)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "error:" in result.output and "two categories" in result.output


def test_cli_mislabel_rate_out_of_range_is_a_usage_error(tiny_cli_encoder: Path) -> None:
    small = write_dataset(tiny_cli_encoder / "small", 3)
    result = CliRunner().invoke(
        lookalike.cli.main, ["validate-eval", str(small), "--mislabel-rate", "1.5"]
    )
    assert result.exit_code == 2
    assert "mislabel-rate" in result.output
