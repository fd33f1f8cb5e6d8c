"""Retrieval metrics against hand-computed values, and `lookalike eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fakes import TinyEncoder
from imagegen import CATEGORIES, image_bytes

import lookalike.cli
from lookalike.errors import ConfigurationError
from lookalike.evaluation import compare_on_folder, evaluate, retrieval_metrics


def test_metrics_by_hand() -> None:
    # 4 items: a0 and a1 similar, b0 and b1 similar, but a0's nearest is b0.
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.95, 0.31], [0.0, 1.0]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = ["a", "a", "b", "b"]
    m = retrieval_metrics(vectors, labels)
    # a0 ranks: b0 (0.95), a1 (0.8), b1 -> first relevant at rank 2: AP 0.5, R@1 0
    # a1 ranks: b0 (0.95 .. ), a0, b1 -> AP 0.5 ; b0 ranks: a0, a1, b1 -> AP 1/3
    # b1 ranks: a1 (0.6), b0 (0.31), a0 -> AP 0.5
    assert m.queries == 4 and m.gallery == 4
    assert m.recall_at_1 == 0.0
    assert m.recall_at_5 == 1.0
    assert m.map == pytest.approx((0.5 + 0.5 + 1 / 3 + 0.5) / 4)
    assert m.precision_at_10 == pytest.approx(1 / 3)  # k = 3 others, one relevant each


def test_gallery_and_queries() -> None:
    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    m = retrieval_metrics(queries, ["x", "z"], gallery, ["x", "y", "z"])
    assert (m.queries, m.gallery) == (2, 3)
    assert m.recall_at_1 == 1.0 and m.map == 1.0 and m.ndcg_at_10 == 1.0


def write_dataset(root: Path, per_category: int, seed0: int = 0) -> Path:
    for category in CATEGORIES:
        (root / category).mkdir(parents=True)
        for seed in range(seed0, seed0 + per_category):
            (root / category / f"{seed}.jpg").write_bytes(image_bytes(category, seed))
    return root


def test_evaluate_api(tmp_path: Path) -> None:
    encoder = TinyEncoder()
    dataset = write_dataset(tmp_path / "all", 5)
    m = evaluate(encoder, dataset, progress=False)
    assert m.queries == m.gallery == 15
    assert 0.0 <= m.map <= 1.0 and m.recall_at_1 <= m.recall_at_5 <= m.recall_at_10
    split = evaluate(
        encoder, gallery=dataset, queries=write_dataset(tmp_path / "q", 2, 100), progress=False
    )
    assert (split.queries, split.gallery) == (6, 15)
    with pytest.raises(ConfigurationError):
        evaluate(encoder, None, gallery=dataset, progress=False)


def test_cli_eval_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_COMPILE", "false")
    monkeypatch.setenv("LOOKALIKE_PRECISION", "fp32")
    dataset = write_dataset(tmp_path / "d", 4)
    result = CliRunner().invoke(lookalike.cli.main, ["eval", str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in (
        "recall_at_1",
        "recall_at_5",
        "recall_at_10",
        "precision_at_10",
        "map",
        "ndcg_at_10",
    ):
        assert 0.0 <= report[key] <= 1.0
    assert report["queries"] == 12
    assert report["model_version"].startswith("efficientnet-lite0-")
    # The synthetic categories are easy: the real encoder gets most first hits right.
    assert report["recall_at_1"] >= 0.75
    missing = CliRunner().invoke(lookalike.cli.main, ["eval"])
    assert missing.exit_code == 1 and "DATASET_DIR" in missing.output


def test_cli_eval_against_compares_two_encoders_on_the_same_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_COMPILE", "false")
    dataset = write_dataset(tmp_path / "d", 4)
    args = ["eval", str(dataset), "--against", "efficientnet-lite0", "--json"]
    report = json.loads(CliRunner().invoke(lookalike.cli.main, args).output)
    # the same model against itself: equal per query, so a zero difference with a zero interval
    assert report["images"] == 12 and report["baseline"] == "base"
    assert report["versions"]["base"] == report["versions"]["other"]
    assert report["difference"]["other"]["map"] == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 12}
    assert report["models"]["base"]["map"]["low"] <= report["models"]["base"]["map"]["value"]
    table = CliRunner().invoke(lookalike.cli.main, args[:-1])
    assert table.exit_code == 0 and "recall_at_10" in table.output and "[" in table.output


def test_anchor_slots_score_the_pages_search_would_serve(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "d", 8)
    encoders = {"base": TinyEncoder(seed=1), "other": TinyEncoder(seed=2)}
    plain = compare_on_folder(encoders, dataset, "base", progress=False)
    full = compare_on_folder(
        encoders, dataset, "base", progress=False, anchor="base", anchor_slots=10
    )
    assert (full["anchor"], full["anchor_slots"]) == ("base", 10)
    # All ten places kept for the anchor: each page holds the base's first ten, so
    # Precision@10 is the base's query by query, whatever the other model ranks first.
    same = full["difference"]["other"]["precision_at_10"]
    assert (same["value"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    differed = plain["difference"]["other"]["precision_at_10"]
    assert (differed["low"], differed["high"]) != (0.0, 0.0)  # without the slots they differ
    assert full["models"]["base"] == plain["models"]["base"]  # the anchor itself is unchanged


def test_cli_eval_anchor_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_COMPILE", "false")
    dataset = write_dataset(tmp_path / "d", 4)
    args = ["eval", str(dataset), "--against", "efficientnet-lite0", "--json"]
    report = json.loads(
        CliRunner().invoke(lookalike.cli.main, [*args, "--anchor-slots", "3"]).output
    )
    assert (report["anchor"], report["anchor_slots"]) == ("base", 3)
    assert report["difference"]["other"]["map"]["value"] == 0.0  # itself as its own anchor
    refused = CliRunner().invoke(lookalike.cli.main, ["eval", str(dataset), "--anchor-slots", "2"])
    assert refused.exit_code == 1 and "--against" in refused.output
