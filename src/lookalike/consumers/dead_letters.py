"""Dead letters: inputs the worker could not process, kept with their reason.

Each record goes to the dead-letter topic (the durable, shareable copy) and to a small SQLite
ledger keyed by the source (topic, partition, offset). The ledger makes a replayed message
count once and lets ``/stats`` report the number without re-reading the topic.

A dead letter always fits the topic: a long payload is cut (size and SHA-256 kept, the whole
value kept on disk when configured), and a record the broker still refuses as too large is sent
again without its payload. Otherwise one huge message would hold its partition forever.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import DeadLetter
from ..executors import run_in
from ..images import BlobFiles
from ..sqlite_files import open_sqlite

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

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
        self._db = open_sqlite(path, _SCHEMA)
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


@dataclass(frozen=True)
class DeadLetterLimits:
    """How big a dead letter may be, and where cut payloads are kept whole."""

    payload_bytes: int = 65_536
    record_bytes: int = 1_048_576
    payloads: BlobFiles | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DeadLetterLimits:
        keep = settings.keep_dead_letter_payloads
        return cls(
            payload_bytes=settings.dead_letter_payload_bytes,
            # Headroom for the record batch framing around one record.
            record_bytes=settings.max_message_bytes - 1_024,
            payloads=BlobFiles(settings.dead_letter_payloads_path, "dead-letter payloads", None)
            if keep
            else None,
        )


def _too_large(exc: BaseException) -> bool:
    """The broker (or the client, against its max_request_size) refused the record's size.
    aiokafka and kafka-python both call it MessageSizeTooLargeError; Faust wraps it in a
    ProducerSendError, so the whole chain of causes is looked at."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in ("MessageSizeTooLargeError", "RecordTooLargeError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class DeadLetterWriter:
    """Sends a dead letter to the topic, then records it: at-least-once to the topic, counted
    exactly once. ``send`` must resolve only once the broker has the record."""

    def __init__(
        self, send: SendFn, ledger: DeadLetterLedger, limits: DeadLetterLimits | None = None
    ) -> None:
        self._send = send
        self.ledger = ledger
        self.limits = limits or DeadLetterLimits()

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
        letter = await run_in(None, self.fit, letter)
        key = (letter.image_id or letter.event_id or "").encode() or None
        try:
            await self._send(key, letter.model_dump_json().encode("utf-8"))
        except Exception as exc:
            if not _too_large(exc):
                raise  # the broker's trouble: the caller retries
            # The broker's limit is below ours: what it refuses now it refuses forever.
            log.warning(
                "the broker refused dead letter %s:%d@%d as too large; sending it without its "
                "payload (lower LOOKALIKE_MAX_MESSAGE_BYTES to the broker's max.message.bytes)",
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
            )
            letter = letter.fitted(0, self.limits.record_bytes)
            await self._send(key, letter.model_dump_json().encode("utf-8"))
        return bool(await run_in(None, self.ledger.record, letter))

    def fit(self, letter: DeadLetter) -> DeadLetter:
        """Blocking (keeps a cut payload on disk). The letter cut to the limits."""
        limits = self.limits
        fitted = letter.fitted(limits.payload_bytes, limits.record_bytes)
        if fitted.payload_truncated and limits.payloads is not None:
            # A full disk raises StorageUnavailable: retried like any infrastructure error.
            digest = limits.payloads.put(letter.payload_bytes())
            fitted = fitted.model_copy(update={"payload_file": str(limits.payloads.path(digest))})
        return fitted
