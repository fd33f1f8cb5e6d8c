"""Image bytes kept by content hash, for two jobs:

- inline uploads: the index payload keeps only ``inline:sha256:<digest>``; the bytes are kept
  here when the image is indexed, so a backfill can re-embed them;
- search queries: images uploaded to ``POST /search`` are kept (by the same digest the logged
  search names) so training pairs can use them.

:class:`BlobStore` appends them to pack files (:class:`BlobPacks`): creating a file per image
cost ~0.25 ms of kernel time each on ext4 and capped the stream (the 2-core benchmark indexed
1.2-1.4x more events/s without it). ``packs=False`` writes a file per image instead
(:class:`BlobFiles`, ``<dir>/<aa>/<digest>``), for a folder on shared storage that several hosts
write: the packs' SQLite index needs a local disk. Either way a read finds both, so switching
loses nothing.

A write that fails for the machine's reason (disk full, read-only, permissions) raises
:class:`~lookalike.errors.StorageUnavailable`: the batch is retried, never dead-lettered; a
failed write leaves no partial bytes. Blobs are never deleted (several images may share one; a
removed image's bytes stay until someone cleans the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from ..errors import StorageUnavailable
from ..sqlite_files import open_sqlite

log = logging.getLogger(__name__)

#: A pack is closed and a new one started past this size.
PACK_BYTES = 1 << 30
#: SQLite's result codes for a machine's trouble, as the errno an OSError would carry.
_SQLITE_STORAGE_ERRORS = {13: 28, 8: 30}  # SQLITE_FULL: ENOSPC, SQLITE_READONLY: EROFS


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename it: a crash never leaves a
    truncated file. On an error the temporary file is removed and the error raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a half-written file only takes the space back
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _check_digest(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class BlobFiles:
    """One file per blob, ``<root>/<aa>/<digest>``, written to a temporary name and renamed (a
    crash never leaves a truncated blob). Also where dead-letter payloads are kept: a file an
    operator can open."""

    def __init__(
        self, root: Path, what: str = "image bytes", setting: str | None = "LOOKALIKE_BLOB_DIR"
    ) -> None:
        self.root = root
        self.what = what  # for the error a full disk raises: what could not be kept
        self.setting = setting  # the setting that moves the folder

    def path(self, sha256: str) -> Path:
        return self.root / _check_digest(sha256)[:2] / sha256

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Keep ``data``; ``sha256``: its digest when the caller has it already."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if path.exists():
            return digest
        try:
            write_atomically(path, data)
        except OSError as exc:
            _raise_if_storage(exc, self.what, self.root, self.setting)
            raise
        return digest

    def put_many(
        self, items: Sequence[tuple[bytes, str]], executor: Executor | None = None
    ) -> None:
        """Keep each (data, sha256), in ``executor``'s threads when given: file creation and
        writes release the GIL, so a micro-batch's blobs are written side by side."""
        for _ in (executor.map if executor else map)(lambda item: self.put(*item), items):
            pass  # drains the map: the first error (a full disk) raises here

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None


