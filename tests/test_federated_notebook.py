"""Notebook 08 (federated, optional module): committed clean, structured like the others, and it
runs in FAST mode on real LFW with its key cells showing their work. (Its own file:
tests/test_notebooks.py covers 00-06.)"""

from __future__ import annotations

import os
import re

import nbformat
import pytest

from craftlib.workshop import notebooks as runner

PATH = runner.NOTEBOOK_DIR / "08_federated.ipynb"
pytestmark = pytest.mark.notebooks


def test_committed_clean_and_structured():
    nb = nbformat.read(PATH, as_version=4)
    nbformat.validate(nb)
    assert runner.problems(nb) == []
    # after the Colab cell
    first = next(c for c in nb.cells if "colab-setup" not in c.metadata.get("tags", []))
    assert (
        first.cell_type == "markdown"
        and "Learning goals" in first.source
        and "Expected runtime" in first.source
    )
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "FAST = paths.fast_mode(default=False)" in params[0].source
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert (
        markdown.count("<details><summary>Solution</summary>") >= 3
        and "## Questionnaire" in markdown
    )
    assert "Checkpoint 1" in markdown and "Checkpoint 2" in markdown
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from craftlib import" in code
    assert not re.search(r"^\s*(def|class)\s", code, re.M), (
        "notebooks call craftlib; logic belongs in the library"
    )
    assert len({c.id for c in nb.cells}) == len(nb.cells)


@pytest.mark.timeout(3600)
def test_runs_in_fast_mode(lfw_root, tmp_path):
    """FAST on real LFW, with every exercise's solution appended as a cell (a solution that no
    longer runs fails)."""
    from conftest import solutions

    nb = nbformat.read(PATH, as_version=4)
    found = solutions(nb)
    assert len(found) >= 3
    for k, (index, code) in enumerate(found):
        cell = nbformat.v4.new_code_cell(f"# solution {k + 1} (exercise in cell {index})\n{code}")
        cell.id = f"solution-{k + 1}"
        nb.cells.append(cell)
    copy = tmp_path / PATH.name
    nbformat.write(nb, copy)
    saved = os.environ.get("CRAFTLIB_DATA")
    os.environ["CRAFTLIB_DATA"] = str(lfw_root)
    try:
        nb, seconds = runner.execute(copy, tmp_path / "out", timeout=1800, fast=True)
    finally:
        if saved is None:
            os.environ.pop("CRAFTLIB_DATA", None)
        else:
            os.environ["CRAFTLIB_DATA"] = saved
    runner.record_times({PATH.stem: seconds}, fast=True)
    cells = {c.id: c for c in nb.cells}
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.execution_count is not None, c.id
            assert not [o for o in c.outputs if o.output_type == "error"], c.id

    def text(cid):
        return "".join(
            o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cells[cid].outputs
        )

    def markdown(cid):
        return "".join(o.get("data", {}).get("text/markdown", "") for o in cells[cid].outputs)

    def mimes(cid):
        return {m for o in cells[cid].outputs for m in o.get("data", {})}

    def solution(marker):
        return text(
            f"solution-{next(k for k, (_, code) in enumerate(found) if marker in code) + 1}"
        )

    assert "✓ identities dealt once" in text("checkpoint-sites")
    assert "->" in text("payloads") and "uint8" not in text("payloads")
    assert text("compare").count("DevTest") == 4
    assert "identically both times" in text("checkpoint-determinism")
    assert "top-1" in text("privacy")
    # exercise 4: the step-count control beside the two it separates
    steps = solution('"central_steps"')
    assert (
        all(f"{s}: " in steps for s in ("central", "central_steps", "fedavg"))
        and "SGD steps per model" in steps
    )
    sites = solution("decay_factors")  # exercise 5: each committed local-only site, seeds 0-2
    assert sites.count("seed ") == 12 and "decay 0." in sites and "silent" in sites
    # section 8 reads the committed larger budget: its three tables, the death figure, the explorer
    # over seed SEED
    assert "79 committed runs" in text("study") and "step-matched control" in markdown("death")
    assert "image/png" in mimes("death") and "renewed on" in markdown("reactivation")
    assert "application/vnd.jupyter.widget-view+json" in mimes("committed-explorer")
    assert "image/png" in mimes("static")
    assert "application/vnd.jupyter.widget-view+json" in mimes("widget")
    print(f"notebook 08 FAST: {seconds:.0f} s")
