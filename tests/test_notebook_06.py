"""Notebook 06 (CReLU pairs and Top-K sparsity, optional module) runs in FAST mode on real LFW and
shows its work."""

from __future__ import annotations

import os
import re
from unittest.mock import patch

import nbformat
import pytest

from craftlib.workshop import notebooks as runner

pytestmark = pytest.mark.notebooks

PATH = runner.NOTEBOOK_DIR / "06_crelu_and_topk.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
PNG = "image/png"


def test_has_its_exercises_questionnaire_and_reading():
    """(Clean copy, goals, runtime, parameters cell and no logic: ``tests/test_notebooks.py`` for
    all nine.)"""
    text = "\n".join(
        c.source for c in nbformat.read(PATH, as_version=4).cells if c.cell_type == "markdown"
    )
    assert text.count("<details><summary>Solution</summary>") >= 3
    assert "## Questionnaire" in text and "## Further reading" in text and "You should see" in text


@pytest.fixture(scope="module")
def executed(lfw_root, tmp_path_factory, stem):
    env = {"CRAFTLIB_RUNS": str(tmp_path_factory.mktemp("runs")), "CRAFTLIB_DATA": str(lfw_root)}
    with patch.dict(os.environ, env):  # the kernel inherits this environment; restored afterwards
        nb, seconds = runner.execute(
            PATH, tmp_path_factory.mktemp("executed"), timeout=900, fast=True
        )
    runner.record_times({PATH.stem: seconds}, fast=True)
    return nb


def _cell(nb, cell_id):
    return next(c for c in nb.cells if c.id == cell_id)


def _text(cell) -> str:
    return "".join(
        o.text if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for o in cell.outputs
    )


def _mimes(cell) -> set[str]:
    return {m for o in cell.outputs for m in o.get("data", {})}


@pytest.mark.timeout(5400)  # the fixture's execution counts too; a loaded 2-core machine is slow
def test_06_runs_in_fast_mode_and_shows_its_work(executed):
    nb = executed
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.id
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.id
    planted = _text(_cell(nb, "planted"))
    assert "φ, −φ planted: mean μ -1.00, paired 100%, mutual pairs 8" in planted
    assert re.search(r"orthogonal: mean μ [+-]0\.00, paired 0%", planted)
    mfn = _text(_cell(nb, "mobilefacenet"))
    assert "MobileFaceNet conv1: mean μ -0.75" in mfn and "paired 86%" in mfn
    assert re.search(r"against the matched reference: random mean μ -0\.\d\d, paired 12%", mfn)
    assert "8 filters, 8 of them dead, their partners dead: 8" in _text(_cell(nb, "dead-twins"))
    assert "stem(x) == cat(relu(z), relu(-z)): True" in _text(_cell(nb, "crelu-check"))
    assert "keeps its face's pixel histogram: True" in _text(_cell(nb, "histogram-check"))
    assert "shape-bias index" in _text(_cell(nb, "probe-all"))
    for cid in ("mobilefacenet", "pair-static", "pairing-trained", "probe-faces", "topk-static"):
        assert PNG in _mimes(_cell(nb, cid)), cid
    for cid in ("pair-explorer", "topk-explorer"):
        assert WIDGET in _mimes(_cell(nb, cid)), cid
    committed = _cell(nb, "committed")
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in committed.outputs)
    # the committed 5-seed tables
    assert "| standard training | 5 |" in markdown and "R texture (2×2)" in markdown
    assert PNG in _mimes(committed)
