"""Every exercise solution and every "you should see" checkpoint runs, and a normal FAST run shows
no warning box.

Each notebook is executed in FAST mode (in order, sharing a fresh runs folder, as a learner would)
with the code of each ``<details>`` solution appended as extra cells (the ``workshop_executed``
fixture): a solution that no longer runs fails here. Checkpoints (``reference.you_should_see`` /
``reference.matches``) print ✓, ✗ or – (no reference); in FAST mode the committed FAST comparison
and ``reference.json`` exist, so every checkpoint must be ✓. The notebook's own cells must write
nothing to stderr: JupyterLab shows stderr as a warning box.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from craftlib.workshop import notebooks as runner

from conftest import WORKSHOP_NOTEBOOKS, solutions

pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.timeout(7200)]

NOTEBOOKS = runner.list_notebooks(WORKSHOP_NOTEBOOKS)
CHECKPOINT = re.compile(r"^([✓✗–]) you should see: (.*)$", re.M)


def test_solutions_are_found_in_every_notebook():
    counts = {p.stem: len(solutions(nbformat.read(p, as_version=4))) for p in NOTEBOOKS}
    assert all(n >= 2 for n in counts.values()), counts
    assert sum(counts.values()) >= 15


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_solutions_and_checkpoints(workshop_executed, name):
    result = workshop_executed[name]
    if isinstance(result, Exception):
        pytest.fail(f"{name} (with its solutions appended) failed:\n{result}")
    nb, own = result
    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"{name} cell {cell.id}: {errors[0].ename}: {errors[0].evalue}"
    marks = [
        m for cell in nb.cells if cell.cell_type == "code" for m in CHECKPOINT.findall(text(cell))
    ]
    assert marks, f"{name} has no 'you should see' checkpoint"
    failed = [f"{mark} {line}" for mark, line in marks if mark != "✓"]
    assert not failed, f"{name}: checkpoints not met in FAST mode:\n" + "\n".join(failed)
    boxes = [
        (cell.id, o.text[:200])
        for cell in nb.cells[:own]
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "stream" and o.name == "stderr"
    ]
    assert not boxes, f"{name}: warning boxes (stderr) in a normal FAST run: {boxes}"
