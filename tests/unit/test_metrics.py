"""Prometheus exposition of a stats snapshot: the conventions (base units, ``_total`` counters,
labels not name variants), parsed back by prometheus_client's own parser; and the consumer-lag
arithmetic that stays honest on a broker whose end offsets are wrong (Tansu)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lookalike.metrics import ConsumerLag, Instruments, PartitionLag, render

STATS: dict[str, Any] = {
    "serving_version": "v1",
    "indexed": {"v1": 120, "v2": 40},
    "versions": [
        {"version": "v1", "state": "serving"},
        {"version": "v2", "state": "candidate"},
    ],
    "rollout": {
        "serving": "v1",
        "candidate": "v2",
        "backfill": {"scanned": 40, "total": 120, "percent": 33.3, "eta_seconds": 12.5},
    },
    "tombstones": 3,
    "dead_letters": 7,
    "dead_letters_by_stage": {"decode": 2, "fetch": 4, "parse": 1},
    "alerts": {"open": 2, "confirmed": 1},
    "validation": {"ok": 100, "mismatch": 3, "cannot_judge": 17},
    "online": {
        "v1": {
            "searches": 50,
            "clicked_searches": 30,
            "clicks": 41,
            "ctr": 0.6,
            "mrr": 0.4,
            "reciprocal_rank_sum": 20.0,
        }
    },
    "clicks": {"pending": 1, "unsent_pairs": 0, "training_pairs": 41},
    "consumer_lag": {
        "partitions": [
            PartitionLag("up", 0, broker_end_offset=1, last_read=39, committed=30).as_dict(),
            PartitionLag("up", 1, broker_end_offset=None, last_read=None, committed=None).as_dict(),
        ]
    },
    "thumbnails": {"bytes": 5000},
    "worker": {
        "started_at": 1_700_000_000.0,
        "events_consumed": 130,
        "images_indexed": 120,
        "images_updated": 4,
        "images_removed": 1,
        "stale_events": 2,
        "dead_letters": 7,
        "batches": 9,
        "backfill_embedded": 40,
    },
    "api": {
        "searches_logged": 50,
        "searches_unlogged": 1,
        "clicks_accepted": 41,
        "clicks_refused": 2,
    },
    "ready": {"ready": False, "checks": {"broker": {"ok": True}, "index": {"ok": False}}},
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_snapshot_is_exposed_with_prometheus_conventions() -> None:
    instruments = Instruments()
    instruments.observe_batch(0.8, {"prepare": 0.1, "embed": 0.6, "write": 0.1}, 32)
    instruments.search.labels(query="image").observe(0.05)
    text = render(STATS, instruments).decode()
    samples = _samples(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}

    assert samples[("lookalike_events_consumed_total", ())] == 130
    assert samples[("lookalike_image_events_total", (("outcome", "indexed"),))] == 120
    assert samples[("lookalike_image_events_total", (("outcome", "stale"),))] == 2
    assert samples[("lookalike_indexed_images", (("version", "v2"),))] == 40
    assert samples[("lookalike_dead_letters_total", (("stage", "fetch"),))] == 4
    assert samples[("lookalike_alerts", (("status", "open"),))] == 2
    assert samples[("lookalike_alerts", (("status", "dismissed"),))] == 0  # every status shown
    assert samples[("lookalike_searches_total", (("logged", "false"),))] == 1
    assert samples[("lookalike_clicks_received_total", (("outcome", "refused"),))] == 2
    assert samples[("lookalike_online_clicked_searches_total", (("version", "v1"),))] == 30
    rr = ("lookalike_online_first_click_reciprocal_rank_total", (("version", "v1"),))
    assert samples[rr] == 20
    progress = samples[("lookalike_rollout_backfill_progress_ratio", (("version", "v2"),))]
    assert progress == pytest.approx(40 / 120)
    assert samples[("lookalike_rollout_backfill_eta_seconds", (("version", "v2"),))] == 12.5
    assert samples[("lookalike_consumer_lag_messages", (("partition", "0"), ("topic", "up")))] == 10
    assert samples[("lookalike_consumer_end_offset", (("partition", "0"), ("topic", "up")))] == 40
    assert ("lookalike_consumer_lag_messages", (("partition", "1"), ("topic", "up"))) not in samples
    assert samples[("lookalike_ready", ())] == 0
    assert samples[("lookalike_ready_check", (("part", "index"),))] == 0
    stage = (("le", "1.0"), ("stage", "embed"))
    assert samples[("lookalike_batch_stage_duration_seconds_bucket", stage)] == 1
    assert samples[("lookalike_batch_stage_duration_seconds_count", (("stage", "prepare"),))] == 1
    assert samples[("lookalike_search_duration_seconds_sum", (("query", "image"),))] == 0.05
    assert ("process_cpu_seconds_total", ()) in samples

    label_values = {
        value
        for family in families.values()
        for sample in family.samples
        for key, value in sample.labels.items()
        if key not in ("le", "version", "topic", "partition")
    }
    assert {"fetch", "indexed", "open", "accepted", "embed"} <= label_values
    for name, family in families.items():
        assert re.fullmatch(r"[a-z_]+", name), name
        if family.type == "counter":
            assert all(s.name in (f"{name}_total", f"{name}_created") for s in family.samples)
        if name.startswith("lookalike_") and family.type == "histogram":
            # durations in seconds; counts of things are named for the thing
            assert name.endswith("_seconds") or name == "lookalike_batch_events", name
        # labels, not name variants: no metric is named after a stage, an outcome or a status
        assert not any(name.endswith(f"_{value}") for value in label_values), name


def test_partition_lag_is_honest_on_a_broker_that_undercounts() -> None:
    # Tansu answers "base offset of the last record batch + 1": 1 for 40 records in one batch.
    caught_up = PartitionLag("t", 0, broker_end_offset=1, last_read=39, committed=40)
    assert (caught_up.end_offset, caught_up.lag) == (40, 0)
    behind = PartitionLag("t", 0, broker_end_offset=1, last_read=9, committed=5)
    assert (behind.end_offset, behind.lag) == (10, 5)  # a lower bound: at least 5 to go
    kafka = PartitionLag("t", 0, broker_end_offset=100, last_read=59, committed=50)
    assert (kafka.end_offset, kafka.lag) == (100, 50)  # a truthful broker: the usual lag
    fresh = PartitionLag("t", 0, broker_end_offset=12, last_read=None, committed=None)
    assert fresh.lag == 12  # never committed: everything is to do
    unknown = PartitionLag("t", 0, broker_end_offset=None, last_read=None, committed=None)
    assert unknown.lag is None and unknown.as_dict()["lag"] is None


def test_consumer_lag_keeps_the_last_measurement_when_one_fails() -> None:
    lag = ConsumerLag()
    assert lag.snapshot()["measured_at"] is None
    lag.update([PartitionLag("a", 1, 5, 4, 3), PartitionLag("a", 0, 9, 8, 9)])
    snapshot = lag.snapshot()
    assert [p["partition"] for p in snapshot["partitions"]] == [0, 1]
    assert snapshot["by_topic"] == {"a": 2} and snapshot["error"] is None
    lag.failed("KafkaConnectionError: broker gone")
    after = lag.snapshot()
    assert after["partitions"] == snapshot["partitions"] and "broker gone" in after["error"]
