"""InFlightBatches: overlapped stages, writes in arrival order, acks only after the write."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

from lookalike.indexing import BatchResult
from lookalike.streams.batches import InFlightBatches
from lookalike.streams.counters import Counters


@dataclass
class FakeMessage:
    offset: int
    topic: str = "t.uploads"
    partition: int = 0
    refcount: int = 1  # the stream's own reference, as Faust holds it
    acked: bool = False
    log: list = field(default_factory=list)

    def incref(self) -> None:
        self.refcount += 1

    def release(self) -> None:
        self.refcount -= 1
        if self.refcount == 0:
            self.acked = True
            self.log.append(("acked", self.offset))


@dataclass
class FakeEvent:
    message: FakeMessage
    value: bytes = b"{}"

    def ack(self) -> None:
        self.message.release()


class SlowPipeline:
    """prepare sleeps longer for earlier batches, so later batches finish preparing first."""

    def __init__(self, log: list, fail_writes: int = 0) -> None:
        self.log = log
        self.fail_writes = fail_writes

    def prepare(self, messages):  # noqa: ANN001
        first = messages[0].offset
        time.sleep(0.3 if first == 0 else 0.01)
        return BatchResult(timings={"first": first})

    def embed(self, result: BatchResult) -> BatchResult:
        return result

    def write(self, result: BatchResult) -> BatchResult:
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("qdrant down")
        self.log.append(("written", int(result.timings["first"])))
        return result


class NoDeadLetters:
    async def write(self, letter) -> bool:  # noqa: ANN001
        return True


def make_runtime(pipeline: SlowPipeline) -> SimpleNamespace:
    return SimpleNamespace(
        pipeline=pipeline,
        executors=SimpleNamespace(
            prepare=ThreadPoolExecutor(2),  # two, so batch 2 can overtake batch 1
            model=ThreadPoolExecutor(1),
            write=ThreadPoolExecutor(1),
        ),
        counters=Counters(),
    )


def in_flight(runtime: SimpleNamespace, depth: int) -> InFlightBatches:
    return InFlightBatches(
        runtime.pipeline, runtime.executors, runtime.counters, NoDeadLetters(), depth=depth
    )  # type: ignore[arg-type]


def batch(log: list, first: int, n: int = 2) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage(offset, log=log)) for offset in range(first, first + n)]


async def test_writes_in_order_and_acks_only_after_writing() -> None:
    log: list = []
    runtime = make_runtime(SlowPipeline(log))
    batches = in_flight(runtime, depth=2)
    first, second = batch(log, 0), batch(log, 2)
    await batches.submit(first)
    for event in first:  # what take_events does when the loop body returns
        event.message.release()
    assert not any(e.message.acked for e in first), "acked before it was written"
    await batches.submit(second)
    for event in second:
        event.message.release()
    await batches.drain()
    assert [entry for entry in log if entry[0] == "written"] == [("written", 0), ("written", 2)]
    for offset in range(4):  # every ack comes after its batch's write
        batch_first = 0 if offset < 2 else 2
        assert log.index(("acked", offset)) > log.index(("written", batch_first))
    assert runtime.counters.batches == 2 and runtime.counters.events_consumed == 4


async def test_failed_write_is_retried_and_not_acked_meanwhile() -> None:
    log: list = []
    runtime = make_runtime(SlowPipeline(log, fail_writes=1))
    batches = in_flight(runtime, depth=1)
    events = batch(log, 5)
    await batches.submit(events)
    for event in events:
        event.message.release()
    await asyncio.sleep(0.5)  # the first write failed; the retry waits 1 s
    assert not any(e.message.acked for e in events)
    await batches.drain()
    assert all(e.message.acked for e in events)
    assert ("written", 5) in log


async def test_cancel_leaves_unwritten_batches_unacked() -> None:
    log: list = []
    runtime = make_runtime(SlowPipeline(log, fail_writes=100))
    batches = in_flight(runtime, depth=2)
    events = batch(log, 0)
    await batches.submit(events)
    for event in events:
        event.message.release()
    await asyncio.sleep(0.5)
    await batches.cancel()
    assert not any(e.message.acked for e in events), "a cancelled batch must be replayed"
