"""What of the worker is usable right now, and why not: the state behind ``GET /ready``.

Parts report themselves: the broker monitor (reachable or not), the batch retry loops (a disk
full, the index failing), the API's own checks at request time (index, encoder). Each part is
either fine or failing with a reason and since when; the worker is ready when none is failing.
Thread-safe: parts report from the event loop and from worker threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trouble:
    reason: str
    since: float


class Health:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._troubles: dict[str, Trouble] = {}

    def failing(self, part: str, reason: str) -> bool:
        """Record that ``part`` fails; True when it was fine until now (a new trouble)."""
        with self._lock:
            known = self._troubles.get(part)
            self._troubles[part] = Trouble(reason, known.since if known else time.time())
            return known is None

    def fine(self, part: str) -> Trouble | None:
        """Record that ``part`` works; returns the trouble it recovered from, if any."""
        with self._lock:
            return self._troubles.pop(part, None)

    def trouble(self, part: str) -> Trouble | None:
        with self._lock:
            return self._troubles.get(part)

    def report(self, parts: tuple[str, ...] = ()) -> dict[str, Any]:
        """``{"ready": bool, "checks": {part: {"ok": bool, "reason"?, "since"?}}}`` for the
        listed parts and every failing one."""
        with self._lock:
            troubles = dict(self._troubles)
        checks: dict[str, Any] = {part: {"ok": True} for part in parts}
        for part, trouble in troubles.items():
            checks[part] = {
                "ok": False,
                "reason": trouble.reason,
                "failing_seconds": round(time.time() - trouble.since, 1),
            }
        return {"ready": not troubles, "checks": checks}
