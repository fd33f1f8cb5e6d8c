"""Unit tests for lookalike.settings: LOOKALIKE_* environment variables and derived names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from qdrant_client import QdrantClient

from lookalike.index import QdrantIndex
from lookalike.settings import Settings


def serving_alias(settings: Settings) -> str:
    """The alias the index built from these settings serves through."""
    return QdrantIndex(QdrantClient(":memory:"), settings.collection_prefix).serving_alias


def test_defaults(settings_env: Path) -> None:
    s = Settings()
    assert s.data_dir == (settings_env / "data").resolve()
    assert s.kafka_bootstrap is None
    assert s.qdrant_url is None and s.qdrant_api_key is None
    assert s.image_root is None
    assert s.topic_prefix == "lookalike" and s.collection_prefix == "lookalike"
    assert s.encoder == "efficientnet-lite0"
    assert s.device == "auto"
    assert s.batch_size is None  # unset: chosen for the device (lookalike.tuning)
    assert s.topic_partitions == 4
    assert s.max_image_bytes == 20_000_000
    assert s.max_image_pixels == 50_000_000
    assert s.base_api_url == "http://127.0.0.1:6066"


def test_env_vars_are_read(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = settings_env / "images"
    root.mkdir()
    env = {
        "LOOKALIKE_KAFKA_BOOTSTRAP": "kafka1:9092,kafka2:9092",
        "LOOKALIKE_QDRANT_URL": "http://qdrant:6333",
        "LOOKALIKE_BATCH_SIZE": "7",
        "LOOKALIKE_BATCH_MAX_WAIT": "0.25",
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_IMAGE_ROOT": str(root),
        "LOOKALIKE_MAX_IMAGE_BYTES": "1234",
        "LOOKALIKE_API_PORT": "8080",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.kafka_bootstrap == "kafka1:9092,kafka2:9092"
    assert s.qdrant_url == "http://qdrant:6333"
    assert s.batch_size == 7
    assert s.batch_max_wait == 0.25
    assert s.device == "cpu"
    assert s.image_root == root.resolve()
    assert s.max_image_bytes == 1234
    assert s.base_api_url == "http://127.0.0.1:8080"


def test_unprefixed_env_vars_are_ignored(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_SIZE", "3")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "elsewhere:9092")
    s = Settings()
    assert s.batch_size is None
    assert s.kafka_bootstrap is None


def test_keyword_arguments_override_env(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_BATCH_SIZE", "7")
    assert Settings(batch_size=9).batch_size == 9


def test_derived_names_share_prefixes(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_TOPIC_PREFIX", "shop")
    monkeypatch.setenv("LOOKALIKE_COLLECTION_PREFIX", "shopidx")
    s = Settings()
    assert s.uploads_topic == "shop.uploads"
    assert s.dead_letters_topic == "shop.dead-letters"
    assert s.topic("anything") == "shop.anything"
    assert serving_alias(s) == "shopidx-serving"


def test_default_topic_names(settings_env: Path) -> None:
    s = Settings()
    assert s.uploads_topic == "lookalike.uploads"
    assert s.dead_letters_topic == "lookalike.dead-letters"
    assert serving_alias(s) == "lookalike-serving"


def test_paths_under_data_dir(settings_env: Path) -> None:
    s = Settings()
    for path in (s.index_path, s.qdrant_path, s.broker_file, s.ledger_path):
        assert path.parent == s.data_dir
    assert s.broker_file.name == "broker.json"
    assert len({s.index_path, s.qdrant_path, s.broker_file, s.ledger_path}) == 4


def test_data_dir_user_expanded_and_resolved(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = settings_env / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", "~/state/../lookalike-data")
    s = Settings()
    assert s.data_dir == home.resolve() / "lookalike-data"
    assert s.data_dir.is_absolute()


def test_relative_paths_resolved_against_cwd(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(settings_env)
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", "rel/data")
    monkeypatch.setenv("LOOKALIKE_IMAGE_ROOT", "pics")
    s = Settings()
    assert s.data_dir == settings_env.resolve() / "rel" / "data"
    assert s.image_root == settings_env.resolve() / "pics"


def test_default_data_dir_from_xdg(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(settings_env / "xdg"))
    assert Settings().data_dir == settings_env / "xdg" / "lookalike"


def test_default_data_dir_without_xdg(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_DATA_DIR")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(settings_env))
    assert Settings().data_dir == settings_env / ".local" / "share" / "lookalike"


def test_default_data_dir_is_absolute_even_with_relative_xdg(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOKALIKE_DATA_DIR")
    monkeypatch.chdir(settings_env)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")
    # pydantic-settings validates defaults too, so the default is expanded like a set value.
    assert Settings().data_dir == settings_env.resolve() / "relative" / "xdg" / "lookalike"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", -1),
        ("topic_partitions", 0),
        ("batch_max_wait", 0),
        ("fetch_timeout", -1.0),
        ("max_image_bytes", 0),
        ("max_image_pixels", 0),
        ("decode_threads", 0),
        ("api_port", 70000),
        ("rebalance_timeout", 0),
    ],
)
def test_invalid_values_rejected(settings_env: Path, field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value})
    assert field in str(info.value)


@pytest.mark.parametrize("value", ["0", "many"])
def test_invalid_env_value_rejected(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LOOKALIKE_BATCH_SIZE", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "batch_size" in str(info.value)


def test_api_url_setting_wins_and_is_normalised(settings_env: Path) -> None:
    assert Settings(api_url="http://search.internal:9000/").base_api_url == (
        "http://search.internal:9000"
    )
