"""The agents' side of the click loop: searches + clicks in, training pairs and dead letters out.

The blocking work (SQLite, file appends) runs on the worker's clicks thread, so the loop stays
free. Order per message: apply it durably (join state, outbox), then send what it produced,
then return, so Faust commits the offset only after its effect is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from ..clicks import ClickJoin, ClickOutcome, PairFileWriter, Rejected
from ..consumers import DeadLetterWriter, SendFn
from ..errors import ClickRejected, InvalidEvent
from ..events import Click, ConsumedMessage, DeadLetter, SearchServed, TrainingPair, parse_model
from ..executors import run_in

log = logging.getLogger(__name__)


def rejected_letter(rejected: Rejected) -> DeadLetter:
    return DeadLetter.for_message(
        rejected.source,
        ClickRejected(rejected.reason),
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
        executor: Executor,
    ) -> None:
        self.join = join
        self.searches_topic = searches_topic
        self.send_pair = send_pair
        self.dead_letters = dead_letters
        self._executor = executor
        self.counts = {"searches": 0, "clicks": 0, "pairs": 0, "duplicates": 0, "rejected": 0}

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await run_in(self._executor, fn, *args)

    async def handle(self, source: ConsumedMessage) -> None:
        """One message from the searches or the clicks topic."""
        is_search = source.topic == self.searches_topic
        try:
            event = parse_model(SearchServed if is_search else Click, source.value)
        except InvalidEvent as exc:
            await self.dead_letters.write(DeadLetter.for_message(source, exc))
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
                await self._reject(outcome.rejected)
        await self._send(pairs)

    async def _reject(self, rejected: Rejected) -> None:
        self.counts["rejected"] += 1
        log.info("click rejected: %s", rejected.reason)
        await self.dead_letters.write(rejected_letter(rejected))

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
            await self._reject(rejected)
        unsent = await self._run(self.join.unsent)
        if unsent:
            log.info("sending %d training pairs left unsent by an earlier run", len(unsent))
            await self._send(unsent)


class PairSink:
    """The pairs topic -> date-partitioned JSON Lines files."""

    def __init__(
        self, files: PairFileWriter, dead_letters: DeadLetterWriter, executor: Executor
    ) -> None:
        self.files = files
        self.dead_letters = dead_letters
        self._executor = executor
        self.written = 0

    async def write(self, sources: Sequence[ConsumedMessage]) -> int:
        pairs: list[TrainingPair] = []
        for source in sources:
            try:
                pairs.append(parse_model(TrainingPair, source.value))
            except InvalidEvent as exc:
                await self.dead_letters.write(DeadLetter.for_message(source, exc))
        written = int(await run_in(self._executor, self.files.append, pairs))
        self.written += written
        if written:
            log.info("appended %d training pairs (%d in total)", written, len(self.files))
        return written
