"""The write step alone, with and without the category validator, in one run.

    .venv/bin/python benchmarks/write_step.py [--points 8000] [--warm 2000] [--dataset DIR]

No Kafka, no decoding, no encoder: vectors (real embeddings of the shared images plus noise, as
benchmarks/search_scale.py makes them) are written in micro-batches of 32 through
IndexingPipeline.write, the worker's own write step (clocks, the validator's k-NN and evidence,
the index), into a fresh embedded index. The first --warm points are written before timing.
Rows: images/s and the mean per batch of the validator's judging (prototypes, then the k-NN
for the uploads they cannot clear) and of the rest of the write, with the validator on, then
off; the ratio is on / off, and the share of uploads that needed the k-NN. This stage capped
the streaming path when the encoder is cheap (benchmarks/pipeline_throughput.py with
the stand-in encoder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _dataset import DEFAULT_DATASET
from search_scale import build, catalogue, embeddings

from lookalike.encoders import configure_threads
from lookalike.settings import Settings
from lookalike.streams.runtime import Runtime

BATCH = 32


def timed_build(validation: bool, vectors, categories, sellers, version: str, warm: int) -> dict:
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="lookalike-write-")),
        compile=False,
        validation_enabled=validation,
    )
    runtime = Runtime(settings)
    try:
        pipeline = runtime.pipeline
        build(pipeline, version, vectors[:warm], categories[:warm], sellers[:warm], BATCH)
        judged = []
        original = pipeline._validate

        def timing_validate(result, upserts, uploads):  # noqa: ANN001, ANN202
            started = time.perf_counter()
            original(result, upserts, uploads)
            judged.append(time.perf_counter() - started)

        pipeline._validate = timing_validate  # type: ignore[method-assign]
        searched = []
        if pipeline.validator is not None:  # count the uploads its prototypes could not clear
            by_neighbours = pipeline.validator._judge_by_neighbours

            def counting(uploads):  # noqa: ANN001, ANN202
                searched.append(len(uploads))
                return by_neighbours(uploads)

            pipeline.validator._judge_by_neighbours = counting  # type: ignore[method-assign]
        started = time.perf_counter()
        build(pipeline, version, vectors[warm:], categories[warm:], sellers[warm:], BATCH)
        seconds = time.perf_counter() - started
    finally:
        runtime.close()
    batches = -(-(len(vectors) - warm) // BATCH)
    return {
        "images_per_s": (len(vectors) - warm) / seconds,
        "judge_ms": 1000 * sum(judged) / batches,
        "rest_ms": 1000 * (seconds - sum(judged)) / batches,
        "searched": sum(searched) / (len(vectors) - warm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=8000)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args()
    configure_threads(0, reserve=1)
    base, labels, _, version = embeddings(Settings(compile=False), args.dataset)
    vectors, categories, sellers = catalogue(base, labels, args.points)
    rows = {
        on: timed_build(on, vectors, categories, sellers, version, args.warm)
        for on in (True, False)
    }
    print(f"write step, points {args.warm:,} -> {args.points:,}, batches of {BATCH}")
    print(f"{'validator':<10} {'images/s':>9} {'judge ms/batch':>15} {'rest ms/batch':>14}")
    for on, row in rows.items():
        print(
            f"{'on' if on else 'off':<10} {row['images_per_s']:>9.0f} "
            f"{row['judge_ms']:>15.1f} {row['rest_ms']:>14.1f}"
        )
    ratio = rows[True]["images_per_s"] / rows[False]["images_per_s"]
    print(f"with the validator: {ratio:.2f}x the write step without it")
    searched = rows[True]["searched"]
    print(f"k-NN searched for {searched:.0%} of the uploads (the rest: cleared by prototypes)")


if __name__ == "__main__":
    main()
