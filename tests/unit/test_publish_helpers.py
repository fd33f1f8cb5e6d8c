"""Unit tests for the `lookalike publish` helpers in lookalike.kafka.file_events (no broker
needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from imagegen import image_bytes

from lookalike.errors import ConfigurationError, LookalikeError
from lookalike.events import FileSource, ImageUploaded, InlineSource, UrlSource, parse_model
from lookalike.images import iter_image_files
from lookalike.kafka.file_events import (
    MAX_INLINE_BYTES,
    FileEvents,
    event_for_file,
    event_for_url,
    image_id_for_file,
    source_for_file,
)

JPEG = image_bytes("circles", 0)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Images (mixed-case suffixes), non-images and a folder named like an image."""
    root = tmp_path / "photos"
    (root / "z" / "y").mkdir(parents=True)
    for rel in ("b.jpg", "a.PNG", "z/c.webp", "z/y/d.jpeg", "z/y/e.tiff"):
        (root / rel).write_bytes(JPEG)
    for rel in ("notes.txt", "z/readme.md", "z/y/noext"):
        (root / rel).write_text("not an image")
    (root / "z" / "folder.jpg").mkdir()  # a directory with an image suffix
    return root


# --- iter_image_files -----------------------------------------------------------------------


def test_iter_folder_recursive_sorted_images_only(tree: Path) -> None:
    files = list(iter_image_files([tree]))
    rel = [p.relative_to(tree).as_posix() for p in files]
    assert rel == ["a.PNG", "b.jpg", "z/c.webp", "z/y/d.jpeg", "z/y/e.tiff"]
    assert all(p.is_file() for p in files)


def test_iter_explicit_file_kept_whatever_its_suffix(tree: Path) -> None:
    files = list(iter_image_files([tree / "notes.txt", tree / "b.jpg"]))
    assert files == [tree / "notes.txt", tree / "b.jpg"]  # order as given


def test_iter_several_paths_in_order(tree: Path) -> None:
    files = list(iter_image_files([tree / "z" / "y", tree / "b.jpg"]))
    assert [p.name for p in files] == ["d.jpeg", "e.tiff", "b.jpg"]


def test_iter_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError) as info:
        list(iter_image_files([missing]))
    assert str(missing) in str(info.value)
    assert isinstance(info.value, LookalikeError)


def test_iter_empty_folder(tmp_path: Path) -> None:
    assert list(iter_image_files([tmp_path])) == []


# --- image_id_for_file ----------------------------------------------------------------------


def test_image_id_stable_relative_and_absolute(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tree / "z" / "c.webp"
    monkeypatch.chdir(tree / "z")
    first = image_id_for_file(Path("c.webp"))
    assert first == image_id_for_file(absolute)
    assert first == image_id_for_file(Path("y/../c.webp"))
    assert first == image_id_for_file(absolute)  # stable across calls
    assert first.startswith("c-")
    assert len(first) == len("c-") + 10


def test_image_id_differs_for_same_name_in_two_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "shoe.jpg").write_bytes(JPEG)
    (tmp_path / "b" / "shoe.jpg").write_bytes(JPEG)  # identical bytes, too
    one = image_id_for_file(tmp_path / "a" / "shoe.jpg")
    two = image_id_for_file(tmp_path / "b" / "shoe.jpg")
    assert one != two
    assert one.startswith("shoe-") and two.startswith("shoe-")


def test_long_file_name_gives_a_valid_event(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 200 + ".jpg")  # 204 bytes: a legal file name
    path.write_bytes(JPEG)
    event = event_for_file(path, category="c", seller_id="s", image_root=None)
    assert len(event.image_id) <= 200 and len(event.listing_id) <= 200


# --- source_for_file ------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "sub" / "in.jpg").write_bytes(JPEG)
    (tmp_path / "out.jpg").write_bytes(JPEG)
    return r.resolve()


def test_auto_under_root_is_file_reference(root: Path) -> None:
    source = source_for_file(root / "sub" / "in.jpg", root, "auto")
    assert source == FileSource(path="sub/in.jpg")


def test_auto_relative_path_under_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root / "sub")
    assert source_for_file(Path("in.jpg"), root, "auto") == FileSource(path="sub/in.jpg")


def test_auto_outside_root_is_inline(root: Path) -> None:
    source = source_for_file(root.parent / "out.jpg", root, "auto")
    assert isinstance(source, InlineSource) and source.data == JPEG


def test_auto_without_root_is_inline(root: Path) -> None:
    source = source_for_file(root / "sub" / "in.jpg", None, "auto")
    assert isinstance(source, InlineSource) and source.data == JPEG


def test_inline_mode_under_root_is_inline(root: Path) -> None:
    assert isinstance(source_for_file(root / "sub" / "in.jpg", root, "inline"), InlineSource)


def test_file_mode_under_root(root: Path) -> None:
    assert source_for_file(root / "sub" / "in.jpg", root, "file") == FileSource(path="sub/in.jpg")


@pytest.mark.parametrize("with_root", [True, False])
def test_file_mode_outside_root_rejected(root: Path, with_root: bool) -> None:
    with pytest.raises(ConfigurationError) as info:
        source_for_file(root.parent / "out.jpg", root if with_root else None, "file")
    assert "LOOKALIKE_IMAGE_ROOT" in str(info.value)
    assert "out.jpg" in str(info.value)


