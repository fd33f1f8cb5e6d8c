"""Fail on an import circle or a broken layer in src/lookalike.

Reads every module's imports (top-level, inside functions, and under TYPE_CHECKING alike: each
is a dependency a reader must follow) and checks:

1. no circle between modules;
2. no circle between the package's folders (``lookalike.index`` -> ``lookalike.rollout`` ->
   ``lookalike.index`` would be one), so the folders form layers;
3. nothing outside ``lookalike.streams`` imports it, except the CLI that starts a worker;
4. nothing outside ``lookalike.cli`` imports it, except ``lookalike.__main__``.

Prints the folder graph (--graph) and exits 1 with the offending imports on failure.
Run: python scripts/check_imports.py [--graph] [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "lookalike"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_name(path: Path, root: Path) -> str:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imports_of(name: str, modules: dict[str, Path]) -> set[str]:
    """The lookalike modules ``name`` imports (a package import is its ``__init__``)."""
    tree = ast.parse(modules[name].read_text())
    base = name if is_package(name, modules) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            for alias in node.names:  # `from . import cli_part` imports a module
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
    return {m for m in found if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def folder(name: str) -> str:
    """The top-level part a module belongs to: lookalike.index.qdrant -> index."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def check(root: Path = ROOT) -> tuple[list[str], dict[str, set[str]]]:
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {name: imports_of(name, modules) for name in modules}
    problems: list[str] = []
    if cycle := find_cycle(graph):
        problems.append("module circle: " + " -> ".join(cycle))
    folders: dict[str, set[str]] = defaultdict(set)
    for name, targets in graph.items():
        for target in targets:
            a, b = folder(name), folder(target)
            # A package's __init__ at the root level (lookalike/__init__.py) is the public face:
            # it may re-export from anywhere below.
            if a != b and name != PACKAGE:
                folders[a].add(b)
    if cycle := find_cycle(folders):
        problems.append("folder circle: " + " -> ".join(cycle))
    for name, targets in graph.items():
        for target in targets:
            if folder(target) == "streams" and folder(name) not in ("streams", "cli"):
                problems.append(f"{name} imports {target}: nothing below streams may import it")
            if folder(target) == "cli" and folder(name) != "cli" and name != f"{PACKAGE}.__main__":
                problems.append(f"{name} imports {target}: the library never imports the CLI")
    return problems, folders


def main() -> int:
    dirs = [Path(a) for a in sys.argv[1:] if not a.startswith("--")]
    problems, folders = check(dirs[0] if dirs else ROOT)
    if "--graph" in sys.argv:
        for name in sorted(folders):
            print(f"{name:<12} -> {', '.join(sorted(folders[name]))}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"no import circles; layers hold ({len(folders)} folders)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
