"""Decode untrusted image bytes into an upright 8-bit RGB :class:`PIL.Image.Image`.

Every rejection is a :class:`~lookalike.errors.DecodeError` whose reason says why. The function
keeps no state between calls (each call works on its own image object), so worker threads may
call it concurrently.

Pillow safety settings used here are process-global:

* ``Image.MAX_IMAGE_PIXELS`` (Pillow's own decompression-bomb guard) is left in place, because
  Pillow also uses it for checks we cannot repeat (GIF frame and TIFF tile sizes). It is only
  *raised* to ``max_pixels`` when our limit is higher, so Pillow never rejects an image we allow;
  our own check, on the header size before any pixel is decoded, is the one that applies.
  Pillow's warning therefore only fires for images we reject anyway, and no warning filter has to
  be changed (``warnings.catch_warnings`` is not thread-safe).
* ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay off, or truncated files decode as grey padding.
"""

from __future__ import annotations

import io
import logging
import threading

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import DecodeError

log = logging.getLogger(__name__)

# Formats a marketplace upload can reasonably be. Others (EPS runs Ghostscript, plus many
# obscure legacy decoders) are refused to keep the attack surface small. Multi-picture JPEGs
# (phone cameras) come in through the JPEG opener and report format "MPO".
_WANTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF")
# Register the plugins now, once, instead of lazily from several threads; and keep only the
# formats this Pillow build has (Image.open raises KeyError for an unknown format name).
Image.init()
ACCEPTED_FORMATS: tuple[str, ...] = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)

_JPEG_FORMATS = ("JPEG", "MPO")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_WIDE_MODES = (*_SIXTEEN_BIT_MODES, "I", "F")

_limit_lock = threading.Lock()
ImageFile.LOAD_TRUNCATED_IMAGES = False


#: Key in ``Image.info`` holding the uploaded image's upright (width, height).
ORIGINAL_SIZE = "lookalike.original_size"
_EXIF_ORIENTATION = 0x0112
#: EXIF orientation values that flip or rotate the stored pixels (1: upright).
_ROTATIONS = frozenset(range(2, 9))


def decode_image(data: bytes, *, max_pixels: int, target_size: int | None = None) -> Image.Image:
    """Decode ``data`` into an upright RGB image, or raise :class:`DecodeError`.

    ``max_pixels`` caps width*height, checked from the header before pixels are decoded.
    ``target_size`` (the encoder's input size) lets JPEGs decode at a reduced DCT scale; the
    result's short side stays >= ``target_size`` whenever the source's was.
    """
    if not data:
        raise DecodeError("empty image (0 bytes)")
    _prepare_pillow(max_pixels)

    try:
        # Lazy: reads the header only, so the size is known before any pixel is decoded.
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise DecodeError(
            f"not a recognised image format (accepted: {', '.join(ACCEPTED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(_bomb_reason(str(exc), max_pixels)) from None
    except MemoryError:
        raise  # the machine's trouble, not the image's: the batch is retried
    except Exception as exc:  # plugins raise assorted errors on malformed headers
        raise DecodeError(f"corrupt or truncated image: {_describe(exc)}") from None

    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise DecodeError(
                f"image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{max_pixels} pixels (LOOKALIKE_MAX_IMAGE_PIXELS); not decoded"
            )
        if target_size and img.format in _JPEG_FORMATS:
            # Decode at 1/2, 1/4 or 1/8 scale; Pillow picks the largest reduction that keeps
            # both sides >= target_size, and only for baseline single-scan data.
            img.draft("RGB", (target_size, target_size))
        try:
            img.load()  # first frame only, for animated GIF / WebP / APNG
        except Image.DecompressionBombError as exc:
            raise DecodeError(_bomb_reason(str(exc), max_pixels)) from None
        except MemoryError:
            raise
        except Exception as exc:  # OSError (truncated), SyntaxError, ValueError, struct.error...
            raise DecodeError(f"corrupt or truncated image: {_describe(exc)}") from None

        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # a broken EXIF block: keep the stored orientation
            orientation = 1
        # Upright already (the usual case): no transposed copy. Leaving the `with` only drops
        # the file pointer; the loaded pixels stay.
        upright = _apply_exif_orientation(img) if orientation in _ROTATIONS else img
    try:
        rgb = _to_rgb(upright)
    except Exception as exc:
        raise DecodeError(f"unsupported image mode {upright.mode}: {_describe(exc)}") from None
    # The uploaded image's upright size; the pixels may be smaller after the JPEG draft.
    rgb.info[ORIGINAL_SIZE] = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return rgb


def original_size(image: Image.Image) -> tuple[int, int]:
    """Upright (width, height) of the image as uploaded, before any reduced-scale decode."""
    return tuple(image.info.get(ORIGINAL_SIZE, image.size))  # type: ignore[return-value]


def _prepare_pillow(max_pixels: int) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL ImageFile.LOAD_TRUNCATED_IMAGES was enabled; turning it off again")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        with _limit_lock:  # monotonic raise; the lock stops two threads lowering it again
            if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
                Image.MAX_IMAGE_PIXELS = max_pixels


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Return an upright copy; a broken EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not cost us an otherwise good image
        log.debug("ignoring unreadable EXIF orientation: %s", _describe(exc))
        return img.copy()


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _WIDE_MODES:
        img = _to_8bit(img)
    if img.has_transparency_data:
        # Alpha channel, palette alpha or a tRNS colour key: flatten onto white, the usual
        # product-photo background, rather than the black convert("RGB") would leave.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    # '1', 'L', 'P', 'CMYK' (Adobe-inverted and YCCK JPEGs arrive here already as plain CMYK),
    # 'YCbCr', 'HSV'. CMYK uses Pillow's naive conversion; embedded ICC profiles are ignored.
    return img.convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map a 16-bit, 32-bit integer or float greyscale image to 8-bit 'L'.

    16-bit data has a known nominal range, so it is divided by 257 (65535 -> 255): a dark 16-bit
    photo stays dark instead of being contrast-stretched. 'I' and 'F' have no nominal range, so
    their actual min..max is stretched to 0..255 (a constant image is clipped to 0..255).
    """
    arr = np.asarray(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        out = np.rint(arr.astype(np.float32) / 257.0)
    else:
        values = arr.astype(np.float64)
        finite = np.isfinite(values)
        values[~finite] = 0.0
        lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
        out = np.rint((values - lo) * (255.0 / (hi - lo))) if hi > lo else values
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _bomb_reason(pillow_message: str, max_pixels: int) -> str:
    return (
        f"image exceeds the pixel limit of {max_pixels} pixels (LOOKALIKE_MAX_IMAGE_PIXELS): "
        f"{pillow_message}"
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
