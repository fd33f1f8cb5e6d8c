"""The learning loop's decision log: every decision it takes, durable, in order.

``DATA_DIR/learn/decisions.sqlite`` (``LOOKALIKE_LEARN_DIR``), one row per decision: when,
what (:data:`KINDS`), which candidate, a one-line reason, and the figures behind it (JSON).
A decision that only repeats the latest one (another "too few pairs" at the next scheduled run,
another "backfill running") updates that row instead of adding one, so the log stays readable.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import NotFound
from ..sqlite_files import open_sqlite
from ..utc import utcnow_iso

Kind = Literal[
    "skipped",  # too few new pairs, or another rollout is in progress
    "trained",  # a candidate was trained (its figures: the training summary)
    "refused",  # not better than serving by the margin, or the promotion gate said no
    "rollout_started",  # the candidate is being dual-written and backfilled
    "backfilling",  # waiting for the candidate's backfill
    "waiting_for_approval",  # backfill done; LOOKALIKE_LEARN_REQUIRE_APPROVAL: a human decides
    "approved",
    "rejected",  # a human said no: the rollout was aborted
    "promoted",
    "failed",  # an error stopped the cycle (the reason says what to do)
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]

SCHEMA = """CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    candidate TEXT,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
)"""


@dataclass
class Decision:
    id: int
    at: str
    kind: str
    candidate: str | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DecisionLog:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "decisions.sqlite"
        self.db = open_sqlite(self.path, SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def record(
        self,
        kind: Kind,
        reason: str,
        candidate: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        collapse: bool = False,
    ) -> Decision:
        """Append a decision. ``collapse``: when the latest decision has the same kind and
        candidate, update it instead (a repeated "still waiting" is not news)."""
        if kind not in KINDS:
            raise ValueError(f"unknown decision kind {kind!r}")
        body = json.dumps(details or {}, default=str)
        with self.lock:
            latest = self._latest()
            if collapse and latest and (latest.kind, latest.candidate) == (kind, candidate):
                self.db.execute(
                    "UPDATE decisions SET at = ?, reason = ?, details = ? WHERE id = ?",
                    (utcnow_iso(), reason, body, latest.id),
                )
                number = latest.id
            else:
                cursor = self.db.execute(
                    "INSERT INTO decisions (at, kind, candidate, reason, details) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (utcnow_iso(), kind, candidate, reason, body),
                )
                number = int(cursor.lastrowid or 0)
            return self._get(number)

    def recent(self, limit: int = 20) -> list[Decision]:
        """The latest decisions, newest first."""
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM decisions ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_decision(row) for row in rows]

    def get(self, number: int) -> Decision:
        with self.lock:
            return self._get(number)

    def last(self, kind: Kind, candidate: str | None = None) -> Decision | None:
        """The latest decision of this kind (for this candidate, when given)."""
        query, args = "SELECT * FROM decisions WHERE kind = ?", [kind]
        if candidate is not None:
            query, args = query + " AND candidate = ?", [kind, candidate]
        with self.lock:
            row = self.db.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return _decision(row) if row else None

    def _latest(self) -> Decision | None:
        row = self.db.execute("SELECT * FROM decisions ORDER BY id DESC LIMIT 1").fetchone()
        return _decision(row) if row else None

    def _get(self, number: int) -> Decision:
        row = self.db.execute("SELECT * FROM decisions WHERE id = ?", (number,)).fetchone()
        if row is None:
            raise NotFound(
                "learning decision",
                str(number),
                f"no learning decision {number}: see `lookalike learn status`",
            )
        return _decision(row)


def _decision(row: sqlite3.Row | tuple) -> Decision:
    number, at, kind, candidate, reason, details = row
    return Decision(number, at, kind, candidate, reason, json.loads(details))
