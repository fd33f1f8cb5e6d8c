"""The optimiser child process: ``python -m lookalike.index.edge.optimize SHARD_DIR [NICE]``.

Loads a copy of a shard, builds its HNSW graph (and quantised vectors), flushes and exits,
printing one JSON line of timings. It runs apart from the worker because qdrant-edge holds the
GIL for the whole of ``optimize()`` (75 s for 100k x 1280 floats on one core): in the worker's
process it would freeze searches, ingest and Kafka heart-beats alike.
"""

from __future__ import annotations

import json
import os
import sys
import time

from qdrant_edge import EdgeShard


def optimize(path: str) -> dict[str, float | bool]:
    started = time.monotonic()
    shard = EdgeShard.load(path)
    loaded = time.monotonic()
    changed = shard.optimize()
    optimized = time.monotonic()
    shard.flush()
    shard.close()
    return {
        "load_s": round(loaded - started, 3),
        "optimize_s": round(optimized - loaded, 2),
        "changed": bool(changed),
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m lookalike.index.edge.optimize SHARD_DIR [NICE]", file=sys.stderr)
        return 2
    try:
        os.nice(int(argv[2]) if len(argv) > 2 else 10)  # the worker's searches come first
    except OSError:
        pass
    print(json.dumps(optimize(argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
