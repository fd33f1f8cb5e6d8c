"""Run the Faust worker in this process (blocking until SIGINT/SIGTERM)."""

from __future__ import annotations

import logging

import faust

from ..settings import Settings
from .app import create_app
from .runtime import Runtime

log = logging.getLogger(__name__)


def run_worker(settings: Settings, bootstrap: str) -> None:
    runtime = Runtime(settings)
    try:
        app = create_app(settings, runtime, bootstrap)
        log.info(
            "worker: Kafka %s, API http://%s:%d", bootstrap, settings.api_host, settings.api_port
        )
        worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    finally:
        runtime.close()
