from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.kafka.local_broker import start_local_broker, stop_local_broker
from lookalike.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Tansu broker process on loopback for the whole test session."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("broker"))
    broker, started = start_local_broker(settings)
    assert started
    yield broker.bootstrap
    assert stop_local_broker(settings)


@pytest.fixture()
def free_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
