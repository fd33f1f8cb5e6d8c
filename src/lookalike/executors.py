"""Where blocking work runs: the worker's executors, one way to call them from the event loop,
and one retry-with-back-off loop.

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
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

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


async def retry_with_backoff(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    log: logging.Logger,
    *,
    kept: str,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> T:
    """Await ``attempt()`` until it succeeds, doubling the pause after each failure. For
    infrastructure trouble (a service down, memory): the work is kept (``kept`` says how, in the
    log), never dropped."""
    delay = first_delay
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "%s failed (%s: %s); retrying in %.0fs, %s",
                what,
                type(exc).__name__,
                exc,
                delay,
                kept,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


@dataclass
class WorkerExecutors:
    """One thread per pipeline stage, so consecutive batches overlap (prepare fans out to the
    pipeline's decode pool); API requests have their own threads so a search never queues
    behind a whole batch's decoding; the model thread runs live batches before backfill chunks."""

    prepare: ThreadPoolExecutor = field(init=False)
    model: PriorityExecutor = field(init=False)
    write: ThreadPoolExecutor = field(init=False)
    api: ThreadPoolExecutor = field(init=False)
    #: Click join and pair files: one thread, so SQLite and file appends stay in order.
    clicks: ThreadPoolExecutor = field(init=False)
    backfill: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.prepare = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.model = PriorityExecutor("embed")
        self.write = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.api = ThreadPoolExecutor(2, thread_name_prefix="api")
        self.clicks = ThreadPoolExecutor(1, thread_name_prefix="clicks")
        self.backfill = ThreadPoolExecutor(1, thread_name_prefix="backfill")

    def shutdown(self) -> None:
        for executor in (
            self.prepare,
            self.model,
            self.write,
            self.api,
            self.clicks,
            self.backfill,
        ):
            executor.shutdown(wait=True, cancel_futures=True)
