"""`lookalike` whose blob folder behaves like a full disk while the file named by FULL_DISK_FLAG
exists: for machines where the test cannot mount a small tmpfs (it needs root). Writes below
LOOKALIKE_BLOB_DIR fail with ENOSPC, exactly what the real disk's write would raise."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from lookalike.images import blobs

FLAG = Path(os.environ["FULL_DISK_FLAG"])
BLOBS = os.environ["LOOKALIKE_BLOB_DIR"]
_write_bytes = Path.write_bytes
_write_all = blobs._write_all


def write_bytes(path: Path, data: bytes) -> int:
    if FLAG.exists() and str(path).startswith(BLOBS):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return _write_bytes(path, data)


def write_all(fd: int, data: bytes) -> None:
    if FLAG.exists():  # the only descriptors _write_all is given are the blob folder's packs
        raise OSError(errno.ENOSPC, "No space left on device")
    _write_all(fd, data)


Path.write_bytes = write_bytes  # type: ignore[method-assign]
blobs._write_all = write_all

if __name__ == "__main__":
    from lookalike.cli import main

    sys.argv[0] = "lookalike"
    main()
