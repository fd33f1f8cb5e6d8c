"""The HTTP API on the Faust web server: search, catalogue, thumbnails, alerts, rollout, health,
metrics, and the console's pages with the OpenAPI document; request and answer models and roles
in one table; authentication and JSON errors as middlewares; errors -> statuses in one place.
The worker wires it to the Faust app (the app does not import it)."""

from .auth import Authenticator, check_exposure
from .errors import status_for
from .middleware import web_options
from .models import ROUTES, Route
from .requests import parse_search_request, search_served
from .views import ApiCounters, WorkerServices, register_api

__all__ = [
    "ROUTES",
    "ApiCounters",
    "Authenticator",
    "Route",
    "WorkerServices",
    "check_exposure",
    "parse_search_request",
    "register_api",
    "search_served",
    "status_for",
    "web_options",
]
