"""The console's thumbnails: made from an image's bytes under the pixel limit, kept on disk by
content digest and size, the least recently used evicted past the byte budget."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from imagegen import image_bytes
from PIL import Image

from lookalike.errors import DecodeError
from lookalike.images import ThumbnailCache


def _digest(n: int) -> str:
    return f"{n:064x}"


def test_a_thumbnail_is_made_once_then_served_from_disk(tmp_path: Path) -> None:
    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=10_000_000, max_pixels=10**7)
    reads = []

    def read() -> bytes:
        reads.append(1)
        return image_bytes("circles", 1, size=300)

    data, source = cache.get(_digest(1), 120, read)
    assert source == "made" and len(reads) == 1
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "JPEG" and max(picture.size) == 120
    again, source = cache.get(_digest(1), 120, read)
    assert (again, source) == (data, "cache") and len(reads) == 1  # not read again
    other_size, source = cache.get(_digest(1), 64, read)
    assert source == "made" and max(Image.open(io.BytesIO(other_size)).size) == 64
    usage = cache.usage()
    assert (
        usage["hits"] == 1 and usage["made"] == 2 and usage["bytes"] == len(data) + len(other_size)
    )


def test_the_cache_stays_within_its_budget_dropping_the_least_recently_used(
    tmp_path: Path,
) -> None:
    one = len(ThumbnailCache(tmp_path / "probe", 0, 10**7).make(image_bytes("stripes", 0), 96))
    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=int(one * 4.5), max_pixels=10**7)
    for n in range(4):
        cache.get(_digest(n), 96, lambda n=n: image_bytes("stripes", n))
        time.sleep(0.01)
    # Use the oldest again: it becomes the most recently used.
    assert cache.get(_digest(0), 96, lambda: b"")[1] == "cache"
    for n in (4, 5):
        cache.get(_digest(n), 96, lambda n=n: image_bytes("stripes", n))
        time.sleep(0.01)
    files = sorted(p.name for p in (tmp_path / "thumbs").glob("*/*.jpg"))
    on_disk = sum(p.stat().st_size for p in (tmp_path / "thumbs").glob("*/*.jpg"))
    assert on_disk <= cache.max_bytes and cache.usage()["bytes"] == on_disk
    assert f"{_digest(0)}-96.jpg" in files  # made first, but used again: kept
    assert f"{_digest(1)}-96.jpg" not in files  # least recently used: gone
    assert f"{_digest(5)}-96.jpg" in files


def test_no_budget_keeps_nothing_and_a_failing_disk_still_serves(tmp_path: Path) -> None:
    none = ThumbnailCache(tmp_path / "none", max_bytes=0, max_pixels=10**7)
    assert none.get(_digest(1), 64, lambda: image_bytes("checkers", 1))[1] == "made"
    assert not (tmp_path / "none").exists()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    cache = ThumbnailCache(blocked, max_bytes=10**6, max_pixels=10**7)
    data, source = cache.get(_digest(2), 64, lambda: image_bytes("checkers", 2))
    assert source == "made" and Image.open(io.BytesIO(data)).format == "JPEG"


def test_the_pixel_limit_and_bad_bytes_are_refused(tmp_path: Path) -> None:
    cache = ThumbnailCache(tmp_path / "t", max_bytes=10**6, max_pixels=50 * 50)
    with pytest.raises(DecodeError, match="LOOKALIKE_MAX_IMAGE_PIXELS"):
        cache.get(_digest(1), 64, lambda: image_bytes("circles", 1, size=96))
    with pytest.raises(DecodeError):
        cache.get(_digest(2), 64, lambda: b"not an image")
    assert not list((tmp_path / "t").glob("*/*.jpg"))
    with pytest.raises(ValueError):
        cache.path("../../etc", 64)
    assert os.path.basename(cache.path(_digest(3), 64)) == f"{_digest(3)}-64.jpg"
