"""Small synthetic images for tests: three visually distinct 'categories'.

Each category is a pattern with random variation (colour jitter, position, size), so images of
one category look alike to a real encoder and unlike the other categories.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

CATEGORIES = ("circles", "stripes", "checkers")


def make_image(category: str, seed: int, size: int = 96) -> Image.Image:
    rng = random.Random(f"{category}-{seed}")
    jitter = lambda c: tuple(max(0, min(255, v + rng.randint(-25, 25))) for v in c)  # noqa: E731
    img = Image.new("RGB", (size, size), jitter((245, 245, 245)))
    draw = ImageDraw.Draw(img)
    if category == "circles":
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(size // 6, size // 3)
            x, y = rng.randint(r, size - r), rng.randint(r, size - r)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=jitter((220, 30, 30)))
    elif category == "stripes":
        step = rng.randint(8, 16)
        for y in range(rng.randint(0, step), size, step):
            draw.rectangle((0, y, size, y + step // 2), fill=jitter((30, 60, 200)))
    elif category == "checkers":
        step = rng.randint(10, 20)
        for i in range(0, size, step):
            for j in range(0, size, step):
                if (i // step + j // step) % 2 == 0:
                    draw.rectangle((i, j, i + step, j + step), fill=jitter((20, 150, 40)))
    elif category == "triangles":  # not in CATEGORIES: a category that appears later
        for _ in range(rng.randint(1, 2)):
            x, y, r = rng.randint(20, size - 20), rng.randint(20, size - 20), rng.randint(14, 30)
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=jitter((240, 180, 0)))
    else:
        raise ValueError(category)
    return img


def image_bytes(category: str, seed: int, fmt: str = "JPEG", size: int = 96) -> bytes:
    buffer = io.BytesIO()
    make_image(category, seed, size).save(buffer, format=fmt)
    return buffer.getvalue()
