"""The click -> search join, with its state in SQLite so a worker restart loses nothing.

Faust tables would be the textbook place for this state, but their changelog recovery is not
reliable against the local broker (see README: recovery), so the join keeps:

- ``searches``: every SearchServed in the click window (the results shown, by rank);
- ``clicks``: (search, image) pairs already turned into a training pair: the dedupe key;
- ``pending``: clicks that arrived before their search (the topics are consumed independently);
- ``outbox``: pairs committed with the click but not yet confirmed on the pairs topic;
- ``version_stats``: online CTR / MRR counters per model version.

Each message is applied in one SQLite transaction, and its offset is committed only after that
(the agent acks after this returns), so a replay after a crash finds its effect already there
and does nothing twice. A pair is written to the outbox in the same transaction as its click and
sent afterwards; pairs a crash left unsent are sent again on start (the file sink dedupes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..events import Click, ConsumedMessage, PairQuery, SearchServed, TrainingPair
from ..sqlite_files import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY,
    served_at REAL NOT NULL,
    model_version TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS searches_by_time ON searches (served_at);
CREATE TABLE IF NOT EXISTS clicks (
    search_id TEXT NOT NULL,
    image_id TEXT NOT NULL,
    click_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    PRIMARY KEY (search_id, image_id)
);
CREATE TABLE IF NOT EXISTS pending (
    click_id TEXT PRIMARY KEY,
    search_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    record TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_by_search ON pending (search_id);
CREATE TABLE IF NOT EXISTS outbox (
    pair_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    record TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS version_stats (
    model_version TEXT PRIMARY KEY,
    searches INTEGER NOT NULL DEFAULT 0,
    clicked_searches INTEGER NOT NULL DEFAULT 0,
    clicks INTEGER NOT NULL DEFAULT 0,
    reciprocal_rank_sum REAL NOT NULL DEFAULT 0
);
"""


def _source_json(source: ConsumedMessage) -> str:
    """A pending click's origin, kept with it so its dead letter can name it later."""
    return json.dumps(
        {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "value": source.value.decode("utf-8", "replace"),
        }
    )


def _source_from_json(text: str) -> ConsumedMessage:
    raw = json.loads(text)
    return ConsumedMessage(
        raw["topic"], raw["partition"], raw["offset"], raw["value"].encode("utf-8")
    )


@dataclass(frozen=True)
class Rejected:
    """A click that cannot become a pair, and why (it goes to the dead letters)."""

    click: Click
    source: ConsumedMessage
    reason: str


@dataclass(frozen=True)
class ClickOutcome:
    kind: Literal["paired", "duplicate", "pending", "rejected"]
    pair: TrainingPair | None = None
    rejected: Rejected | None = None


