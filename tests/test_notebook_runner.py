"""``craftlib.workshop.notebooks``, the headless runner, without a kernel: listing, cleaning, timing
records, FAST.

(``tests/test_notebooks.py`` executes the real notebooks with it; that takes minutes.)
"""

from __future__ import annotations

import json

import nbformat
import pytest

from craftlib.workshop import notebooks


@pytest.fixture
def folder(tmp_path):
    """Two numbered notebooks with stored output, execution counts and widget state; one
    unnumbered."""
    for name in ("00_a", "01_b"):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("1 + 1")
        cell.outputs = [
            nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)
        ]
        cell.execution_count = 1
        cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01"}
        nb.cells = [cell, nbformat.v4.new_markdown_cell("text")]
        nb.metadata["widgets"] = {"state": {}}
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    (tmp_path / "scratch.ipynb").write_text("{}")
    return tmp_path


def test_list_notebooks_by_prefix_stem_or_file(folder):
    found = notebooks.list_notebooks(folder=folder)
    assert [p.stem for p in found] == ["00_a", "01_b"]
    for name in ("01", "01_b", "01_b.ipynb"):
        assert [p.stem for p in notebooks.list_notebooks([name], folder=folder)] == ["01_b"]
    with pytest.raises(SystemExit, match="matches 2 notebooks"):
        notebooks.list_notebooks(["0"], folder=folder)  # ambiguous
    with pytest.raises(SystemExit, match="matches 0 notebooks"):
        notebooks.list_notebooks(["99"], folder=folder)


def test_problems_and_clean(folder):
    found = notebooks.list_notebooks(folder=folder)
    # output, count, timing, widgets
    assert len(notebooks.problems(nbformat.read(found[0], as_version=4))) == 4
    assert notebooks.clean(found) == found
    for path in found:
        assert notebooks.problems(nbformat.read(path, as_version=4)) == []
    assert notebooks.clean(found) == []  # already clean: nothing rewritten


def test_record_times_merges(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    target = tmp_path / "times.json"
    notebooks.record_times({"00_a": 1.234}, fast=True, path=target)
    notebooks.record_times({"01_b": 5.0}, fast=False, path=target)
    notebooks.record_times({"00_a": 2.0}, fast=True, path=target)
    data = json.loads(target.read_text())
    assert (
        data["fast"] == {"00_a": 2.0} and data["full"] == {"01_b": 5.0} and data["threads"] == "1"
    )


@pytest.mark.parametrize("value, fast", [(None, True), ("1", True), ("0", False), ("no", False)])
def test_run_is_fast_unless_told_otherwise(monkeypatch, tmp_path, value, fast):
    """The runner's default is FAST (``CRAFT_FAST`` unset), through ``paths.fast_mode`` like the
    library."""
    if value is None:
        monkeypatch.delenv("CRAFT_FAST", raising=False)
    else:
        monkeypatch.setenv("CRAFT_FAST", value)
    seen = []
    monkeypatch.setattr(
        notebooks, "execute", lambda path, out, timeout, fast: (seen.append(fast), (None, 0.5))[1]
    )
    monkeypatch.setattr(notebooks, "record_times", lambda times, fast, path=None: None)
    assert notebooks.run([tmp_path / "00_a.ipynb"], log=lambda *_: None) == {"00_a": 0.5}
    assert seen == [fast]


def test_main_clean_strips_in_place(folder, monkeypatch, capsys):
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", folder)
    monkeypatch.setattr(
        notebooks, "list_notebooks", lambda names: sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    )
    assert notebooks.main(["--clean"]) == 0
    assert "cleaned 2 notebook(s)" in capsys.readouterr().out
