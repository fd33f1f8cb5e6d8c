"""Training pairs on disk: JSON Lines, one folder per date (``date=YYYY-MM-DD/pairs.jsonl``).

Appends are deduplicated by ``pair_id`` (the pairs topic is at-least-once), flushed and
fsync'ed before the consumer's offsets are committed. The files are the truth: on start the
writer reads them back for the ids already written, and cuts off a half-written last line a
crash may have left. A training job reads a file or the whole folder with :func:`read_pairs`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from ..events import TrainingPair

log = logging.getLogger(__name__)

FILE_NAME = "pairs.jsonl"


def partition_path(root: Path, pair: TrainingPair) -> Path:
    return root / f"date={pair.clicked_at.date().isoformat()}" / FILE_NAME


def pair_files(path: Path) -> list[Path]:
    """A file, or every ``*.jsonl`` under a folder (sorted: dates in order)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.rglob("*.jsonl"))
    raise FileNotFoundError(f"{path} does not exist")


def _repair_tail(file: Path) -> None:
    """Cut a last line without its newline (a crash mid-append): that pair is re-sent later."""
    data = file.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("cutting a half-written line from %s (%d bytes)", file, len(data) - keep)
        with open(file, "r+b") as handle:
            handle.truncate(keep)


def iter_pairs(path: Path) -> Iterator[TrainingPair]:
    """Every valid pair under ``path``, once each (first occurrence wins)."""
    seen: set[str] = set()
    for file in pair_files(path):
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith("\n"):
                    continue  # half-written tail
                try:
                    pair = TrainingPair.model_validate_json(line)
                except ValidationError as exc:
                    log.warning("skipping %s:%d: %s", file, number, exc.errors()[0]["msg"])
                    continue
                if pair.pair_id not in seen:
                    seen.add(pair.pair_id)
                    yield pair


def read_pairs(path: Path) -> list[TrainingPair]:
    return list(iter_pairs(path))


class PairFileWriter:
    """Blocking and thread-safe; one writer per folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for file in pair_files(root):
            _repair_tail(file)
        self._seen = {pair.pair_id for pair in iter_pairs(root)}
        self._lock = threading.Lock()
        log.info("training pairs in %s: %d already written", root, len(self._seen))

    def __len__(self) -> int:
        return len(self._seen)

    def append(self, pairs: Iterable[TrainingPair]) -> int:
        """Write the pairs not written before; durable on return. Returns how many were new."""
        with self._lock:
            by_file: dict[Path, dict[str, TrainingPair]] = {}
            for pair in pairs:
                if pair.pair_id not in self._seen:
                    by_file.setdefault(partition_path(self.root, pair), {})[pair.pair_id] = pair
            written = 0
            for file, batch in by_file.items():
                file.parent.mkdir(parents=True, exist_ok=True)
                with open(file, "a", encoding="utf-8") as handle:
                    handle.write("".join(p.model_dump_json() + "\n" for p in batch.values()))
                    handle.flush()
                    os.fsync(handle.fileno())
                self._seen.update(batch)  # only once durable: a failed write is retried
                written += len(batch)
            return written