class ClickJoin:
    """Blocking and thread-safe: the agents call it from an executor."""

    def __init__(self, path: Path, *, window: float, grace: float) -> None:
        self.window = window
        self.grace = grace
        self._db = open_sqlite(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- inputs --------------------------------------------------------------------------------
    def add_search(self, served: SearchServed) -> list[ClickOutcome]:
        """Remember a search; join the clicks that were waiting for it."""
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO searches VALUES (?, ?, ?, ?)",
                (
                    served.search_id,
                    served.served_at.timestamp(),
                    served.model_version,
                    served.model_dump_json(),
                ),
            ).rowcount
            if not inserted:  # a replay
                return []
            db.execute(
                "INSERT INTO version_stats (model_version, searches) VALUES (?, 1) "
                "ON CONFLICT (model_version) DO UPDATE SET searches = searches + 1",
                (served.model_version,),
            )
            waiting = db.execute(
                "SELECT click_id, record, source FROM pending WHERE search_id = ? "
                "ORDER BY received_at",
                (served.search_id,),
            ).fetchall()
            db.execute("DELETE FROM pending WHERE search_id = ?", (served.search_id,))
            return [
                self._join(db, served, Click.model_validate_json(record), _source_from_json(src))
                for _, record, src in waiting
            ]

    def add_click(self, click: Click, source: ConsumedMessage, received_at: float) -> ClickOutcome:
        with self._transaction() as db:
            row = db.execute(
                "SELECT record FROM searches WHERE search_id = ?", (click.search_id,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
                    (
                        click.click_id,
                        click.search_id,
                        received_at,
                        click.model_dump_json(),
                        _source_json(source),
                    ),
                )
                return ClickOutcome("pending")
            return self._join(db, SearchServed.model_validate_json(row[0]), click, source)

    def _join(
        self, db: sqlite3.Connection, served: SearchServed, click: Click, source: ConsumedMessage
    ) -> ClickOutcome:
        """Inside a transaction: dedupe, check, count, and put the pair in the outbox."""
        if db.execute(
            "SELECT 1 FROM clicks WHERE search_id = ? AND image_id = ?",
            (click.search_id, click.image_id),
        ).fetchone():
            return ClickOutcome("duplicate")
        shown = {result.image_id: result.rank for result in served.results}
        rank = shown.get(click.image_id)
        if rank is None:
            return self._reject(
                click,
                source,
                f"image {click.image_id!r} was not among the {len(shown)} results of search "
                f"{click.search_id!r}",
            )
        age = (click.clicked_at - served.served_at).total_seconds()
        if age > self.window:
            return self._reject(
                click,
                source,
                f"click came {age:.0f}s after its search, beyond the {self.window:.0f}s click "
                "window (LOOKALIKE_CLICK_WINDOW)",
            )
        clicked_before = {
            image_id
            for (image_id,) in db.execute(
                "SELECT image_id FROM clicks WHERE search_id = ?", (click.search_id,)
            )
        }
        pair = _pair(served, click, rank, clicked_before)
        db.execute(
            "INSERT INTO clicks VALUES (?, ?, ?, ?)",
            (click.search_id, click.image_id, click.click_id, rank),
        )
        first = not clicked_before
        db.execute(
            "UPDATE version_stats SET clicks = clicks + 1, "
            "clicked_searches = clicked_searches + ?, "
            "reciprocal_rank_sum = reciprocal_rank_sum + ? WHERE model_version = ?",
            (int(first), 1.0 / rank if first else 0.0, served.model_version),
        )
        db.execute(
            "INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, 0)",
            (pair.pair_id, click.clicked_at.timestamp(), pair.model_dump_json()),
        )
        return ClickOutcome("paired", pair=pair)

    @staticmethod
    def _reject(click: Click, source: ConsumedMessage, reason: str) -> ClickOutcome:
        return ClickOutcome("rejected", rejected=Rejected(click, source, reason))

    # --- outbox --------------------------------------------------------------------------------
    def unsent(self, limit: int = 1000) -> list[TrainingPair]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM outbox WHERE sent = 0 ORDER BY created_at LIMIT ?", (limit,)
            ).fetchall()
        return [TrainingPair.model_validate_json(r[0]) for r in rows]

    def mark_sent(self, pair_ids: list[str]) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE outbox SET sent = 1 WHERE pair_id = ?", [(p,) for p in pair_ids])

    # --- housekeeping --------------------------------------------------------------------------
    def expire(self, now: float) -> list[Rejected]:
        """Give up on clicks whose search never came, and forget searches (and sent pairs) past
        the window: a click for them would be too old anyway."""
        with self._transaction() as db:
            stale = db.execute(
                "SELECT click_id, record, source FROM pending WHERE received_at < ?",
                (now - self.grace,),
            ).fetchall()
            db.execute("DELETE FROM pending WHERE received_at < ?", (now - self.grace,))
            horizon = now - self.window - self.grace
            db.execute(
                "DELETE FROM clicks WHERE search_id IN "
                "(SELECT search_id FROM searches WHERE served_at < ?)",
                (horizon,),
            )
            db.execute("DELETE FROM searches WHERE served_at < ?", (horizon,))
            db.execute("DELETE FROM outbox WHERE sent = 1 AND created_at < ?", (horizon,))
        return [
            Rejected(
                Click.model_validate_json(record),
                _source_from_json(src),
                f"search {Click.model_validate_json(record).search_id!r} is unknown: it was not "
                f"served by this system, or is older than the click window, or its search event "
                f"did not arrive within {self.grace:.0f}s (LOOKALIKE_CLICK_GRACE)",
            )
            for _, record, src in stale
        ]

    # --- reading -------------------------------------------------------------------------------
    def online_metrics(self) -> dict[str, dict[str, Any]]:
        """CTR (searches with a click / searches) and MRR (mean over searches of 1 / rank of
        their first click, 0 when none), per model version."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model_version, searches, clicked_searches, clicks, reciprocal_rank_sum "
                "FROM version_stats ORDER BY model_version"
            ).fetchall()
        return {
            version: {
                "searches": searches,
                "clicked_searches": clicked,
                "clicks": clicks,
                "ctr": round(clicked / searches, 4) if searches else None,
                "mrr": round(rr_sum / searches, 4) if searches else None,
            }
            for version, searches, clicked, clicks, rr_sum in rows
        }

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("searches", "pending", "clicks")
            } | {
                "unsent_pairs": int(
                    self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent = 0").fetchone()[0]
                )
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _pair(served: SearchServed, click: Click, rank: int, clicked_before: set[str]) -> TrainingPair:
    """The training pair of a click on the result at ``rank``: the results shown above it and
    not clicked (by this search's earlier clicks either) are its negatives."""
    return TrainingPair(
        pair_id=TrainingPair.id_for(click.search_id, click.image_id),
        search_id=click.search_id,
        query=PairQuery(image_id=served.query_image_id, content_sha256=served.query_content_sha256),
        positive=click.image_id,
        positive_rank=rank,  # the rank we served, whatever the front end reported
        negatives=[
            r.image_id
            for r in sorted(served.results, key=lambda r: r.rank)
            if r.rank < rank and r.image_id not in clicked_before
        ],
        model_version=served.model_version,
        served_at=served.served_at,
        clicked_at=click.clicked_at,
        click_id=click.click_id,
        user_id=click.user_id or served.user_id,
        session_id=click.session_id or served.session_id,
        dwell_seconds=click.dwell_seconds,
        added_to_cart=click.added_to_cart,
    )
