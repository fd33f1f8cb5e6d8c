"""Rollout backfill throughput, alone and beside live indexing, in one run.

    .venv/bin/python benchmarks/backfill_throughput.py [--catalogue 192] [--live 96]
        [--dataset DIR] [--compile]

One worker runtime in this process (the worker's executors, model thread and writer thread;
no Kafka: live batches are fed to the pipeline stages directly, as the agent does), embedded
Qdrant in a temporary folder. The catalogue is indexed with EfficientNet-Lite0 (serving), then
a rollout to EfficientNet-Lite1 is started and backfilled. Rows:
  encoder alone        Lite1 on pre-processed tensors: the ceiling for the backfill
  backfill alone       re-fetch (inline blob store), decode, embed (Lite1), check-and-write
  live alone           uploads during the rollout (dual-written: Lite0 + Lite1), back to back
  backfill + live      both at once, live as fast as it can (saturating), and live at half its
                       capacity: backfill images/s, live images/s, live batch latency
Figures are ratios to `encoder alone` (or to `live alone`) measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _dataset import DEFAULT_DATASET, labelled_images

from lookalike.events import ConsumedMessage, ImageUploaded, InlineSource
from lookalike.executors import run_in
from lookalike.images import decode_image
from lookalike.settings import Settings
from lookalike.streams.runtime import Runtime

CANDIDATE = "efficientnet-lite1"


def messages(paths: list[tuple[Path, str]], tag: str) -> list[ConsumedMessage]:
    out = []
    for n, (path, label) in enumerate(paths):
        event = ImageUploaded(
            image_id=f"{tag}-{n}",
            listing_id=f"l-{n}",
            seller_id="s",
            category=label,
            image=InlineSource(data=path.read_bytes()),
        )
        out.append(ConsumedMessage("bench", 0, n, event.to_json_bytes()))
    return out


async def live(
    rt: Runtime, batch_list: list[list[ConsumedMessage]], interval: float = 0.0
) -> tuple[float, list[float]]:
    """Feed micro-batches through prepare -> embed -> write, two in flight like the agent;
    ``interval``: seconds between batch arrivals (0: back to back). Returns (seconds,
    per-batch latencies)."""
    slots = asyncio.Semaphore(2)
    latencies: list[float] = []

    async def one(batch: list[ConsumedMessage]) -> None:
        arrived = time.perf_counter()
        async with slots:
            pipe = rt.pipeline
            result = await run_in(rt.executors.prepare, pipe.prepare, batch)
            result = await run_in(rt.executors.model, pipe.embed, result)
            await run_in(rt.executors.write, pipe.write, result)
        latencies.append(time.perf_counter() - arrived)

    started = time.perf_counter()
    tasks = []
    for batch in batch_list:
        tasks.append(asyncio.create_task(one(batch)))
        if interval:
            await asyncio.sleep(interval)
        else:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return time.perf_counter() - started, latencies


async def backfill_until(rt: Runtime, stop: asyncio.Event | None = None) -> tuple[float, int]:
    """Run backfill steps until done (or ``stop``); returns (seconds, images embedded)."""
    started, before = time.perf_counter(), rt.rollout.embedded
    while not (stop is not None and stop.is_set()):
        if not await rt.rollout.step():
            break
    return time.perf_counter() - started, rt.rollout.embedded - before


async def restart_rollout(rt: Runtime) -> None:
    if rt.registry.candidate() is not None:
        await rt.rollout.on_writer(rt.rollout.abort)
    await rt.rollout.start(CANDIDATE)


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def main_async(args: argparse.Namespace) -> None:
    pairs = labelled_images(args.dataset)
    step = max(1, len(pairs) // (args.catalogue + 4 * args.live))
    sample = pairs[::step]
    catalogue = messages(sample[: args.catalogue], "cat")
    live_sets = [
        chunks(messages(sample[args.catalogue + i * args.live :][: args.live], f"live{i}"), 32)
        for i in range(4)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            compile=args.compile,
            validation_enabled=False,
            backfill_batch=32,
        )
        rt = Runtime(settings)
        try:
            print(f"indexing a catalogue of {len(catalogue)} images ...", file=sys.stderr)
            await live(rt, chunks(catalogue, 32))
            await rt.rollout.start(CANDIDATE)
            candidate = rt.encoders[rt.registry.candidate().version]  # type: ignore[union-attr]

            size = candidate.preprocessing.resize
            tensors = [
                candidate.preprocess(
                    decode_image(p.read_bytes(), max_pixels=50_000_000, target_size=size)
                )
                for p, _ in sample[:64]
            ]
            candidate.embed_tensors(tensors[:8])
            started = time.perf_counter()
            for batch in chunks(tensors, 8):
                candidate.embed_tensors(batch)
            encoder_alone = len(tensors) / (time.perf_counter() - started)

            seconds, n = await backfill_until(rt)
            backfill_alone = n / seconds

            await live(rt, live_sets[3])  # warm-up: first dual-written batches run slower
            live_seconds, live_lat = await live(rt, live_sets[0])
            live_alone = args.live / live_seconds

            async def together(batches: list, interval: float) -> tuple[float, float, float]:
                await restart_rollout(rt)
                stop = asyncio.Event()
                backfill_task = asyncio.create_task(backfill_until(rt, stop))
                seconds, latencies = await live(rt, batches, interval)
                stop.set()
                bf_seconds, bf_n = await backfill_task
                return bf_n / bf_seconds, args.live / seconds, statistics.median(latencies)

            sat_bf, sat_live, sat_lat = await together(live_sets[1], 0.0)
            half_interval = 32 / (live_alone / 2)
            half_bf, half_live, half_lat = await together(live_sets[2], half_interval)
        finally:
            rt.close()

    print(
        f"\ncatalogue {len(catalogue)} images, live sets of {args.live}, batch 32, "
        f"compile={args.compile}; candidate {CANDIDATE} (serving efficientnet-lite0)\n"
    )
    print(f"{'row':<42} {'images/s':>9} {'ratio':>7}")
    rows = [
        ("encoder alone (lite1, tensors)", encoder_alone, encoder_alone, "encoder"),
        ("backfill alone", backfill_alone, encoder_alone, "encoder"),
        ("live alone (dual-write lite0+lite1)", live_alone, live_alone, "live alone"),
        ("backfill, live saturating", sat_bf, encoder_alone, "encoder"),
        ("live, with backfill (saturating)", sat_live, live_alone, "live alone"),
        ("backfill, live at 50% of capacity", half_bf, encoder_alone, "encoder"),
        ("live offered 50%, with backfill", half_live, live_alone, "live alone"),
    ]
    for name, value, base, of in rows:
        print(f"{name:<42} {value:>9.1f} {value / base:>6.2f}x  (of {of})")
    print(
        f"\nlive batch latency (median, 32 images): alone {statistics.median(live_lat):.2f}s, "
        f"saturating + backfill {sat_lat:.2f}s, 50% + backfill {half_lat:.2f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--catalogue", type=int, default=192)
    parser.add_argument("--live", type=int, default=96)
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
