"""The error tree: every error lookalike raises on purpose, in one place.

::

    LookalikeError                 says what to do about it
    ├── ConfigurationError         a setting is missing or inconsistent (names the setting)
    ├── BrokerUnavailable          no Kafka broker could be reached or started
    ├── EncoderUnavailable         an encoder's weights or code are missing
    ├── RejectedInput              one input cannot be processed: it goes to the dead letters
    │   ├── ImageRejected          an image cannot become an embedding
    │   │   ├── FetchError         bad URL, timeout, too large, path outside the root
    │   │   ├── DecodeError        not a decodable image, or unsafe to decode
    │   │   └── InvalidEvent       not valid JSON, or not the wire schema
    │   └── ClickRejected          a click that cannot become a training pair
    ├── InvalidRequest             an API request that is not well formed
    ├── NotFound                   an image, alert or model version that is not there
    ├── NotReady                   the index cannot answer yet (nothing serving, no encoder)
    └── Conflict                   the request conflicts with the worker's state
        └── RolloutError           a rollout step that is not possible now

Errors carry data (a reason, a stage, what was not found), never how a transport renders them:
the HTTP API maps them to statuses in one place (:mod:`lookalike.api.errors`).
"""

from __future__ import annotations

from typing import Literal

Stage = Literal["parse", "validate", "fetch", "decode", "embed", "index", "join"]


class LookalikeError(Exception):
    """Base class for every error raised by lookalike."""


class ConfigurationError(LookalikeError):
    """A setting is missing or inconsistent; the message names the setting to change."""


class BrokerUnavailable(LookalikeError):
    """No Kafka broker could be reached or started."""


class EncoderUnavailable(LookalikeError):
    """An encoder's weights or code are missing; the message says which file to put where."""


class RejectedInput(LookalikeError):
    """One input message cannot be processed; it goes to the dead letters with ``reason`` and
    the pipeline ``stage`` that rejected it."""

    stage: Stage = "validate"

    def __init__(self, reason: str, *, stage: Stage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if stage is not None:
            self.stage = stage


class ImageRejected(RejectedInput):
    """One input image could not be turned into an embedding."""

    stage: Stage = "decode"


class FetchError(ImageRejected):
    """The image bytes could not be obtained (bad URL, timeout, too large, path outside root)."""

    stage: Stage = "fetch"


class DecodeError(ImageRejected):
    """The bytes are not a decodable image, or the image is unsafe to decode (pixel limit)."""

    stage: Stage = "decode"


class InvalidEvent(ImageRejected):
    """The event is not valid JSON or does not match the wire schema."""

    stage: Stage = "validate"


class ClickRejected(RejectedInput):
    """A click that cannot become a training pair (not shown, too late, unknown search)."""

    stage: Stage = "join"


class InvalidRequest(LookalikeError):
    """An API request that is not well formed; the message says what is expected."""


class NotFound(LookalikeError):
    """``what`` (an image, an alert, a model version) named ``key`` is not there."""

    def __init__(self, what: str, key: str, message: str | None = None) -> None:
        super().__init__(message or f"no {what} {key!r}")
        self.what = what
        self.key = key


class NotReady(LookalikeError):
    """The index cannot answer yet: nothing is serving, or this worker lacks its encoder."""


class Conflict(LookalikeError):
    """A request the worker's current state does not allow (e.g. validation is switched off)."""


class RolloutError(Conflict):
    """A rollout step that is not possible now; the message says what to do instead."""
