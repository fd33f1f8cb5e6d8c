from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture()
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Isolate settings from the developer's environment: a fresh data dir, no remote services."""
    import os

    for key in list(os.environ):
        if key.startswith("LOOKALIKE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path
