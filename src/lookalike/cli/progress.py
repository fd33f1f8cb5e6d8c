"""`lookalike up --index`: follow the worker until the published folder is indexed.

A thread asks the worker's ``GET /stats`` every second how many upload events it has consumed
(indexed, updated, stale or dead-lettered) since it started, and shows it: a progress bar on a
terminal (log lines are written above it), a log line every 10 seconds otherwise. It ends with
one line saying what became of the folder.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
from tqdm import tqdm

from ..settings import Settings

log = logging.getLogger("lookalike")

POLL = 1.0
LOG_EVERY = 10.0


class IndexingProgress(threading.Thread):
    def __init__(self, settings: Settings, published: int, what: str, terminal: bool) -> None:
        super().__init__(name="indexing-progress", daemon=True)
        self.settings = settings
        self.published = published
        self.what = what
        self.terminal = terminal
        self.finished = threading.Event()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def _stats(self, client: httpx.Client) -> dict[str, Any] | None:
        try:
            response = client.get("/stats")
        except httpx.HTTPError:
            return None  # not up yet
        if response.status_code in (401, 403):
            log.warning(
                "cannot follow the indexing: GET /stats needs an admin token "
                "(LOOKALIKE_API_TOKEN); `lookalike stats` tells the same"
            )
            self._halt.set()
            return None
        return response.json() if response.status_code == 200 else None

    def run(self) -> None:
        bar = tqdm(
            total=self.published,
            desc="indexing",
            unit="img",
            disable=not self.terminal,
            dynamic_ncols=True,
        )
        started = time.monotonic()
        said, first = started, None
        with (
            bar,
            httpx.Client(
                base_url=self.settings.base_api_url,
                timeout=10.0,
                headers=self.settings.client_headers(),
            ) as client,
        ):
            while not self._halt.wait(POLL):
                stats = self._stats(client)
                if stats is None:
                    continue
                worker = stats["worker"]
                done = min(int(worker["events_consumed"]), self.published)
                bar.update(done - bar.n)
                bar.set_postfix(dead_letters=worker["dead_letters"], refresh=False)
                now = time.monotonic()
                if first is None and done:
                    first = now  # the rate counts from the first event, not the worker's start
                if not self.terminal and first is not None and now - said >= LOG_EVERY:
                    said = now
                    if done < self.published:
                        self._say_progress(done, now - first)
                if done >= self.published:
                    bar.close()
                    self._say_done(stats, now - started)
                    self.finished.set()
                    return

    def _say_progress(self, done: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", about {(self.published - done) / rate:.0f}s left" if rate > 0 else ""
        log.info(
            "indexing %s: %d of %d events consumed (%.0f%%), %.1f/s%s",
            self.what,
            done,
            self.published,
            100 * done / self.published,
            rate,
            left,
        )

    def _say_done(self, stats: dict[str, Any], elapsed: float) -> None:
        worker = stats["worker"]
        serving = stats.get("serving_version")
        log.info(
            "indexed %s: %d images indexed, %d updated, %d stale, %d dead-lettered in %.0fs; "
            "%d images searchable (%s), %d category alerts open. Console: %s/",
            self.what,
            worker["images_indexed"],
            worker["images_updated"],
            worker["stale_events"],
            worker["dead_letters"],
            elapsed,
            stats.get("indexed", {}).get(serving, 0),
            serving,
            stats.get("alerts", {}).get("open", 0),
            self.settings.base_api_url,
        )
