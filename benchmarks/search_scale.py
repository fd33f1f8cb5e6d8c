"""Search at catalogue scale: what a marketplace would ask of the embedded index, per size N.

    .venv/bin/python benchmarks/search_scale.py [--sizes 10000,100000] [--quantization none]
        [--queries 200] [--dataset DIR] [--memory-limit-gb 1.5]

For each N, in one run:
  build       N images written through the worker's own write step (IndexingPipeline.write:
              per-image clocks, category validation, the index, the validator's evidence), in
              micro-batches of LOOKALIKE_BATCH_SIZE. Vectors: real embeddings of the shared images
              (the configured encoder) plus small noise; 10 categories; 500 sellers; payloads
              as the worker writes them. Then the HNSW graph is brought up to date.
  start-up    `lookalike worker` on that data dir, from launch to ready (/health answers and the
              consumer group is joined); its RSS once searches ran; the index's size on disk.
              With --memory-limit-gb the worker at N runs in a memory cgroup with that limit
              (its mapped index pages count against it too) and the group's peak is printed
  search      through the HTTP API, one client: by id and by image, unfiltered, with a
              category filter (10% of the catalogue) and a seller filter (0.2%): p50 / p99
              ms, and recall@10 against exact search (numpy over all N vectors)
  8 clients   by-id searches from 8 threads for --seconds: queries/s, vs 1 client
  ingest      real images published to Kafka and embedded by the worker: images/s at N vs a
              second worker on an empty index (same images and settings), in alternating
              rounds with both up, so load from elsewhere falls on both sides
  crash       more images published, the worker SIGKILLed half-way through them and started
              again: every image is then indexed exactly once (the count is N + all published,
              each new id answers) after the replay of what was not committed

Figures are ratios against a baseline measured in the same run where one exists (exact search
for recall, an empty index for ingest, one client for throughput): these machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _dataset import DEFAULT_DATASET, RESULTS, labelled_images

from lookalike.encoders import configure_threads, encoder_from_settings
from lookalike.evaluation import embed_folder
from lookalike.events import ConsumedMessage, ImageUploaded, InlineSource
from lookalike.indexing import BatchResult, IndexingPipeline, PreparedUpload
from lookalike.kafka.local_broker import free_port, start_local_broker, stop_local_broker
from lookalike.kafka.publisher import UploadPublisher
from lookalike.settings import Settings
from lookalike.streams.runtime import Runtime

SELLERS = 500
NOISE = 0.35  # per-dimension sigma relative to 1/sqrt(dim): neighbours stay near their image


def embeddings(settings: Settings, dataset: Path) -> tuple[np.ndarray, list[str], list[Path], str]:
    """Real embeddings of the shared images (cached in benchmarks/results)."""
    encoder = encoder_from_settings(settings, compile=False)
    pairs = labelled_images(dataset)
    cache = RESULTS / f"embeddings-{encoder.version}-{len(pairs)}.npy"
    if cache.exists():
        vectors = np.load(cache)
    else:
        print(f"embedding {len(pairs)} images with {encoder.version} (cached afterwards)")
        vectors = embed_folder(encoder, pairs)
        RESULTS.mkdir(exist_ok=True)
        np.save(cache, vectors)
    return vectors, [c for _, c in pairs], [p for p, _ in pairs], encoder.version


def catalogue(base: np.ndarray, labels: list[str], n: int, seed: int = 0):
    """N vectors around the real ones, with categories (10) and sellers (500)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n) % len(base)
    noise = rng.normal(0.0, NOISE / np.sqrt(base.shape[1]), (n, base.shape[1]))
    vectors = base[rows] + noise.astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    categories = [labels[r] for r in rows]
    sellers = [f"seller-{s}" for s in rng.integers(0, SELLERS, n)]
    return vectors.astype(np.float32), categories, sellers


def upload(i: int, category: str, seller: str) -> ImageUploaded:
    return ImageUploaded(
        image_id=f"img-{i}",
        listing_id=f"listing-{i // 3}",
        seller_id=seller,
        category=category,
        attributes={"brand": f"brand-{i % 97}", "price": 10 + i % 500, "size": "M"},
        image={"kind": "url", "url": f"https://cdn.example.com/images/{i}.jpg"},
    )


