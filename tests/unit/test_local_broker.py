"""Unit tests for lookalike.local_broker with a real Tansu process on loopback."""

from __future__ import annotations

import json
import os
import signal
import time
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


# --- ownership: each `lookalike up` stops only what it owns ---------------------------------


@pytest.fixture
def other_up() -> Iterator[int]:
    """A live process that looks like another `lookalike up` (its command line says so)."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "lookalike", "up"]
    )
    yield process.pid
    process.kill()
    process.wait()


def test_a_second_up_is_refused_and_leaves_the_first_ones_broker(
    settings: Settings, other_up: int
) -> None:
    from lookalike.kafka.local_broker import BrokerInUse

    broker, started = start_local_broker(settings, owner=other_up)
    assert started and broker.owner_pid == other_up
    with pytest.raises(BrokerInUse) as info:
        start_local_broker(settings, owner=os.getpid())
    assert str(other_up) in str(info.value) and "--data-dir" in str(info.value)
    # What a refused `up` does on its way out: stop only its own broker, which it has none of.
    assert stop_local_broker(settings, owner=os.getpid()) is False
    assert pid_alive(broker.pid) and running_broker(settings.broker_file) == broker
    with pytest.raises(BrokerInUse):  # `lookalike down` too refuses while its `up` lives
        stop_local_broker(settings)


def test_an_up_whose_owner_died_is_adopted(settings: Settings) -> None:
    dead_owner = 2**22 + 4321
    broker, _ = start_local_broker(settings, owner=dead_owner)
    adopted, started = start_local_broker(settings, owner=os.getpid())
    assert not started and adopted.pid == broker.pid and adopted.owner_pid == os.getpid()
    assert stop_local_broker(settings, owner=os.getpid()) is True
    assert not pid_alive(broker.pid)


def test_a_lost_broker_is_said_loudly(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    broker, _ = start_local_broker(settings, owner=os.getpid())
    os.kill(broker.pid, signal.SIGKILL)  # the broker dies; its record stays
    for _ in range(100):
        if not pid_alive(broker.pid):
            break
        time.sleep(0.05)
    fresh, started = start_local_broker(settings, owner=os.getpid())
    assert started and fresh.pid != broker.pid
    loud = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(loud) == 1
    assert "LOST" in loud[0] and str(broker.pid) in loud[0] and "lookalike publish" in loud[0]
    assert "LOOKALIKE_KAFKA_BOOTSTRAP" in loud[0]


def test_a_clean_start_says_nothing_about_loss(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    start_local_broker(settings, owner=os.getpid())
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
