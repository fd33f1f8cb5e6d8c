"""Run the Faust worker in this process (blocking until SIGINT/SIGTERM): the runtime, the app,
its agents and the HTTP API, wired together here."""

from __future__ import annotations

import logging

import faust

from ..api import register_api
from ..settings import Settings
from .agents import register_agents
from .app import Topics, create_app
from .runtime import Runtime

log = logging.getLogger(__name__)


def run_worker(settings: Settings, bootstrap: str) -> None:
    runtime = Runtime(settings)
    # First job of the model thread: live batches queue behind it while the group is joined.
    warming = runtime.executors.model.submit(runtime.models.warm_up)
    warming.add_done_callback(
        lambda done: (
            done.exception() is not None
            and log.error("warming up the encoders failed: %s", done.exception())
        )
    )
    try:
        app = create_app(settings, bootstrap)
        topics = Topics.declare(app, settings)
        register_agents(app, topics, runtime)
        register_api(app, runtime, log_search=topics.log_search, send_click=topics.send_click)
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
