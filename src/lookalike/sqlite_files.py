"""The small durable SQLite files beside the vectors (dead-letter ledger, alert store, click
join, learning decisions, the embedded index's records, the blob packs' index): one way to open
them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(
    path: Path, *statements: str, synchronous: str = "FULL", busy_timeout: float = 5.0
) -> sqlite3.Connection:
    """Autocommit, WAL (readers don't block the writer), shared across threads: callers
    serialise access with their own lock. ``statements`` run once (the schema). ``synchronous``
    FULL: each write is durable on return; NORMAL: a committed write survives the process
    being killed, not the machine losing power (cheaper on every commit). ``busy_timeout``:
    seconds a write waits for another process's write to finish before it fails."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    for statement in statements:
        db.execute(statement)
    return db
