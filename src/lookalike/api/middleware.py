"""aiohttp middlewares of the API: authentication first, and every error answered as JSON
``{"error": "..."}`` with a fitting status, including aiohttp's own 404, 405 and 413."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import LookalikeError, NotAuthenticated
from ..settings import Settings
from .auth import Authenticator
from .errors import message_for, status_for
from .models import route_for

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Multipart bodies carry an image plus a few fields; the rest of a form is small.
FORM_OVERHEAD = 1 << 20


def json_error(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _route_pattern(request: web.Request) -> str | None:
    resource = getattr(request.match_info.route, "resource", None)
    return resource.canonical if resource is not None else None


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route {request.method} {request.path} (see the README's HTTP API table)"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 413:
        return (
            f"request body over the limit of {request.client_max_size} bytes "
            "(LOOKALIKE_MAX_IMAGE_BYTES plus form fields)"
        )
    return exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LookalikeError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
        return json_error(message_for(exc), status_for(exc), headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_error(_http_error_message(request, exc), exc.status, headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return json_error("internal error; the worker's log says what happened", 500)


def authenticate(auth: Authenticator) -> Any:
    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        pattern = _route_pattern(request)
        route = route_for(request.method, pattern) if pattern else None
        # A route we do not know (404, 405) needs the highest role: fail closed.
        auth.authorize(route.role if route else "admin", request.headers.get("Authorization"))
        return await handler(request)

    return check_token


def web_options(settings: Settings) -> dict[str, Any]:
    """Options for the aiohttp Application the API runs in (Faust's web_application_options)."""
    return {
        "middlewares": [errors_as_json, authenticate(Authenticator.from_settings(settings))],
        # The largest body any route takes (a multipart image upload), after decompression.
        "client_max_size": settings.max_image_bytes + FORM_OVERHEAD,
    }
