"""The rollout controller as the learning loop reaches it: the running worker's API.

Rollouts run inside the worker (it holds the index and the encoders, and dual-writes live
events), so the loop does not duplicate any of it: it calls the same routes as `lookalike
rollout`. A refusal (HTTP 409) comes back as :class:`RolloutError` with the worker's reason.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import LookalikeError, RolloutError, ServiceUnavailable
from ..settings import Settings

#: A promotion evaluates two encoders on the holdout folder inside the worker.
PROMOTE_TIMEOUT = 1800.0


class WorkerRollout:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.base_api_url
        self.client = httpx.Client(
            base_url=self.url, timeout=120.0, headers=settings.client_headers()
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"cannot reach the worker at {self.url} ({exc}): the learning loop rolls out "
                "through it; start it (`lookalike up`) or point --port / LOOKALIKE_API_URL at it"
            ) from exc
        if response.status_code == 409:
            raise RolloutError(response.json().get("error", response.text))
        if response.status_code >= 400:
            raise LookalikeError(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/rollout/status")

    def start(self, encoder: str) -> dict[str, Any]:
        return self._call("POST", "/rollout/start", json={"encoder": encoder})

    def promote(self, eval_dir: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/rollout/promote",
            json={"force": False, "eval_dir": eval_dir},
            timeout=PROMOTE_TIMEOUT,
        )

    def abort(self) -> dict[str, Any]:
        return self._call("POST", "/rollout/abort")


def serving_record(status: dict[str, Any]) -> dict[str, Any]:
    """The serving version's registry record (version, encoder spec) from a rollout status."""
    record = record_in_state(status, "serving")
    if record is None:
        raise ServiceUnavailable("the worker serves no model version yet: index something first")
    return record


def record_in_state(status: dict[str, Any], state: str) -> dict[str, Any] | None:
    """The registry record in ``state`` (serving, anchor, ...) from a rollout status."""
    return next((r for r in status.get("versions", []) if r.get("state") == state), None)
