"""Unit tests for lookalike.consumers.dead_letters: the SQLite ledger and the topic writer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lookalike.consumers.dead_letters import DeadLetterLedger, DeadLetterWriter
from lookalike.events import DeadLetter

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def letter(
    offset: int,
    *,
    stage: str = "decode",
    partition: int = 0,
    topic: str = "up",
    minutes: int = 0,
    image_id: str | None = "img",
    reason: str = "bad",
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        stage=stage,
        error_type="DecodeError",
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        image_id=image_id,
        event_id="evt" if image_id else None,
        payload='{"x": 1}',
        failed_at=T0 + timedelta(minutes=minutes),
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[DeadLetterLedger]:
    db = DeadLetterLedger(tmp_path / "nested" / "ledger.sqlite")  # parent is created
    try:
        yield db
    finally:
        db.close()


# --- ledger ---------------------------------------------------------------------------------


def test_record_once_per_source_offset(ledger: DeadLetterLedger) -> None:
    assert ledger.count() == 0
    assert not ledger.seen("up", 0, 5)
    assert ledger.record(letter(5)) is True
    assert ledger.seen("up", 0, 5)
    # The same source message again (a replay), even with a different reason: not recorded.
    assert ledger.record(letter(5, stage="fetch", reason="other", minutes=3)) is False
    assert ledger.count() == 1
    assert ledger.latest()[0]["stage"] == "decode"


def test_key_is_topic_partition_offset(ledger: DeadLetterLedger) -> None:
    assert ledger.record(letter(5))
    assert ledger.record(letter(5, partition=1))
    assert ledger.record(letter(5, topic="other"))
    assert ledger.record(letter(6))
    assert ledger.count() == 4
    assert not ledger.seen("up", 2, 5)


def test_count_by_stage(ledger: DeadLetterLedger) -> None:
    assert ledger.count_by_stage() == {}
    for offset, stage in enumerate(["decode", "parse", "decode", "fetch", "validate", "decode"]):
        ledger.record(letter(offset, stage=stage))
    ledger.record(letter(0, stage="parse"))  # replay of offset 0: not counted again
    assert ledger.count_by_stage() == {"decode": 3, "fetch": 1, "parse": 1, "validate": 1}
    assert list(ledger.count_by_stage()) == ["decode", "fetch", "parse", "validate"]
    assert ledger.count() == 6


def test_latest_newest_first_and_limited(ledger: DeadLetterLedger) -> None:
    for offset, minutes in [(0, 5), (1, 1), (2, 9), (3, 3)]:
        ledger.record(letter(offset, minutes=minutes, image_id=f"img-{offset}"))
    latest = ledger.latest()
    assert [r["source_offset"] for r in latest] == [2, 0, 3, 1]
    assert [r["source_offset"] for r in ledger.latest(limit=2)] == [2, 0]
    # Full records, parseable back into DeadLetter.
    assert DeadLetter.model_validate(latest[0]) == letter(2, minutes=9, image_id="img-2")


def test_image_id_may_be_missing(ledger: DeadLetterLedger) -> None:
    assert ledger.record(letter(0, stage="parse", image_id=None))
    assert ledger.latest()[0]["image_id"] is None


def test_ledger_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = DeadLetterLedger(path)
    first.record(letter(1, stage="parse"))
    first.record(letter(2, stage="decode"))
    first.close()

    second = DeadLetterLedger(path)
    try:
        assert second.count() == 2
        assert second.count_by_stage() == {"decode": 1, "parse": 1}
        assert second.seen("up", 0, 1)
        assert second.record(letter(1)) is False
        assert second.record(letter(3)) is True
        assert second.count() == 3
    finally:
        second.close()


# --- writer ---------------------------------------------------------------------------------


class FakeSend:
    """An async send that records what it was given; optionally fails a number of times."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[bytes | None, bytes]] = []
        self.failures = failures

    async def __call__(self, key: bytes | None, value: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker went away")
        self.calls.append((key, value))


async def test_writer_sends_then_records(ledger: DeadLetterLedger) -> None:
    send = FakeSend()
    writer = DeadLetterWriter(send, ledger)
    dl = letter(7, image_id="img-7")
    await writer.write(dl)
    assert len(send.calls) == 1
    key, value = send.calls[0]
    assert key == b"img-7"
    assert DeadLetter.model_validate_json(value) == dl
    assert json.loads(value)["source_offset"] == 7
    assert ledger.count() == 1 and ledger.seen("up", 0, 7)


async def test_writer_replay_is_not_sent_again(ledger: DeadLetterLedger) -> None:
    send = FakeSend()
    writer = DeadLetterWriter(send, ledger)
    await writer.write(letter(7))
    await writer.write(letter(7, minutes=10, reason="seen again after a restart"))
    assert len(send.calls) == 1
    assert ledger.count() == 1
    await writer.write(letter(8))
    assert len(send.calls) == 2


async def test_writer_replay_across_ledger_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = DeadLetterLedger(path)
    await DeadLetterWriter(FakeSend(), first).write(letter(1))
    first.close()
    second = DeadLetterLedger(path)
    try:
        send = FakeSend()
        await DeadLetterWriter(send, second).write(letter(1))
        assert send.calls == []
    finally:
        second.close()


async def test_failed_send_records_nothing_so_retry_sends(ledger: DeadLetterLedger) -> None:
    send = FakeSend(failures=1)
    writer = DeadLetterWriter(send, ledger)
    with pytest.raises(ConnectionError):
        await writer.write(letter(3))
    assert send.calls == []
    assert ledger.count() == 0 and not ledger.seen("up", 0, 3)

    await writer.write(letter(3))  # the retry (offset not committed) does send
    assert len(send.calls) == 1
    assert ledger.count() == 1


@pytest.mark.parametrize(
    ("image_id", "event_id", "expected"),
    [("img", "evt", b"img"), (None, "evt", b"evt"), (None, None, None)],
)
async def test_writer_key(
    ledger: DeadLetterLedger, image_id: str | None, event_id: str | None, expected: bytes | None
) -> None:
    send = FakeSend()
    dl = letter(1).model_copy(update={"image_id": image_id, "event_id": event_id})
    await DeadLetterWriter(send, ledger).write(dl)
    assert send.calls[0][0] == expected


# --- a dead letter always fits the topic ------------------------------------------------------

MIB = 1 << 20


def _huge_letter(value: bytes, offset: int = 1) -> DeadLetter:
    from lookalike.errors import InvalidEvent
    from lookalike.events import ConsumedMessage

    return DeadLetter.for_message(
        ConsumedMessage("up", 0, offset, value), InvalidEvent("message is too large")
    )


@pytest.mark.parametrize(
    "value",
    [
        b'{"image": "' + b"A" * (5 * MIB) + b'"}',  # a 5 MB inline upload
        bytes(range(256)) * 20_000,  # binary: carried as base64
        b"\x01" * (2 * MIB),  # control characters: JSON escapes grow them 6x
        "é".encode() * MIB,  # two-byte characters: never cut in the middle of one
    ],
    ids=["inline-5MB", "binary", "control-chars", "multibyte"],
)
def test_fitted_letter_is_cut_but_keeps_size_and_digest(value: bytes) -> None:
    import hashlib

    full = _huge_letter(value)
    fitted = full.fitted(65_536, MIB - 1024)
    assert len(fitted.model_dump_json().encode()) <= MIB - 1024
    assert fitted.payload_truncated
    assert fitted.payload_size == len(value)
    assert fitted.payload_sha256 == hashlib.sha256(value).hexdigest()
    kept = fitted.payload_bytes()
    assert 0 < len(kept) <= 65_536 and value.startswith(kept)
    assert fitted.payload_encoding == full.payload_encoding


def test_small_letter_is_not_touched() -> None:
    small = _huge_letter(b'{"image_id": "x"}')
    assert small.fitted(65_536, MIB) == small and not small.payload_truncated


async def test_writer_cuts_and_keeps_the_whole_value_on_disk(
    ledger: DeadLetterLedger, tmp_path: Path
) -> None:
    from lookalike.consumers.dead_letters import DeadLetterLimits
    from lookalike.images import BlobFiles

    value = b'{"image": "' + b"B" * (3 * MIB) + b'"}'
    send = FakeSend()
    limits = DeadLetterLimits(1000, MIB, BlobFiles(tmp_path / "payloads", "payloads", None))
    assert await DeadLetterWriter(send, ledger, limits).write(_huge_letter(value))
    sent = DeadLetter.model_validate_json(send.calls[0][1])
    assert len(send.calls[0][1]) < 2000 + 1000
    assert sent.payload_truncated and len(sent.payload) == 1000
    assert sent.payload_file is not None and Path(sent.payload_file).read_bytes() == value
    assert ledger.latest()[0]["payload_size"] == len(value)


class RefusesLarge(FakeSend):
    """A broker whose max.message.bytes is below ours: it refuses anything over ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def __call__(self, key: bytes | None, value: bytes) -> None:
        from aiokafka.errors import MessageSizeTooLargeError
        from faust.exceptions import ProducerSendError

        if len(value) > self.limit:
            try:  # what Faust's delivered send raises: the client's error, wrapped
                raise MessageSizeTooLargeError("the broker refused it")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        await super().__call__(key, value)


async def test_writer_resends_without_payload_when_the_broker_refuses_the_size(
    ledger: DeadLetterLedger,
) -> None:
    send = RefusesLarge(limit=2_000)
    letter_ = _huge_letter(b"C" * 100_000)
    assert await DeadLetterWriter(send, ledger).write(letter_)  # 64 KiB cut: still refused
    sent = DeadLetter.model_validate_json(send.calls[0][1])
    assert sent.payload == "" and sent.payload_truncated and sent.payload_size == 100_000
    assert ledger.count() == 1  # the partition moves on


async def test_writer_raises_other_send_errors_for_a_retry(ledger: DeadLetterLedger) -> None:
    send = FakeSend(failures=1)
    with pytest.raises(ConnectionError):
        await DeadLetterWriter(send, ledger).write(_huge_letter(b"D" * 100_000))
