"""The one wall clock: timezone-aware UTC, as a datetime or as ISO-8601 text for payloads."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def utcnow_iso() -> str:
    return utcnow().isoformat()
