"""Saying a failure once, readiness, the broker monitor and the bounded stop.

The watchdog and the signal handling run in real subprocesses (they end the process); the
broker monitor runs against a real broker process in tests/integration/test_broker_loss.py."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lookalike.errors import StorageUnavailable
from lookalike.executors import retry_with_backoff
from lookalike.health import Health
from lookalike.logs import RepeatFilter
from lookalike.streams.supervision import EXIT_STOP_FORCED, BrokerMonitor

log = logging.getLogger("test.retry")


def _full_disk() -> StorageUnavailable:
    return StorageUnavailable(
        "image bytes",
        Path("/data/blobs"),
        OSError(errno.ENOSPC, "No space left on device"),
        "LOOKALIKE_BLOB_DIR",
    )


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_a_failure_is_said_once_then_the_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    attempt = Flaky(20, _full_disk())
    result = await retry_with_backoff(
        "preparing a batch", attempt, log, kept="offsets held", first_delay=0.001, max_delay=0.002
    )
    assert result == "done" and attempt.calls == 21
    errors = _lines(caplog, logging.ERROR)
    assert len(errors) == 1, errors  # not 20
    assert "the disk is full" in errors[0] and "offsets held" in errors[0]
    recovered = _lines(caplog, logging.WARNING)
    assert len(recovered) == 1 and "recovered after 20 failed tries" in recovered[0]


async def test_a_new_kind_of_failure_is_said_too(caplog: pytest.LogCaptureFixture) -> None:
    errors = iter([_full_disk(), _full_disk(), ConnectionError("qdrant down")])

    async def attempt() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "ok"

    await retry_with_backoff("writing", attempt, log, kept="kept", first_delay=0.001)
    assert len(_lines(caplog, logging.ERROR)) == 2


async def test_health_tells_what_fails_and_loops_say_it_once_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = Health()
    seen: list[dict] = []

    def loop(name: str) -> Flaky:
        class Reporting(Flaky):
            async def __call__(self) -> str:
                if self.calls == 3:
                    seen.append(health.report(("index",)))
                return await super().__call__()

        return Reporting(6, _full_disk())

    await asyncio.gather(
        *(
            retry_with_backoff(
                f"{what} a batch",
                loop(what),
                log,
                kept="kept",
                first_delay=0.001,
                max_delay=0.001,
                health=health,
                part="index",
            )
            for what in ("preparing", "dead-lettering")
        )
    )
    assert len(_lines(caplog, logging.ERROR)) == 1  # two loops, one cause, said once
    report = seen[0]
    assert report["ready"] is False and report["checks"]["index"] == {"ok": True}
    assert "the disk is full" in report["checks"]["storage"]["reason"]
    assert health.report(("index",))["ready"] is True  # recovered


def test_broker_monitor_reports_loss_and_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([None, "refused", "refused", "refused", None, None])
    health = Health()
    lost: list[str] = []
    monitor = BrokerMonitor(
        "kafka:9092", lambda: next(answers, None), health, 60.0, lost.append, interval=0.01
    )
    monitor.start()
    time.sleep(0.3)
    monitor.stop()
    assert not lost and health.report()["ready"] is True
    assert len(_lines(caplog, logging.ERROR)) == 1
    assert "answers again" in _lines(caplog, logging.WARNING)[0]


def test_broker_monitor_gives_up_after_the_limit() -> None:
    health = Health()
    lost: list[str] = []
    monitor = BrokerMonitor(
        "kafka:9092", lambda: "refused", health, 0.2, lost.append, interval=0.02
    )
    monitor.start()
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lost and "LOOKALIKE_BROKER_LOST_EXIT" in lost[0] and "kafka:9092" in lost[0]
    assert health.trouble("broker") is not None


def test_repeat_filter_lets_a_library_warning_through_once_a_minute() -> None:
    repeat = RepeatFilter(window=60)

    def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, ("node 1",), None)

    passed = [repeat.filter(record("aiokafka.conn", "Unable connect to %s")) for _ in range(500)]
    assert passed.count(True) == 1
    assert all(repeat.filter(record("lookalike.x", "our own %s")) for _ in range(5))
    assert all(repeat.filter(record("aiokafka", "info %s", logging.INFO)) for _ in range(5))
    repeat.window = 0  # the window passed: the next says how many were held back
    held = record("aiokafka.conn", "Unable connect to %s")
    assert repeat.filter(held) and "499 more like it" in held.getMessage()


STUCK_WORKER = """
import logging, os, signal, sys, threading, time
sys.path.insert(0, {src!r})
from lookalike.streams.supervision import ExitWatchdog, stop_on_signals
logging.basicConfig(level=logging.INFO)
watchdog = ExitWatchdog(grace={grace})
stop_on_signals(watchdog)
# A graceful stop that never finishes: the main thread ignores the request and keeps working.
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _stuck_worker(grace: float) -> subprocess.Popen[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STUCK_WORKER.format(src=src, grace=grace))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_sigterm_stops_a_stuck_worker_within_the_grace_period() -> None:
    process = _stuck_worker(grace=0.5)
    started = time.monotonic()
    process.terminate()
    code = process.wait(timeout=10)
    assert code == EXIT_STOP_FORCED
    assert time.monotonic() - started < 3
    assert "did not stop within 0.5s of SIGTERM" in process.stderr.read()


def test_a_second_signal_exits_at_once() -> None:
    process = _stuck_worker(grace=60)
    process.terminate()
    time.sleep(0.3)
    started = time.monotonic()
    process.terminate()
    assert process.wait(timeout=10) == EXIT_STOP_FORCED
    assert time.monotonic() - started < 3
