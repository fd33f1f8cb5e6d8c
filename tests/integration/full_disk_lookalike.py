"""`lookalike` whose blob folder behaves like a full disk while the file named by FULL_DISK_FLAG
exists: for machines where the test cannot mount a small tmpfs (it needs root). Writes below
LOOKALIKE_BLOB_DIR fail with ENOSPC, exactly what the real disk's write would raise."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

FLAG = Path(os.environ["FULL_DISK_FLAG"])
BLOBS = os.environ["LOOKALIKE_BLOB_DIR"]
_write_bytes = Path.write_bytes


def write_bytes(path: Path, data: bytes) -> int:
    if FLAG.exists() and str(path).startswith(BLOBS):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return _write_bytes(path, data)


Path.write_bytes = write_bytes  # type: ignore[method-assign]

if __name__ == "__main__":
    from lookalike.cli import main

    sys.argv[0] = "lookalike"
    main()
