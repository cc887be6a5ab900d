"""What every benchmark does with its result: one section of ``benchmarks/results.json`` and one
generated block of ``docs/PERFORMANCE.md`` (``craftlib.pages``), leaving everything else as it
was."""

from __future__ import annotations

import json
from pathlib import Path

from craftlib import pages

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.json"
DOC = REPO / "docs" / "PERFORMANCE.md"


def write_section(key: str, section: dict, path: Path = RESULTS) -> None:
    """The ``key`` section of a results file; every other section is kept as it was."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**old, key: section}, indent=1) + "\n")


def update_block(name: str, text: str, doc: Path = DOC) -> bool:
    """Set block ``name`` of ``doc`` (``craftlib.pages``: the prose around it is kept) to ``text``;
    True when the page changed. Missing markers are an error that names them."""
    return bool(pages.update(doc, {name: text}))
