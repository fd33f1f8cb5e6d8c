"""Keeping a worker process honest: it stops when asked, it says when its broker is gone (once),
and it exits for a supervisor to restart it when the broker stays gone.

* :class:`ExitWatchdog`: once a stop begins (SIGTERM, SIGINT, a lost broker) a thread gives the
  graceful stop ``LOOKALIKE_SHUTDOWN_GRACE`` seconds, then ends the process whatever it is
  stuck on (a commit to a dead broker, a blocked thread). A second signal exits at once.
* :class:`BrokerMonitor`: a thread probing the broker every few seconds (independent of the
  event loop, so it works however stuck that is). It keeps ``broker`` in the worker's
  :class:`~lookalike.health.Health` (``GET /ready``), logs the loss and the recovery once, and
  after ``LOOKALIKE_BROKER_LOST_EXIT`` seconds unreachable stops the worker with status 3.

Repeated library warnings are held back by :class:`lookalike.logs.RepeatFilter`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ..health import Health

log = logging.getLogger(__name__)

#: Exit status of a worker that lost its broker for longer than LOOKALIKE_BROKER_LOST_EXIT.
EXIT_BROKER_LOST = 3
#: Exit status of a worker whose stop did not finish within LOOKALIKE_SHUTDOWN_GRACE.
EXIT_STOP_FORCED = 1


class ExitWatchdog:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.exit_code = 0
        self.reason = ""
        self._armed = threading.Event()

    @property
    def armed(self) -> bool:
        return self._armed.is_set()

    def arm(self, code: int, reason: str) -> None:
        """A stop began: exit with ``code`` if it has not finished within the grace period.
        Arming again (a second signal) exits at once."""
        if self._armed.is_set():
            self._exit(code or self.exit_code, f"{reason} again")
            return
        self.exit_code, self.reason = code, reason
        self._armed.set()
        log.info(
            "stopping (%s): finishing the batches in flight, at most %gs "
            "(LOOKALIKE_SHUTDOWN_GRACE); Ctrl-C again stops at once",
            reason,
            self.grace,
        )
        threading.Thread(target=self._expire, name="exit-watchdog", daemon=True).start()

    def _expire(self) -> None:
        time.sleep(self.grace)
        log.critical(
            "the worker did not stop within %gs of %s (LOOKALIKE_SHUTDOWN_GRACE): exiting now "
            "with status %d; unfinished batches were not committed and are replayed on restart",
            self.grace,
            self.reason,
            self.forced_code,
        )
        self._exit(self.forced_code, self.reason)

    @property
    def forced_code(self) -> int:
        return self.exit_code or EXIT_STOP_FORCED

    def _exit(self, code: int, reason: str) -> None:
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: S110 - exiting anyway
                pass
        os._exit(code or EXIT_STOP_FORCED)


def stop_on_signals(watchdog: ExitWatchdog) -> None:
    """Arm ``watchdog`` on SIGTERM/SIGINT, in the main thread, whatever the event loop is doing.

    Call after the event loop installed its own handlers: asyncio learns of the signal through
    its wakeup file descriptor (written by the interpreter for any Python-level handler), so
    replacing the Python-level handler keeps its graceful stop and adds the deadline."""

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        watchdog.arm(watchdog.exit_code, name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


class BrokerMonitor:
    def __init__(
        self,
        bootstrap: str,
        probe: Callable[[], str | None],
        health: Health,
        lost_after: float,
        on_lost: Callable[[str], None],
        interval: float = 2.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.probe = probe
        self.health = health
        self.lost_after = lost_after
        self.on_lost = on_lost
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        down_since: float | None = None
        while not self._stop.is_set():
            asked = time.monotonic()
            reason = self.probe()
            now = time.monotonic()
            if reason is None:
                if down_since is not None:
                    log.warning(
                        "the Kafka broker at %s answers again (after %.0fs)",
                        self.bootstrap,
                        now - down_since,
                    )
                    self.health.fine("broker")
                down_since = None
            else:
                if down_since is None:
                    down_since = asked  # gone since we asked, not since the probe gave up
                    log.error(
                        "cannot reach the Kafka broker at %s (%s). Nothing is lost: offsets stay "
                        "uncommitted and searches are answered unlogged. The worker exits with "
                        "status %d if it stays unreachable for %.0fs (LOOKALIKE_BROKER_LOST_EXIT).",
                        self.bootstrap,
                        reason,
                        EXIT_BROKER_LOST,
                        self.lost_after,
                    )
                gone = now - down_since
                self.health.failing(
                    "broker", f"unreachable for {gone:.0f}s at {self.bootstrap}: {reason}"
                )
                if gone >= self.lost_after:
                    self.on_lost(
                        f"the Kafka broker at {self.bootstrap} was unreachable for {gone:.0f}s "
                        f"(LOOKALIKE_BROKER_LOST_EXIT={self.lost_after:g}): {reason}. Start the "
                        "broker (or fix LOOKALIKE_KAFKA_BOOTSTRAP) and restart the worker"
                    )
                    return
            self._stop.wait(self.interval)