def test_symlink_out_of_root_is_not_a_file_reference(root: Path) -> None:
    # The link lives under the root but the bytes do not: the worker would refuse the path.
    (root / "link.jpg").symlink_to(root.parent / "out.jpg")
    assert isinstance(source_for_file(root / "link.jpg", root, "auto"), InlineSource)
    with pytest.raises(ConfigurationError):
        source_for_file(root / "link.jpg", root, "file")


def test_too_large_for_inline(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_INLINE_BYTES + 1))
    with pytest.raises(ConfigurationError) as info:
        source_for_file(big, None, "auto")
    message = str(info.value)
    assert "LOOKALIKE_IMAGE_ROOT" in message and str(MAX_INLINE_BYTES + 1) in message


def test_exactly_max_inline_is_allowed(tmp_path: Path) -> None:
    ok = tmp_path / "ok.png"
    ok.write_bytes(b"\0" * MAX_INLINE_BYTES)
    source = source_for_file(ok, None, "inline")
    assert isinstance(source, InlineSource) and len(source.data) == MAX_INLINE_BYTES


def test_too_large_under_root_is_sent_as_reference(root: Path) -> None:
    (root / "big.png").write_bytes(b"\0" * (MAX_INLINE_BYTES + 1))
    assert source_for_file(root / "big.png", root, "auto") == FileSource(path="big.png")


def test_inline_event_fits_in_a_kafka_message(tmp_path: Path) -> None:
    ok = tmp_path / "ok.png"
    ok.write_bytes(os.urandom(MAX_INLINE_BYTES))
    event = event_for_file(ok, category="c", seller_id="s", image_root=None)
    assert len(event.to_json_bytes()) < 1_048_576  # Kafka's default message.max.bytes


# --- events ---------------------------------------------------------------------------------


def test_event_for_file(root: Path) -> None:
    path = root / "sub" / "in.jpg"
    event = event_for_file(path, category="shoes", seller_id="seller-9", image_root=root)
    assert event.image_id == image_id_for_file(path)
    assert event.listing_id == f"listing-{event.image_id}"
    assert (event.category, event.seller_id) == ("shoes", "seller-9")
    assert event.attributes == {"filename": "in.jpg"}
    assert event.image == FileSource(path="sub/in.jpg")
    assert parse_model(ImageUploaded, event.to_json_bytes()) == event
    again = event_for_file(path, category="shoes", seller_id="seller-9", image_root=root)
    assert again.image_id == event.image_id and again.event_id != event.event_id


def test_event_for_url() -> None:
    url = "https://cdn.example.com/items/42.jpg?w=800"
    event = event_for_url(url, category="bags", seller_id="s1")
    assert isinstance(event.image, UrlSource)
    assert str(event.image.url) == url
    assert event.image_id.startswith("url-") and len(event.image_id) == 4 + 16
    assert event.listing_id == f"listing-{event.image_id}"
    assert (event.category, event.seller_id) == ("bags", "s1")
    assert event_for_url(url, category="x", seller_id="y").image_id == event.image_id
    assert event_for_url(url + "&v=2", category="x", seller_id="y").image_id != event.image_id
    wire = json.loads(event.to_json_bytes())
    assert wire["image"] == {"kind": "url", "url": url}


@pytest.mark.parametrize("url", ["http://", "https://exa mple.com/a.jpg"])
def test_event_for_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        event_for_url(url, category="c", seller_id="s")


# --- FileEvents: many files, each folder resolved once ----------------------------------------


def test_file_events_match_the_one_file_helpers(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same ids and sources as event_for_file, through a symlinked folder, a symlinked file
    and relative paths alike."""
    (tmp_path / "linked-folder").symlink_to(tree / "z")
    (tree / "z" / "y" / "alias.jpg").symlink_to(tree / "b.jpg")
    monkeypatch.chdir(tree)
    paths = [
        *iter_image_files([tree]),
        tmp_path / "linked-folder" / "c.webp",
        Path("z/y/alias.jpg"),
        Path("z/y/../c.webp"),
    ]
    events = FileEvents(seller_id="s", image_root=tree / "z", mode="auto")
    for path in paths:
        built = events.event(path)
        one = event_for_file(
            path, category=path.resolve().parent.name, seller_id="s", image_root=tree / "z"
        )
        assert built.image_id == one.image_id, path
        assert built.image == one.image, path
        assert built.category == one.category, path
    # The symlinked file's digest is its target's, as before.
    digest = image_id_for_file(tree / "b.jpg").rsplit("-", 1)[1]
    assert events.event(Path("z/y/alias.jpg")).image_id == f"alias-{digest}"


def test_file_events_resolve_each_folder_once(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolved: list[Path] = []
    real_resolve = Path.resolve

    def counting(self: Path, strict: bool = False) -> Path:
        resolved.append(self)
        return real_resolve(self, strict)

    files = list(iter_image_files([tree]))
    monkeypatch.setattr(Path, "resolve", counting)
    events = FileEvents(seller_id="s", image_root=None)
    categories = [events.event(path).category for path in files]
    assert categories == ["photos", "photos", "z", "y", "y"]
    assert sorted(map(str, resolved)) == sorted({str(p.parent) for p in files})
    assert events.event(files[0], category="hats").category == "hats"
