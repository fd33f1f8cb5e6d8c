"""The encoder's speed with another thread of the worker's kinds beside it, in one process.

    .venv/bin/python benchmarks/gil_contention.py [--images 32] [--points 5000]

Why the pipeline's model thread runs slower than the encoder alone even with a core to itself
(benchmarks/pipeline_throughput.py, real encoder: ~440 ms per micro-batch of 32 in the worker
against ~270 ms alone): PyTorch takes the GIL back between its kernels, eager or compiled, and
waits for it whenever another thread of the process holds it. Each row embeds the same batch
while one other thread runs without pause, and prints the encoder's rate as a ratio to the
encoder alone, measured in the same run:

  pure Python           a loop of Python bytecode (as Faust, httpx and the write step's
                        bookkeeping are): it gives the GIL up every switch interval (5 ms by
                        default; the rows with 1 ms and 0.2 ms set sys.setswitchinterval)
  engine k-NN           the category validator's searches (qdrant-edge, --points unindexed
                        points): the engine holds the GIL for a whole call
  numpy matmul          a C call that releases the GIL (the control: close to 1.0x)

On 2 cores the other thread has a core of its own, so what a row loses is the GIL, not CPU.
"""

from __future__ import annotations

import os

# One BLAS thread, so the numpy control row competes for the GIL, not for the other core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lookalike.encoders import configure_threads, encoder_from_settings  # noqa: E402
from lookalike.index import IndexPoint  # noqa: E402
from lookalike.index.edge import EdgeIndex  # noqa: E402
from lookalike.settings import Settings  # noqa: E402

REPEATS = 3


def python_loop(stop: threading.Event) -> None:
    count = 0
    while not stop.is_set():
        for _ in range(1000):
            count += 1


def engine_searches(points: int, dim: int, root: Path) -> Callable[[threading.Event], None]:
    rng = np.random.default_rng(0)
    index = EdgeIndex(root, quantization="int8", background=False)
    index.ensure_collection("v", dim)
    for start in range(0, points, 1000):
        index.upsert(
            "v",
            [
                IndexPoint(f"i{n}", rng.normal(size=dim).astype(np.float32), {"image_id": f"i{n}"})
                for n in range(start, min(points, start + 1000))
            ],
        )
    queries = [rng.normal(size=dim).astype(np.float32) for _ in range(32)]

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            index.search_many("v", queries, 31, payload_fields=("image_id",))

    return run


def matmul(stop: threading.Event) -> None:
    a = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    while not stop.is_set():
        a @ a


def encoder_rate(embed: Callable[[], None], images: int) -> float:
    best = min(_timed(embed) for _ in range(REPEATS))
    return images / best


def _timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def beside(other: Callable[[threading.Event], None], embed: Callable[[], None], n: int) -> float:
    stop = threading.Event()
    thread = threading.Thread(target=other, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        return encoder_rate(embed, n)
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--points", type=int, default=5000)
    args = parser.parse_args()
    configure_threads(1)
    settings = Settings()
    encoder = encoder_from_settings(settings)
    generator = torch.Generator().manual_seed(0)
    batch = [
        torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8, generator=generator)
        for _ in range(args.images)
    ]

    def embed() -> None:
        encoder.embed_tensors(batch)

    embed()  # compile / warm up
    alone = encoder_rate(embed, args.images)
    print(f"encoder {encoder.version} on {encoder.device}, 1 torch thread, {args.images} images")
    print(f"{'beside the encoder':<40} {'images/s':>9} {'vs alone':>9}")
    print(f"{'nothing (encoder alone)':<40} {alone:>9.0f} {1.0:>9.2f}")
    default = sys.getswitchinterval()
    rows: list[tuple[str, Callable[[threading.Event], None], float]] = [
        ("pure Python, switch interval 5 ms", python_loop, default),
        ("pure Python, switch interval 1 ms", python_loop, 0.001),
        ("pure Python, switch interval 0.2 ms", python_loop, 0.0002),
    ]
    with tempfile.TemporaryDirectory(prefix="lookalike-gil-") as tmp:
        searches = engine_searches(args.points, encoder.dim, Path(tmp))
        rows.append((f"engine k-NN over {args.points:,} points", searches, default))
        rows.append((f"engine k-NN over {args.points:,} points, 0.2 ms", searches, 0.0002))
        rows.append(("numpy matmul (releases the GIL)", matmul, default))
        for label, other, interval in rows:
            sys.setswitchinterval(interval)
            rate = beside(other, embed, args.images)
            sys.setswitchinterval(default)
            print(f"{label:<40} {rate:>9.0f} {rate / alone:>9.2f}")


if __name__ == "__main__":
    main()
