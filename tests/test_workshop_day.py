"""docs/WORKSHOP_DAY.md, the one-page run sheet: every cell it names exists where it says; the day
is all there.

The sheet names cells as `NN:cell-id`, often followed by the section they are in ("(§6"); both are
read from the notebooks. The schedule depends on 04's `random_matched` run: it must be a visible
code cell.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from craftlib.paths import REPO_ROOT
from craftlib.workshop.notebooks import list_notebooks

SHEET = (REPO_ROOT / "docs" / "WORKSHOP_DAY.md").read_text()
CELL_REF = re.compile(r"`(\d\d):([A-Za-z0-9_-]+)`(?: \(§(\d))?")
NOTEBOOKS = {p.stem[:2]: nbformat.read(p, as_version=4) for p in list_notebooks()}


def section_of(nb, cell_id: str) -> int | None:
    """The number of the last "## N." heading above the cell."""
    section = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for m in re.finditer(r"^## (\d+)\.", cell.source, re.M):
                section = int(m.group(1))
        if cell.id == cell_id:
            return section
    raise KeyError(cell_id)


def test_every_cell_reference_resolves_to_a_code_cell_in_the_section_named():
    refs = CELL_REF.findall(SHEET)
    assert len(refs) >= 8, "the run sheet should name the cells to run, to the cell"
    for nb, cell_id, section in refs:
        cells = {c.id: c for c in NOTEBOOKS[nb].cells}
        assert cell_id in cells, f"docs/WORKSHOP_DAY.md names {nb}:{cell_id}, which does not exist"
        assert cells[cell_id].cell_type == "code", f"{nb}:{cell_id} is not a code cell"
        if section:
            assert section_of(NOTEBOOKS[nb], cell_id) == int(section), (
                f"{nb}:{cell_id} is not in §{section}"
            )


def test_the_sheet_has_the_day_on_one_page():
    headings = re.findall(r"^## (.+)$", SHEET, re.M)
    for needed in (
        "Before the day",
        "How long each notebook computes",
        "The timetable",
        "When a laptop fails",
        "Optional notebooks",
    ):
        assert any(h.startswith(needed) for h in headings), needed
    assert len(SHEET.split()) <= 1400, "one page: the guide holds the rest"
    failures = SHEET[SHEET.index("## When a laptop fails") : SHEET.index("## Optional notebooks")]
    assert re.findall(r"^(\d)\. ", failures, re.M) == ["1", "2", "3"]
    breaks = [line for line in SHEET.splitlines() if "**break**" in line]
    assert len(breaks) == 2 and all("before leaving" in b and CELL_REF.search(b) for b in breaks)
    assert "Run All Above Selected Cell" in SHEET and "CRAFT_PRESENTATION=1" in SHEET


@pytest.mark.parametrize(
    "row", [r for r in SHEET.splitlines() if re.match(r"\| 0\d \|", r)], ids=lambda r: r[2:4]
)
def test_runtimes_are_given_per_core_count_and_for_this_laptop(row):
    # a quote's format is not a column
    row = re.sub(r"<!--q:([^|>]*)\|[^>]*-->", r"<!--q:\1-->", row)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # quoted from the measurements
    assert len(cells) == 6 and "time.full" in cells[2] and "time.fast" in cells[5]
    # two cores: a time; this laptop: in runs of R
    assert re.search(r"\d+ (s|min)", cells[3]) and cells[4]


def test_the_third_arm_notebook_05_needs_is_a_visible_labelled_cell_in_04():
    cells = NOTEBOOKS["04"].cells
    i = next(i for i, c in enumerate(cells) if c.id == "random-matched-train")
    assert cells[i].cell_type == "code" and '"random_matched"' in cells[i].source
    assert cells[i - 1].cell_type == "markdown" and "Needed by notebook 05" in cells[i - 1].source
    solutions = "\n".join(c.source for c in cells if "<details>" in c.source)
    assert "train_or_load" not in solutions.split("Exercise 2")[1].split("</details>")[0], (
        "exercise 2 retrains it"
    )
