"""Unit tests for lookalike.images: decoding untrusted bytes and fetching them from sources.

Images are generated in memory; the HTTP tests use a real server on 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from lookalike.errors import ConfigurationError, DecodeError, FetchError, FetchRefused
from lookalike.events import FileSource, InlineSource, UrlSource
from lookalike.images import ImageFetcher, decode_image, payload_bytes
from lookalike.images.url_guard import AddressPolicy
from lookalike.settings import Settings

BIG = 10**8  # a max_pixels that never gets in the way


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_with_header_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to claim width x height (CRC fixed)."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    # signature (8) + length (4) + b"IHDR" (4) -> width and height at 16..24; CRC at 29..33.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def assert_close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> None:
    assert all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True)), (pixel, expected)


# --- decode: rejections -------------------------------------------------------------------------


def test_zero_bytes_rejected() -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(b"", max_pixels=BIG)
    assert info.value.reason == "empty image (0 bytes)"
    assert info.value.stage == "decode"


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).bytes(2000),
        b"<html><body>not found</body></html>",
        # A real image in a format we do not accept (ICO).
        encode(Image.new("RGB", (16, 16), "red"), "ICO"),
    ],
    ids=["random", "html", "ico"],
)
def test_not_an_image_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(data, max_pixels=BIG)
    assert info.value.reason.startswith("not a recognised image format")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_rejected(fmt: str) -> None:
    data = encode(noise(64, 64), fmt)
    with pytest.raises(DecodeError) as info:
        decode_image(data[: len(data) // 2], max_pixels=BIG)
    assert info.value.reason.startswith("corrupt or truncated image:")


def test_truncated_rejected_even_if_someone_enabled_load_truncated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(noise(64, 64), "JPEG")
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(data[: len(data) // 2], max_pixels=BIG)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pixel_limit_rejected_from_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded despite the pixel limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DecodeError) as info:
        decode_image(data, max_pixels=5000)
    reason = info.value.reason
    assert "10000" in reason and "5000" in reason and "LOOKALIKE_MAX_IMAGE_PIXELS" in reason


def test_huge_header_rejected_without_allocating() -> None:
    data = png_with_header_size(100_000, 100_000)
    start = time.monotonic()
    with pytest.raises(DecodeError) as info:
        decode_image(data, max_pixels=50_000_000)
    assert "10000000000 pixels" in info.value.reason
    assert time.monotonic() - start < 1.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "size",
    [(12_500, 12_000), (20_000, 12_500)],  # Pillow's warning band, then its error band
    ids=["pillow-warning", "pillow-error"],
)
def test_pillow_bomb_guard_becomes_decode_error(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    with pytest.raises(DecodeError) as info:
        decode_image(png_with_header_size(*size), max_pixels=100_000_000)
    assert "LOOKALIKE_MAX_IMAGE_PIXELS" in info.value.reason
    # Pillow's own guard was raised to our limit, never lowered below it.
    assert Image.MAX_IMAGE_PIXELS == 100_000_000


# --- decode: colour modes and orientation -------------------------------------------------------


def test_exif_orientation_applied() -> None:
    # Stored 40x20: left half red, right half blue. Orientation 6 = rotate 90 degrees clockwise
    # for display, so the stored left edge becomes the top.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)

    out = decode_image(data, max_pixels=BIG)
    assert out.mode == "RGB"
    assert out.size == (20, 40)
    assert_close(out.getpixel((10, 5)), (255, 0, 0))
    assert_close(out.getpixel((10, 35)), (0, 0, 255))


def test_cmyk_jpeg_to_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, max_pixels=BIG)
    assert out.mode == "RGB"
    assert_close(out.getpixel((8, 8)), (255, 0, 0))


def test_palette_png_transparency_becomes_white() -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.paste(1, (4, 0, 8, 8))  # right half red (index 1), left half index 0 = transparent
    data = encode(img, "PNG", transparency=0)
    out = decode_image(data, max_pixels=BIG)
    assert out.mode == "RGB"
    assert out.getpixel((1, 4)) == (255, 255, 255)
    assert out.getpixel((6, 4)) == (255, 0, 0)


def test_palette_png_without_transparency() -> None:
    img = Image.new("RGB", (8, 8), (0, 128, 0)).quantize(4)
    out = decode_image(encode(img, "PNG"), max_pixels=BIG)
    assert out.mode == "RGB"
    assert_close(out.getpixel((3, 3)), (0, 128, 0), tol=2)


@pytest.mark.parametrize(
    ("mode", "colour", "fmt"),
    [
        ("RGBA", (0, 0, 0, 128), "PNG"),
        ("LA", (0, 128), "PNG"),
        ("RGBA", (0, 0, 0, 128), "WEBP"),
    ],
)
def test_alpha_composited_on_white(mode: str, colour: tuple[int, ...], fmt: str) -> None:
    img = Image.new(mode, (8, 8), colour)
    params = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(img, fmt, **params), max_pixels=BIG)
    assert out.mode == "RGB"
    # Black at half alpha over white is mid grey (a plain convert would give black).
    assert_close(out.getpixel((4, 4)), (127, 127, 127), tol=2)


def test_16bit_png_gradient_scaled_to_full_8bit_range() -> None:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    data = encode(Image.fromarray(np.tile(ramp, (4, 1))), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = np.asarray(decode_image(data, max_pixels=BIG))
    assert out.shape == (4, 256, 3)
    row = out[0, :, 0]
    assert row.min() == 0 and row.max() == 255
    assert np.all(np.diff(row.astype(int)) >= 0)
    assert abs(int(row[128]) - 128) <= 1
    assert np.array_equal(out[..., 0], out[..., 2])  # greyscale stays grey


def test_16bit_png_dark_photo_not_stretched() -> None:
    # 16-bit values keep their absolute brightness (divided by 257), not stretched to 0..255.
    dark = np.full((4, 4), 4112, np.uint16)  # 4112 / 257 = 16
    dark[0, 0] = 0
    out = np.asarray(decode_image(encode(Image.fromarray(dark), "PNG"), max_pixels=BIG))
    assert out.max() == 16 and out.min() == 0


def test_16bit_big_endian_tiff() -> None:
    # frombytes: convert("I;16B") from "I;16" clips values to 255.
    img = Image.frombytes("I;16B", (2, 1), b"\x00\x00\xff\xff")
    assert img.mode == "I;16B"
    data = encode(img, "TIFF")
    out = np.asarray(decode_image(data, max_pixels=BIG))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "arr",
    [
        np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(8, 8),
        (np.arange(64, dtype=np.int32) * 1000 - 20_000).reshape(8, 8),
    ],
    ids=["float-F", "int32-I"],
)
def test_float_and_int32_scaled_by_actual_range(arr: np.ndarray) -> None:
    img = Image.fromarray(arr)
    assert img.mode in ("F", "I")
    out = np.asarray(decode_image(encode(img, "TIFF"), max_pixels=BIG))
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert out[0, 0, 0] == 0 and out[7, 7, 0] == 255


def test_one_bit_image() -> None:
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (0, 0, 4, 8))
    out = decode_image(encode(img, "PNG"), max_pixels=BIG)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((6, 1)) == (0, 0, 0)


def test_greyscale_jpeg() -> None:
    out = decode_image(encode(Image.new("L", (8, 8), 200), "JPEG"), max_pixels=BIG)
    assert out.mode == "RGB"
    assert_close(out.getpixel((4, 4)), (200, 200, 200), tol=2)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    out = decode_image(data, max_pixels=BIG)
    assert out.mode == "RGB" and out.size == (16, 16)
    assert_close(out.getpixel((8, 8)), (255, 0, 0))


# --- decode: JPEG draft -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return encode(noise(1024, 768), "JPEG", quality=80)


def test_jpeg_full_size_without_target(large_jpeg: bytes) -> None:
    assert decode_image(large_jpeg, max_pixels=BIG).size == (1024, 768)


@pytest.mark.parametrize(
    ("target", "expected"),
    [(90, (128, 96)), (100, (256, 192)), (224, (512, 384)), (384, (512, 384)), (500, (1024, 768))],
)
def test_jpeg_draft_reduces_but_keeps_target(
    large_jpeg: bytes, target: int, expected: tuple[int, int]
) -> None:
    # 1024x768 decodes at the largest of 1/8, 1/4, 1/2 that keeps the short side >= target.
    out = decode_image(large_jpeg, max_pixels=BIG, target_size=target)
    assert out.mode == "RGB"
    assert out.size == expected
    assert min(out.size) >= target


def test_target_larger_than_image_keeps_full_size() -> None:
    data = encode(noise(120, 90), "JPEG")
    assert decode_image(data, max_pixels=BIG, target_size=224).size == (120, 90)


def test_decode_concurrently_from_threads(large_jpeg: bytes) -> None:
    expected = np.asarray(decode_image(large_jpeg, max_pixels=BIG, target_size=224))
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda _: np.asarray(decode_image(large_jpeg, max_pixels=BIG, target_size=224)),
                range(16),
            )
        )
    assert all(np.array_equal(r, expected) for r in results)


# --- fetch: HTTP --------------------------------------------------------------------------------

IMAGE_BYTES = encode(Image.new("RGB", (4, 4), (10, 20, 30)), "PNG")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops concurrent SYNs, retried only after 1 s
    stop: threading.Event
    drip_ended: dict[str, threading.Event]  # per path: a dripping handler saw the client go
    requests: list[str]  # every path asked for, in order


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        path = self.path
        self.server.requests.append(path)
        if path.startswith("/redirect-to/"):  # /redirect-to/<host:port>: to that host's image
            self._send(302, b"", {"Location": f"http://{path.split('/')[2]}/image.png"})
        elif path == "/image.png":
            self._send(200, IMAGE_BYTES, {"Content-Type": "image/png"})
        elif path == "/missing":
            self._send(404, b"no such image")
        elif path == "/redirect":
            self._send(302, b"", {"Location": "/image.png"})
        elif path == "/redirect-loop":
            self._send(302, b"", {"Location": "/redirect-loop"})
        elif path == "/redirect-file":
            self._send(302, b"", {"Location": "file:///etc/passwd"})
        elif path == "/slow-redirect":
            self.server.stop.wait(0.4)
            self._send(302, b"", {"Location": "/slow-redirect"})
        elif path == "/big-declared":
            self._send(200, b"x" * 10_000)
        elif path == "/big-undeclared":
            # HTTP/1.0 without Content-Length: the body ends when the connection closes.
            self.send_response(200)
            self.end_headers()
            self._write_quietly(b"x" * 10_000)
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "60")
            self.end_headers()
            self._drip()
        elif path == "/redirect-slow-body":
            # A redirect whose body drips: following it must not wait for that body.
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.send_header("Content-Length", "60")
            self.end_headers()
            self._drip()
        else:
            self._send(500, b"unknown test route")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._write_quietly(body)

    def _write_quietly(self, body: bytes) -> None:
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it is supposed to

    def _drip(self) -> None:
        """One byte every 0.5 s for 30 s; stop as soon as the client disconnects."""
        try:
            for _ in range(60):
                self.wfile.write(b"x")
                self.wfile.flush()
                if self.server.stop.wait(0.5):
                    return
        except (BrokenPipeError, ConnectionResetError):
            self.server.drip_ended.setdefault(self.path, threading.Event()).set()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.stop = threading.Event()
    srv.drip_ended = {"/slow": threading.Event()}
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()  # ends any handler still dripping
        srv.shutdown()
        srv.server_close()
        thread.join(5)
        assert not thread.is_alive()


def url(server: _Server, path: str) -> UrlSource:
    return UrlSource(url=f"http://127.0.0.1:{server.server_address[1]}{path}")


#: The test server listens on loopback, which the URL guard refuses unless allow-listed.
LOOPBACK_ALLOWED = AddressPolicy.from_allow_list("127.0.0.1/32")


@pytest.fixture
def fetcher(tmp_path: Path) -> Iterator[ImageFetcher]:
    with ImageFetcher(image_root=None, timeout=1.0, max_bytes=1000, policy=LOOPBACK_ALLOWED) as f:
        yield f


@pytest.fixture
def guarded() -> Iterator[ImageFetcher]:
    """The default policy: public addresses only."""
    with ImageFetcher(image_root=None, timeout=1.0, max_bytes=1000) as f:
        yield f


def test_fetch_url_image(server: _Server, fetcher: ImageFetcher) -> None:
    data = fetcher.fetch(url(server, "/image.png"))
    assert data == IMAGE_BYTES
    assert decode_image(data, max_pixels=BIG).getpixel((0, 0)) == (10, 20, 30)


def test_fetch_url_follows_redirect(server: _Server, fetcher: ImageFetcher) -> None:
    assert fetcher.fetch(url(server, "/redirect")) == IMAGE_BYTES


def test_redirect_body_is_not_read(server: _Server, fetcher: ImageFetcher) -> None:
    start = time.monotonic()
    assert fetcher.fetch(url(server, "/redirect-slow-body")) == IMAGE_BYTES
    assert time.monotonic() - start < 0.5


def test_fetch_url_404(server: _Server, fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url(server, "/missing"))
    assert "HTTP 404" in info.value.reason
    assert info.value.stage == "fetch"


def test_redirect_loop_rejected(server: _Server, fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError, match="too many redirects"):
        fetcher.fetch(url(server, "/redirect-loop"))


def test_redirect_to_file_scheme_rejected(server: _Server, fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url(server, "/redirect-file"))
    # The guard refuses the hop before any I/O (httpx rebases the target on the redirecting host).
    assert "file://" in info.value.reason and "/etc/passwd" in info.value.reason
    assert "scheme 'file' is not allowed" in info.value.reason


def test_slow_server_hits_total_deadline(server: _Server, fetcher: ImageFetcher) -> None:
    ended = server.drip_ended["/slow"]
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url(server, "/slow"))
    elapsed = time.monotonic() - start
    assert "timed out after 1 s" in info.value.reason
    assert 0.9 <= elapsed < fetcher.timeout + 2
    # The client hung up, so the handler's next writes fail and it stops dripping.
    assert not ended.is_set()
    assert ended.wait(3)


def test_slow_redirect_chain_hits_total_deadline(server: _Server, fetcher: ImageFetcher) -> None:
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetcher.fetch(url(server, "/slow-redirect"))
    assert time.monotonic() - start < fetcher.timeout + 1


@pytest.mark.parametrize("path", ["/big-declared", "/big-undeclared"])
def test_oversized_body_rejected(server: _Server, fetcher: ImageFetcher, path: str) -> None:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url(server, path))
    assert "over the limit of 1000 bytes" in info.value.reason
    assert "LOOKALIKE_MAX_IMAGE_BYTES" in info.value.reason


def test_unreachable_url(fetcher: ImageFetcher) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = UrlSource(url=f"http://127.0.0.1:{port}/image.png")
    with pytest.raises(FetchError) as info:
        fetcher.fetch(source)
    assert "unreachable" in info.value.reason
    assert f"127.0.0.1:{port}/image.png" in info.value.reason


def test_fetch_from_threads(server: _Server, fetcher: ImageFetcher) -> None:
    source = url(server, "/image.png")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: fetcher.fetch(source), range(16)))
    assert results == [IMAGE_BYTES] * 16


# --- fetch: the URL guard (loopback is the only forbidden target that gets traffic) ----------

LOOPBACK_FORMS = [
    "127.0.0.1",
    "localhost",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "127.1",
    "0",
    "[::1]",
    "[::ffff:127.0.0.1]",
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_guard_refuses_every_form_of_loopback(
    server: _Server, guarded: ImageFetcher, host: str
) -> None:
    before = len(server.requests)
    source = UrlSource(url=f"http://{host}:{server.server_address[1]}/image.png")
    with pytest.raises(FetchRefused) as info:
        guarded.fetch(source)
    assert info.value.stage == "fetch"  # a dead letter, not a retry
    assert "LOOKALIKE_FETCH_ALLOW" in info.value.reason
    assert len(server.requests) == before  # nothing reached the server


def test_guard_checks_every_redirect_hop(server: _Server, fetcher: ImageFetcher) -> None:
    """127.0.0.1 is allowed, the redirect target [::1] (also loopback) is not."""
    port = server.server_address[1]
    before = len(server.requests)
    with pytest.raises(FetchRefused, match=r"::1"):
        fetcher.fetch(url(server, f"/redirect-to/[::1]:{port}"))
    assert server.requests[before:] == [f"/redirect-to/[::1]:{port}"]  # the hop, not the target
    assert fetcher.fetch(url(server, f"/redirect-to/127.0.0.1:{port}")) == IMAGE_BYTES


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("metadata.test", "169.254.169.254"),
        ("intranet.test", "10.1.2.3"),
        ("office.test", "192.168.1.10"),
        ("ula.test", "fd00::1"),
        ("mapped.test", "::ffff:10.0.0.1"),
    ],
)
def test_guard_refuses_names_resolving_to_internal_addresses(host: str, address: str) -> None:
    """Resolver level only: these ranges never get a packet from the tests."""
    import ipaddress

    asked: list[str] = []

    def resolver(name: str, port: int) -> list:
        asked.append(name)
        return [ipaddress.ip_address(address)]

    with ImageFetcher(None, timeout=1.0, max_bytes=1000, resolver=resolver) as fetcher:
        with pytest.raises(FetchRefused) as info:
            fetcher.fetch(UrlSource(url=f"http://{host}/a.jpg"))
    assert asked == [host] and str(ipaddress.ip_address(address)) in info.value.reason


def test_guard_refuses_metadata_literal_before_any_io(guarded: ImageFetcher) -> None:
    with pytest.raises(FetchRefused, match="link-local"):
        guarded.fetch(UrlSource(url="http://169.254.169.254/latest/meta-data/"))


def test_allow_list_comes_from_settings(server: _Server, tmp_path: Path) -> None:
    source = url(server, "/image.png")
    with ImageFetcher.from_settings(Settings(data_dir=tmp_path)) as default:
        with pytest.raises(FetchRefused):
            default.fetch(source)
    with ImageFetcher.from_settings(Settings(data_dir=tmp_path, fetch_allow="127.0.0.1/32")) as f:
        assert f.fetch(source) == IMAGE_BYTES
    with pytest.raises(ConfigurationError, match="LOOKALIKE_FETCH_ALLOW"):
        ImageFetcher.from_settings(Settings(data_dir=tmp_path, fetch_allow="http://x.com"))


def test_backfill_and_training_rereads_are_guarded(server: _Server, guarded: ImageFetcher) -> None:
    """A rollout backfill and `train --tail` re-read stored URLs through payload_bytes."""
    before = len(server.requests)
    payload = {"source_kind": "url", "source": f"http://127.1:{server.server_address[1]}/image.png"}
    with pytest.raises(FetchRefused):
        payload_bytes(payload, guarded, None)
    assert len(server.requests) == before


# --- fetch: inline and files --------------------------------------------------------------------


def test_inline(fetcher: ImageFetcher) -> None:
    assert fetcher.fetch(InlineSource(data=IMAGE_BYTES)) == IMAGE_BYTES


def test_inline_too_large(fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(InlineSource(data=b"x" * 1001))
    assert "1001 bytes" in info.value.reason and "LOOKALIKE_MAX_IMAGE_BYTES" in info.value.reason


def test_empty_bytes_pass_fetch_and_fail_decode(fetcher: ImageFetcher) -> None:
    data = fetcher.fetch(InlineSource(data=b""))
    assert data == b""
    with pytest.raises(DecodeError, match=r"empty image \(0 bytes\)"):
        decode_image(data, max_pixels=BIG)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(IMAGE_BYTES)
    (root / "sub" / "b.png").write_bytes(IMAGE_BYTES)
    (tmp_path / "secret.png").write_bytes(b"secret")
    return root


@pytest.fixture
def file_fetcher(image_root: Path) -> Iterator[ImageFetcher]:
    with ImageFetcher(image_root=image_root, timeout=1.0, max_bytes=1000) as f:
        yield f


@pytest.mark.parametrize("path", ["a.png", "sub/b.png", "sub/../a.png", "./a.png"])
def test_file_inside_root(file_fetcher: ImageFetcher, path: str) -> None:
    assert file_fetcher.fetch(FileSource(path=path)) == IMAGE_BYTES


def test_absolute_file_inside_root(file_fetcher: ImageFetcher, image_root: Path) -> None:
    assert file_fetcher.fetch(FileSource(path=str(image_root / "a.png"))) == IMAGE_BYTES


def test_symlink_within_root_allowed(file_fetcher: ImageFetcher, image_root: Path) -> None:
    (image_root / "alias.png").symlink_to(image_root / "sub" / "b.png")
    assert file_fetcher.fetch(FileSource(path="alias.png")) == IMAGE_BYTES


@pytest.mark.parametrize(
    "path", ["../secret.png", "sub/../../secret.png", "/etc/passwd", "../root-evil/a.png"]
)
def test_file_escape_rejected(file_fetcher: ImageFetcher, path: str) -> None:
    with pytest.raises(FetchError) as info:
        file_fetcher.fetch(FileSource(path=path))
    assert "outside the image root" in info.value.reason


def test_symlink_escape_rejected(
    file_fetcher: ImageFetcher, image_root: Path, tmp_path: Path
) -> None:
    (image_root / "link.png").symlink_to(tmp_path / "secret.png")
    (image_root / "linkdir").symlink_to(tmp_path)
    for path in ("link.png", "linkdir/secret.png"):
        with pytest.raises(FetchError, match="outside the image root"):
            file_fetcher.fetch(FileSource(path=path))


def test_missing_file_rejected(file_fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError, match="no such file 'nope.png'"):
        file_fetcher.fetch(FileSource(path="nope.png"))


def test_directory_rejected(file_fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError, match="not a regular file"):
        file_fetcher.fetch(FileSource(path="sub"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_rejected_without_blocking(file_fetcher: ImageFetcher, image_root: Path) -> None:
    os.mkfifo(image_root / "pipe")
    with pytest.raises(FetchError, match="not a regular file"):
        file_fetcher.fetch(FileSource(path="pipe"))


def test_file_too_large_rejected(file_fetcher: ImageFetcher, image_root: Path) -> None:
    (image_root / "big.png").write_bytes(b"x" * 1001)
    with pytest.raises(FetchError, match="over the limit of 1000 bytes"):
        file_fetcher.fetch(FileSource(path="big.png"))


def test_nul_byte_path_rejected(file_fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError, match="invalid file path"):
        file_fetcher.fetch(FileSource(path="a\x00.png"))


def test_file_references_disabled_without_root(fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(FileSource(path="a.png"))
    assert "file references are disabled" in info.value.reason
    assert "LOOKALIKE_IMAGE_ROOT" in info.value.reason


def test_from_settings(image_root: Path) -> None:
    settings = Settings(image_root=image_root, fetch_timeout=3.5, max_image_bytes=1234)
    with ImageFetcher.from_settings(settings) as f:
        assert f.image_root == Path(os.path.realpath(image_root))
        assert f.timeout == 3.5 and f.max_bytes == 1234
        assert f.fetch(FileSource(path="a.png")) == IMAGE_BYTES
