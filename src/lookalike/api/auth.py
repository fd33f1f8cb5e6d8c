"""Who may call what: bearer tokens from the settings, two roles, and the refusal to expose an
open API.

``read`` tokens may search, read image records and report clicks (what a marketplace front end
needs); ``admin`` tokens may do everything (rollouts, alert reviews, exemplars, vectors, dead
letters, stats). ``/health`` and ``/ready`` are open. With no token configured at all the API
is open, which is only allowed on a loopback interface unless LOOKALIKE_ALLOW_UNAUTHENTICATED
says so. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field

from ..errors import ConfigurationError, NotAuthenticated, PermissionDenied
from ..settings import Settings
from .models import Role

LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name or an interface we cannot vouch for


def check_exposure(settings: Settings) -> None:
    """Refuse to serve the API off loopback without tokens (unless explicitly allowed)."""
    if settings.read_tokens or settings.admin_tokens or settings.allow_unauthenticated:
        return
    if not is_loopback(settings.api_host):
        raise ConfigurationError(
            f"refusing to serve the API on {settings.api_host} without authentication: set "
            "LOOKALIKE_API_ADMIN_TOKENS (and LOOKALIKE_API_READ_TOKENS for front ends), or "
            "LOOKALIKE_ALLOW_UNAUTHENTICATED=true if a proxy in front authenticates, or bind "
            "LOOKALIKE_API_HOST=127.0.0.1"
        )


def _matches(token: str, candidates: list[str]) -> bool:
    # Compare with every candidate (no early exit), each in constant time.
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


@dataclass(frozen=True)
class Authenticator:
    read_tokens: list[str] = field(repr=False)
    admin_tokens: list[str] = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(settings.read_tokens, settings.admin_tokens)

    @property
    def enabled(self) -> bool:
        return bool(self.read_tokens or self.admin_tokens)

    def role_of(self, authorization: str | None) -> Role | None:
        """The role an ``Authorization`` header grants (None: no valid token)."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if _matches(token, self.admin_tokens):
            return "admin"
        if _matches(token, self.read_tokens):
            return "read"
        return None

    def authorize(self, needed: Role, authorization: str | None) -> None:
        """Raise unless a request with this header may call a route that needs ``needed``."""
        if needed == "open" or not self.enabled:
            return
        role = self.role_of(authorization)
        if role is None:
            raise NotAuthenticated(
                "this route needs a bearer token: send 'Authorization: Bearer TOKEN' "
                "(the CLI sends LOOKALIKE_API_TOKEN)"
            )
        if needed == "admin" and role != "admin":
            raise PermissionDenied("this route needs an admin token", role=role)
