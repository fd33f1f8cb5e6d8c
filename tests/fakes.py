"""Test doubles for the encoder seam: small, fast, deterministic, CPU-only.

``TinyEncoder`` is a real :class:`~lookalike.encoders.base.Encoder` (same preprocessing and
normalisation code paths as the production encoder) around a two-layer conv net whose weights
come from a fixed torch seed, so two instances produce identical vectors and the same version id.

``FailingEncoder`` raises inside the forward pass for any batch that contains a *poison* image: a
solid magenta picture (see :func:`poison_image_bytes`). It lets tests check that one image that
breaks the model is dead-lettered without losing the rest of its batch.
"""

from __future__ import annotations

import hashlib
import io
import os

import torch
from PIL import Image

from lookalike.encoders.base import Encoder, Preprocessing, model_version_id

TINY_PREPROCESSING = Preprocessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
TINY_DIM = 16


def _state_digest(model: torch.nn.Module) -> str:
    sha = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        sha.update(key.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:8]


class TinyEncoder(Encoder):
    """conv 3->8 stride 4, ReLU, conv 8->16, ReLU, global average pool: 16 dims."""

    def __init__(self, seed: int = 1234) -> None:
        super().__init__()
        # fork_rng: seed our weights without disturbing the global RNG other tests may rely on.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, kernel_size=4, stride=4),
                torch.nn.ReLU(),
                torch.nn.Conv2d(8, TINY_DIM, kernel_size=3, padding=1),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
            )
        self.name = "tiny-test"
        self.dim = TINY_DIM
        self.preprocessing = TINY_PREPROCESSING
        self.device = torch.device("cpu")
        self.model = model.eval()
        self.version = model_version_id(self.name, _state_digest(model), self.preprocessing)

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


POISON_COLOUR = (255, 0, 255)


def poison_image_bytes(size: int = 48) -> bytes:
    """A lossless solid magenta image: after TINY_PREPROCESSING its channels are (1, -1, 1)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), POISON_COLOUR).save(buffer, format="PNG")
    return buffer.getvalue()


def is_poison(tensor: torch.Tensor) -> torch.Tensor:
    """Per sample of an NCHW batch: True where the image is the solid magenta poison."""
    red, green, blue = tensor[:, 0], tensor[:, 1], tensor[:, 2]
    return (
        (red > 0.99).flatten(1).all(1)
        & (green < -0.99).flatten(1).all(1)
        & (blue > 0.99).flatten(1).all(1)
    )


class PoisonImageError(RuntimeError):
    """Raised by FailingEncoder's forward pass."""


class FailingEncoder(TinyEncoder):
    """A TinyEncoder whose forward pass raises for any batch holding a poison image.

    ``calls`` records the size of every batch the model was asked to embed.
    """

    def __init__(self, seed: int = 1234) -> None:
        super().__init__(seed)
        self.calls: list[int] = []

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(batch.shape[0]))
        if bool(is_poison(batch).any()):
            raise PoisonImageError("poison image in batch")
        return super().forward_features(batch)


class DyingEncoder(TinyEncoder):
    """A TinyEncoder whose process exits on a poison image (a model that crashes its process,
    as an out-of-memory kill does). Only ever run in an encoder process."""

    def forward_features(self, batch: torch.Tensor) -> torch.Tensor:
        if bool(is_poison(batch).any()):
            os._exit(3)
        return super().forward_features(batch)
