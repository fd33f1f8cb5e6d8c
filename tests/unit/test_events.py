"""Unit tests for lookalike.events: the JSON wire format and its error reporting."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from imagegen import image_bytes

from lookalike.errors import ImageRejected, InvalidEvent
from lookalike.events import (
    SCHEMA_VERSION,
    DeadLetter,
    FileSource,
    ImageUploaded,
    InlineSource,
    UrlSource,
    parse_model,
)

JPEG = image_bytes("circles", 0)


def event(image: Any, **overrides: Any) -> ImageUploaded:
    fields: dict[str, Any] = {
        "image_id": "img-1",
        "listing_id": "listing-1",
        "seller_id": "seller-1",
        "category": "shoes",
        "occurred_at": datetime(2024, 5, 17, 12, 30, tzinfo=UTC),
        "attributes": {"colour": "red", "size": 42},
        "image": image,
    }
    return ImageUploaded(**(fields | overrides))


def valid_dict() -> dict[str, Any]:
    return json.loads(event(InlineSource(data=JPEG)).to_json_bytes())


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        InlineSource(data=JPEG),
        InlineSource(data=bytes(range(256))),  # every byte value, not valid UTF-8
        UrlSource(url="https://cdn.example.com/a/b.jpg?x=1"),  # type: ignore[arg-type]
        FileSource(path="shoes/red/1.jpg"),
    ],
    ids=["inline-jpeg", "inline-binary", "url", "file"],
)
def test_round_trip(source: Any) -> None:
    original = event(source)
    raw = original.to_json_bytes()
    assert isinstance(raw, bytes)
    parsed = parse_model(ImageUploaded, raw)
    assert parsed == original
    assert parsed.image.kind == source.kind
    assert parsed.image.reference() == source.reference()
    assert parsed.occurred_at == datetime(2024, 5, 17, 12, 30, tzinfo=UTC)
    # str input is accepted as well as bytes
    assert parse_model(ImageUploaded, raw.decode("utf-8")) == original


def test_inline_bytes_are_base64_in_json() -> None:
    data = bytes(range(256))
    wire = json.loads(event(InlineSource(data=data)).to_json_bytes())
    assert wire["image"] == {"kind": "inline", "data": base64.b64encode(data).decode("ascii")}
    assert parse_model(ImageUploaded, json.dumps(wire)).image.data == data  # type: ignore[union-attr]


def test_wire_envelope() -> None:
    wire = json.loads(event(FileSource(path="a.png")).to_json_bytes())
    assert wire["schema_version"] == SCHEMA_VERSION == 1
    assert wire["type"] == "image_uploaded"
    assert wire["image"] == {"kind": "file", "path": "a.png"}
    assert wire["attributes"] == {"colour": "red", "size": 42}


def test_defaults_event_id_and_occurred_at() -> None:
    a = ImageUploaded(
        image_id="i", listing_id="l", seller_id="s", category="c", image=FileSource(path="p")
    )
    c = ImageUploaded(
        image_id="i", listing_id="l", seller_id="s", category="c", image=FileSource(path="p")
    )
    assert a.event_id and a.event_id != c.event_id
    assert a.occurred_at.tzinfo is not None
    assert abs((datetime.now(UTC) - a.occurred_at).total_seconds()) < 60


def test_references() -> None:
    assert FileSource(path="x/y.png").reference() == "file:x/y.png"
    assert UrlSource(url="http://h/p.jpg").reference() == "http://h/p.jpg"  # type: ignore[arg-type]
    ref = InlineSource(data=b"abc").reference()
    assert ref == "inline:sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_events_are_frozen() -> None:
    e = event(FileSource(path="a.png"))
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        e.image_id = "other"  # type: ignore[misc]


# --- parse errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"not json at all", b"\xff\xfe\x00garbage", b'{"image_id": "x",}'],
    ids=["truncated", "empty", "text", "binary", "trailing-comma"],
)
def test_malformed_json_is_parse_stage(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_model(ImageUploaded, raw)
    assert info.value.stage == "parse"
    assert info.value.reason.startswith("malformed JSON")
    assert isinstance(info.value, ImageRejected)


def _validate_error(doc: Any) -> InvalidEvent:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(InvalidEvent) as info:
        parse_model(ImageUploaded, raw)
    assert info.value.stage == "validate", info.value.reason
    assert info.value.reason.startswith("event does not match the ImageUploaded schema")
    return info.value


@pytest.mark.parametrize("missing", ["image_id", "listing_id", "seller_id", "category", "image"])
def test_missing_field(missing: str) -> None:
    doc = valid_dict()
    del doc[missing]
    error = _validate_error(doc)
    assert f"{missing}: Field required" in error.reason


def test_empty_required_string() -> None:
    doc = valid_dict() | {"category": ""}
    assert "category" in _validate_error(doc).reason


def test_bad_base64() -> None:
    doc = valid_dict()
    doc["image"]["data"] = "this is *not* base64!"
    error = _validate_error(doc)
    assert "image.inline.data" in error.reason
    assert "base64" in error.reason


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_unknown_schema_version(version: Any) -> None:
    doc = valid_dict() | {"schema_version": version}
    assert "schema_version" in _validate_error(doc).reason


def test_wrong_type() -> None:
    doc = valid_dict() | {"type": "image_deleted"}
    assert "type" in _validate_error(doc).reason


def test_extra_field_rejected() -> None:
    doc = valid_dict() | {"surprise": 1}
    error = _validate_error(doc)
    assert "surprise" in error.reason and "Extra inputs are not permitted" in error.reason


def test_extra_field_in_source_rejected() -> None:
    doc = valid_dict()
    doc["image"]["mime"] = "image/jpeg"
    assert "image.inline.mime" in _validate_error(doc).reason


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "not a url", "http://"]
)
def test_bad_url(url: str) -> None:
    doc = valid_dict() | {"image": {"kind": "url", "url": url}}
    assert "image.url.url" in _validate_error(doc).reason


def test_ftp_scheme_reason_names_allowed_schemes() -> None:
    doc = valid_dict() | {"image": {"kind": "url", "url": "ftp://example.com/a.jpg"}}
    reason = _validate_error(doc).reason
    assert "http" in reason and "https" in reason


def test_unknown_source_kind() -> None:
    doc = valid_dict() | {"image": {"kind": "s3", "path": "bucket/key"}}
    error = _validate_error(doc)
    assert "image" in error.reason and "s3" in error.reason


@pytest.mark.parametrize("doc", [[], None, "just a string", 42], ids=["list", "null", "str", "int"])
def test_json_that_is_not_an_object(doc: Any) -> None:
    assert "<root>" in _validate_error(doc).reason


def test_too_many_problems_are_summarised() -> None:
    # Every field wrong: the reason stays bounded (at most 5 problems listed).
    doc = {k: None for k in ("image_id", "listing_id", "seller_id", "category", "event_id")}
    doc |= {"schema_version": 9, "type": "x", "image": 3, "attributes": 4, "extra": 1}
    reason = _validate_error(doc).reason
    assert reason.count(";") == 4


# --- dead letters ---------------------------------------------------------------------------


def test_encode_payload_utf8() -> None:
    raw = '{"caf\u00e9": "\u2615"}'.encode()
    assert DeadLetter.encode_payload(raw) == ('{"caf\u00e9": "\u2615"}', "utf-8")


def test_encode_payload_binary() -> None:
    raw = b"\xff\xd8\xff\xe0" + bytes(range(256))
    payload, encoding = DeadLetter.encode_payload(raw)
    assert encoding == "base64"
    assert base64.b64decode(payload) == raw


def test_encode_payload_empty() -> None:
    assert DeadLetter.encode_payload(b"") == ("", "utf-8")


def test_dead_letter_json_round_trip() -> None:
    payload, encoding = DeadLetter.encode_payload(b"\x00\xff")
    letter = DeadLetter(
        reason="bad",
        stage="decode",
        error_type="DecodeError",
        source_topic="t",
        source_partition=3,
        source_offset=17,
        image_id="img",
        payload=payload,
        payload_encoding=encoding,
    )
    wire = json.loads(letter.model_dump_json())
    assert wire["type"] == "dead_letter" and wire["schema_version"] == 1
    assert wire["payload_encoding"] == "base64"
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


# --- size limits at the edge ------------------------------------------------------------------


def _event_json(**changes: Any) -> bytes:
    from lookalike.events import ImageUploaded, InlineSource

    event = ImageUploaded(
        image_id="img-1",
        listing_id="l-1",
        seller_id="s-1",
        category="shoes",
        image=InlineSource(data=b"abc"),
    )
    return json.dumps({**json.loads(event.to_json_bytes()), **changes}).encode()


LIMITS = dict(
    max_message_bytes=50_000,
    max_attributes_bytes=1_000,
    max_attributes_keys=5,
    max_attributes_depth=2,
)


@pytest.mark.parametrize(
    ("attributes", "words"),
    [
        ({"blob": "x" * 2_000}, "LOOKALIKE_MAX_ATTRIBUTES_BYTES"),
        ({f"k{i}": i for i in range(6)}, "LOOKALIKE_MAX_ATTRIBUTES_KEYS"),
        ({"a": {"b": {"c": 1}}}, "LOOKALIKE_MAX_ATTRIBUTES_DEPTH"),
        ({"a": [[1]]}, "LOOKALIKE_MAX_ATTRIBUTES_DEPTH"),
        ({"a": {"b": 1, "c": 2, "d": 3}, "e": 1, "f": 2}, "LOOKALIKE_MAX_ATTRIBUTES_KEYS"),
    ],
)
def test_attribute_maps_over_the_limits_are_rejected(attributes: dict, words: str) -> None:
    from lookalike.events import EventLimits, parse_image_event

    limits = EventLimits(**LIMITS)
    with pytest.raises(InvalidEvent) as info:
        parse_image_event(_event_json(attributes=attributes), limits)
    assert words in info.value.reason and info.value.stage == "validate"
    change = json.dumps(
        {"type": "image_attributes_changed", "image_id": "img-1", "attributes": attributes}
    )
    with pytest.raises(InvalidEvent, match=words):
        parse_image_event(change, limits)
    parse_image_event(_event_json(attributes=attributes))  # no limits given: schema only


def test_attributes_within_the_limits_pass() -> None:
    from lookalike.events import EventLimits, parse_image_event

    ok = {"brand": "x" * 500, "size": {"eu": 42}, "tags": ["a", "b"]}
    event = parse_image_event(_event_json(attributes=ok), EventLimits(**LIMITS))
    assert event.attributes == ok


def test_oversized_message_is_rejected_before_parsing() -> None:
    from lookalike.events import EventLimits, parse_image_event

    raw = b"{" + b" " * 60_000 + b"not even json"
    with pytest.raises(InvalidEvent) as info:
        parse_image_event(raw, EventLimits(**LIMITS))
    assert "60014 bytes" in info.value.reason and "LOOKALIKE_MAX_MESSAGE_BYTES" in info.value.reason


def test_limits_come_from_settings(tmp_path: Any) -> None:
    from lookalike.events import EventLimits
    from lookalike.settings import Settings

    limits = EventLimits.from_settings(
        Settings(data_dir=tmp_path, max_message_bytes=20_000, max_attributes_keys=7)
    )
    assert (limits.max_message_bytes, limits.max_attributes_keys) == (20_000, 7)
