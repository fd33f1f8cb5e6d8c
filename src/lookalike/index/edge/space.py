"""One vector space of the embedded index: a qdrant-edge shard, rebuilt aside in the background.

Layout of a space's folder::

    CURRENT              {"generation": 4}   which generation is live (written atomically)
    gen-000004/          the live shard
    gen-000005.building/ a copy being optimised by a child process (transient)

New points are searchable as soon as ``update()`` returns (they sit in an appendable segment
that is searched brute force). The HNSW graph is built off the hot path: qdrant-edge holds the
GIL for the whole of ``optimize()`` (75 s at 100k x 1280 on one core), so the worker never
calls it. Instead a build flushes the live shard and copies it (writes wait, ~0.5 s at 100k),
optimises the copy in a child process while this process keeps searching and writing (writes
are journalled), then loads the new generation, replays the journal, flips ``CURRENT`` (the
commit point) and swaps the shard in (~1 s). A crash at any step leaves ``CURRENT`` naming a
generation that holds every write; leftovers are removed when the space is opened again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_edge import EdgeConfig, EdgeShard, PayloadSchemaType, UpdateOperation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizerPolicy:
    """When a space is rebuilt: once ``unindexed >= max(min_unindexed, unindexed_fraction x
    points)``, or deletes since the last build reach ``deleted_fraction`` of the points.

    At +10% unindexed points a search costs 2.6 ms instead of 1.5 ms (100k x 1280); at +50%,
    14 ms. A build blocks writes for about 1-2 s at 100k, so not much more often than that."""

    min_unindexed: int = 5_000
    unindexed_fraction: float = 0.10
    deleted_fraction: float = 0.20
    check_interval: float = 5.0
    child_nice: int = 10
    #: A build whose journal grows past this is abandoned (and retried later).
    max_journal_ops: int = 200_000


def write_json_atomically(path: Path, obj: Any) -> None:
    """Temp file in the same folder, fsync, rename over, fsync the folder: after a crash the
    file holds the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as out:
        json.dump(obj, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _ReadWriteLock:
    """Many readers (searches) or one writer (the shard swap)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class _Build:
    generation: int
    path: Path
    max_journal_ops: int
    journal: list[UpdateOperation] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    abandoned: bool = False


class Space:
    """A vector space: its live shard, and the build that will replace it."""

    def __init__(self, path: Path, name: str, shard: EdgeShard, generation: int) -> None:
        self.path = path
        self.name = name
        self.shard = shard
        self.generation = generation
        self._writes = threading.RLock()  # writes, the copy and the swap
        self._swap = _ReadWriteLock()  # reads against the swap
        self._one_build = threading.Lock()  # a second build waits for the running one
        self._build: _Build | None = None
        self.deletes_since_build = 0
        #: Points when the last build of this process copied the shard.
        self.points_at_last_build = 0
        self.builds = 0
        self.last_build: dict[str, Any] | None = None

    @classmethod
    def create(
        cls, path: Path, name: str, config: EdgeConfig, keyword_fields: tuple[str, ...]
    ) -> Space:
        path.mkdir(parents=True, exist_ok=True)
        shard = EdgeShard.create(str(path / _generation_dir(1)), config)
        for key in keyword_fields:
            shard.update(UpdateOperation.create_field_index(key, PayloadSchemaType.Keyword))
        shard.flush()
        write_json_atomically(path / "CURRENT", {"generation": 1})  # the space now exists
        return cls(path, name, shard, 1)

    @classmethod
    def open(cls, path: Path, name: str) -> Space:
        current = read_json(path / "CURRENT")
        if not current:
            raise FileNotFoundError(f"{path} holds no vector space (no CURRENT)")
        generation = int(current["generation"])
        live = _generation_dir(generation)
        for child in path.iterdir():  # what a crashed or interrupted build left
            if child.name.startswith("gen-") and child.name != live:
                shutil.rmtree(child, ignore_errors=True)
        return cls(path, name, EdgeShard.load(str(path / live)), generation)

    # --- reads and writes --------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[EdgeShard]:
        with self._swap.read():
            yield self.shard

    def apply(self, operation: UpdateOperation, deletes: int = 0) -> None:
        """Apply a write; while a build runs it is journalled, to be replayed on the new
        generation (an UpdateOperation can be applied again, to another shard)."""
        with self._writes:
            self.shard.update(operation)
            self.deletes_since_build += deletes
            build = self._build
            if build is not None and not build.abandoned:
                build.journal.append(operation)
                if len(build.journal) > build.max_journal_ops:
                    build.abandoned = True

    def flush(self) -> None:
        with self.reading() as shard:
            shard.flush()

    # --- background builds ---------------------------------------------------------------------
    def needs_build(self, policy: OptimizerPolicy) -> bool:
        """Enough new points since the last build (or deletes) to be worth one. Counted from
        the last build's copy, not from the unindexed count: the engine leaves segments under
        its indexing threshold unindexed, and a build that cannot index them must not repeat."""
        if self._build is not None:
            return False
        with self.reading() as shard:
            info = shard.info()
        points = info.points_count
        new = (
            points - self.points_at_last_build
            if self.builds
            else points - info.indexed_vectors_count
        )
        if points < policy.min_unindexed:
            return False
        return (
            new >= max(policy.min_unindexed, policy.unindexed_fraction * points)
            or self.deletes_since_build >= policy.deleted_fraction * points
        )

    def unindexed(self) -> int:
        with self.reading() as shard:
            info = shard.info()
        return int(info.points_count - info.indexed_vectors_count)

    def build(self, policy: OptimizerPolicy) -> dict[str, Any]:
        """Blocking (in the optimiser thread): copy -> optimise in a child -> load + replay ->
        flip CURRENT -> swap. The old generation serves until the swap. A build asked for while
        one runs waits for it first."""
        with self._one_build:
            return self._build_now(policy)

    def catch_up(self, policy: OptimizerPolicy) -> dict[str, Any] | None:
        """Build now if points are unindexed (after a running build); None if none are."""
        with self._one_build:
            return self._build_now(policy) if self.unindexed() else None

    def _build_now(self, policy: OptimizerPolicy) -> dict[str, Any]:
        started = time.monotonic()
        with self._writes:
            self.shard.flush()
            generation = self.generation + 1
            target = self.path / f"{_generation_dir(generation)}.building"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.path / _generation_dir(self.generation), target)
            self._build = build = _Build(generation, target, policy.max_journal_ops)
            deletes_at_copy = self.deletes_since_build
            self.points_at_last_build = self.shard.info().points_count
        copied = time.monotonic()
        try:
            child = self._optimize_aside(build, policy)
            swapped_at = time.monotonic()
            with self._writes:
                replayed = self._swap_in(build)
                self.deletes_since_build -= deletes_at_copy
            swap_seconds = time.monotonic() - swapped_at
        except BaseException:
            with self._writes:
                self._build = None
            if build.process is not None and build.process.poll() is None:
                build.process.kill()
                build.process.wait()
            shutil.rmtree(target, ignore_errors=True)
            if self.generation != generation:  # renamed, but never made current
                shutil.rmtree(self.path / _generation_dir(generation), ignore_errors=True)
            raise
        shutil.rmtree(self.path / _generation_dir(generation - 1), ignore_errors=True)
        self.last_build = {
            "generation": generation,
            "copy_seconds": round(copied - started, 2),
            "optimize_seconds": child["optimize_s"],
            "journal_ops": replayed,
            "swap_seconds": round(swap_seconds, 2),
            "total_seconds": round(time.monotonic() - started, 1),
        }
        return self.last_build

    def _optimize_aside(self, build: _Build, policy: OptimizerPolicy) -> dict[str, Any]:
        build.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookalike.index.edge.optimize",
                str(build.path),
                str(policy.child_nice),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = build.process.communicate()  # waits without holding the GIL
        if build.process.returncode != 0:
            raise RuntimeError(f"the optimiser failed ({build.process.returncode}): {err[-2000:]}")
        if build.abandoned:
            raise RuntimeError("too many writes during the build; it will be retried")
        return json.loads(out.strip().splitlines()[-1])

    def _swap_in(self, build: _Build) -> int:
        """Under the write lock: the new generation takes over. Returns the ops replayed."""
        final = self.path / _generation_dir(build.generation)
        os.replace(build.path, final)
        _fsync_dir(self.path)
        new = EdgeShard.load(str(final))
        for operation in build.journal:
            new.update(operation)
        new.flush()
        write_json_atomically(self.path / "CURRENT", {"generation": build.generation})
        with self._swap.write():
            old, self.shard, self.generation = self.shard, new, build.generation
            self._build = None
            self.builds += 1
        old.close()
        return len(build.journal)

    @property
    def building(self) -> bool:
        return self._build is not None

    def cancel_build(self) -> None:
        build = self._build
        if build is not None and build.process is not None and build.process.poll() is None:
            build.abandoned = True
            build.process.kill()

    def close(self) -> None:
        self.cancel_build()
        with self._writes, self._swap.write():
            self.shard.close()


def _generation_dir(generation: int) -> str:
    return f"gen-{generation:06d}"
