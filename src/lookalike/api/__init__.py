"""The HTTP API on the Faust web server: search, catalogue, alerts, rollout; errors -> statuses
in one place. The worker wires it to the Faust app (the app does not import it)."""

from .errors import status_for
from .requests import parse_search_request, search_served
from .views import WorkerServices, register_api

__all__ = ["WorkerServices", "parse_search_request", "register_api", "search_served", "status_for"]
