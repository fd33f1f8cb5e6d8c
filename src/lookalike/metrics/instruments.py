"""Distributions observed where things happen: batch stage durations, search latency, batch
sizes, thumbnail times. Counts and levels come from the stats snapshot instead
(:mod:`.exposition`), so /metrics and /stats cannot disagree.

One :class:`Instruments` per worker (never prometheus_client's global registry: tests run
several workers' parts in one process).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import Histogram, ProcessCollector
from prometheus_client.metrics_core import Metric

#: A stage of a micro-batch takes milliseconds (decode of a few images) to tens of seconds
#: (the first batch waits for the encoder's compile).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SEARCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Instruments:
    def __init__(self) -> None:
        self.batch_stage = Histogram(
            "lookalike_batch_stage_duration_seconds",
            "Time a micro-batch spent in each stage of the indexing pipeline.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=None,
        )
        self.batch = Histogram(
            "lookalike_batch_duration_seconds",
            "Time from a micro-batch's start to its offsets being committable.",
            buckets=STAGE_BUCKETS,
            registry=None,
        )
        self.batch_events = Histogram(
            "lookalike_batch_events",
            "Events per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=None,
        )
        self.search = Histogram(
            "lookalike_search_duration_seconds",
            "Time to answer a search (decode, embed, index query), by query kind.",
            ["query"],
            buckets=SEARCH_BUCKETS,
            registry=None,
        )
        self.thumbnail = Histogram(
            "lookalike_thumbnail_duration_seconds",
            "Time to serve a thumbnail, from the cache or made from the image's source.",
            ["source"],
            buckets=SEARCH_BUCKETS,
            registry=None,
        )
        #: process_cpu_seconds_total, process_resident_memory_bytes, open fds, start time.
        self.process = ProcessCollector(registry=None)

    def observe_batch(self, seconds: float, stages: Mapping[str, float], events: int) -> None:
        self.batch.observe(seconds)
        self.batch_events.observe(events)
        for stage, spent in stages.items():
            self.batch_stage.labels(stage=stage).observe(spent)

    def collect(self) -> Iterator[Metric]:
        for instrument in (
            self.batch_stage,
            self.batch,
            self.batch_events,
            self.search,
            self.thumbnail,
            self.process,
        ):
            yield from instrument.collect()
