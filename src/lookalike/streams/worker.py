"""Run the Faust worker in this process (blocking until SIGINT/SIGTERM): the runtime, the app,
its agents and the HTTP API, wired together here, under the supervision of
:mod:`.supervision` (a bounded stop, the broker monitor, quiet library logs)."""

from __future__ import annotations

import logging
import os
import signal
from functools import partial
from typing import Any

import faust

from ..api import check_exposure, register_api, web_options
from ..errors import BrokerUnavailable
from ..kafka.probe import probe_broker
from ..kafka.security import check as check_kafka_security
from ..settings import Settings
from .agents import register_agents
from .app import Topics, create_app
from .runtime import Runtime
from .supervision import (
    EXIT_BROKER_LOST,
    BrokerMonitor,
    ExitWatchdog,
    quiet_repeats,
    stop_on_signals,
)

log = logging.getLogger(__name__)


class SupervisedWorker(faust.Worker):
    """faust.Worker whose stop is bounded in time and whose libraries' logs repeat less."""

    def __init__(self, app: faust.App, watchdog: ExitWatchdog, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.watchdog = watchdog

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        quiet_repeats(logger)

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        stop_on_signals(self.watchdog)


def run_worker(settings: Settings, bootstrap: str) -> None:
    """Raises :class:`BrokerUnavailable` (exit status 3 in the CLI) when the broker stayed
    unreachable for LOOKALIKE_BROKER_LOST_EXIT seconds."""
    check_exposure(settings)  # before anything starts: refuse an open API off loopback
    check_kafka_security(settings)
    runtime = Runtime(settings)
    # First job of the model thread: live batches queue behind it while the group is joined.
    warming = runtime.executors.model.submit(runtime.models.warm_up)
    warming.add_done_callback(
        lambda done: (
            done.exception() is not None
            and log.error("warming up the encoders failed: %s", done.exception())
        )
    )
    # Decode processes (beside a GPU) spawn now, importing torch, not in the first batch.
    runtime.executors.prepare.submit(runtime.pipeline.decoder.warm_up)
    watchdog = ExitWatchdog(settings.shutdown_grace)
    lost: list[str] = []

    def broker_lost(message: str) -> None:
        lost.append(message)
        log.critical("%s. Stopping with status %d.", message, EXIT_BROKER_LOST)
        watchdog.exit_code = EXIT_BROKER_LOST
        os.kill(os.getpid(), signal.SIGTERM)  # the graceful stop, under the watchdog

    monitor = BrokerMonitor(
        bootstrap,
        partial(probe_broker, bootstrap, settings, timeout=3.0),
        runtime.health,
        settings.broker_lost_exit,
        broker_lost,
    )
    try:
        app = create_app(
            settings, bootstrap, web_options(settings), commit_every=runtime.tuning.batch_size
        )
        topics = Topics.declare(app, settings)
        register_agents(app, topics, runtime)
        register_api(app, runtime, log_search=topics.log_search, send_click=topics.send_click)
        log.info(
            "worker: Kafka %s, API http://%s:%d", bootstrap, settings.api_host, settings.api_port
        )
        monitor.start()
        worker = SupervisedWorker(app, watchdog, loglevel=settings.log_level, quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None) and not lost:
                raise
    finally:
        monitor.stop()
        runtime.close()
    if lost:
        raise BrokerUnavailable(lost[0])
