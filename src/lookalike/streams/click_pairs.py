"""The agents' side of the click loop: searches + clicks in, training pairs and dead letters out.

The blocking work (SQLite, file appends) runs on the runtime's clicks thread, so the loop stays
free. Order per message: apply it durably (join state, outbox), then send what it produced,
then return, so Faust commits the offset only after its effect is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..clicks import ClickJoin, ClickOutcome, PairFileWriter, Rejected, Source
from ..consumers import DeadLetterWriter
from ..errors import InvalidEvent
from ..events import Click, DeadLetter, SearchServed, TrainingPair, parse_model

log = logging.getLogger(__name__)

T = TypeVar("T")
SendFn = Callable[[bytes | None, bytes], Awaitable[None]]


def _letter(source: Source, reason: str, stage: str, error_type: str, **ids: Any) -> DeadLetter:
    return DeadLetter.for_message(source, reason=reason, stage=stage, error_type=error_type, **ids)


def rejected_letter(rejected: Rejected) -> DeadLetter:
    return _letter(
        rejected.source,
        rejected.reason,
        "join",
        "ClickRejected",
        event_id=rejected.click.click_id,
        image_id=rejected.click.image_id,
    )


class ClickPairs:
    """Feeds the join from the searches and clicks topics and ships what it produces."""

    def __init__(
        self,
        join: ClickJoin,
        searches_topic: str,
        send_pair: SendFn,
        dead_letters: DeadLetterWriter,
        run_blocking: Callable[..., Awaitable[Any]],
    ) -> None:
        self.join = join
        self.searches_topic = searches_topic
        self.send_pair = send_pair
        self.dead_letters = dead_letters
        self._run = run_blocking
        self.counts = {"searches": 0, "clicks": 0, "pairs": 0, "duplicates": 0, "rejected": 0}

    async def handle(self, source: Source) -> None:
        """One message from the searches or the clicks topic."""
        is_search = source.topic == self.searches_topic
        try:
            event = parse_model(SearchServed if is_search else Click, source.value)
        except InvalidEvent as exc:
            await self.dead_letters.write(
                _letter(source, exc.reason, exc.stage, type(exc).__name__)
            )
            return
        if isinstance(event, SearchServed):
            self.counts["searches"] += 1
            outcomes = await self._run(self.join.add_search, event)
        else:
            assert isinstance(event, Click)
            self.counts["clicks"] += 1
            outcomes = [await self._run(self.join.add_click, event, source, time.time())]
        await self._ship(outcomes)

    async def _ship(self, outcomes: Sequence[ClickOutcome]) -> None:
        pairs = [o.pair for o in outcomes if o.pair is not None]
        for outcome in outcomes:
            if outcome.kind == "duplicate":
                self.counts["duplicates"] += 1
            elif outcome.rejected is not None:
                self.counts["rejected"] += 1
                log.info("click rejected: %s", outcome.rejected.reason)
                await self.dead_letters.write(rejected_letter(outcome.rejected))
        await self._send(pairs)

    async def _send(self, pairs: Sequence[TrainingPair]) -> None:
        if not pairs:
            return
        # All in flight at once (one broker round trip, not one per pair); order does not
        # matter: the file sink keys on pair ids.
        await asyncio.gather(
            *(self.send_pair(p.search_id.encode(), p.model_dump_json().encode()) for p in pairs)
        )
        await self._run(self.join.mark_sent, [p.pair_id for p in pairs])
        self.counts["pairs"] += len(pairs)

    async def housekeeping(self) -> None:
        """Periodic: dead-letter clicks whose search never came; re-send pairs a crash left in
        the outbox (the file sink drops the copies)."""
        for rejected in await self._run(self.join.expire, time.time()):
            self.counts["rejected"] += 1
            log.info("click rejected: %s", rejected.reason)
            await self.dead_letters.write(rejected_letter(rejected))
        unsent = await self._run(self.join.unsent)
        if unsent:
            log.info("sending %d training pairs left unsent by an earlier run", len(unsent))
            await self._send(unsent)


class PairSink:
    """The pairs topic -> date-partitioned JSON Lines files."""

    def __init__(
        self,
        files: PairFileWriter,
        dead_letters: DeadLetterWriter,
        run_blocking: Callable[..., Awaitable[Any]],
    ) -> None:
        self.files = files
        self.dead_letters = dead_letters
        self._run = run_blocking
        self.written = 0

    async def write(self, sources: Sequence[Source]) -> int:
        pairs: list[TrainingPair] = []
        for source in sources:
            try:
                pairs.append(parse_model(TrainingPair, source.value))
            except InvalidEvent as exc:
                await self.dead_letters.write(
                    _letter(source, exc.reason, exc.stage, type(exc).__name__)
                )
        written = int(await self._run(self.files.append, pairs))
        self.written += written
        if written:
            log.info("appended %d training pairs (%d in total)", written, len(self.files))
        return written


def executor_runner(executor: Any) -> Callable[..., Awaitable[Any]]:
    async def run(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    return run
