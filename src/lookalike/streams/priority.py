"""A one-thread executor that runs urgent work first: live batches before backfill chunks.

The model thread is shared by live indexing and the rollout backfill. Live work is submitted
as usual (``submit``, so ``loop.run_in_executor`` works unchanged); the backfill submits small
chunks with :meth:`submit_low`. Whenever the thread is free it takes the oldest live job if
there is one, so a live batch waits at most for one backfill chunk, and the backfill uses the
time live indexing leaves idle (under a saturating live load it waits).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

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
