"""The blob store: image bytes by content hash, in pack files with a SQLite index (or a file
each), read back whole from either, by this process or another."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lookalike.errors import StorageUnavailable
from lookalike.images import BlobFiles, BlobStore
from lookalike.images import blobs as blobs_module


def item(n: int, size: int = 1000) -> tuple[bytes, str]:
    data = bytes([n % 256]) * size + n.to_bytes(4, "big")
    return data, hashlib.sha256(data).hexdigest()


def pack_sizes(root: Path) -> list[int]:
    return sorted(f.stat().st_size for f in (root / "packs").glob("*.pack"))


@pytest.fixture
def threads() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def test_a_batch_is_one_append_and_reads_back_whole(tmp_path: Path, threads) -> None:
    store = BlobStore(tmp_path)
    items = [item(n) for n in range(5)]
    store.put_many(items + items[:2], threads)  # repeats within a batch are kept once
    assert pack_sizes(tmp_path) == [5 * 1004]
    assert not [p for p in tmp_path.iterdir() if len(p.name) == 2]  # no file per blob
    for data, digest in items:
        assert store.get(digest) == data
    store.put_many(items[3:] + [item(9)], threads)  # kept ones are not appended again
    assert pack_sizes(tmp_path) == [6 * 1004]
    assert store.put(b"query image") == hashlib.sha256(b"query image").hexdigest()
    assert store.get(hashlib.sha256(b"query image").hexdigest()) == b"query image"
    assert store.get(item(42)[1]) is None
    store.close()


def test_each_writer_appends_to_its_own_pack_and_reads_the_others(tmp_path: Path, threads) -> None:
    first, second = BlobStore(tmp_path), BlobStore(tmp_path)
    first.put_many([item(1)], threads)
    second.put_many([item(2), item(1)], threads)
    assert pack_sizes(tmp_path) == [1004, 1004]
    assert first.get(item(2)[1]) == item(2)[0] and second.get(item(1)[1]) == item(1)[0]
    first.close()
    second.close()
    # Another process (as `lookalike train` is) reads what the worker kept.
    digest = item(2)[1]
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from lookalike.images import BlobStore; "
            f"sys.stdout.buffer.write(BlobStore(Path({str(tmp_path)!r})).get({digest!r}))",
        ],
        capture_output=True,
        check=True,
    )
    assert read.stdout == item(2)[0]


def test_packs_and_files_read_each_other(tmp_path: Path, threads) -> None:
    files = BlobStore(tmp_path, packs=False)
    files.put_many([item(1)], threads)
    assert BlobFiles(tmp_path).path(item(1)[1]).read_bytes() == item(1)[0]
    assert not (tmp_path / "packs.sqlite").exists()  # reading did not create the index
    packs = BlobStore(tmp_path)
    packs.put_many([item(2)], threads)
    assert packs.get(item(1)[1]) == item(1)[0]  # a folder kept a file per image before
    assert files.get(item(2)[1]) == item(2)[0]  # switched back to files


def test_a_new_pack_is_started_past_the_size_limit(
    tmp_path: Path, threads, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs_module, "PACK_BYTES", 2500)
    store = BlobStore(tmp_path)
    for n in range(5):
        store.put_many([item(n)], threads)
    assert pack_sizes(tmp_path) == [1004, 2008, 2008]
    assert all(store.get(item(n)[1]) == item(n)[0] for n in range(5))


def test_damaged_bytes_read_as_missing(
    tmp_path: Path, threads, caplog: pytest.LogCaptureFixture
) -> None:
    store = BlobStore(tmp_path)
    store.put_many([item(1), item(2)], threads)
    (pack,) = (tmp_path / "packs").glob("*.pack")
    raw = bytearray(pack.read_bytes())
    raw[1500] ^= 0xFF  # inside the second blob
    pack.write_bytes(bytes(raw))
    with caplog.at_level(logging.ERROR):
        assert store.get(item(2)[1]) is None
    assert "missing or damaged" in caplog.text
    assert store.get(item(1)[1]) == item(1)[0]
    pack.unlink()
    assert store.get(item(1)[1]) is None


def test_a_full_index_is_a_full_disk_and_leaves_no_bytes(tmp_path: Path, threads) -> None:
    """SQLite says "database or disk is full" in its own words: retried as storage trouble, the
    pack cut back so no unindexed bytes stay."""
    store = BlobStore(tmp_path)
    store.put_many([item(0)], threads)
    db = store.packs._connect(create=True)
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # a real SQLITE_FULL on the next insert
    with pytest.raises(StorageUnavailable) as info:
        store.put_many([item(n, size=20_000) for n in range(1, 200)], threads)
    assert "the disk is full" in str(info.value) and "LOOKALIKE_BLOB_DIR" in str(info.value)
    assert pack_sizes(tmp_path) == [1004]
    assert store.get(item(1, size=20_000)[1]) is None
    db.execute(f"PRAGMA max_page_count = {pages * 1000}")  # space again: the retry keeps all
    store.put_many([item(n, size=20_000) for n in range(1, 200)], threads)
    assert store.get(item(150, size=20_000)[1]) == item(150, size=20_000)[0]


def test_a_bad_digest_is_refused(tmp_path: Path, threads) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        BlobStore(tmp_path).put_many([(b"x", "../../etc/passwd")], threads)


def test_writers_in_other_processes_wait_for_the_packs_index(tmp_path: Path) -> None:
    """Every writing process commits to one ``packs.sqlite``: a write waits up to 30 s for
    another's to finish instead of failing after SQLite's usual 5 s."""
    store = BlobStore(tmp_path)
    store.put(b"x")
    db = store.packs._connect(create=False)
    assert db is not None and db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    store.close()
