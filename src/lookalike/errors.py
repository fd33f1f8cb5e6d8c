"""Exception hierarchy.

Every error a user can meet derives from :class:`LookalikeError` and says what to do about it.
Errors about one input image carry the pipeline *stage* that rejected it; the indexing agent
turns them into dead-letter records instead of crashing.
"""

from __future__ import annotations

from typing import Literal

Stage = Literal["parse", "validate", "fetch", "decode", "embed", "index"]


class LookalikeError(Exception):
    """Base class for every error raised by lookalike."""


class ConfigurationError(LookalikeError):
    """A setting is missing or inconsistent; the message names the setting to change."""


class BrokerUnavailable(LookalikeError):
    """No Kafka broker could be reached or started."""


class EncoderUnavailable(LookalikeError):
    """An encoder's weights or code are missing; the message says which file to put where."""


class ImageRejected(LookalikeError):
    """One input image could not be turned into an embedding. It goes to the dead letters."""

    stage: Stage = "decode"

    def __init__(self, reason: str, *, stage: Stage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if stage is not None:
            self.stage = stage


class FetchError(ImageRejected):
    """The image bytes could not be obtained (bad URL, timeout, too large, path outside root)."""

    stage: Stage = "fetch"


class DecodeError(ImageRejected):
    """The bytes are not a decodable image, or the image is unsafe to decode (pixel limit)."""

    stage: Stage = "decode"


class InvalidEvent(ImageRejected):
    """The event is not valid JSON or does not match the wire schema."""

    stage: Stage = "validate"
