"""Indexing throughput, stage by stage, on the same images in one run.

    .venv/bin/python benchmarks/pipeline_throughput.py [--images 512] [--batch-size 32]
        [--dataset DIR]

Rows (same images, same encoder settings as the worker, same batch size; run one after another
so they do not compete for the cores):
  decode only          Pillow full-size decode vs reduced-size (JPEG draft) decode
  encoder alone        pre-decoded, pre-processed tensors -> embeddings: the ceiling
  decode + encode      bytes -> decode (thread pool) -> preprocess -> embed, batch by batch
  naive baseline       what one writes by hand: per image read, decode, embed (eager fp32,
                       batch of 1) and upsert one point into embedded Qdrant
  pipeline (backlog)   events already in Kafka; `lookalike worker` from Ready to all indexed
  pipeline (live)      publish -> Kafka -> Faust -> Qdrant on the warm worker, from the first
                       publish until /stats counts them all
then publish-to-searchable latency of single uploads and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import torch
from _dataset import DEFAULT_DATASET, RESULTS, labelled_images
from PIL import Image
from qdrant_client import QdrantClient

from lookalike.encoders import configure_threads, encoder_from_settings, load_encoder
from lookalike.events import ImageUploaded, InlineSource
from lookalike.images import decode_image
from lookalike.index import IndexPoint, QdrantIndex
from lookalike.kafka.local_broker import free_port, start_local_broker, stop_local_broker
from lookalike.kafka.publisher import UploadPublisher
from lookalike.settings import Settings

MAX_PIXELS = 50_000_000


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_decode(blobs: list[bytes], size: int) -> tuple[float, float]:
    started = time.perf_counter()
    for data in blobs:
        decode_image(data, max_pixels=MAX_PIXELS)
    full = rate(len(blobs), time.perf_counter() - started)
    started = time.perf_counter()
    for data in blobs:
        decode_image(data, max_pixels=MAX_PIXELS, target_size=size)
    return full, rate(len(blobs), time.perf_counter() - started)


def bench_in_process(settings: Settings, blobs: list[bytes], batch: int) -> tuple[float, float]:
    encoder = encoder_from_settings(settings)
    size = encoder.preprocessing.resize

    def prepare(data: bytes) -> torch.Tensor:
        return encoder.preprocess(decode_image(data, max_pixels=MAX_PIXELS, target_size=size))

    tensors = [prepare(b) for b in blobs]
    encoder.embed_tensors(tensors[:batch])  # warm-up (and compilation, if on)
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.embed_tensors(tensors[i : i + batch])
    encoder_alone = rate(len(tensors), time.perf_counter() - started)

    with ThreadPoolExecutor(settings.decode_threads) as pool:
        started = time.perf_counter()
        for i in range(0, len(blobs), batch):
            encoder.embed_tensors(list(pool.map(prepare, blobs[i : i + batch])))
        decode_encode = rate(len(blobs), time.perf_counter() - started)
    return encoder_alone, decode_encode


def bench_naive(settings: Settings, files: list[Path], tmp: Path) -> float:
    """A hand-written loop: one image at a time, default fp32 model, one upsert per image, with
    torch's default threads (all cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    encoder = load_encoder(settings.encoder, settings.device, precision="fp32")
    index = QdrantIndex(QdrantClient(path=str(tmp / "naive-qdrant")), "naive")
    index.ensure_collection(encoder.version, encoder.dim)
    started = time.perf_counter()
    for i, path in enumerate(files):
        image = Image.open(path).convert("RGB")
        vector = encoder.embed_images([image])[0]
        index.upsert(encoder.version, [IndexPoint(f"naive-{i}", vector, {"category": "x"})])
    ips = rate(len(files), time.perf_counter() - started)
    index.close()
    torch.set_num_threads(previous)
    return ips


def indexed(api: str) -> int:
    stats = httpx.get(f"{api}/stats", timeout=10).json()
    return int(stats["indexed"].get(stats["serving_version"], 0))


def wait_until(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout}s")


def ready_time(log_path: Path) -> float | None:
    """Wall-clock time of Faust's "Worker: Ready" line (the consumer group is joined)."""
    match = re.search(
        rb"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[INFO\] \[\^Worker\]: Ready",
        log_path.read_bytes(),
    )
    if not match:
        return None
    return datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def events_for(blobs: list[bytes], labels: list[str], prefix: str) -> list[ImageUploaded]:
    return [
        ImageUploaded(
            image_id=f"{prefix}-{i}",
            listing_id=f"l-{prefix}-{i}",
            seller_id="bench",
            category=label,
            image=InlineSource(data=data),
        )
        for i, (data, label) in enumerate(zip(blobs, labels, strict=True))
    ]


