"""Category alerts: sent to the alerts topic and kept in a small SQLite store for review.

An alert is keyed by (image id, source event id), so a replayed upload never raises it twice.
Reviewers mark alerts ``confirmed`` (the declared category was wrong) or ``dismissed``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Literal

from ..events import CategoryAlert
from ..executors import run_in
from ..sqlite_files import open_sqlite
from .dead_letters import SendFn

Status = Literal["open", "confirmed", "dismissed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    source_event_id TEXT NOT NULL,
    seller_id TEXT NOT NULL,
    declared_category TEXT NOT NULL,
    predicted_category TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    reviewed_at TEXT,
    note TEXT,
    record TEXT NOT NULL,
    UNIQUE (image_id, source_event_id)
)
"""


class AlertStore:
    def __init__(self, path: Path) -> None:
        self._db = open_sqlite(path, _SCHEMA)
        self._lock = threading.Lock()

    def add(self, alert: CategoryAlert) -> bool:
        """Store ``alert``; False when this upload already raised one (a replay)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, image_id, source_event_id, seller_id, "
                "declared_category, predicted_category, raised_at, record) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    alert.alert_id,
                    alert.image_id,
                    alert.source_event_id,
                    alert.seller_id,
                    alert.declared_category,
                    alert.predicted_category,
                    alert.raised_at.isoformat(),
                    alert.model_dump_json(),
                ),
            )
        return cursor.rowcount == 1

    def exists(self, image_id: str, source_event_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM alerts WHERE image_id = ? AND source_event_id = ?",
                (image_id, source_event_id),
            ).fetchone()
        return row is not None

    def list(
        self,
        seller_id: str | None = None,
        category: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Latest first. ``category`` matches the declared or the predicted category."""
        clauses, args = [], []
        if seller_id:
            clauses.append("seller_id = ?")
            args.append(seller_id)
        if category:
            clauses.append("(declared_category = ? OR predicted_category = ?)")
            args += [category, category]
        if status:
            clauses.append("status = ?")
            args.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT record, status, reviewed_at, note FROM alerts {where} "
                "ORDER BY raised_at DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [
            {**json.loads(record), "status": st, "reviewed_at": reviewed, "note": note}
            for record, st, reviewed, note in rows
        ]

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record, status, reviewed_at, note FROM alerts WHERE alert_id = ?",
                (alert_id,),
            ).fetchone()
        if row is None:
            return None
        record, status, reviewed, note = row
        return {**json.loads(record), "status": status, "reviewed_at": reviewed, "note": note}

    def review(self, alert_id: str, status: Status, reviewed_at: str, note: str | None) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE alerts SET status = ?, reviewed_at = ?, note = ? WHERE alert_id = ?",
                (status, reviewed_at, note, alert_id),
            )
        return cursor.rowcount == 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM alerts GROUP BY status"
            ).fetchall()
        return {status: int(n) for status, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class AlertWriter:
    """Sends an alert to the topic, then stores it: at-least-once to the topic, stored once.
    ``send`` must resolve only once the broker has the record."""

    def __init__(self, send: SendFn, store: AlertStore) -> None:
        self._send = send
        self.store = store

    async def write(self, alert: CategoryAlert) -> bool:
        if await run_in(None, self.store.exists, alert.image_id, alert.source_event_id):
            return False  # a replayed upload
        await self._send(alert.image_id.encode(), alert.model_dump_json().encode("utf-8"))
        return bool(await run_in(None, self.store.add, alert))
