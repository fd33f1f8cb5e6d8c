"""Keeping inline uploads' bytes: pack files against a file per image, in one run.

    .venv/bin/python benchmarks/blob_store.py [--events 100000] [--repeat 0.0] [--dataset DIR]

The worker keeps every inline upload's bytes (a backfill re-embeds them) in its prepare stage,
a micro-batch of 64 at a time, through ``BlobStore.put_many``. This writes --events uploads
made from the shared images, each made distinct (a counter after the JPEG's end, which decoders
ignore) as a marketplace's uploads are, except a --repeat share that re-sends bytes already
kept (replays, re-uploads); then reads 2,000 of them back at random, as a backfill does. Rows:
CPU and wall time per upload, and per read, for packs (the default) and for a file per image
(LOOKALIKE_BLOB_PACKS=false), each in a fresh folder; the ratio is files / packs.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _dataset import DEFAULT_DATASET

from lookalike.images import BlobStore, iter_image_files

BATCH = 64


def uploads(images: list[bytes], n: int, repeat: float) -> list[tuple[bytes, str]]:
    rng = random.Random(0)
    made: list[tuple[bytes, str]] = []
    for i in range(n):
        if made and rng.random() < repeat:
            made.append(rng.choice(made))
            continue
        data = images[i % len(images)] + i.to_bytes(8, "big")
        made.append((data, hashlib.sha256(data).hexdigest()))
    return made


def measure(packs: bool, items: list[tuple[bytes, str]], root: Path) -> dict[str, float]:
    store = BlobStore(root, packs=packs)
    with ThreadPoolExecutor(4, thread_name_prefix="decode") as threads:
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(items), BATCH):
            store.put_many(items[start : start + BATCH], threads)
        put_wall, put_cpu = time.perf_counter() - wall, time.process_time() - cpu
    sample = random.Random(1).sample(items, min(2000, len(items)))
    wall, cpu = time.perf_counter(), time.process_time()
    for data, digest in sample:
        assert store.get(digest) == data
    get_wall, get_cpu = time.perf_counter() - wall, time.process_time() - cpu
    store.close()
    return {
        "put_ms": 1e3 * put_wall / len(items),
        "put_cpu_ms": 1e3 * put_cpu / len(items),
        "get_ms": 1e3 * get_wall / len(sample),
        "get_cpu_ms": 1e3 * get_cpu / len(sample),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=float, default=0.0, help="share of re-sent bytes")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args()
    images = [p.read_bytes() for p in iter_image_files([args.dataset])]
    items = uploads(images, args.events, args.repeat)
    megabytes = sum(len(d) for d, _ in {digest: (d, digest) for d, digest in items}.values())
    print(
        f"{args.events} uploads ({args.repeat:.0%} re-sent), {megabytes / 2**20:.0f} MiB of "
        f"distinct bytes, micro-batches of {BATCH}"
    )
    results = {}
    for packs in (True, False):
        root = Path(tempfile.mkdtemp(prefix="lookalike-blobs-"))
        try:
            results[packs] = measure(packs, items, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'':32} {'packs':>8} {'files':>8}  files/packs")
    for key, label in (
        ("put_cpu_ms", "keep, CPU ms per upload"),
        ("put_ms", "keep, wall ms per upload"),
        ("get_cpu_ms", "read, CPU ms per image"),
        ("get_ms", "read, wall ms per image"),
    ):
        packed, files = results[True][key], results[False][key]
        print(f"{label:32} {packed:8.3f} {files:8.3f}  {files / packed:10.2f}")


if __name__ == "__main__":
    main()
