"""The worker's agents, thin: each reads its topic and hands the messages to a Faust-free
step (:mod:`lookalike.indexing`, :mod:`lookalike.clicks`) through :mod:`.batches` and
:mod:`.click_pairs`."""

from __future__ import annotations

import faust

from ..consumers import AlertWriter, DeadLetterLimits, DeadLetterWriter
from .app import Topics, consumed
from .batches import InFlightBatches
from .click_pairs import ClickPairs, PairSink
from .lag import LagProbe
from .runtime import Runtime


def register_agents(app: faust.App, topics: Topics, runtime: Runtime) -> None:
    dead_letters = DeadLetterWriter(
        topics.send_dead_letter, runtime.ledger, DeadLetterLimits.from_settings(runtime.settings)
    )
    _indexing_agents(app, topics, runtime, dead_letters)
    _click_agents(app, topics, runtime, dead_letters)
    _background_tasks(app, runtime)


def _indexing_agents(
    app: faust.App, topics: Topics, runtime: Runtime, dead_letters: DeadLetterWriter
) -> None:
    settings = runtime.settings
    alerts = AlertWriter(topics.send_alert, runtime.alerts)

    @app.agent(topics.uploads, name="index-uploads")
    async def index_uploads(stream: faust.StreamT) -> None:
        batches = InFlightBatches(
            runtime.pipeline,
            runtime.executors,
            runtime.counters,
            dead_letters,
            depth=runtime.tuning.batches_in_flight,
            alerts=alerts,
            health=runtime.health,
            max_delay=settings.retry_max_delay,
            instruments=runtime.instruments,
        )
        try:
            async for events in stream.take_events(
                runtime.tuning.batch_size, within=settings.batch_max_wait
            ):
                await batches.submit(events)
        finally:
            await batches.cancel()


def _click_agents(
    app: faust.App, topics: Topics, runtime: Runtime, dead_letters: DeadLetterWriter
) -> None:
    """The click loop: searches + clicks -> training pairs -> files."""
    click_pairs = ClickPairs(
        runtime.click_join,
        runtime.settings.searches_topic,
        topics.send_pair,
        dead_letters,
        runtime.executors.clicks,
    )

    @app.agent(topics.searches_and_clicks, name="join-clicks")
    async def join_clicks(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await click_pairs.handle(consumed(event))

    @app.timer(interval=5.0)
    async def click_housekeeping() -> None:
        await click_pairs.housekeeping()

    pair_sink = PairSink(runtime.pair_files, dead_letters, runtime.executors.clicks)

    @app.agent(topics.training_pairs, name="write-training-pairs")
    async def write_training_pairs(stream: faust.StreamT) -> None:
        async for events in stream.take_events(500, within=1.0):
            await pair_sink.write([consumed(e) for e in events])


def _background_tasks(app: faust.App, runtime: Runtime) -> None:
    settings = runtime.settings
    lag_probe = LagProbe(
        app,
        [
            settings.uploads_topic,
            settings.searches_topic,
            settings.clicks_topic,
            settings.training_pairs_topic,
        ],
        runtime.consumer_lag,
    )

    @app.timer(interval=LagProbe.INTERVAL)
    async def measure_lag() -> None:
        await lag_probe.measure()

    @app.task
    async def backfill() -> None:
        # Re-embeds the catalogue into a rollout candidate whenever there is one (resuming
        # from the registry's cursor after a restart); idle otherwise.
        await runtime.rollout.run()
