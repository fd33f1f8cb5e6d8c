"""``GET /metrics``: the worker's numbers in Prometheus' text format.

Counts and levels are read from the same snapshot ``GET /stats`` answers (taken once per
scrape), so the two always agree; distributions come from :class:`.Instruments`. Conventions:
base units (seconds, bytes), ``_total`` on counters, one metric with labels rather than name
variants (``lookalike_dead_letters_total{stage="fetch"}``, not ``..._fetch_total``).

Counters from durable state (dead letters, alerts, the click loop's online metrics) keep
counting across restarts; the worker's own counters (events consumed, images indexed, batches)
start at 0 with each process, which Prometheus' ``rate()`` handles as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .instruments import Instruments

#: What generate_latest writes (Prometheus negotiates nothing more for the text format).
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _worker(stats: Mapping[str, Any]) -> Iterator[Metric]:
    worker = stats.get("worker", {})
    family = _counter(
        "lookalike_events_consumed", "Upload-topic events this worker process consumed."
    )
    family.add_metric([], _number(worker.get("events_consumed")))
    yield family
    family = _counter(
        "lookalike_image_events",
        "Upload-topic events by what they did to the index (stale: superseded by a newer "
        "event for the same image).",
        ["outcome"],
    )
    for outcome in ("indexed", "updated", "removed"):
        family.add_metric([outcome], _number(worker.get(f"images_{outcome}")))
    family.add_metric(["stale"], _number(worker.get("stale_events")))
    yield family
    family = _counter("lookalike_batches", "Micro-batches this worker process completed.")
    family.add_metric([], _number(worker.get("batches")))
    yield family
    family = _counter(
        "lookalike_backfill_embedded_images",
        "Images this worker process re-embedded for a rollout candidate.",
    )
    family.add_metric([], _number(worker.get("backfill_embedded")))
    yield family
    family = _counter(
        "lookalike_validation_verdicts", "Category checks of uploads, by verdict.", ["verdict"]
    )
    for verdict, count in sorted(stats.get("validation", {}).items()):
        family.add_metric([verdict], _number(count))
    yield family


def _index(stats: Mapping[str, Any]) -> Iterator[Metric]:
    family = _gauge(
        "lookalike_indexed_images", "Images in the index, per model version.", ["version"]
    )
    for version, count in sorted(stats.get("indexed", {}).items()):
        family.add_metric([version], _number(count))
    yield family
    family = _gauge(
        "lookalike_model_version_info",
        "Model versions in the registry (value 1), with their state.",
        ["version", "state"],
    )
    for record in stats.get("versions", []):
        family.add_metric([record.get("version", ""), record.get("state", "")], 1.0)
    yield family
    family = _gauge("lookalike_tombstones", "Removed images whose removal is remembered.")
    family.add_metric([], _number(stats.get("tombstones")))
    yield family


def _dead_letters_and_alerts(stats: Mapping[str, Any]) -> Iterator[Metric]:
    family = _counter(
        "lookalike_dead_letters",
        "Dead letters recorded (durable: the ledger), by the stage that rejected the input.",
        ["stage"],
    )
    for stage, count in sorted(stats.get("dead_letters_by_stage", {}).items()):
        family.add_metric([stage], _number(count))
    yield family
    family = _gauge("lookalike_alerts", "Category alerts, by review status.", ["status"])
    counts = stats.get("alerts", {})
    for status in sorted({"open", "confirmed", "dismissed", *counts}):
        family.add_metric([status], _number(counts.get(status, 0)))
    yield family


def _rollout(stats: Mapping[str, Any]) -> Iterator[Metric]:
    rollout = stats.get("rollout") or {}
    backfill = rollout.get("backfill") or {}
    candidate = rollout.get("candidate")
    progress = _gauge(
        "lookalike_rollout_backfill_progress_ratio",
        "Share of the serving version's images the candidate's backfill has scanned (0-1).",
        ["version"],
    )
    scanned = _gauge(
        "lookalike_rollout_backfill_scanned_images",
        "Images of the serving version the candidate's backfill has scanned.",
        ["version"],
    )
    total = _gauge(
        "lookalike_rollout_backfill_source_images",
        "Images of the serving version the candidate's backfill must scan.",
        ["version"],
    )
    eta = _gauge(
        "lookalike_rollout_backfill_eta_seconds",
        "Estimated seconds until the candidate's backfill is done.",
        ["version"],
    )
    if candidate and backfill:
        source = _number(backfill.get("total"))
        done = 1.0 if backfill.get("done") else _number(backfill.get("scanned")) / (source or 1)
        progress.add_metric([candidate], min(done, 1.0))
        scanned.add_metric([candidate], _number(backfill.get("scanned")))
        total.add_metric([candidate], _number(backfill.get("total")))
        if backfill.get("eta_seconds") is not None:
            eta.add_metric([candidate], _number(backfill.get("eta_seconds")))
    yield from (progress, scanned, total, eta)


def _clicks(stats: Mapping[str, Any]) -> Iterator[Metric]:
    api = stats.get("api", {})
    family = _counter(
        "lookalike_searches",
        "Searches answered, by whether their SearchServed record reached Kafka.",
        ["logged"],
    )
    family.add_metric(["true"], _number(api.get("searches_logged")))
    family.add_metric(["false"], _number(api.get("searches_unlogged")))
    yield family
    family = _counter(
        "lookalike_clicks_received",
        "Clicks posted to the API, by outcome (refused: Kafka did not take them).",
        ["outcome"],
    )
    family.add_metric(["accepted"], _number(api.get("clicks_accepted")))
    family.add_metric(["refused"], _number(api.get("clicks_refused")))
    yield family
    # CTR and MRR inputs per model version (durable; CTR = clicked / searches over a window).
    online = stats.get("online", {})
    names = {
        "searches": ("lookalike_online_searches", "Searches the click loop saw, per version."),
        "clicked_searches": (
            "lookalike_online_clicked_searches",
            "Searches with at least one click, per version (CTR's numerator).",
        ),
        "clicks": ("lookalike_online_clicks", "Clicks joined to their search, per version."),
        "reciprocal_rank_sum": (
            "lookalike_online_first_click_reciprocal_rank",
            "Sum over searches of 1 / rank of the first click (MRR's numerator).",
        ),
    }
    for key, (name, doc) in names.items():
        family = _counter(name, doc, ["version"])
        for version, row in sorted(online.items()):
            family.add_metric([version], _number(row.get(key)))
        yield family
    clicks = stats.get("clicks", {})
    family = _counter("lookalike_training_pairs", "Training pairs written to the pair files.")
    family.add_metric([], _number(clicks.get("training_pairs")))
    yield family
    family = _gauge(
        "lookalike_click_join_pending",
        "Click-join state: clicks waiting for their search, pairs not yet confirmed sent.",
        ["kind"],
    )
    family.add_metric(["clicks_waiting"], _number(clicks.get("pending")))
    family.add_metric(["unsent_pairs"], _number(clicks.get("unsent_pairs")))
    yield family


def _lag(stats: Mapping[str, Any]) -> Iterator[Metric]:
    partitions = (stats.get("consumer_lag") or {}).get("partitions", [])
    lag = _gauge(
        "lookalike_consumer_lag_messages",
        "Messages of a partition the group has not committed: end - committed, end raised to "
        "what was read (a lower bound while behind on Tansu, see the README).",
        ["topic", "partition"],
    )
    end = _gauge(
        "lookalike_consumer_end_offset",
        "End offset of a partition: the broker's answer, raised to the last read + 1.",
        ["topic", "partition"],
    )
    committed = _gauge(
        "lookalike_consumer_committed_offset",
        "Offset the consumer group resumes a partition from.",
        ["topic", "partition"],
    )
    for p in partitions:
        labels = [p["topic"], str(p["partition"])]
        if p.get("lag") is not None:
            lag.add_metric(labels, _number(p["lag"]))
        if p.get("end_offset") is not None:
            end.add_metric(labels, _number(p["end_offset"]))
        if p.get("committed") is not None:
            committed.add_metric(labels, _number(p["committed"]))
    yield from (lag, end, committed)


def _health(stats: Mapping[str, Any]) -> Iterator[Metric]:
    ready = stats.get("ready") or {}
    family = _gauge("lookalike_ready", "1 when the worker can do its job (GET /ready), else 0.")
    family.add_metric([], 1.0 if ready.get("ready") else 0.0)
    yield family
    family = _gauge("lookalike_ready_check", "Readiness of each part (1 ok, 0 failing).", ["part"])
    for part, check in sorted((ready.get("checks") or {}).items()):
        family.add_metric([part], 1.0 if check.get("ok") else 0.0)
    yield family
    thumbnails = stats.get("thumbnails") or {}
    family = _gauge("lookalike_thumbnail_cache_bytes", "Disk the thumbnail cache takes.")
    family.add_metric([], _number(thumbnails.get("bytes")))
    yield family
    family = _gauge(
        "lookalike_worker_start_time_seconds", "When this worker process started (Unix time)."
    )
    family.add_metric([], _number((stats.get("worker") or {}).get("started_at")))
    yield family


def families(stats: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families of one ``/stats`` snapshot."""
    for part in (_worker, _index, _dead_letters_and_alerts, _rollout, _clicks, _lag, _health):
        yield from part(stats)


class _Scrape:
    """One scrape: a snapshot's families, then the instruments' (a prometheus Collector)."""

    def __init__(self, stats: Mapping[str, Any], instruments: Instruments) -> None:
        self.stats = stats
        self.instruments = instruments

    def collect(self) -> Iterator[Metric]:
        yield from families(self.stats)
        yield from self.instruments.collect()


def render(stats: Mapping[str, Any], instruments: Instruments) -> bytes:
    """The text exposition format of one scrape."""
    return generate_latest(_Scrape(stats, instruments))  # type: ignore[arg-type]
