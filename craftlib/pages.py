"""Generated blocks in the project's Markdown pages: the text between a line ``<!-- name -->`` and a
line ``<!-- /name -->``.

Why one syntax and one reader: RESULTS, PERFORMANCE, ARCHITECTURE and the README mix prose a
person writes with tables a command writes (``make dose-report``, the benchmarks, the Colab badges)
and that tests check against the records. The command rewrites its block in place and keeps the
prose; a test reads the same block the same way. Markers stand on lines of their own, each block
exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from craftlib.paths import atomic_write


def _pattern(name: str) -> re.Pattern:
    n = re.escape(name)
    return re.compile(rf"^<!-- {n} -->\n(.*?)^<!-- /{n} -->$", re.M | re.S)


def _one(text: str, name: str, where: str) -> re.Match:
    found = list(_pattern(name).finditer(text))
    if len(found) != 1:
        raise ValueError(
            f"{where}: expected one <!-- {name} --> ... <!-- /{name} --> block on lines of their "
            f"own, found {len(found)}"
        )
    return found[0]


def block(text: str, name: str, where: str = "page") -> str:
    """The body of block ``name`` in ``text`` (without the newline before its closing marker)."""
    return _one(text, name, where).group(1).removesuffix("\n")


def replace(text: str, name: str, body: str, where: str = "page") -> str:
    """``text`` with block ``name``'s body set to ``body``; everything around it kept."""
    m = _one(text, name, where)
    inner = f"{body}\n" if body else ""
    return text[: m.start(1)] + inner + text[m.end(1) :]


def read_block(path: str | Path, name: str) -> str:
    """Block ``name`` of the page at ``path`` (what a test compares with its records)."""
    return block(Path(path).read_text(encoding="utf-8"), name, str(path))


def update(path: str | Path, blocks: Mapping[str, str]) -> list[str]:
    """Rewrite the page at ``path`` with each block's new body, atomically; returns the names that
    changed (the prose reading them may need rereading). A page already current is not touched."""
    path = Path(path)
    old = text = path.read_text(encoding="utf-8")
    changed = []
    for name, body in blocks.items():
        if block(text, name, str(path)) != body:
            changed.append(name)
            text = replace(text, name, body, str(path))
    if text != old:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return changed
