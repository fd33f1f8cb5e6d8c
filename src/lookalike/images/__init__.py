"""From an image reference in an upload event to an upright RGB image.

:class:`ImageFetcher` obtains the bytes (URL, inline, file under the image root);
:func:`decode_image` turns them into a :class:`PIL.Image.Image` (:class:`DecodePool`: a
micro-batch at a time, in threads or processes); both raise
:class:`~lookalike.errors.ImageRejected` subclasses with a reason for the dead letters.
:class:`BlobStore` keeps image bytes by content hash (inline uploads, search queries; in pack
files, or :class:`BlobFiles`, a file each), and
:func:`payload_bytes` reads an indexed image again from its stored reference;
:class:`ThumbnailCache` keeps small copies for the console.
"""

from .blobs import BlobFiles, BlobStore
from .decode import decode_image, original_size
from .decode_pool import DecodedImage, DecodePool, decode_for_encoders
from .fetch import ImageFetcher
from .files import IMAGE_SUFFIXES, iter_image_files
from .source import payload_bytes
from .thumbnails import ThumbnailCache

__all__ = [
    "IMAGE_SUFFIXES",
    "BlobFiles",
    "BlobStore",
    "DecodePool",
    "DecodedImage",
    "ImageFetcher",
    "ThumbnailCache",
    "decode_for_encoders",
    "decode_image",
    "iter_image_files",
    "original_size",
    "payload_bytes",
]
