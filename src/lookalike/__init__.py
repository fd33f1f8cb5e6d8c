"""lookalike: a streaming visual-search indexer for online marketplaces."""

from .errors import (
    BrokerUnavailable,
    ConfigurationError,
    DecodeError,
    EncoderUnavailable,
    FetchError,
    ImageRejected,
    InvalidEvent,
    LookalikeError,
)
from .events import DeadLetter, FileSource, ImageUploaded, InlineSource, UrlSource
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "DeadLetter",
    "DecodeError",
    "EncoderUnavailable",
    "FetchError",
    "FileSource",
    "ImageRejected",
    "ImageUploaded",
    "InlineSource",
    "InvalidEvent",
    "LookalikeError",
    "Settings",
    "UrlSource",
    "__version__",
]
