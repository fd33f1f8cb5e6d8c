"""Indexing throughput, stage by stage, and publish-to-searchable latency, in one run.

    .venv/bin/python benchmarks/pipeline_throughput.py [--events 10000] [--modes inline,url]
        [--encoders real,stand-in] [--stand-in-ms 0.25] [--latency-samples 20] [--dataset DIR]

Every row prints its rate and its ratio to the stage that should bound it, measured in the same
run, one stage at a time so nothing else competes for the cores:

  publish, MODE        UploadPublisher sending prebuilt events      vs the same bytes sent by a
                                                                       bare KafkaProducer
  fetch, URL           ImageFetcher.fetch_many from a local CDN,    vs decode (fetching must
                       a micro-batch at a time                         stay ahead of it)
  decode               the worker's decode pool, at the encoder's   vs encoder alone (on a GPU
                       input size (and in processes, for contrast)     decoding must keep up)
  encoder alone        pre-decoded pixels -> vectors: the ceiling   vs itself
  decode + encode      bytes -> decode pool -> encoder, batch       vs the slower of the two
                       after batch, in process
  pipeline, MODE       a backlog of --events uploads already in     vs decode + encode
                       Kafka -> `lookalike worker` -> the index;
                       steady rate from 5% to 95% indexed

MODE: inline (the image bytes in the event) or url (the event names an image on the local
CDN, benchmarks/_cdn.py; the worker runs with LOOKALIKE_FETCH_ALLOW=127.0.0.1/32). ENCODER:
real (LOOKALIKE_ENCODER as configured) or stand-in (benchmarks/_stand_in.py: a fixed cost per
image, --stand-in-ms, so the streaming path's own ceiling shows on any machine; each image gets
its real embedding, computed once and cached, plus noise, so the category validator sees the
neighbourhoods and the categories a real encoder gives).

Then, on each run's idle worker: publish-to-searchable latency of single uploads, from the
moment the producer's send is acknowledged to the moment GET /images/{id} answers. Each
pipeline row also shows where its batches spent their time (from the worker's log) and where
the CPU went over the steady part (the worker, its child processes, the broker: /proc), with the
rate all the machine's cores would carry at that CPU cost per event.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
from _dataset import DEFAULT_DATASET, RESULTS, labelled_images
from _stand_in import (
    COST_VARIABLE,
    STAND_IN_PREPROCESSING,
    VECTORS_VARIABLE,
    StandInEncoder,
    pixel_digest,
)
from kafka import KafkaProducer
from search_scale import embeddings

from lookalike.encoders import Encoder, configure_threads, encoder_from_settings
from lookalike.events import ImageUploaded, InlineSource, UrlSource
from lookalike.images import DecodePool, ImageFetcher
from lookalike.kafka.local_broker import free_port, start_local_broker, stop_local_broker
from lookalike.kafka.publisher import UploadPublisher, ensure_topics, producer_options
from lookalike.settings import Settings
from lookalike.tuning import Tuning

HERE = Path(__file__).resolve().parent
MAX_PIXELS = 50_000_000
LATENCY_TARGET_MS = 150.0


@dataclass
class Row:
    stage: str
    rate: float
    bound: str
    bound_rate: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.rate / self.bound_rate if self.bound_rate else float("nan")


@dataclass
class PipelineRun:
    publish_rate: float
    bare_publish_rate: float
    steady_rate: float
    first_indexed_s: float
    latencies_ms: list[float]
    ack_ms: list[float]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    peak_rss_mib: float = float("nan")
    children_rss_mib: float = float("nan")
    #: Cores busy over the steady part: the worker, its child processes, the broker.
    cores: tuple[float, float, float] = (float("nan"),) * 3


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


# --- in process ------------------------------------------------------------------------------
def decode_rate(pool: DecodePool, blobs: list[bytes], encoder: Encoder, batch: int) -> float:
    preprocessors = {encoder.preprocessing.digest(): encoder.preprocessing.pixels}
    size = encoder.preprocessing.resize
    pool.decode_many(
        blobs[:batch], max_pixels=MAX_PIXELS, target_size=size, preprocessors=preprocessors
    )  # warm-up (starts processes)
    started = time.perf_counter()
    for i in range(0, len(blobs), batch):
        pool.decode_many(
            blobs[i : i + batch],
            max_pixels=MAX_PIXELS,
            target_size=size,
            preprocessors=preprocessors,
        )
    return rate(len(blobs), time.perf_counter() - started)


def encoder_and_decode_rates(
    encoder: Encoder, pool: DecodePool, blobs: list[bytes], batch: int
) -> tuple[float, float]:
    preprocessors = {encoder.preprocessing.digest(): encoder.preprocessing.pixels}
    size = encoder.preprocessing.resize
    decoded = pool.decode_many(
        blobs, max_pixels=MAX_PIXELS, target_size=size, preprocessors=preprocessors
    )
    tensors = [next(iter(d.pixels.values())) for d in decoded if not isinstance(d, Exception)]
    encoder.warm_up()
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.embed_tensors(tensors[i : i + batch])
    alone = rate(len(tensors), time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(blobs), batch):
        images = pool.decode_many(
            blobs[i : i + batch],
            max_pixels=MAX_PIXELS,
            target_size=size,
            preprocessors=preprocessors,
        )
        encoder.embed_tensors(
            [next(iter(d.pixels.values())) for d in images if not isinstance(d, Exception)]
        )
    return alone, rate(len(blobs), time.perf_counter() - started)


def fetch_rate(urls: list[str], batch: int) -> float:
    settings = Settings(fetch_allow="127.0.0.1/32")
    with ImageFetcher.from_settings(settings) as fetcher:
        fetcher.fetch_many([UrlSource(url=u) for u in urls[:batch]])  # connections opened
        started = time.perf_counter()
        for i in range(0, len(urls), batch):
            results = fetcher.fetch_many([UrlSource(url=u) for u in urls[i : i + batch]])
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, failed[0]
        return rate(len(urls), time.perf_counter() - started)


# --- the worker ------------------------------------------------------------------------------
def indexed(client: httpx.Client) -> int:
    stats = client.get("/stats", timeout=30).json()
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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_pids(pid: int) -> list[int]:
    """The worker's child processes still running (its encoder process; decode processes
    beside a GPU)."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def children_peak_rss_mib(pid: int) -> float:
    return sum(peak_rss_mib(child) for child in child_pids(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(worker: int, broker: int) -> tuple[float, float, float]:
    """CPU seconds so far of the worker, its child processes and the broker."""
    children = 0.0
    for child in child_pids(worker):
        with contextlib.suppress(OSError):
            children += cpu_seconds(child)
    return cpu_seconds(worker), children, cpu_seconds(broker)


def describe_cpu(run: PipelineRun, cores: int) -> str:
    """Where the machine's CPU went over the steady part, and the rate those cores would
    carry at the same CPU cost per event if they were all busy."""
    worker, children, broker = run.cores
    per_event = (worker + children + broker) / run.steady_rate
    return (
        f"cores busy: worker {worker:.2f}, its child processes {children:.2f}, broker "
        f"{broker:.2f} = {per_event * 1000:.2f} ms of CPU per event; at that cost {cores} "
        f"busy cores would carry {cores / per_event:.0f} events/s"
    )


BATCH_LINE = re.compile(rb"batch of (\d+):.*?\(([^)]*)\)")


def batch_timings(log: bytes, events: int) -> tuple[int, dict[str, float]]:
    """Batches of the backlog (the first ``events`` events), and the mean seconds per batch of
    each stage."""
    totals: dict[str, float] = {}
    count = seen = 0
    for match in BATCH_LINE.finditer(log):
        if seen >= events:
            break
        seen += int(match.group(1))
        count += 1
        for name, seconds in re.findall(r"(\w+) ([\d.]+)s", match.group(2).decode()):
            totals[name] = totals.get(name, 0.0) + float(seconds)
    return count, {k: v / count for k, v in totals.items()} if count else {}


def bare_publish_rate(
    bootstrap: str, settings: Settings, values: list[tuple[bytes, bytes]]
) -> float:
    topic = f"{settings.topic_prefix}.bench-bare"
    ensure_topics(bootstrap, [topic], settings.topic_partitions, settings)
    producer = KafkaProducer(bootstrap_servers=bootstrap, **producer_options(settings))
    started = time.perf_counter()
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return rate(len(values), elapsed)


def run_pipeline(
    *,
    name: str,
    events: list[ImageUploaded],
    latency_events: list[ImageUploaded],
    stand_in_ms: float | None,
    stand_in_vectors: Path | None,
    url_mode: bool,
    tmp: Path,
    worker_env: dict[str, str],
) -> PipelineRun:
    broker_settings = Settings(data_dir=tmp / f"broker-{name}")
    broker, _ = start_local_broker(broker_settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env |= {"LOOKALIKE_LOG_LEVEL": "info", "LOOKALIKE_KAFKA_BOOTSTRAP": broker.bootstrap}
    env |= worker_env
    if url_mode:
        env["LOOKALIKE_FETCH_ALLOW"] = "127.0.0.1/32"  # the local CDN
    if stand_in_ms is not None:
        env[COST_VARIABLE] = str(stand_in_ms)
        if stand_in_vectors is not None:
            env[VECTORS_VARIABLE] = str(stand_in_vectors)
        launcher = [sys.executable, str(HERE / "_stand_in.py")]
    else:
        launcher = [sys.executable, "-m", "lookalike"]
    settings = Settings(data_dir=tmp / f"client-{name}", kafka_bootstrap=broker.bootstrap)
    RESULTS.mkdir(exist_ok=True)
    log_path = RESULTS / f"pipeline-worker-{name}.log"
    worker = None
    try:
        with UploadPublisher(settings, broker.bootstrap) as publisher:
            started = time.perf_counter()
            for event in events:
                publisher.publish(event)
            publisher.flush()
            publish = rate(len(events), time.perf_counter() - started)
            bare = bare_publish_rate(
                broker.bootstrap,
                settings,
                [(e.image_id.encode(), e.to_json_bytes()) for e in events],
            )
            with open(log_path, "wb") as log:
                worker = subprocess.Popen(
                    [
                        *launcher,
                        "worker",
                        "--data-dir",
                        str(tmp / f"worker-{name}"),
                        "--port",
                        str(port),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            wait_until(lambda: client.get("/health").status_code == 200, 600, 0.5)
            up = time.perf_counter()
            progress: list[tuple[float, int, tuple[float, float, float]]] = []
            total = len(events)

            def done() -> bool:
                cpu = cpu_split(worker.pid, broker.pid)
                progress.append((time.perf_counter(), indexed(client), cpu))
                return progress[-1][1] >= total

            wait_until(done, 3600, 0.5)
            first = next(t for t, n, _ in progress if n > 0)
            low, low_n, low_cpu = next(p for p in progress if p[1] >= 0.05 * total)
            high, high_n, high_cpu = next(p for p in progress if p[1] >= 0.95 * total)
            steady = rate(high_n - low_n, high - low)
            cores = tuple((b - a) / (high - low) for a, b in zip(low_cpu, high_cpu, strict=True))

            time.sleep(2.0)  # idle: the consumer sits in its empty-fetch wait
            latencies, acks = [], []
            for event in latency_events:
                sent = time.perf_counter()
                publisher.publish(event).get(timeout=30)
                acked = time.perf_counter()
                wait_until(
                    lambda e=event: client.get(f"/images/{e.image_id}").status_code == 200,
                    60,
                    0.005,
                )
                latencies.append((time.perf_counter() - acked) * 1000)
                acks.append((acked - sent) * 1000)
                time.sleep(random.uniform(0.3, 0.8))
            rss = peak_rss_mib(worker.pid), children_peak_rss_mib(worker.pid)
            client.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        stop_local_broker(broker_settings)
    batches, stages = batch_timings(log_path.read_bytes(), len(events))
    return PipelineRun(
        publish, bare, steady, first - up, latencies, acks, stages, batches, *rss, cores
    )


def upload_events(
    blobs: list[bytes], labels: list[str], urls: list[str] | None, n: int, prefix: str
) -> list[ImageUploaded]:
    events = []
    for i in range(n):
        k = i % len(blobs)
        image = UrlSource(url=urls[k]) if urls else InlineSource(data=blobs[k])
        events.append(
            ImageUploaded(
                image_id=f"{prefix}-{i}",
                listing_id=f"l-{prefix}-{i}",
                seller_id=f"seller-{i % 50}",
                category=labels[k],
                image=image,  # type: ignore[arg-type]
            )
        )
    return events


def stand_in_vectors(
    files: list[Path], blobs: list[bytes], dataset: Path, pool: DecodePool, path: Path
) -> dict[str, np.ndarray]:
    """The real embedding of each image, by the digest of the pixels the stand-in will be
    given (decoded as the worker decodes them), saved to ``path`` for the stand-in worker."""
    real, _, paths, _ = embeddings(Settings(compile=False), dataset)  # cached after once
    by_path = dict(zip(paths, real, strict=True))
    decoded = pool.decode_many(
        blobs,
        max_pixels=Settings().max_image_pixels,
        target_size=STAND_IN_PREPROCESSING.resize,
        preprocessors={"stand-in": STAND_IN_PREPROCESSING.pixels},
    )
    table = {
        pixel_digest(image.pixels["stand-in"]): by_path[file]
        for file, image in zip(files, decoded, strict=True)
        if not isinstance(image, Exception)
    }
    np.savez(path, digests=np.array(list(table)), vectors=np.stack(list(table.values())))
    return table


def start_cdn(files: list[Path], tmp: Path) -> tuple[subprocess.Popen, list[str]]:
    listing = tmp / "cdn-files.txt"
    listing.write_text("\n".join(str(f) for f in files))
    port = free_port()
    cdn = subprocess.Popen([sys.executable, str(HERE / "_cdn.py"), str(port), str(listing)])
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/img/0.jpg").status_code == 200, 60, 0.2)
    return cdn, [f"{base}/img/{n}.jpg" for n in range(len(files))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="backlog per pipeline run")
    parser.add_argument("--images", type=int, default=4000, help="distinct dataset images")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--modes", default="inline,url")
    parser.add_argument("--encoders", default="real,stand-in")
    parser.add_argument("--stand-in-ms", type=float, default=0.25)
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="LOOKALIKE_X=VALUE",
        help="a setting for every worker of the run (repeatable), e.g. "
        "LOOKALIKE_VALIDATION_ENABLED=false",
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    kinds = [k for k in args.encoders.split(",") if k]

    pairs = labelled_images(args.dataset, args.images)
    files = [path for path, _ in pairs]
    labels = [label for _, label in pairs]
    blobs = [path.read_bytes() for path in files]
    settings = Settings()  # the worker's defaults
    threads = configure_threads(settings.torch_threads, reserve=1)  # as the worker does
    real = encoder_from_settings(settings) if "real" in kinds else None
    device = real.device.type if real is not None else "cpu"
    tuning = Tuning.choose(settings, device)
    batch = tuning.batch_size
    print(
        f"{len(files)} images from {args.dataset}; backlog of {args.events} events per run; "
        f"{tuning.describe()}; {threads} torch threads; GPU: "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
        flush=True,
    )
    if worker_env:
        print(f"worker settings: {worker_env}", flush=True)
    if real is not None:
        print(
            f"real encoder {real.version} ({real.precision}"
            f"{', compiled' if real.compiled else ''}) on {real.device}",
            flush=True,
        )

    rows: list[Row] = []
    latency_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cdn, urls = start_cdn(files, tmp) if "url" in modes else (None, [])
        try:
            threads_pool = DecodePool(tuning.decode_threads, tuning.decode_processes)
            process_pool = DecodePool(1, tuning.cores)
            vectors_path = tmp / "stand-in-vectors.npz"
            for kind in kinds:
                if kind == "real":
                    encoder: Encoder = real
                else:
                    table = stand_in_vectors(files, blobs, args.dataset, threads_pool, vectors_path)
                    encoder = StandInEncoder(args.stand_in_ms, vectors=table)
                if kind != "real":
                    encoder.configure_inference("fp32", False, tuning.inference_batch)
                label = "real encoder" if kind == "real" else f"stand-in {args.stand_in_ms} ms/img"
                decode = decode_rate(threads_pool, blobs, encoder, batch)
                in_processes = decode_rate(process_pool, blobs, encoder, batch)
                alone, both = encoder_and_decode_rates(encoder, threads_pool, blobs, batch)
                rows += [
                    Row(
                        f"decode ({threads_pool.describe()}), {label}",
                        decode,
                        "encoder alone",
                        alone,
                    ),
                    Row(
                        f"decode ({process_pool.describe()}), {label}",
                        in_processes,
                        "encoder alone",
                        alone,
                    ),
                    Row(f"encoder alone, {label}", alone, "encoder alone", alone),
                    Row(f"decode + encode, {label}", both, "slower of the two", min(decode, alone)),
                ]
                if "url" in modes:
                    fetched = fetch_rate(urls, batch)
                    rows.append(Row("fetch, URL (local CDN)", fetched, "decode", decode))
                for mode in modes:
                    name = f"{kind}-{mode}"
                    events = upload_events(
                        blobs, labels, urls if mode == "url" else None, args.events, name
                    )
                    latency_events = upload_events(
                        blobs,
                        labels,
                        urls if mode == "url" else None,
                        args.latency_samples,
                        f"latency-{name}",
                    )
                    print(f"pipeline run {name} ...", flush=True)
                    run = run_pipeline(
                        name=name,
                        events=events,
                        latency_events=latency_events,
                        stand_in_ms=None if kind == "real" else args.stand_in_ms,
                        stand_in_vectors=None if kind == "real" else vectors_path,
                        url_mode=mode == "url",
                        tmp=tmp,
                        worker_env=worker_env,
                    )
                    stages = " ".join(f"{k} {v * 1000:.0f}ms" for k, v in run.stage_seconds.items())
                    rows += [
                        Row(
                            f"publish, {mode} events",
                            run.publish_rate,
                            "bare KafkaProducer",
                            run.bare_publish_rate,
                        ),
                        Row(
                            f"pipeline, {mode}, {label}",
                            run.steady_rate,
                            "decode + encode",
                            both,
                            f"{run.batches} batches, mean per batch: {stages}; first "
                            f"image indexed {run.first_indexed_s:.1f}s after /health; worker "
                            f"peak RSS {run.peak_rss_mib:.0f} MiB, its child processes "
                            f"{run.children_rss_mib:.0f} MiB; {describe_cpu(run, tuning.cores)}",
                        ),
                    ]
                    lat = sorted(run.latencies_ms)
                    latency_lines.append(
                        f"{mode}, {label}: median {statistics.median(lat):.0f} ms, "
                        f"p90 {lat[int(0.9 * (len(lat) - 1))]:.0f} ms, max {lat[-1]:.0f} ms "
                        f"over {len(lat)} (median / target {LATENCY_TARGET_MS:.0f} ms: "
                        f"{statistics.median(lat) / LATENCY_TARGET_MS:.2f}); the send's ack took "
                        f"median {statistics.median(run.ack_ms):.0f} ms before that"
                    )
            threads_pool.close()
            process_pool.close()
        finally:
            if cdn is not None:
                cdn.terminate()
                cdn.wait(timeout=30)

    print(f"\n{'stage':<58} {'per s':>8}  {'bound by':<20} {'ratio':>6}")
    for row in rows:
        print(f"{row.stage:<58} {row.rate:>8.0f}  {row.bound:<20} {row.ratio:>6.2f}")
        if row.note:
            print(f"    {row.note}")
    print(
        "\npublish -> searchable, single uploads on an idle worker (from the send's ack to "
        "GET /images/{id} answering):"
    )
    for line in latency_lines:
        print(f"  {line}")


if __name__ == "__main__":
    main()
