"""Unit tests for lookalike.local_broker with a real Tansu process on loopback."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.errors import BrokerUnavailable
from lookalike.kafka.local_broker import (
    LocalBroker,
    port_open,
    resolve_bootstrap,
    running_broker,
    start_local_broker,
    stop_local_broker,
)
from lookalike.settings import Settings


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has no command line any more.
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


@pytest.fixture
def settings(settings_env: Path) -> Iterator[Settings]:
    """Settings with a private data dir; whatever broker a test starts there is stopped."""
    s = Settings()
    try:
        yield s
    finally:
        recorded: int | None = None
        try:
            recorded = json.loads(s.broker_file.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pass
        stop_local_broker(s)
        if recorded is not None and pid_alive(recorded):  # belt and braces: only our own pid
            os.kill(recorded, signal.SIGKILL)


def test_start_reuse_resolve_stop(settings: Settings) -> None:
    broker, started = start_local_broker(settings)
    assert started is True
    assert broker.host == "127.0.0.1" and broker.port > 0
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert pid_alive(broker.pid)
    assert port_open(broker.host, broker.port)

    recorded = json.loads(settings.broker_file.read_text())
    assert LocalBroker(**recorded) == broker
    assert Path(broker.log_file).parent == settings.data_dir

    again, started_again = start_local_broker(settings)
    assert started_again is False
    assert again == broker  # same pid, same address

    assert resolve_bootstrap(settings) == broker.bootstrap
    assert running_broker(settings.broker_file) == broker

    assert stop_local_broker(settings) is True
    assert not pid_alive(broker.pid)
    assert not settings.broker_file.exists()
    assert running_broker(settings.broker_file) is None
    assert stop_local_broker(settings) is False  # nothing left to stop


def test_resolve_without_broker(settings: Settings) -> None:
    with pytest.raises(BrokerUnavailable) as info:
        resolve_bootstrap(settings)
    message = str(info.value)
    assert "`lookalike up`" in message
    assert "LOOKALIKE_KAFKA_BOOTSTRAP" in message
    assert str(settings.data_dir) in message


def test_stale_broker_file_is_ignored(settings: Settings) -> None:
    # A broker that died (pid gone, port closed) leaves its file behind: it must not be used.
    settings.data_dir.mkdir(parents=True)
    stale = LocalBroker(pid=2**22 + 12345, host="127.0.0.1", port=1, binary="tansu", log_file="x")
    settings.broker_file.write_text(json.dumps(stale.__dict__))
    assert running_broker(settings.broker_file) is None
    with pytest.raises(BrokerUnavailable):
        resolve_bootstrap(settings)
    assert stop_local_broker(settings) is False
    assert not settings.broker_file.exists()


def test_garbage_broker_file_is_ignored(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    settings.broker_file.write_text("{not json")
    assert running_broker(settings.broker_file) is None
    with pytest.raises(BrokerUnavailable):
        resolve_bootstrap(settings)


def test_kafka_bootstrap_setting_wins(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_KAFKA_BOOTSTRAP", "kafka1:9092,kafka2:9092")
    settings = Settings()
    assert not settings.broker_file.exists()
    assert resolve_bootstrap(settings) == "kafka1:9092,kafka2:9092"


def test_data_dirs_are_independent(settings: Settings, tmp_path: Path) -> None:
    broker, started = start_local_broker(settings)
    assert started
    other = Settings(data_dir=tmp_path / "other")
    with pytest.raises(BrokerUnavailable):
        resolve_bootstrap(other)
    assert resolve_bootstrap(settings) == broker.bootstrap
