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
from faust.types import TP

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
    stop_on_signals,
)

log = logging.getLogger(__name__)

#: Logged once the worker has joined its consumer group and consumes (tests wait for it).
READY = "ready: consuming as group {group}; console {console} (API reference: /docs)"


class SupervisedWorker(faust.Worker):
    """faust.Worker whose stop is bounded in time, that leaves logging as the command set it
    up (:func:`lookalike.logs.configure_logging`), and that says in one line when it is ready."""

    def __init__(
        self, app: faust.App, watchdog: ExitWatchdog, ready_message: str, **kwargs: Any
    ) -> None:
        super().__init__(app, override_logging=False, redirect_stdouts=False, **kwargs)
        # Faust's start-up spinner draws on stdout (escape codes even when it is not a
        # terminal): the ready line says the same, on the log.
        self.spinner = None
        self.watchdog = watchdog
        self.ready_message = ready_message

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        log.info("%s", self.ready_message)

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        stop_on_signals(self.watchdog)


def log_assignments(app: faust.App, topics: list[str]) -> None:
    """One line per rebalance: which partitions of our topics this worker now consumes."""

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in assigned:
            if tp.topic in topics:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
        described = ", ".join(f"{t} {sorted(p)}" for t, p in sorted(by_topic.items())) or "none"
        log.info("partitions assigned: %s", described)


def run_worker(settings: Settings, bootstrap: str) -> None:
    """Raises :class:`BrokerUnavailable` (exit status 3 in the CLI) when the broker stayed
    unreachable for LOOKALIKE_BROKER_LOST_EXIT seconds."""
    check_exposure(settings)  # before anything starts: refuse an open API off loopback
    check_kafka_security(settings)
    runtime = Runtime(settings, encoder_processes=True)
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
        log_assignments(app, settings.all_topics)
        api = f"http://{settings.api_host}:{settings.api_port}"
        log.info("worker: Kafka %s, API %s", bootstrap, api)
        monitor.start()
        worker = SupervisedWorker(
            app,
            watchdog,
            READY.format(console=f"{api}/", group=settings.app_id),
            loglevel=settings.log_level,
            quiet=True,
        )
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
