"""Colab honest: badges and first cells come from pyproject's one address, and none points at a
placeholder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from craftlib import pages
from craftlib.workshop import colab

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# any well-formed address, for the published branch
REAL = "https://github.com/acme-lab/craft-workshop"


def _texts() -> dict[str, str]:
    """README, the docs and every cell of every notebook: wherever a learner could meet a Colab
    link."""
    out = {
        p.name: p.read_text(encoding="utf-8")
        for p in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]
    }
    for nb in NOTEBOOKS:
        for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            out[f"{nb.name} cell {i}"] = "".join(cell["source"])
    return out


def test_no_placeholder_address_in_the_readme_docs_or_any_notebook():
    hits = [
        name
        for name, text in _texts().items()
        if colab.PLACEHOLDER.search(text) or "github.com/OWNER" in text
    ]
    assert not hits, f"a placeholder repository address is still written in: {hits}"


def test_the_placeholder_check_catches_the_old_links():
    old = "[![Open In Colab](x)](https://colab.research.google.com/github/OWNER/craft-workshop/blob/main/nb.ipynb)"
    assert colab.PLACEHOLDER.search(old) and colab.PLACEHOLDER.search(
        "git+https://github.com/<owner>/x@main"
    )
    assert not colab.PLACEHOLDER.search(REAL)


def test_badges_and_cells_agree_with_the_address_in_pyproject():
    url = colab.repository()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert pages.block(readme, colab.BADGES) == colab.badges(url), (
        "README's Colab block is stale: run `python -m craftlib.workshop.colab`"
    )
    for nb in NOTEBOOKS:
        first = json.loads(nb.read_text(encoding="utf-8"))["cells"][0]
        assert colab.CELL_TAG in first["metadata"].get("tags", []), (
            f"{nb.name}: no Colab cell first"
        )
        assert "".join(first["source"]) == colab.cell_source(url), f"{nb.name}: stale Colab cell"
        assert not first["outputs"] and first["execution_count"] is None
    if url is not None:  # written once: nowhere but pyproject and what colab.py generates from it
        slug = colab.repository_slug(url)
        stray = [
            str(p.relative_to(REPO))
            for p in [*REPO.glob("docs/*.md"), *REPO.glob("craftlib/*.py")]
            if slug in p.read_text(encoding="utf-8")
        ]
        assert not stray, f"the repository address is written outside pyproject.toml: {stray}"


def test_without_an_address_colab_is_declared_unavailable(monkeypatch):
    block, cell = colab.badges(None), colab.cell_source(None)
    assert (
        "not available yet" in block
        and "Turning on Colab" in block
        and "colab.research" not in block
    )
    assert "not available yet" in cell and "github.com" not in cell
    exec(compile(cell, "colab-cell", "exec"), {})  # a laptop: nothing happens
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    with pytest.raises(RuntimeError, match="run the notebooks on a laptop"):
        exec(compile(cell, "colab-cell", "exec"), {})


def test_with_an_address_the_cell_installs_from_it_and_does_nothing_elsewhere(monkeypatch):
    cell = colab.cell_source(REAL)
    assert f"craftlib @ git+{REAL}@main" in cell
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    exec(compile(cell, "colab-cell", "exec"), {})
    assert calls == []
    block = colab.badges(REAL)
    assert all(
        f"colab.research.google.com/github/acme-lab/craft-workshop/blob/main/notebooks/{nb.name}"
        in block
        for nb in NOTEBOOKS
    )


def test_the_address_is_read_from_pyproject_and_a_placeholder_is_refused(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n\n[project.urls]\n')
    assert colab.repository(pyproject) is None
    pyproject.write_text(f'[project]\nname = "x"\n\n[project.urls]\nRepository = "{REAL}"\n')
    assert colab.repository(pyproject) == REAL
    for bad in (
        "https://github.com/OWNER/craft-workshop",
        "https://gitlab.com/acme/craft-workshop",
        "craft-workshop",
    ):
        pyproject.write_text(f'[project]\nname = "x"\n\n[project.urls]\nRepository = "{bad}"\n')
        with pytest.raises(ValueError, match="Turning on Colab"):
            colab.repository(pyproject)


def test_sync_rewrites_only_the_first_cells_and_the_badge_block(tmp_path, monkeypatch):
    books = tmp_path / "notebooks"
    books.mkdir()
    for nb in NOTEBOOKS[:2]:
        shutil.copy(nb, books / nb.name)
    readme = tmp_path / "README.md"
    block = f"<!-- colab-badges -->\n{colab.badges(None)}\n<!-- /colab-badges -->"
    readme.write_text(f"intro\n\n{block}\n\nrest\n")
    monkeypatch.setattr(colab, "NOTEBOOKS", books)
    monkeypatch.setattr(colab, "README", readme)
    before = {p.name: json.loads(p.read_text())["cells"][1:] for p in books.iterdir()}
    assert colab.sync(REAL) == [p.name for p in NOTEBOOKS[:2]] + ["README.md"]
    assert colab.sync(REAL) == []
    for p in books.iterdir():
        cells = json.loads(p.read_text())["cells"]
        assert (
            "".join(cells[0]["source"]) == colab.cell_source(REAL) and cells[1:] == before[p.name]
        )
    text = readme.read_text()
    assert (
        text.startswith("intro\n\n")
        and text.endswith("\n\nrest\n")
        and "acme-lab/craft-workshop" in text
    )
