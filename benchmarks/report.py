"""What every benchmark does with its result: one section of ``benchmarks/results.json`` and one
generated block of ``docs/PERFORMANCE.md`` (between its markers), leaving everything else as it
was."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.json"
DOC = REPO / "docs" / "PERFORMANCE.md"


def write_section(key: str, section: dict, path: Path = RESULTS) -> None:
    """The ``key`` section of a results file; every other section is kept as it was."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**old, key: section}, indent=1) + "\n")


def update_block(name: str, text: str, doc: Path = DOC) -> bool:
    """Replace the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc``; the
    hand-written text around it is kept. False when the markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = doc.read_text() if doc.is_file() else ""
    if start not in old or end not in old:
        return False
    head, rest = old.split(start, 1)
    doc.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return True
