"""Whole-pipeline throughput vs the encoder alone, on the same images, in one run.

    .venv/bin/python benchmarks/pipeline_throughput.py [--images 300] [--dataset DIR]

Stages (each on the same N images, run one after another so they don't compete for cores):
  encoder alone     pre-decoded, pre-processed tensors -> embeddings (the ceiling)
  decode + encode   file bytes -> decode -> preprocess -> embed, as the worker does it
  whole pipeline    publish -> Kafka (local Tansu) -> Faust agent -> Qdrant, timed from the
                    first publish until /stats counts N indexed images
and then publish-to-searchable latency of single uploads on the idle stack.
Figures are printed as images/s and as ratios to the encoder-alone run of this same process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from lookalike.encoders import load_encoder
from lookalike.events import ImageUploaded, InlineSource
from lookalike.images import decode_image
from lookalike.local_broker import free_port, running_broker
from lookalike.publish import UploadPublisher, iter_image_files
from lookalike.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared/datasets/clothing-small/train"


def pick_images(dataset: Path, n: int) -> list[Path]:
    """Round-robin over category folders, so every category is represented."""
    per_category = [sorted(iter_image_files([d])) for d in sorted(dataset.iterdir()) if d.is_dir()]
    picked: list[Path] = []
    while len(picked) < n and any(per_category):
        for files in per_category:
            if files and len(picked) < n:
                picked.append(files.pop(0))
    return picked


def bench_encoder(files: list[Path], batch_size: int) -> tuple[float, float]:
    encoder = load_encoder("efficientnet-lite0", "auto")
    blobs = [f.read_bytes() for f in files]
    size = encoder.preprocessing.resize

    def decode_and_preprocess(data: bytes):
        return encoder.preprocess(decode_image(data, max_pixels=50_000_000, target_size=size))

    tensors = [decode_and_preprocess(b) for b in blobs]
    encoder.embed_tensors(tensors[:batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        encoder.embed_tensors(tensors[i : i + batch_size])
    encoder_alone = len(tensors) / (time.perf_counter() - start)

    start = time.perf_counter()
    for i in range(0, len(blobs), batch_size):
        encoder.embed_tensors([decode_and_preprocess(b) for b in blobs[i : i + batch_size]])
    decode_encode = len(blobs) / (time.perf_counter() - start)
    return encoder_alone, decode_encode


def wait_until(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise TimeoutError


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_pipeline(files: list[Path], batch_size: int, latency_samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
        env |= {
            "LOOKALIKE_BATCH_SIZE": str(batch_size),
            "LOOKALIKE_LOG_LEVEL": os.environ.get("LOOKALIKE_LOG_LEVEL", "warning"),
        }
        RESULTS.mkdir(exist_ok=True)
        log = open(RESULTS / "pipeline-worker.log", "wb")  # kept for reading after the run
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookalike",
                "up",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx.get(f"{api}/health").status_code == 200, 180, 0.5)
            broker = running_broker(data_dir / "broker.json")
            assert broker is not None
            settings = Settings(data_dir=data_dir, kafka_bootstrap=broker.bootstrap)
            events = [
                ImageUploaded(
                    image_id=f"bench-{i}",
                    listing_id=f"l{i}",
                    seller_id="bench",
                    category=f.parent.name,
                    image=InlineSource(data=f.read_bytes()),
                )
                for i, f in enumerate(files)
            ]
            with UploadPublisher(settings, broker.bootstrap) as publisher:
                # Warm the worker (group join, first batch) before timing.
                publisher.publish(events[0])
                publisher.flush()
                wait_until(lambda: indexed(api) >= 1, 120)
                start = time.perf_counter()
                for event in events[1:]:
                    publisher.publish(event)
                publisher.flush()
                published = time.perf_counter()
                wait_until(lambda: indexed(api) >= len(events), 600, 0.25)
                done = time.perf_counter()

                latencies = []
                for i in range(latency_samples):
                    event = events[i].model_copy(update={"image_id": f"latency-{i}"})
                    sent = time.perf_counter()
                    publisher.publish(event)
                    publisher.flush()
                    wait_until(
                        lambda e=event: httpx.get(f"{api}/images/{e.image_id}").status_code == 200,
                        60,
                        0.01,
                    )
                    latencies.append(time.perf_counter() - sent)
            rss = peak_rss_mib(up.pid)
        finally:
            up.terminate()
            up.wait(timeout=60)
            log.close()
    n = len(events) - 1
    return {
        "pipeline_ips": n / (done - start),
        "drain_after_publish_s": done - published,
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "worker_peak_rss_mib": rss,
    }


def indexed(api: str) -> int:
    stats = httpx.get(f"{api}/stats", timeout=10).json()
    return int(stats["indexed"].get(stats["serving_version"], 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-samples", type=int, default=10)
    args = parser.parse_args()
    if not args.dataset.is_dir():
        sys.exit(
            f"dataset folder {args.dataset} not found; pass --dataset DIR (a folder per category)"
        )
    files = pick_images(args.dataset, args.images)
    print(
        f"{len(files)} images from {args.dataset}, batch size {args.batch_size}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )

    encoder_alone, decode_encode = bench_encoder(files, args.batch_size)
    pipeline = bench_pipeline(files, args.batch_size, args.latency_samples)

    rows = [
        ("encoder alone (pre-decoded tensors)", encoder_alone),
        ("decode + encode (same process)", decode_encode),
        ("whole pipeline (publish->Kafka->Faust->Qdrant)", pipeline["pipeline_ips"]),
    ]
    print(f"\n{'stage':<50} {'images/s':>9} {'x encoder':>10}")
    for name, ips in rows:
        print(f"{name:<50} {ips:>9.1f} {ips / encoder_alone:>10.2f}")
    print(f"\npipeline / decode+encode: {pipeline['pipeline_ips'] / decode_encode:.2f}")
    print(f"drain after the last publish: {pipeline['drain_after_publish_s']:.1f} s")
    print(
        f"publish -> searchable (single upload, idle stack): median "
        f"{pipeline['latency_median_s'] * 1000:.0f} ms, "
        f"max {pipeline['latency_max_s'] * 1000:.0f} ms "
        f"over {args.latency_samples}"
    )
    print(f"worker peak RSS: {pipeline['worker_peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
