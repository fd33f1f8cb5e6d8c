"""Turning an image reference from an upload event into an upright RGB image.

:func:`fetch_image_bytes` / :class:`ImageFetcher` obtain the bytes (URL, inline, file);
:func:`decode_image` turns them into a :class:`PIL.Image.Image`. Both raise
:class:`~lookalike.errors.ImageRejected` subclasses with a reason for the dead letters.
"""

from .decode import decode_image, original_size
from .fetch import ImageFetcher, fetch_image_bytes

__all__ = ["ImageFetcher", "decode_image", "fetch_image_bytes", "original_size"]
