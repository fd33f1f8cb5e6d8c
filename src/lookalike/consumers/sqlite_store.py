"""The small durable SQLite files beside Qdrant (dead-letter ledger, alert store)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_store(path: Path, schema: str) -> sqlite3.Connection:
    """Autocommit (each write is durable on return), WAL (readers don't block the writer),
    shared across threads: callers serialise access with their own lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(schema)
    return db
