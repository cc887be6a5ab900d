"""The layering in docs/ARCHITECTURE.md is the code's: no upward import, no cycle, no module left out."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "craftlib"


def floors() -> dict[str, int]:
    """Module -> floor, read from the table in docs/ARCHITECTURE.md."""
    table = {}
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        match = re.match(r"\|\s*(\d+)[^|]*\|([^|]*)\|", line)
        if match:
            for module in re.findall(r"`([\w]+)`", match.group(2)):
                table[module] = int(match.group(1))
    return table


def imports(path: Path) -> set[str]:
    """craftlib modules a file imports (relative imports, also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name if (PACKAGE / f"{alias.name}.py").exists() else "__init__"
                             for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("craftlib."):
            found.add(node.module.split(".")[1])
    return found


GRAPH = {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_floor():
    missing = sorted(set(GRAPH) - set(floors()))
    stale = sorted(set(floors()) - set(GRAPH))
    assert not missing, f"modules missing from docs/ARCHITECTURE.md's table: {missing}"
    assert not stale, f"docs/ARCHITECTURE.md names modules that do not exist: {stale}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    table = floors()
    upward = sorted(m for m in GRAPH[module] if table.get(m, -1) > table.get(module, -1))
    assert not upward, f"{module} (floor {table.get(module)}) imports from higher floors: " + \
        ", ".join(f"{m} (floor {table[m]})" for m in upward)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_check_catches_an_upward_import(tmp_path):
    """The parser sees function-level imports too (a test of the test)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from .viz import new_figure\n    from . import __version__\n")
    assert imports(sample) == {"viz", "__init__"}
