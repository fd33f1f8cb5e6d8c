"""Where blocking work runs: the worker's executors, one way to call them from the event loop,
and one retry-with-back-off loop that says a failure once, not once per try.

The event loop only schedules: fetch, decode, inference, index and SQLite calls all run on
these executors, so Faust keeps heart-beating and committing. :class:`PriorityExecutor` is the
model thread, shared by live indexing and the rollout backfill: live work is submitted as usual
(``submit``, so ``loop.run_in_executor`` works unchanged); the backfill submits small chunks
with :meth:`PriorityExecutor.submit_low`. Whenever the thread is free it takes the oldest live
job if there is one, so a live batch waits at most for one backfill chunk, and the backfill uses
the time live indexing leaves idle (under a saturating live load it waits).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .health import Health

T = TypeVar("T")

LIVE, BACKGROUND = 0, 1


class PriorityExecutor(Executor):
    def __init__(self, thread_name: str = "model") -> None:
        self._queue: list[tuple[int, int, Future[Any], Callable[..., Any], tuple, dict]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._shutdown = False
        self._thread = threading.Thread(target=self._work, name=thread_name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._put(LIVE, fn, args, kwargs)

    def submit_low(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._put(BACKGROUND, fn, args, kwargs)

    def queued(self, priority: int = LIVE) -> int:
        with self._cv:
            return sum(1 for item in self._queue if item[0] == priority)

    def _put(self, priority: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Future:
        future: Future[Any] = Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            heapq.heappush(self._queue, (priority, next(self._order), future, fn, args, kwargs))
            self._cv.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._shutdown:
                    self._cv.wait()
                if not self._queue:
                    return
                _, _, future, fn, args, kwargs = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiter, like ThreadPoolExecutor
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for _, _, future, *_ in self._queue:
                    future.cancel()
                self._queue.clear()
            self._cv.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()


async def run_in(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` on ``executor`` (None: the loop's default) and await it."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


#: How often a retry loop that keeps failing says so again.
STILL_FAILING_EVERY = 300.0


def describe_error(exc: BaseException) -> str:
    """Our errors say what to do in their message; others need their type to make sense."""
    if exc.__class__.__module__.startswith("lookalike"):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def failing_part(exc: BaseException, default: str) -> str:
    """Which part of the worker an infrastructure error says is failing (for readiness)."""
    part = getattr(exc, "component", None)
    if isinstance(part, str):
        return part
    if type(exc).__module__.split(".")[0] in ("aiokafka", "kafka"):
        return "broker"
    return default


async def retry_with_backoff(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    log: logging.Logger,
    *,
    kept: str,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    health: Health | None = None,
    part: str = "pipeline",
) -> T:
    """Await ``attempt()`` until it succeeds, doubling the pause after each failure. For
    infrastructure trouble (a service down, a full disk, memory): the work is kept (``kept``
    says how), never dropped.

    The log says it once: the first failure (or a new kind of failure), "still failing" every
    few minutes, and the recovery; not every try. With ``health``, the failing part is reported
    for readiness, and several loops failing for the same reason say it once between them."""
    report = _FailureReport(what, log, kept, max_delay, health, part)
    delay = first_delay
    while True:
        try:
            result = await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            report.failed(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        report.succeeded()
        return result


class _FailureReport:
    """What one retry loop says about its failures: once, then rarely, then the recovery."""

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        kept: str,
        max_delay: float,
        health: Health | None,
        part: str,
    ) -> None:
        self.what, self.log, self.kept, self.max_delay = what, log, kept, max_delay
        self.health, self.part = health, part
        self.tries, self.started = 0, time.monotonic()
        self.said_at, self.last_said = self.started, ""
        self.trouble_part: str | None = None

    def failed(self, exc: Exception) -> None:
        self.tries += 1
        reason = describe_error(exc)
        self.trouble_part = failing_part(exc, self.part)
        new = reason != self.last_said
        if self.health is not None:
            known = self.health.trouble(self.trouble_part)
            new = self.health.failing(self.trouble_part, f"{self.what}: {reason}") or (
                known is not None and not known.reason.endswith(reason)
            )
        now = time.monotonic()
        if new:
            self.log.error(
                "%s failed: %s. Retrying with back-off (pauses up to %.0fs); %s. Said once; "
                "the log tells when it recovers.",
                self.what,
                reason,
                self.max_delay,
                self.kept,
            )
            self.said_at, self.last_said = now, reason
        elif now - self.said_at >= STILL_FAILING_EVERY:
            self.log.warning(
                "%s still failing after %d tries over %.0fs: %s",
                self.what,
                self.tries,
                now - self.started,
                reason,
            )
            self.said_at = now

    def succeeded(self) -> None:
        if not self.tries:
            return
        if self.health and self.trouble_part and not self.health.fine(self.trouble_part):
            return  # another loop failing for the same part said the recovery already
        self.log.warning(
            "%s recovered after %d failed tries (%.0fs)",
            self.what,
            self.tries,
            time.monotonic() - self.started,
        )


@dataclass
class WorkerExecutors:
    """A thread per pipeline stage (two to prepare), so consecutive batches overlap (prepare
    fans out to the pipeline's decode pool); API requests have their own threads so a search
    never queues behind a whole batch's decoding; the model thread runs live batches before
    backfill chunks."""

    prepare: ThreadPoolExecutor = field(init=False)
    model: PriorityExecutor = field(init=False)
    write: ThreadPoolExecutor = field(init=False)
    api: ThreadPoolExecutor = field(init=False)
    #: The console's thumbnails: a slow image source must not hold up searches.
    thumbnails: ThreadPoolExecutor = field(init=False)
    #: Click join and pair files: one thread, so SQLite and file appends stay in order.
    clicks: ThreadPoolExecutor = field(init=False)
    backfill: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        # Two: while one batch waits for the decode process or its URLs, the next is parsed
        # (1.04-1.14x events/s with the stand-in encoder). Their order does not matter: batches
        # are written in arrival order (streams.batches).
        self.prepare = ThreadPoolExecutor(2, thread_name_prefix="prepare")
        self.model = PriorityExecutor("embed")
        self.write = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.api = ThreadPoolExecutor(2, thread_name_prefix="api")
        self.thumbnails = ThreadPoolExecutor(2, thread_name_prefix="thumbnails")
        self.clicks = ThreadPoolExecutor(1, thread_name_prefix="clicks")
        self.backfill = ThreadPoolExecutor(1, thread_name_prefix="backfill")

    def shutdown(self) -> None:
        for executor in (
            self.prepare,
            self.model,
            self.write,
            self.api,
            self.thumbnails,
            self.clicks,
            self.backfill,
        ):
            executor.shutdown(wait=True, cancel_futures=True)