def bench_pipeline(
    blobs: list[bytes], labels: list[str], batch: int, tmp: Path, latency_samples: int
) -> dict[str, float]:
    broker_settings = Settings(data_dir=tmp / "broker")
    broker, _ = start_local_broker(broker_settings)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env |= {
        "LOOKALIKE_BATCH_SIZE": str(batch),
        "LOOKALIKE_LOG_LEVEL": "info",
        "LOOKALIKE_KAFKA_BOOTSTRAP": broker.bootstrap,
    }
    settings = Settings(data_dir=tmp / "client", kafka_bootstrap=broker.bootstrap)
    RESULTS.mkdir(exist_ok=True)
    log_path = RESULTS / "pipeline-worker.log"
    backlog = events_for(blobs, labels, "backlog")
    live = events_for(blobs, labels, "live")
    worker = None
    try:
        with UploadPublisher(settings, broker.bootstrap) as publisher:
            for event in backlog:
                publisher.publish(event)
            publisher.flush()
            with open(log_path, "wb") as log:
                worker = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "lookalike",
                        "worker",
                        "--data-dir",
                        str(tmp / "worker"),
                        "--port",
                        str(port),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            wait_until(lambda: indexed(api) >= len(backlog), 600)
            backlog_done = time.time()
            ready = ready_time(log_path)
            assert ready is not None, "no 'Worker: Ready' line in the worker log"
            backlog_ips = rate(len(backlog), backlog_done - ready)

            started = time.perf_counter()
            for event in live:
                publisher.publish(event)
            publisher.flush()
            wait_until(lambda: indexed(api) >= len(backlog) + len(live), 600)
            live_ips = rate(len(live), time.perf_counter() - started)

            latencies = []
            for i in range(latency_samples):
                event = live[i].model_copy(update={"image_id": f"latency-{i}"})
                sent = time.perf_counter()
                publisher.publish(event)
                publisher.flush()
                wait_until(
                    lambda e=event: httpx.get(f"{api}/images/{e.image_id}").status_code == 200,
                    60,
                    0.01,
                )
                latencies.append(time.perf_counter() - sent)
        rss = peak_rss_mib(worker.pid)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        stop_local_broker(broker_settings)
    return {
        "backlog_ips": backlog_ips,
        "live_ips": live_ips,
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "worker_peak_rss_mib": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    pairs = labelled_images(args.dataset, args.images)
    files = [path for path, _ in pairs]
    labels = [label for _, label in pairs]
    blobs = [path.read_bytes() for path in files]
    settings = Settings()  # the worker's defaults (precision, threads, decode pool)
    threads = configure_threads(settings.torch_threads, reserve=1)  # as the worker does
    probe = encoder_from_settings(settings)
    print(
        f"{len(files)} images from {args.dataset}; encoder {probe.version} "
        f"({probe.precision}{', compiled' if settings.compile else ''}, forward passes of "
        f"{probe.chunk}) on {probe.device}; "
        f"batch {args.batch_size}; {threads} torch threads on {os.cpu_count()} cores",
        flush=True,
    )

    full, draft = bench_decode(blobs, probe.preprocessing.resize)
    del probe
    encoder_alone, decode_encode = bench_in_process(settings, blobs, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp_name:
        tmp = Path(tmp_name)
        naive = None if args.skip_naive else bench_naive(settings, files, tmp)
        pipe = bench_pipeline(blobs, labels, args.batch_size, tmp, args.latency_samples)

    rows = [
        ("decode only, full size (Pillow)", full),
        ("decode only, reduced size (JPEG draft)", draft),
        ("encoder alone (pre-decoded tensors)", encoder_alone),
        ("decode + encode (in process)", decode_encode),
    ]
    if naive is not None:
        rows.append(("naive baseline (1 image at a time, fp32)", naive))
    rows += [
        ("pipeline, backlog (Kafka -> Faust -> Qdrant)", pipe["backlog_ips"]),
        ("pipeline, live (publish -> ... -> Qdrant)", pipe["live_ips"]),
    ]
    print(f"\n{'stage':<46} {'images/s':>9} {'x encoder':>10}")
    for name, ips in rows:
        print(f"{name:<46} {ips:>9.1f} {ips / encoder_alone:>10.2f}")
    print(
        f"\npipeline backlog / decode+encode: {pipe['backlog_ips'] / decode_encode:.2f}"
        f"   live / decode+encode: {pipe['live_ips'] / decode_encode:.2f}"
    )
    if naive is not None:
        print(
            f"pipeline backlog / naive: {pipe['backlog_ips'] / naive:.2f}"
            f"   live / naive: {pipe['live_ips'] / naive:.2f}"
        )
    print(f"reduced-size decode / full decode: {draft / full:.2f}")
    print(
        f"publish -> searchable (single upload, idle worker): median "
        f"{pipe['latency_median_s'] * 1000:.0f} ms, max {pipe['latency_max_s'] * 1000:.0f} ms "
        f"over {args.latency_samples}"
    )
    print(f"worker peak RSS: {pipe['worker_peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
