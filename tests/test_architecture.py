"""The house in docs/ARCHITECTURE.md is the code's: each part imports only the parts beneath it, and
no import loops. The core (``craftlib/*.py``) imports no subpackage; ``study`` imports only the
core; a companion imports the core and ``study``, never another companion; ``scale`` imports only
the core; ``workshop`` and ``__main__`` sit on top."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from craftlib import pages

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "craftlib"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """craftlib modules a file imports (absolute or relative, also inside functions), as dotted
    names."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "craftlib":
                continue
            submodules = [
                f"{target}.{a.name}"
                for a in node.names
                if (ROOT / Path(*f"{target}.{a.name}".split("."))).with_suffix(".py").exists()
                or (ROOT / Path(*f"{target}.{a.name}".split("."))).is_dir()
            ]
            found.update(submodules or [target])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "craftlib")
    return found - {module_name(path)}


def part(module: str) -> str:
    """core, study, scale, workshop, companions.<name>, or entry (``__main__``)."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and not (PACKAGE / parts[1]).is_dir()):
        return "entry" if parts[-1] == "__main__" else "core"
    return ".".join(parts[1:3]) if parts[1] == "companions" and len(parts) > 2 else parts[1]


def allowed(src: str, dst: str) -> bool:
    """The rule of ARCHITECTURE.md, in code."""
    if src == dst or src in ("workshop", "entry"):
        return True
    if dst in ("workshop", "entry"):
        return False
    if src in ("core", "companions"):
        return dst == "core"
    if src in ("study", "scale"):
        return dst == "core"
    if src.startswith("companions."):
        return dst in ("core", "study", "companions")
    raise AssertionError(f"unknown part {src}")


MODULES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {module_name(p): imports(p) for p in MODULES}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_follow_the_house(module):
    bad = sorted(m for m in GRAPH[module] if not allowed(part(module), part(m)))
    assert not bad, f"{module} ({part(module)}) imports " + ", ".join(
        f"{m} ({part(m)})" for m in bad
    )


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt])
                )
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_the_picture_names_every_module():
    """docs/ARCHITECTURE.md's picture lists every module under its part, and nothing that does not
    exist."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    picture = pages.block(text, "house")
    drawn = set(re.findall(r"\b([a-z_]+)\.py\b", picture))
    files = {p.stem for p in MODULES if p.stem != "__init__"}
    assert not files - drawn, (
        f"modules missing from ARCHITECTURE.md's picture: {sorted(files - drawn)}"
    )
    assert not drawn - files, (
        f"ARCHITECTURE.md's picture names modules that do not exist: {sorted(drawn - files)}"
    )


def test_the_check_sees_relative_absolute_and_late_imports(tmp_path):
    """A test of the test: the parser resolves every import form to a dotted module."""
    study = PACKAGE / "study" / "results.py"
    found = imports(study)
    assert "craftlib.study.experiments" in found and "craftlib.activity" in found
    assert part("craftlib.companions.federated.federation") == "companions.federated"
    assert part("craftlib.viz") == "core" and part("craftlib.study.dose") == "study"
    assert not allowed("core", "study") and not allowed(
        "companions.federated", "companions.sparsity"
    )
    assert allowed("companions.federated", "study") and not allowed("study", "companions.federated")


def test_the_package_exports_the_newcomers_names_without_loading_torch():
    """``from craftlib import Trainer`` works; ``import craftlib`` alone loads no torch (the
    installer needs that)."""
    import subprocess
    import sys

    code = "import sys, craftlib; assert 'torch' not in sys.modules; print(len(craftlib.__all__))"
    assert subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    import craftlib

    for name in craftlib.__all__:
        assert getattr(craftlib, name) is not None, name
    from craftlib import CraftSpec, ReactivationCallback, Trainer, train_or_load

    assert callable(train_or_load) and Trainer.__module__ == "craftlib.training"
    assert ReactivationCallback(CraftSpec()).spec == CraftSpec()
