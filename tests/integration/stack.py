"""Real processes for integration tests: the Tansu broker and lookalike worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from lookalike.kafka.local_broker import free_port

#: What a worker logs once it consumes (lookalike.streams.worker.READY).
READY_LINE = b"ready: consuming as group"


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(overrides)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class LookalikeProcess:
    """`lookalike up|worker` as a subprocess, logging to a file."""

    def __init__(
        self,
        command: str,
        data_dir: Path,
        env: dict[str, str],
        port: int | None = None,
        launcher: list[str] | None = None,
    ):
        self.port = port or free_port()
        #: How `lookalike` is run (default: this Python's `-m lookalike`).
        self.launcher = launcher or [sys.executable, "-m", "lookalike"]
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{command}-{self.port}-{time.time_ns()}.log"
        self.env = env
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> LookalikeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                *self.launcher,
                self.command,
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, ready_timeout, f"{self.command} to serve /health and join the group")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.command} exited early:\n{self.log_tail()}")
        health = httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        # The HTTP server is up before the consumer group is joined; the worker says when ready.
        return health and READY_LINE in self.log_path.read_bytes()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats", timeout=10).json()

    def indexed(self, version: str | None = None) -> int:
        stats = self.stats()
        version = version or stats["serving_version"]
        return int(stats["indexed"].get(version, 0))

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