class BlobPacks:
    """Blobs appended to pack files (``<root>/packs/*.pack``) and found through a SQLite index
    (``<root>/packs.sqlite``: digest -> pack, offset, length). Each process appends to packs of
    its own, so writers never interleave; the index is shared (WAL: readers such as
    ``lookalike train`` read while the worker writes). A batch's bytes are written before its
    rows are committed, so a committed row always points at whole bytes (a killed process leaves
    at most unindexed bytes at a pack's end); a failed write truncates them away."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "packs"
        self.db_path = root / "packs.sqlite"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pack: tuple[str, int] | None = None  # (file name, fd) this process appends to

    def put_many(self, items: Sequence[tuple[bytes, str]]) -> None:
        """Keep each (data, sha256) not kept yet: one write and one transaction for them all.
        Raises OSError (sqlite's full or read-only disk as one too)."""
        with self._lock, _sqlite_as_os_errors():
            db = self._connect(create=True)
            assert db is not None
            wanted = {_check_digest(digest): data for data, digest in items}
            held = self._held(db, wanted)
            new = [(d, data) for d, data in wanted.items() if d not in held]
            if not new:
                return
            name, fd = self._pack_for(sum(len(data) for _, data in new))
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, b"".join(data for _, data in new))
                rows, offset = [], start
                for digest, data in new:
                    rows.append((bytes.fromhex(digest), name, offset, len(data)))
                    offset += len(data)
                db.execute("BEGIN")
                db.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # no unindexed bytes left behind
                raise

    def get(self, sha256: str) -> bytes | None:
        with self._lock, _sqlite_as_os_errors():
            db = self._connect(create=False)
            row = (
                db.execute(
                    "SELECT pack, offset, length FROM blobs WHERE sha256 = ?",
                    (bytes.fromhex(_check_digest(sha256)),),
                ).fetchone()
                if db is not None
                else None
            )
        if row is None:
            return None
        pack, offset, length = row
        try:
            with open(self.folder / pack, "rb") as file:
                data = os.pread(file.fileno(), length, offset)
        except FileNotFoundError:
            data = b""
        if hashlib.sha256(data).hexdigest() != sha256:
            log.error("blob %s (%s at %d) is missing or damaged", sha256, pack, offset)
            return None
        return data

    def close(self) -> None:
        with self._lock:
            if self._pack is not None:
                os.close(self._pack[1])
                self._pack = None
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is None:
            if not create and not self.db_path.exists():
                return None  # nothing packed yet: do not create the folder to read
            self.folder.mkdir(parents=True, exist_ok=True)
            self._db = open_sqlite(
                self.db_path,
                "CREATE TABLE IF NOT EXISTS blobs (sha256 BLOB PRIMARY KEY, pack TEXT NOT NULL, "
                "offset INTEGER NOT NULL, length INTEGER NOT NULL) WITHOUT ROWID",
                synchronous="NORMAL",  # a commit survives the process being killed
                busy_timeout=30,  # every writing process commits to this one index
            )
        return self._db

    @staticmethod
    def _held(db: sqlite3.Connection, digests: dict[str, bytes]) -> set[str]:
        keys = [bytes.fromhex(d) for d in digests]
        marks = ",".join("?" * len(keys))
        rows = db.execute(f"SELECT sha256 FROM blobs WHERE sha256 IN ({marks})", keys)
        return {row[0].hex() for row in rows}

    def _pack_for(self, size: int) -> tuple[str, int]:
        if self._pack is not None and os.fstat(self._pack[1]).st_size + size > PACK_BYTES:
            os.close(self._pack[1])
            self._pack = None
        if self._pack is None:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            name = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.pack"
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._pack = (name, os.open(self.folder / name, flags, 0o644))
        return self._pack


class BlobStore:
    """Image bytes by content hash: written to packs (or to a file each, ``packs=False``),
    read from either."""

    def __init__(self, root: Path, packs: bool = True) -> None:
        self.root = root
        self.packs = BlobPacks(root)
        self.files = BlobFiles(root)
        self.writes_packs = packs

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Keep ``data``; ``sha256``: its digest when the caller has it already."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        self.put_many([(data, digest)])
        return digest

    def put_many(
        self, items: Sequence[tuple[bytes, str]], executor: Executor | None = None
    ) -> None:
        """Keep each (data, sha256); ``executor``: threads for the file-per-blob writes."""
        if not self.writes_packs:
            self.files.put_many(items, executor)
            return
        try:
            self.packs.put_many(items)
        except OSError as exc:
            _raise_if_storage(exc, self.files.what, self.root, self.files.setting)
            raise

    def get(self, sha256: str) -> bytes | None:
        packed = self.packs.get(sha256)
        return packed if packed is not None else self.files.get(sha256)

    def close(self) -> None:
        self.packs.close()


def _raise_if_storage(error: OSError, what: str, root: Path, setting: str | None) -> None:
    if StorageUnavailable.is_storage_error(error):
        raise StorageUnavailable(what, root, error, setting) from error


@contextlib.contextmanager
def _sqlite_as_os_errors():  # noqa: ANN202
    """SQLite says "database or disk is full" as its own error: the same trouble as ENOSPC."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        errno = _SQLITE_STORAGE_ERRORS.get(getattr(exc, "sqlite_errorcode", 0) & 0xFF)
        if errno is None:
            raise
        raise OSError(errno, os.strerror(errno), str(exc)) from exc
