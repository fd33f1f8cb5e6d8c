"""`lookalike versions` without a worker (reads the data dir), and the update/remove/rollout
commands' own checks and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient

from lookalike.cli import main
from lookalike.index import QdrantIndex
from lookalike.index.edge import EdgeIndex
from lookalike.kafka.local_broker import free_port
from lookalike.rollout import VersionRegistry


def test_versions_reads_the_data_dir_when_no_worker_runs(
    settings_env: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    index = EdgeIndex(data / "index", background=False)
    registry = VersionRegistry(index)
    registry.bootstrap("v1", "efficientnet-lite0", 8)
    registry.start("v2", "efficientnet-lite1", 8)
    index.close()
    result = CliRunner().invoke(
        main, ["versions", "--data-dir", str(data), "--port", str(free_port())]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["serving", "v1", "efficientnet-lite0"]
    assert lines[2].split() == ["candidate", "v2", "efficientnet-lite1"]


def test_an_index_of_an_earlier_release_is_to_be_migrated(
    settings_env: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    QdrantIndex(QdrantClient(path=str(data / "qdrant"))).close()
    result = CliRunner().invoke(
        main, ["versions", "--data-dir", str(data), "--port", str(free_port())]
    )
    assert result.exit_code == 1
    assert f"lookalike migrate --data-dir {data}" in result.output


def test_update_needs_something_to_change(settings_env: Path) -> None:
    result = CliRunner().invoke(main, ["update", "img-1"])
    assert result.exit_code == 1
    assert "give --category, --attr KEY=VALUE or --listing" in result.output


@pytest.mark.parametrize("pair", ["novalue", "=x"])
def test_update_rejects_bad_attributes(settings_env: Path, pair: str) -> None:
    result = CliRunner().invoke(main, ["update", "img-1", "--attr", pair])
    assert result.exit_code == 1 and "KEY=VALUE" in result.output


def test_rollout_without_a_worker_says_to_start_it(settings_env: Path) -> None:
    result = CliRunner().invoke(main, ["rollout", "status", "--port", str(free_port())])
    assert result.exit_code == 1
    assert "rollouts run inside the worker" in result.output
