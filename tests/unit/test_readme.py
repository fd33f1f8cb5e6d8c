"""The README documents every setting and the commands it promises."""

import importlib
import re
import subprocess
import sys
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


def test_every_python_import_in_the_readme_works() -> None:
    imports = re.findall(
        r"^(?:from lookalike[\w.]* import .+|import lookalike[\w.]*)$", README, re.M
    )
    assert imports, "the README shows how to publish from Python"
    for line in imports:
        exec(line, {})  # raises ImportError if a module or name moved


def test_every_dotted_lookalike_name_in_the_readme_exists() -> None:
    names = set(re.findall(r"`(lookalike(?:\.\w+)+)`", README))
    assert names
    for dotted in sorted(names):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module prefix
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
            break
        else:
            raise AssertionError(f"{dotted} in the README does not exist")


CHECK_IMPORTS = Path(__file__).resolve().parents[2] / "scripts" / "check_imports.py"


def check_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK_IMPORTS), *args], capture_output=True, text=True, timeout=120
    )


def test_no_import_circles_and_layers_hold() -> None:
    result = check_imports()
    assert result.returncode == 0, result.stderr


def test_the_import_check_finds_circles_and_broken_layers(tmp_path: Path) -> None:
    package = tmp_path / "lookalike"
    for folder, code in {
        "index": "from ..rollout import x\n",
        "rollout": "from ..index import y\nfrom ..cli import main\n",
        "cli": "",
    }.items():
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text(code)
    (package / "__init__.py").write_text("")
    result = check_imports(str(package))
    assert result.returncode == 1
    assert "circle" in result.stderr and "never imports the CLI" in result.stderr
