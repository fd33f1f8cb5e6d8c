"""Dead letters: inputs the worker could not process, kept with their reason.

Each record goes to the dead-letter topic (the durable, shareable copy) and to a small SQLite
ledger keyed by the source (topic, partition, offset). The ledger makes a replayed message
count once and lets ``/stats`` report the number without re-reading the topic.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..events import DeadLetter
from ..executors import run_in
from .sqlite_store import open_store

#: Sends (key, value) to a topic; resolves only once the broker has the record.
SendFn = Callable[[bytes | None, bytes], Awaitable[Any]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset INTEGER NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    image_id TEXT,
    failed_at TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
)
"""


class DeadLetterLedger:
    """Durable, idempotent record of dead letters (one row per source message)."""

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, _SCHEMA)
        self._lock = threading.Lock()

    def seen(self, topic: str, partition: int, offset: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM dead_letters WHERE source_topic=? AND source_partition=? "
                "AND source_offset=?",
                (topic, partition, offset),
            ).fetchone()
        return row is not None

    def record(self, letter: DeadLetter) -> bool:
        """Store ``letter``; False when that source message was already recorded."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO dead_letters VALUES (?,?,?,?,?,?,?,?)",
                (
                    letter.source_topic,
                    letter.source_partition,
                    letter.source_offset,
                    letter.stage,
                    letter.reason,
                    letter.image_id,
                    letter.failed_at.isoformat(),
                    letter.model_dump_json(),
                ),
            )
        return cursor.rowcount == 1

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def count_by_stage(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT stage, COUNT(*) FROM dead_letters GROUP BY stage ORDER BY stage"
            ).fetchall()
        return {stage: int(n) for stage, n in rows}

    def latest(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM dead_letters ORDER BY failed_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class DeadLetterWriter:
    """Sends a dead letter to the topic, then records it: at-least-once to the topic, counted
    exactly once. ``send`` must resolve only once the broker has the record."""

    def __init__(self, send: SendFn, ledger: DeadLetterLedger) -> None:
        self._send = send
        self.ledger = ledger

    async def write(self, letter: DeadLetter) -> bool:
        """Returns False when the source message was dead-lettered before (a replay)."""
        seen = await run_in(
            None,
            self.ledger.seen,
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
        )
        if seen:  # a replay of a message already dead-lettered
            return False
        key = (letter.image_id or letter.event_id or "").encode() or None
        await self._send(key, letter.model_dump_json().encode("utf-8"))
        return bool(await run_in(None, self.ledger.record, letter))
