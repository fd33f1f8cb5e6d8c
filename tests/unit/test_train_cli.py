"""`lookalike train` from pair files to a loadable encoder (real EfficientNet-Lite0, real embedded
Qdrant, no worker: vectors are read from the index), and the simulated buyer."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from imagegen import image_bytes, make_image

import lookalike.cli
from lookalike.clicks import PairFileWriter
from lookalike.clicks.simulate import BuyerModel
from lookalike.encoders import load_encoder
from lookalike.events import PairQuery, TrainingPair
from lookalike.images import BlobStore, decode_image
from lookalike.index import IndexPoint, open_index
from lookalike.settings import Settings

CATEGORIES = ("circles", "stripes", "checkers")


def test_train_cli_writes_a_checkpoint_that_loads_as_an_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_COMPILE", "false")
    monkeypatch.setenv("LOOKALIKE_PRECISION", "fp32")
    settings = Settings(data_dir=tmp_path / "data")
    base = load_encoder("efficientnet-lite0")
    # The catalogue, indexed under the base version, as a worker would have left it.
    # Inline uploads keep their bytes in the blob store (so the last block can be trained).
    store = BlobStore(settings.blobs_path)
    catalogue = [(f"{c}-{s}", c) for c in CATEGORIES for s in range(4)]
    images = [image_bytes(c, int(i.rsplit("-", 1)[1])) for i, c in catalogue]
    vectors = base.embed_images([decode_image(b, max_pixels=10**7) for b in images])
    index = open_index(settings)
    index.ensure_collection(base.version, base.dim)
    index.upsert(
        base.version,
        [
            IndexPoint(
                i,
                v,
                {"image_id": i, "source_kind": "inline", "content_sha256": store.put(data)},
            )
            for (i, _), v, data in zip(catalogue, vectors, images, strict=True)
        ],
    )
    index.close()
    # Query images uploaded to /search, kept by hash; pairs as the click join writes them.
    now = datetime.now(UTC)
    pairs = []
    for n in range(24):
        category = CATEGORIES[n % 3]
        sha = store.put(image_bytes(category, 100 + n))
        others = [i for i, c in catalogue if c != category]
        pairs.append(
            TrainingPair(
                pair_id=f"p{n}",
                search_id=f"s{n}",
                query=PairQuery(content_sha256=sha),
                positive=f"{category}-{n % 4}",
                positive_rank=2,
                negatives=[others[n % len(others)]],
                model_version=base.version,
                served_at=now,
                clicked_at=now,
                click_id=f"c{n}",
            )
        )
    pairs.append(pairs[0].model_copy(update={"pair_id": "p-gone", "positive": "deleted-image"}))
    PairFileWriter(settings.training_pairs_dir).append(pairs)

    out = tmp_path / "model"
    args = ["train", "--data-dir", str(settings.data_dir), "--port", "1"]

    def trained(*extra: str) -> dict:
        """`lookalike train ... --json` succeeded: its summary line."""
        result = CliRunner().invoke(lookalike.cli.main, [*args, *extra, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])

    summary = trained("--out", str(out), "--epochs", "3")
    assert summary["pairs"] == 24 and summary["skipped"]["positive_missing"] == 1
    assert summary["base_version"] == base.version and summary["epochs"] == 3

    tuned = load_encoder(summary["model"])
    assert tuned.version == summary["version"] != base.version
    assert tuned.embed_images([make_image("circles", 1)]).shape == (1, base.dim)

    # A second run with the same pairs and settings resumes (nothing left to do).
    again = CliRunner().invoke(
        lookalike.cli.main, [*args, "--out", str(out), "--epochs", "3", "--json"]
    )
    assert again.exit_code == 0 and json.loads(again.output.splitlines()[-1])["epochs"] == 3
    other = CliRunner().invoke(
        lookalike.cli.main, [*args, "--out", str(out), "--epochs", "3", "--lr", "0.1", "--json"]
    )
    assert other.exit_code == 1 and "--restart" in other.output

    # --tail: the head convolution is trained too, and saved with the head.
    tail_out = tmp_path / "model-tail"
    tail_summary = trained("--out", str(tail_out), "--epochs", "2", "--tail")
    assert tail_summary["trained"] == "head and last block" and tail_summary["pairs"] == 24
    tuned_tail = load_encoder(tail_summary["model"])
    assert tuned_tail.version not in (tuned.version, base.version)
    base_conv = load_encoder("efficientnet-lite0").model._conv_head.weight
    assert not torch.equal(tuned_tail.base.model._conv_head.weight, base_conv)
    assert torch.equal(load_encoder("efficientnet-lite0").model._conv_head.weight, base_conv)
    # --keep-base: a finished run re-saved with the base mixed in, without training.
    image = [make_image("stripes", 2)]
    tuned_vector = tuned_tail.embed_images(image)
    kept_summary = trained("--out", str(tail_out), "--epochs", "2", "--tail", "--keep-base", "0.8")
    assert kept_summary["keep_base"] == 0.8 and kept_summary["epochs"] == 2
    assert kept_summary["final_loss"] == tail_summary["final_loss"]
    kept = load_encoder(kept_summary["model"])
    assert kept.version != tuned_tail.version and kept.dim == base.dim
    mixed = 0.8 * base.embed_images(image) + 0.2 * tuned_vector
    np.testing.assert_allclose(kept.embed_images(image), mixed / np.linalg.norm(mixed), atol=1e-4)
    narrow = CliRunner().invoke(
        lookalike.cli.main,
        [*args, "--out", str(tmp_path / "narrow"), "--dim", "16", "--keep-base", "0.5"],
    )
    assert narrow.exit_code == 1 and "--dim" in narrow.output
    # --interpolate-base: the same run re-saved with a quarter of each trained weight taken
    # from the base (the identity head and the base's own head convolution), without training.
    trained_state = torch.load(kept_summary["model"], weights_only=True)
    pulled_summary = trained(
        "--out", str(tail_out), "--epochs", "2", "--tail", "--interpolate-base", "0.25"
    )  # fmt: skip
    assert pulled_summary["interpolate_base"] == 0.25
    assert pulled_summary["final_loss"] == tail_summary["final_loss"]
    pulled_state = torch.load(pulled_summary["model"], weights_only=True)
    identity = torch.eye(base.dim)
    torch.testing.assert_close(
        pulled_state["head_state"]["net.weight"],
        0.75 * trained_state["head_state"]["net.weight"] + 0.25 * identity,
    )
    split = load_encoder("efficientnet-lite0").trainable_tail(0)
    assert split is not None
    base_conv_state = split.tail.state_dict()
    for name, value in pulled_state["tail_state"].items():
        expected = (
            0.75 * trained_state["tail_state"][name] + 0.25 * base_conv_state[name]
            if value.is_floating_point()
            else base_conv_state[name]
        )
        torch.testing.assert_close(value, expected)
    pulled = load_encoder(pulled_summary["model"])
    assert pulled.version not in (kept.version, tuned_tail.version, base.version)
    pulled_vector = pulled.embed_images(image)
    assert not np.allclose(pulled_vector, tuned_vector, atol=1e-3)
    narrow_pull = CliRunner().invoke(
        lookalike.cli.main,
        [*args, "--out", str(tmp_path / "narrow"), "--dim", "16", "--interpolate-base", "0.5"],
    )
    assert narrow_pull.exit_code == 1 and "--dim" in narrow_pull.output

    # --tail-blocks 2: the two blocks before the last stage train too, and load back.
    deep_summary = trained(
        "--out", str(tmp_path / "deep"), "--epochs", "1", "--tail", "--tail-blocks", "2"
    )
    assert deep_summary["trained"] == "head, last block and 2 blocks before it"
    tuned_deep = load_encoder(deep_summary["model"])
    fresh = load_encoder("efficientnet-lite0").model._blocks
    assert not torch.equal(
        tuned_deep.base.model._blocks[-2].state_dict()["_project_conv.weight"],
        fresh[-2].state_dict()["_project_conv.weight"],
    )
    assert torch.equal(
        tuned_deep.base.model._blocks[-3].state_dict()["_project_conv.weight"],
        fresh[-3].state_dict()["_project_conv.weight"],
    )
    # --init: a later round starts from the deep checkpoint's head and blocks.
    deep_model = deep_summary["model"]
    warm_summary = trained(
        "--out", str(tmp_path / "warm"), "--epochs", "1", "--tail", "--tail-blocks", "2",
        "--init", deep_model,
    )  # fmt: skip
    assert warm_summary["config"]["init_from"] == str(Path(deep_model).resolve())
    assert load_encoder(warm_summary["model"]).version not in (tuned_deep.version, base.version)
    blocks_1 = ["--tail", "--tail-blocks", "1", "--init", deep_model]
    other_blocks = CliRunner().invoke(
        lookalike.cli.main, [*args, "--out", str(tmp_path / "w1"), *blocks_1]
    )
    assert other_blocks.exit_code == 1 and "--tail-blocks" in other_blocks.output
    narrow_head = ["--tail", "--tail-blocks", "2", "--dim", "16", "--init", deep_model]
    other_head = CliRunner().invoke(
        lookalike.cli.main, [*args, "--out", str(tmp_path / "w2"), *narrow_head]
    )
    assert other_head.exit_code == 1 and "--dim" in other_head.output
    # --views: augmented views of every image through the trunk; the result loads.
    viewed_summary = trained(
        "--out", str(tmp_path / "views"), "--epochs", "1", "--tail", "--views", "3",
        "--click-groups", "0.3",
    )  # fmt: skip
    assert viewed_summary["config"]["views"] == 3
    assert viewed_summary["config"]["click_groups"] == 0.3
    assert load_encoder(viewed_summary["model"]).version == viewed_summary["version"]
    head_views = CliRunner().invoke(
        lookalike.cli.main, [*args, "--out", str(tmp_path / "hv"), "--views", "3", "--json"]
    )
    assert head_views.exit_code == 1 and "--tail" in head_views.output
    # held-out clicks: base and candidate scored on the same resolvable pairs, with intervals
    clicks = deep_summary["held_out_clicks"]  # p0, p7 and p17 are held out by their ids
    assert clicks["pairs"] == 3 and clicks["models"].keys() == {"base", "candidate"}
    assert clicks["models"]["base"]["reciprocal_rank"]["n"] == 3
    assert deep_summary["train_pairs"] == 21


@pytest.mark.parametrize("blocks", [0, 3])
def test_trunk_then_tail_is_the_encoder(blocks: int) -> None:
    encoder = load_encoder("efficientnet-lite0")
    tensors = [encoder.preprocess(make_image(c, 3)) for c in CATEGORIES]
    split = encoder.trainable_tail(blocks)
    assert len(split.tail.blocks) == blocks
    with torch.no_grad():
        features = split.tail(encoder.trunk_maps(tensors, blocks))
    rebuilt = torch.nn.functional.normalize(features, dim=1).numpy()
    assert np.abs(rebuilt - encoder.embed_tensors(tensors)).max() < 1e-5


def test_buyer_model_clicks_relevant_results_with_a_position_bias() -> None:
    buyer = BuyerModel()
    rng = random.Random(0)
    relevant = [True] * 10
    first_clicks = [buyer.clicked_ranks(relevant, rng)[:1] for _ in range(2000)]
    share_top = sum(c == [1] for c in first_clicks) / len(first_clicks)
    assert 0.85 < share_top < 0.95  # click_relevant = 0.9 at rank 1
    never = [buyer.clicked_ranks([False] * 10, rng) for _ in range(2000)]
    assert sum(bool(c) for c in never) / len(never) < 0.15
    mixed = [False, False, True, False, True]
    clicks = [r for _ in range(2000) for r in buyer.clicked_ranks(mixed, rng)]
    assert clicks.count(3) > clicks.count(5) > clicks.count(1)  # relevant, earlier first
