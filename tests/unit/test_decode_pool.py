"""DecodePool: a micro-batch decoded in threads or in spawned processes gives the same pixels,
the same rejections with the same reasons, in order; and decode's safety holds in a child too
(pixel limit from the header, EXIF rotation, CMYK, 16-bit, palette transparency)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.encoders.base import Preprocessing
from lookalike.errors import DecodeError, ServiceUnavailable
from lookalike.images import DecodedImage, DecodePool, decode_for_encoders

SMALL = Preprocessing(resize=16, crop=16, mean=(0.5,) * 3, std=(0.5,) * 3)
OTHER = Preprocessing(resize=24, crop=20, mean=(0.5,) * 3, std=(0.5,) * 3)
PREPROCESSORS = {SMALL.digest(): SMALL.pixels, OTHER.digest(): OTHER.pixels}


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """Stored 40x20, left half red; EXIF orientation 6 puts the red half on top."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)


def palette_with_transparency() -> bytes:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return encode(img, "PNG", transparency=0)


GOOD = {
    "rotated": rotated_jpeg(),
    "cmyk": encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
    "16-bit": encode(Image.fromarray(np.full((8, 8), 4112, np.uint16)), "PNG"),
    "palette": palette_with_transparency(),
    "plain": encode(Image.new("RGB", (30, 30), (10, 200, 30)), "PNG"),
}
BAD = {
    "empty": b"",
    "not an image": b"hello, world" * 10,
    "truncated": GOOD["rotated"][:200],
    "too many pixels": encode(Image.new("RGB", (200, 200)), "PNG"),
}
MAX_PIXELS = 10_000  # the 200x200 image is over it


@pytest.fixture(scope="module")
def in_processes() -> Iterator[DecodePool]:
    pool = DecodePool(threads=1, processes=2)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def in_threads() -> Iterator[DecodePool]:
    pool = DecodePool(threads=3)
    try:
        yield pool
    finally:
        pool.close()


def decode(pool: DecodePool, blobs: list[bytes]) -> list[DecodedImage | Exception]:
    return pool.decode_many(
        blobs, max_pixels=MAX_PIXELS, target_size=24, preprocessors=PREPROCESSORS
    )


def test_threads_and_processes_agree_with_a_plain_call(
    in_threads: DecodePool, in_processes: DecodePool
) -> None:
    blobs = list(GOOD.values()) * 3
    expected = [decode_for_encoders(b, MAX_PIXELS, 24, PREPROCESSORS) for b in blobs]
    for pool in (in_threads, in_processes):
        got = decode(pool, blobs)
        assert len(got) == len(blobs)
        for want, image in zip(expected, got, strict=True):
            assert isinstance(image, DecodedImage), image
            assert (image.width, image.height, image.sha256) == (
                want.width,
                want.height,
                want.sha256,
            )
            assert set(image.pixels) == set(PREPROCESSORS)
            for digest, pixels in image.pixels.items():
                assert pixels.dtype == torch.uint8
                assert torch.equal(pixels, want.pixels[digest])
    # Each preprocessing got its own size.
    assert expected[0].pixels[SMALL.digest()].shape == (3, 16, 16)
    assert expected[0].pixels[OTHER.digest()].shape == (3, 20, 20)


def test_safety_holds_in_a_child_process(in_processes: DecodePool) -> None:
    rotated, cmyk, sixteen, palette, _ = decode(in_processes, list(GOOD.values()))
    assert isinstance(rotated, DecodedImage)
    assert (rotated.width, rotated.height) == (20, 40)  # upright: EXIF rotation applied
    top = rotated.pixels[SMALL.digest()][:, 2, 8].tolist()
    bottom = rotated.pixels[SMALL.digest()][:, 13, 8].tolist()
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below
    assert isinstance(cmyk, DecodedImage)
    assert cmyk.pixels[SMALL.digest()][:, 8, 8].tolist()[0] > 200  # CMYK (0,255,255,0) is red
    assert isinstance(sixteen, DecodedImage)
    assert sixteen.pixels[SMALL.digest()].max() == 16  # 4112 / 257: not stretched
    assert isinstance(palette, DecodedImage)
    assert palette.pixels[SMALL.digest()][:, 4, 4].tolist() == [255, 255, 255]  # on white


@pytest.mark.parametrize("where", ["threads", "processes"])
def test_rejections_come_back_in_place_with_their_reasons(
    where: str, in_threads: DecodePool, in_processes: DecodePool
) -> None:
    pool = in_threads if where == "threads" else in_processes
    names = ["plain", *BAD, "rotated"]
    blobs = [GOOD.get(name) or BAD[name] for name in names]
    got = dict(zip(names, decode(pool, blobs), strict=True))
    assert isinstance(got["plain"], DecodedImage) and isinstance(got["rotated"], DecodedImage)
    for name in BAD:
        assert isinstance(got[name], DecodeError), (name, got[name])
        assert got[name].stage == "decode"
    assert "empty image" in got["empty"].reason
    assert "not a recognised image format" in got["not an image"].reason
    assert "corrupt or truncated" in got["truncated"].reason
    assert "40000 pixels" in got["too many pixels"].reason
    assert "LOOKALIKE_MAX_IMAGE_PIXELS" in got["too many pixels"].reason


def test_a_dead_child_is_the_machines_trouble_and_the_pool_recovers() -> None:
    pool = DecodePool(threads=1, processes=1)
    try:
        pool.warm_up()
        children = list(pool._children._processes.values())  # type: ignore[union-attr]
        os.kill(children[0].pid, signal.SIGKILL)
        children[0].join(10)
        with pytest.raises(ServiceUnavailable, match="decode process died"):
            decode(pool, [GOOD["plain"]] * 4)
        # Retried (as the pipeline does with the batch): fresh children decode it.
        assert all(isinstance(image, DecodedImage) for image in decode(pool, [GOOD["plain"]] * 4))
    finally:
        pool.close()


_HOLDS_A_POOL = """
import sys
from lookalike.images import DecodePool
pool = DecodePool(threads=1, processes=1)
pool.warm_up()
print(*pool._children._processes, flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_children_leave_when_the_worker_is_killed() -> None:
    """A killed worker (OOM killer, kill -9) must not leave its decode processes behind, each
    holding its memory and waiting forever on the task queue."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _HOLDS_A_POOL], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        children = [int(pid) for pid in parent.stdout.readline().split()]
        assert children and all(_alive(pid) for pid in children)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in children)
    finally:
        parent.kill()


def test_invalid_sizes_refused() -> None:
    with pytest.raises(ValueError):
        DecodePool(threads=0)
    with pytest.raises(ValueError):
        DecodePool(threads=1, processes=-1)
