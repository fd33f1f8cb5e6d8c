"""The model-version registry's state machine, on real (in-memory and on-disk) Qdrant."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from lookalike.errors import RolloutError
from lookalike.index import QdrantIndex
from lookalike.rollout import VersionRegistry


@pytest.fixture
def registry() -> VersionRegistry:
    registry = VersionRegistry(QdrantIndex(QdrantClient(":memory:"), prefix="u"))
    registry.bootstrap("v1", "efficientnet-lite0", 8)
    return registry


def states(registry: VersionRegistry) -> dict[str, str]:
    return {r.version: r.state for r in registry.all()}


def test_full_rollout_and_written_versions(registry: VersionRegistry) -> None:
    registry.start("v2", "efficientnet-lite1", 8)
    assert [r.version for r in registry.written()] == ["v1", "v2"]
    serving, previous = registry.promote()
    assert (serving.version, previous.version) == ("v2", "v1")
    assert states(registry) == {"v1": "previous", "v2": "serving"}
    assert [r.version for r in registry.written()] == ["v2", "v1"]  # still dual-written
    registry.retire()
    assert states(registry) == {"v1": "retired", "v2": "serving"}
    assert [r.version for r in registry.written()] == ["v2"]
    assert registry.get("v1").retired_at is not None  # type: ignore[union-attr]


def test_rollback_and_promote_again(registry: VersionRegistry) -> None:
    registry.start("v2", "x", 8)
    registry.promote()
    registry.rollback()
    assert states(registry) == {"v1": "serving", "v2": "candidate"}
    registry.promote()
    assert states(registry) == {"v1": "previous", "v2": "serving"}


def test_abort(registry: VersionRegistry) -> None:
    registry.start("v2", "x", 8)
    assert registry.abort().state == "aborted"
    assert [r.version for r in registry.written()] == ["v1"]
    registry.start("v3", "y", 8)  # a new rollout may start
    assert registry.candidate().version == "v3"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["promote"], "no candidate to promote"),
        (["abort"], "no candidate to abort"),
        (["retire"], "no previous version"),
        (["rollback"], "no previous version"),
        (["start", "start"], "already a candidate"),
        (["start", "promote", "start"], "retire"),
    ],
)
def test_refused_transitions_say_what_to_do(
    registry: VersionRegistry, steps: list[str], message: str
) -> None:
    with pytest.raises(RolloutError, match=message):
        for n, step in enumerate(steps):
            if step == "start":
                registry.start(f"v{n + 2}", "x", 8)
            else:
                getattr(registry, step)()


def test_cannot_start_the_serving_version(registry: VersionRegistry) -> None:
    with pytest.raises(RolloutError, match="already the serving"):
        registry.start("v1", "x", 8)


def test_reconcile_finishes_a_promotion_the_alias_already_made(registry: VersionRegistry) -> None:
    registry.start("v2", "x", 8)
    assert registry.reconcile("v1") is None
    assert "promotion" in (registry.reconcile("v2") or "")
    assert states(registry) == {"v1": "previous", "v2": "serving"}
    assert "rollback" in (registry.reconcile("v1") or "")
    assert states(registry) == {"v1": "serving", "v2": "candidate"}


def test_records_survive_reopening_the_data_dir(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "q"))
    registry = VersionRegistry(QdrantIndex(client, prefix="p"))
    registry.bootstrap("v1", "efficientnet-lite0", 8)
    record = registry.start("v2", "/models/head.pt", 8)
    record.backfill = {"cursor": "abc", "embedded": 5}
    registry.save(record)
    client.close()
    reopened = VersionRegistry(QdrantIndex(QdrantClient(path=str(tmp_path / "q")), prefix="p"))
    again = reopened.get("v2")
    assert again is not None and again.state == "candidate" and again.encoder == "/models/head.pt"
    assert again.backfill == {"cursor": "abc", "embedded": 5}
    assert reopened.serving().version == "v1"  # type: ignore[union-attr]


def test_an_anchor_stays_written_and_lets_the_next_rollout_start(
    registry: VersionRegistry,
) -> None:
    registry.start("v2", "x", 8)
    registry.promote()
    assert registry.anchor().version == "v1"
    assert states(registry) == {"v1": "anchor", "v2": "serving"}
    assert [r.version for r in registry.written()] == ["v2", "v1"]
    registry.start("v3", "y", 8)  # the anchor is not a previous version in the way
    registry.promote()
    assert [r.version for r in registry.written()] == ["v3", "v2", "v1"]
    with pytest.raises(RolloutError, match="v1 is already the anchor"):
        registry.anchor()
    registry.retire()  # the previous (v2), not the anchor
    assert states(registry) == {"v1": "anchor", "v2": "retired", "v3": "serving"}
    registry.retire(anchor=True)
    assert [r.version for r in registry.written()] == ["v3"]
    with pytest.raises(RolloutError, match="no anchor version to retire"):
        registry.retire(anchor=True)
    with pytest.raises(RolloutError, match="no previous version to keep as the anchor"):
        registry.anchor()
