"""The README documents every setting and the commands it promises."""

from pathlib import Path

from lookalike.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [n for n in Settings.model_fields if f"`LOOKALIKE_{n.upper()}`" not in README]
    assert not missing, f"add to the README settings table (scripts/settings_table.py): {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    command = "bash scripts/setup.sh && .venv/bin/python -m pytest -q -p no:cacheprovider"
    assert command in README and command in ci