def build(
    pipeline: IndexingPipeline, version: str, vectors, categories, sellers, batch: int
) -> list[float]:
    """Write the catalogue through the write step; returns images/s per 5% of the build."""
    rates, window_start, window_n = [], time.perf_counter(), 0
    step = max(batch, len(vectors) // 20)
    targets = dict(pipeline.targets)
    for start in range(0, len(vectors), batch):
        items = [
            PreparedUpload(
                ConsumedMessage("bench.uploads", 0, i, b""),
                upload(i, categories[i], sellers[i]),
                {},
                800,
                800,
                f"{i:064x}",
            )
            for i in range(start, min(start + batch, len(vectors)))
        ]
        result = BatchResult(
            items=list(items),
            targets=targets,
            primary=version,
            vectors={version: list(vectors[start : start + len(items)])},
        )
        pipeline.write(result)
        window_n += len(items)
        if window_n >= step or start + batch >= len(vectors):
            rates.append(window_n / (time.perf_counter() - window_start))
            window_start, window_n = time.perf_counter(), 0
    return rates


def exact_top(vectors: np.ndarray, query: np.ndarray, mask: np.ndarray | None, k: int, skip: int):
    scores = vectors @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    if skip >= 0:
        scores[skip] = -np.inf
    top = np.argpartition(-scores, k)[:k]
    return {f"img-{i}" for i in top[np.argsort(-scores[top])] if np.isfinite(scores[i])}


class MemoryCap:
    """A memory cgroup (v2 or v1) for the worker at N: a limit on all it holds, the index's
    mapped pages included, which the kernel then takes back instead of letting RSS grow."""

    def __init__(self, limit_bytes: int, name: str) -> None:
        self.path = own_memory_cgroup() / name
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as e:
            raise SystemExit(f"--memory-limit-gb needs a writable memory cgroup: {e}") from e
        self.v2 = (self.path / "memory.max").exists()
        limit = "memory.max" if self.v2 else "memory.limit_in_bytes"
        (self.path / limit).write_text(str(limit_bytes))

    def enter(self) -> None:
        """Run in the child before it execs (Popen's preexec_fn)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mib(self) -> float:
        peak = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / peak).read_text()) / 2**20

    def remove(self) -> None:
        with contextlib.suppress(OSError):  # a v1 group still charged for pages: left behind
            self.path.rmdir()


def own_memory_cgroup() -> Path:
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # v2: one hierarchy
        relative = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        return Path("/sys/fs/cgroup") / relative.lstrip("/")
    relative = next(line.split(":", 2)[2] for line in lines if ":memory:" in line)
    return Path("/sys/fs/cgroup/memory") / relative.lstrip("/")


def drop_cached(folder: Path) -> None:
    """Evict the folder's files from the page cache, so the capped worker's reads are charged
    to its cgroup (pages cached by the build would be charged to this process)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class Worker:
    def __init__(
        self, data_dir: Path, bootstrap: str, env: dict[str, str], cap: MemoryCap | None = None
    ) -> None:
        self.cap = cap
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"worker-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
        environment |= env | {"LOOKALIKE_KAFKA_BOOTSTRAP": bootstrap}
        self.started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lookalike",
                    "worker",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(self.port),
                ],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=cap.enter if cap else None,
            )
        wait_until(self.ready, 600, 0.05)
        self.startup_seconds = time.perf_counter() - self.started

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            health = httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
        # The worker's own ready line (lookalike.streams.worker.READY): the group is joined.
        return health and b"ready: consuming as group" in self.log_path.read_bytes()

    def memory_mib(self) -> tuple[float, float]:
        """(RSS, of which anonymous): the rest is file-backed (libraries, the index's mapped
        files), page cache the kernel can take back under memory pressure."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["RssAnon"]

    def indexed(self) -> int:
        stats = httpx.get(f"{self.url}/stats", timeout=30).json()
        return int(stats["indexed"].get(stats["serving_version"], 0))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout}s")


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ms = sorted(x * 1000 for x in latencies)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]


def search_rows(
    worker: Worker, vectors, categories, sellers, files: list[Path], queries: int, seed: int
) -> list[dict[str, Any]]:
    """Latency first, recall after: exact search (numpy over all N vectors, both cores) must not
    run between the timed requests."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    cat_of, seller_of = np.asarray(categories), np.asarray(sellers)
    rows = []
    client = httpx.Client(base_url=worker.url, timeout=60)
    for mode in ("id", "image"):
        for label, field in (
            ("unfiltered", None),
            ("category 10%", "category"),
            ("seller 0.2%", "seller_id"),
        ):
            latencies, answers = [], []
            for _ in range(queries):
                i = int(rng.integers(n))
                value = {"category": categories[i], "seller_id": sellers[i]}.get(field or "")
                conditions = {field: value} if field else {}
                started = time.perf_counter()
                if mode == "id":
                    response = client.post(
                        "/search", json={"image_id": f"img-{i}", "k": 10, "filter": conditions}
                    )
                else:
                    path = files[i % len(files)]
                    response = client.post(
                        "/search",
                        files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                        data={"k": "10", **conditions},
                    )
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                answers.append((i, value, {r["image_id"] for r in response.json()["results"]}))
            recalls = []
            if mode == "id":
                for i, value, found in answers:
                    mask = None
                    if field == "category":
                        mask = cat_of == value
                    elif field == "seller_id":
                        mask = seller_of == value
                    expected = exact_top(vectors, vectors[i], mask, 10, i)
                    if expected:  # a seller with this one image has no neighbour to find
                        recalls.append(len(found & expected) / len(expected))
            p50, p99 = percentiles(latencies)
            rows.append(
                {
                    "query": f"by {mode}, {label}",
                    "p50_ms": round(p50, 1),
                    "p99_ms": round(p99, 1),
                    "recall@10": round(statistics.mean(recalls), 4) if recalls else None,
                }
            )
    client.close()
    return rows


