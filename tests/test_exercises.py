"""Every exercise solution and every "you should see" checkpoint runs, and a normal FAST run shows no warning box.

Each notebook is executed in FAST mode (in order, sharing a fresh runs folder, as a learner would) with
the code of each ``<details>`` solution appended as extra cells: a solution that no longer runs fails
here. Checkpoints (``reference.you_should_see`` / ``reference.matches``) print ✓, ✗ or – (no reference);
in FAST mode the committed FAST comparison and ``reference.json`` exist, so every checkpoint must be ✓.
The notebook's own cells must write nothing to stderr: JupyterLab shows stderr as a warning box.
"""
from __future__ import annotations

import os
import re

import nbformat
import pytest

from craftlib import notebooks as runner

pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.timeout(7200)]

NOTEBOOKS = [p for p in runner.list_notebooks() if p.stem[:2] in {"00", "01", "02", "03", "04", "05"}]
DETAILS = re.compile(r"<details><summary>Solution[^<]*</summary>(.*?)</details>", re.S)
CODE = re.compile(r"```python\n(.*?)```", re.S)
CHECKPOINT = re.compile(r"^([✓✗–]) you should see: (.*)$", re.M)


def solutions(nb) -> list[tuple[int, str]]:
    """(exercise cell index, code) of every Python block inside a ``<details>`` solution."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for block in DETAILS.findall(cell.source):
                found += [(i, code.strip()) for code in CODE.findall(block)]
    return found


def test_solutions_are_found_in_every_notebook():
    counts = {p.stem: len(solutions(nbformat.read(p, as_version=4))) for p in NOTEBOOKS}
    assert all(n >= 2 for n in counts.values()), counts
    assert sum(counts.values()) >= 15


@pytest.fixture(scope="session")
def executed(lfw_root, tmp_path_factory):
    """Every notebook plus its solutions, executed once in FAST mode: name -> (notebook, own cell count)."""
    folder = tmp_path_factory.mktemp("with-solutions")
    saved = {k: os.environ.get(k) for k in ("CRAFTLIB_RUNS", "CRAFTLIB_DATA")}
    os.environ["CRAFTLIB_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["CRAFTLIB_DATA"] = str(lfw_root)
    out = {}
    try:
        for path in NOTEBOOKS:
            nb = nbformat.read(path, as_version=4)
            own = len(nb.cells)
            for k, (index, code) in enumerate(solutions(nb)):
                cell = nbformat.v4.new_code_cell(f"# solution {k + 1} (exercise in cell {index})\n{code}")
                cell.id = f"solution-{k + 1}"
                nb.cells.append(cell)
            copy = folder / path.name
            nbformat.write(nb, copy)
            try:
                done, _ = runner.execute(copy, folder / "executed", timeout=1200, fast=True)
            except Exception as err:  # noqa: BLE001 - reported by the test of that notebook
                out[path.stem] = err
            else:
                out[path.stem] = (done, own)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_solutions_and_checkpoints(executed, name):
    result = executed[name]
    if isinstance(result, Exception):
        pytest.fail(f"{name} (with its solutions appended) failed:\n{result}")
    nb, own = result
    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"{name} cell {cell.id}: {errors[0].ename}: {errors[0].evalue}"
    marks = [m for cell in nb.cells if cell.cell_type == "code" for m in CHECKPOINT.findall(text(cell))]
    assert marks, f"{name} has no 'you should see' checkpoint"
    failed = [f"{mark} {line}" for mark, line in marks if mark != "✓"]
    assert not failed, f"{name}: checkpoints not met in FAST mode:\n" + "\n".join(failed)
    boxes = [(cell.id, o.text[:200]) for cell in nb.cells[:own] if cell.cell_type == "code"
             for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not boxes, f"{name}: warning boxes (stderr) in a normal FAST run: {boxes}"
