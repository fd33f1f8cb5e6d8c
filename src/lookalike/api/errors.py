"""Errors -> HTTP statuses, in one place. Every error answer is JSON ``{"error": "..."}``."""

from __future__ import annotations

from ..errors import (
    BodyTooLarge,
    ConfigurationError,
    Conflict,
    EncoderUnavailable,
    ImageRejected,
    InvalidRequest,
    LookalikeError,
    NotAuthenticated,
    NotFound,
    NotReady,
    PermissionDenied,
    ServiceUnavailable,
    UnsupportedBody,
)

#: Most specific first: the first class an error is an instance of decides its status.
STATUSES: tuple[tuple[type[LookalikeError], int], ...] = (
    (BodyTooLarge, 413),
    (UnsupportedBody, 415),
    (InvalidRequest, 400),
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (ImageRejected, 422),  # the image in the request cannot be decoded
    (NotReady, 503),
    (ServiceUnavailable, 503),  # the broker or a disk: try again later
    (EncoderUnavailable, 400),  # e.g. a rollout to an encoder whose weights are not here
    (ConfigurationError, 400),
)


def status_for(error: LookalikeError) -> int:
    for kind, status in STATUSES:
        if isinstance(error, kind):
            return status
    return 500


def message_for(error: LookalikeError) -> str:
    if isinstance(error, ImageRejected):
        return f"image rejected: {error.reason}"
    return str(error)