def throughput(worker: Worker, n: int, clients: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def run(slot: int) -> None:
        rng = np.random.default_rng(slot)
        with httpx.Client(base_url=worker.url, timeout=60) as client:
            while time.monotonic() < stop:
                i = int(rng.integers(n))
                client.post("/search", json={"image_id": f"img-{i}", "k": 10}).raise_for_status()
                counts[slot] += 1

    threads = [threading.Thread(target=run, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def inline_uploads(
    files: list[Path], labels: list[str], ids: str, listings: str, seller: str
) -> list[ImageUploaded]:
    """The images as inline uploads, ids ``{ids}-{i}`` and listings ``{listings}-{i}``."""
    return [
        ImageUploaded(
            image_id=f"{ids}-{i}",
            listing_id=f"{listings}-{i}",
            seller_id=seller,
            category=label,
            image=InlineSource(data=path.read_bytes()),
        )
        for i, (path, label) in enumerate(zip(files, labels, strict=True))
    ]


def publish(settings: Settings, bootstrap: str, events: list[ImageUploaded]) -> None:
    with UploadPublisher(settings, bootstrap) as publisher:
        for event in events:
            publisher.publish(event)
        publisher.flush()


def ingest(worker: Worker, settings: Settings, bootstrap: str, files, labels, tag: str) -> float:
    """Publish the images as inline uploads; images/s until the worker has indexed them all."""
    before = worker.indexed()
    events = inline_uploads(files, labels, f"ingest-{tag}", f"l-{tag}", "ingest")
    started = time.perf_counter()
    publish(settings, bootstrap, events)
    wait_until(lambda: worker.indexed() >= before + len(events), 1200, 0.2)
    return len(events) / (time.perf_counter() - started)


def ingest_pair(
    at_n: tuple[Worker, Settings],
    empty: tuple[Worker, Settings],
    bootstrap: str,
    files,
    labels,
    rounds: int = 4,
) -> tuple[float, float]:
    """Images/s at N and on an empty index, in alternating rounds (N, empty, empty, N, ...)
    with both workers up, so a change in the machine's load falls on both sides alike."""
    chunk = max(1, len(files) // rounds)
    seconds = {"n": 0.0, "empty": 0.0}
    for side, (worker, settings) in (("n", at_n), ("empty", empty)):
        ingest(worker, settings, bootstrap, files[:16], labels[:16], f"{side}-warm")
    for r in range(rounds):
        part = slice(r * chunk, (r + 1) * chunk)
        order = [("n", at_n), ("empty", empty)]
        for side, (worker, settings) in order if r % 2 == 0 else order[::-1]:
            rate = ingest(worker, settings, bootstrap, files[part], labels[part], f"{side}-{r}")
            seconds[side] += chunk / rate
    return rounds * chunk / seconds["n"], rounds * chunk / seconds["empty"]


def crash_check(
    worker: Worker,
    data: Path,
    env: dict[str, str],
    settings: Settings,
    bootstrap: str,
    files: list[Path],
    labels: list[str],
) -> tuple[Worker, dict[str, Any]]:
    """SIGKILL the worker half-way through an ingest; restart; every image exactly once."""
    before = worker.indexed()
    events = inline_uploads(files, labels, "crash", "l-crash", "crash")
    publish(settings, bootstrap, events)
    wait_until(lambda: worker.indexed() >= before + len(events) // 2, 600, 0.1)
    at_kill = worker.indexed() - before
    worker.process.kill()
    worker.process.wait()
    restarted = Worker(data, bootstrap, env, worker.cap)
    wait_until(lambda: restarted.indexed() >= before + len(events), 900, 0.5)
    time.sleep(5)  # anything replayed twice would show now
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        missing = [
            e.image_id for e in events if client.get(f"/images/{e.image_id}").status_code != 200
        ]
    return restarted, {
        "published": len(events),
        "indexed_when_killed": at_kill,
        "count_after_restart": restarted.indexed() - before,
        "missing": len(missing),
        "restart_to_ready_s": round(restarted.startup_seconds, 1),
    }


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def empty_worker(root: Path, n: int, bootstrap: str, quantization: str) -> tuple[Worker, Settings]:
    """A worker on an empty index beside the one at N (its own topics), for the ingest baseline."""
    prefix = f"scale{n}-empty"
    env = {
        "LOOKALIKE_QUANTIZATION": quantization,
        "LOOKALIKE_TOPIC_PREFIX": prefix,
        "LOOKALIKE_APP_ID": prefix,
    }
    worker = Worker(root / f"n{n}-empty", bootstrap, env)
    client = Settings(data_dir=root / "client", kafka_bootstrap=bootstrap, topic_prefix=prefix)
    return worker, client


def run_size(
    args, n: int, base, labels, files, version: str, root: Path, bootstrap: str
) -> dict[str, Any]:
    data = root / f"n{n}"
    env = {
        "LOOKALIKE_QUANTIZATION": args.quantization,
        "LOOKALIKE_LOG_LEVEL": "info",
        "LOOKALIKE_TOPIC_PREFIX": f"scale{n}",
        "LOOKALIKE_APP_ID": f"scale{n}",
    }
    settings = Settings(data_dir=data, quantization=args.quantization, compile=False)
    vectors, categories, sellers = catalogue(base, labels, n)
    runtime = Runtime(settings)
    assert runtime.encoder.version == version
    started = time.perf_counter()
    rates = build(
        runtime.pipeline, version, vectors, categories, sellers, runtime.tuning.batch_size
    )
    build_seconds = time.perf_counter() - started
    optimize_started = time.perf_counter()
    runtime.index.optimize(version)  # after the background build running now, if any
    optimize_seconds = time.perf_counter() - optimize_started
    runtime.close()
    cap = None
    if args.memory_limit_gb:
        cap = MemoryCap(int(args.memory_limit_gb * 1e9), f"lookalike-scale-{os.getpid()}-{n}")
        drop_cached(data)
    worker = Worker(data, bootstrap, env, cap)
    try:
        rows = search_rows(worker, vectors, categories, sellers, files, args.queries, seed=n)
        one = throughput(worker, n, 1, args.seconds)
        eight = throughput(worker, n, args.clients, args.seconds)
        rss, anon = worker.memory_mib()
        sample = min(len(files), args.ingest)
        client_settings = Settings(
            data_dir=root / "client", kafka_bootstrap=bootstrap, topic_prefix=f"scale{n}"
        )
        empty, empty_settings = empty_worker(root, n, bootstrap, args.quantization)
        try:
            at_n, empty_ingest = ingest_pair(
                (worker, client_settings),
                (empty, empty_settings),
                bootstrap,
                files[:sample],
                labels[:sample],
            )
        finally:
            empty.stop()
        worker, crash = crash_check(
            worker,
            data,
            env,
            client_settings,
            bootstrap,
            files[sample : 2 * sample],
            labels[sample : 2 * sample],
        )
    finally:
        worker.stop()
        peak = cap.peak_mib() if cap else None
        if cap:
            cap.remove()
    return {
        "n": n,
        "memory_limit_gb": args.memory_limit_gb,
        "cgroup_peak_mib": None if peak is None else round(peak),
        "build_images_per_s": round(n / build_seconds, 1),
        "build_first_5pct_per_s": round(rates[0], 1),
        "build_last_5pct_per_s": round(rates[-1], 1),
        "graph_catch_up_s": round(optimize_seconds, 1),
        "startup_s": round(worker.startup_seconds, 1),
        "worker_rss_mib": round(rss),
        "worker_anon_mib": round(anon),
        "disk_mib": round(disk_mib(data / "index")),
        "searches": rows,
        "queries_per_s_1_client": round(one, 1),
        f"queries_per_s_{args.clients}_clients": round(eight, 1),
        "ingest_images_per_s": round(at_n, 1),
        "ingest_empty_images_per_s": round(empty_ingest, 1),
        "ingest_vs_empty": round(at_n / empty_ingest, 2),
        "startup_empty_s": round(empty.startup_seconds, 1),
        "crash": crash,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--quantization", choices=["none", "int8"], default="int8")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ingest", type=int, default=256, help="Images ingested at N and empty.")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="Run the worker at N in a memory cgroup with this limit (GB, 10^9 bytes).",
    )
    parser.add_argument("--keep", type=Path, default=None, help="Keep the data dirs here.")
    args = parser.parse_args()
    configure_threads(0, reserve=1)
    settings = Settings(compile=False)
    base, labels, files, version = embeddings(settings, args.dataset)
    root = args.keep or Path(tempfile.mkdtemp(prefix="lookalike-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    broker_settings = Settings(data_dir=root / "broker")
    broker, _ = start_local_broker(broker_settings)
    results = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            result = run_size(args, n, base, labels, files, version, root, broker.bootstrap)
            results.append(result)
            print_result(result, args.clients)
    finally:
        stop_local_broker(broker_settings)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"search_scale-{args.quantization}.json"
    out.write_text(json.dumps({"quantization": args.quantization, "sizes": results}, indent=2))
    print(f"\nwritten to {out}")


def print_result(r: dict[str, Any], clients: int) -> None:
    print(f"\n=== N = {r['n']:,} ===")
    print(
        f"build {r['build_images_per_s']:.0f} images/s through the write step "
        f"(first 5% {r['build_first_5pct_per_s']:.0f}/s, last 5% "
        f"{r['build_last_5pct_per_s']:.0f}/s: "
        f"{r['build_last_5pct_per_s'] / r['build_first_5pct_per_s']:.2f}x); "
        f"graph catch-up {r['graph_catch_up_s']:.0f}s"
    )
    print(
        f"start-up to ready {r['startup_s']:.1f}s (empty index {r['startup_empty_s']:.1f}s), "
        f"worker RSS {r['worker_rss_mib']} MiB "
        f"({r['worker_anon_mib']} anonymous), "
        f"index on disk {r['disk_mib']} MiB"
    )
    if r["memory_limit_gb"]:
        print(
            f"worker at N in a memory cgroup limited to {r['memory_limit_gb']} GB: peak "
            f"{r['cgroup_peak_mib']} MiB charged (its own memory and the index pages it read; "
            "libraries already cached are not charged)"
        )
    print(f"{'query (HTTP, k=10)':<30} {'p50 ms':>8} {'p99 ms':>8} {'recall@10 vs exact':>19}")
    for row in r["searches"]:
        recall = "-" if row["recall@10"] is None else f"{row['recall@10']:.3f}"
        print(f"{row['query']:<30} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {recall:>19}")
    many = r[f"queries_per_s_{clients}_clients"]
    print(
        f"by-id searches: 1 client {r['queries_per_s_1_client']:.0f}/s, {clients} clients "
        f"{many:.0f}/s ({many / r['queries_per_s_1_client']:.2f}x)"
    )
    print(
        f"ingest (Kafka -> worker, real encoder) {r['ingest_images_per_s']:.1f} images/s = "
        f"{r['ingest_vs_empty']:.2f}x ingest on an empty index"
    )


if __name__ == "__main__":
    main()
