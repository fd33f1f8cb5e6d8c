"""Augmented views of product photos, for fine-tuning.

Product photos vary in framing (how much of the item, where it sits), left-right orientation,
and exposure and white balance from one seller's camera to another's; they do not come upside
down, and their colour carries meaning (a red dress is not a blue one), so only a mild colour
change is applied. View 0 of every image is the serving preprocessing itself (no change), so the
base encoder's own vector is always among the views.

Every view is drawn from its own seeded generator (image key, view number, seed), so a cached
view and a recomputed one are the same pixels.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..encoders.base import Preprocessing


@dataclass(frozen=True)
class Augmentation:
    #: Views kept per image, the plain one included.
    views: int = 8
    #: Area share of the image a random crop keeps (RandomResizedCrop's scale).
    crop_scale: tuple[float, float] = (0.45, 1.0)
    #: Aspect ratios of the random crop.
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    #: Brightness, contrast and saturation change by a factor in [1 - x, 1 + x].
    colour: float = 0.25
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


def _rng(key: str, view: int, seed: int) -> random.Random:
    return random.Random(f"{seed}:{key}:{view}")


def _random_box(width: int, height: int, aug: Augmentation, rng: random.Random) -> tuple:
    """A crop box (left, top, right, bottom) like torchvision's RandomResizedCrop, falling back
    to the central square when ten tries do not fit."""
    area = width * height
    low, high = (math.log(r) for r in aug.crop_ratio)
    for _ in range(10):
        target = area * rng.uniform(*aug.crop_scale)
        ratio = math.exp(rng.uniform(low, high))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return (left, top, left + w, top + h)
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def view_pixels(
    image: Image.Image, key: str, view: int, preprocessing: Preprocessing, aug: Augmentation
) -> torch.Tensor:
    """The ``view``-th view of an image as uint8 CHW pixels at the encoder's input size; view 0
    is exactly what the encoder sees when it serves."""
    if view == 0:
        return preprocessing.pixels(image)
    rng = _rng(key, view, aug.seed)
    image = image.convert("RGB")
    size = preprocessing.crop
    box = _random_box(*image.size, aug, rng)
    out = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if aug.flip and rng.random() < 0.5:
        out = ImageOps.mirror(out)
    if aug.colour > 0:
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            out = enhance(out).enhance(rng.uniform(1 - aug.colour, 1 + aug.colour))
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)
