"""Handing a search or a click to Kafka from a request, with a bound on the wait."""

from __future__ import annotations

import asyncio
import logging

from ..consumers import SendFn

log = logging.getLogger(__name__)


class BoundedSend:
    """Hands a record to Kafka but waits at most ``timeout``: a broker that is gone must not
    hang a request. A send given up on keeps going in the background (it may still land)."""

    def __init__(self, send: SendFn, timeout: float, what: str) -> None:
        self._send = send
        self.timeout = timeout
        self.what = what
        self._failing = False

    async def __call__(self, key: bytes | None, value: bytes) -> bool:
        task = asyncio.ensure_future(self._send(key, value))
        task.add_done_callback(_consume_exception)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except (TimeoutError, Exception) as exc:
            if not self._failing:  # said once per outage, not per request
                reason = f"no answer within {self.timeout:g}s" if not str(exc) else str(exc)
                log.warning("cannot hand %s to Kafka (%s)", self.what, reason)
            self._failing = True
            return False
        if self._failing:
            log.warning("%s reach Kafka again", self.what)
            self._failing = False
        return True


def _consume_exception(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned send's failure is not "never retrieved"
