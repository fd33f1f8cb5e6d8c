"""The error tree: every error lookalike raises on purpose, in one place.

::

    LookalikeError                 says what to do about it
    ├── ConfigurationError         a setting is missing or inconsistent (names the setting)
    ├── ServiceUnavailable         infrastructure, not input: retried, never dead-lettered
    │   ├── BrokerUnavailable      no Kafka broker could be reached or started
    │   └── StorageUnavailable     a disk is full, read-only or not ours to write (path, errno)
    ├── EncoderUnavailable         an encoder's weights or code are missing
    ├── RejectedInput              one input cannot be processed: it goes to the dead letters
    │   ├── ImageRejected          an image cannot become an embedding
    │   │   ├── FetchError         bad URL, timeout, too large, path outside the root
    │   │   │   └── FetchRefused   the URL guard refuses it (scheme, port, private address)
    │   │   │       ├── ForbiddenURL
    │   │   │       └── ForbiddenAddress
    │   │   ├── DecodeError        not a decodable image, or unsafe to decode
    │   │   └── InvalidEvent       not valid JSON, not the wire schema, or over a size limit
    │   └── ClickRejected          a click that cannot become a training pair
    ├── InvalidRequest             an API request that is not well formed
    │   ├── BodyTooLarge           a request body over its limit (names the limit)
    │   └── UnsupportedBody        a body in an encoding or media type the route does not take
    ├── NotAuthenticated           no valid bearer token for a protected route
    ├── PermissionDenied           a valid token whose role does not allow the route
    ├── NotFound                   an image, alert or model version that is not there
    ├── NotReady                   the index cannot answer yet (nothing serving, no encoder)
    └── Conflict                   the request conflicts with the worker's state
        └── RolloutError           a rollout step that is not possible now

Errors carry data (a reason, a stage, what was not found), never how a transport renders them:
the HTTP API maps them to statuses in one place (:mod:`lookalike.api.errors`).
"""

from __future__ import annotations

import errno as errnos
from pathlib import Path
from typing import Literal

Stage = Literal["parse", "validate", "fetch", "decode", "embed", "index", "join"]


class LookalikeError(Exception):
    """Base class for every error raised by lookalike."""


class ConfigurationError(LookalikeError):
    """A setting is missing or inconsistent; the message names the setting to change."""


class ServiceUnavailable(LookalikeError):
    """Infrastructure trouble (a service, a disk, the broker), not bad input: the work is
    retried with back-off and kept (offsets held), never dead-lettered."""

    #: Which part of the worker is failing, for readiness: "broker", "storage", "index".
    component = "service"


class BrokerUnavailable(ServiceUnavailable):
    """No Kafka broker could be reached or started."""

    component = "broker"


#: What an OSError's errno means for the operator, and so whether it is the machine's fault.
_STORAGE_PROBLEMS = {
    errnos.ENOSPC: "the disk is full",
    errnos.EDQUOT: "the disk quota is used up",
    errnos.EROFS: "the file system is read-only",
    errnos.EACCES: "permission denied",
    errnos.EPERM: "operation not permitted",
    errnos.EIO: "an I/O error (failing disk?)",
    errnos.EMFILE: "this process has too many open files",
    errnos.ENFILE: "the system has too many open files",
    errnos.ENOMEM: "out of memory",
}


class StorageUnavailable(ServiceUnavailable):
    """Writing ``what`` under ``path`` failed for a reason of the machine's (disk full,
    read-only, permissions): the work is retried until the operator fixes it."""

    component = "storage"

    def __init__(self, what: str, path: Path, error: OSError, setting: str | None = None) -> None:
        self.what = what
        self.path = path
        self.errno = error.errno
        problem = _STORAGE_PROBLEMS.get(error.errno or 0, error.strerror or str(error))
        where = f"; or point {setting} at another disk" if setting else ""
        advice = (
            "free some space there"
            if error.errno in (errnos.ENOSPC, errnos.EDQUOT)
            else "fix the folder's permissions or mount"
        )
        super().__init__(f"cannot write {what} to {path}: {problem}. {advice.capitalize()}{where}")

    @staticmethod
    def is_storage_error(error: BaseException) -> bool:
        """An OSError that says the machine is failing, not that an input is bad."""
        return isinstance(error, OSError) and error.errno in _STORAGE_PROBLEMS


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


class FetchRefused(FetchError):
    """The URL guard refused a fetch (scheme, credentials, port, or a non-public address).
    Permanent: retrying will not help; the message names the allow-list setting."""


class ForbiddenURL(FetchRefused):
    """The URL itself is unacceptable (scheme, credentials, odd characters, port)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused to fetch {url!r}: {reason}")
        self.url = url
        self.why = reason


class ForbiddenAddress(FetchRefused):
    """The destination address (or a name resolving to it) is not allowed by the policy."""

    def __init__(self, url_or_host: str, address: object, reason: str, message: str) -> None:
        super().__init__(message)
        self.url_or_host = url_or_host
        self.address = address
        self.why = reason


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


class BodyTooLarge(InvalidRequest):
    """A request body over ``limit`` bytes (after decompression)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(f"request body over the limit of {limit} bytes ({setting})")
        self.limit = limit
        self.setting = setting


class UnsupportedBody(InvalidRequest):
    """A body in a content encoding or media type the route does not take."""


class NotAuthenticated(LookalikeError):
    """A protected route was called without a valid bearer token."""


class PermissionDenied(LookalikeError):
    """The token is valid but its role (``role``) does not allow the route."""

    def __init__(self, message: str, role: str) -> None:
        super().__init__(message)
        self.role = role


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
