"""Google Colab: the repository's address (one placeholder), each notebook's first cell, the README's badges.

``REPOSITORY`` is the only place the repository's address is written. The notebooks' Colab cell and
the README's "Open in Colab" badges are generated from it: after changing it, run
``python -m craftlib.colab`` to rewrite them (``tests/test_doc_links.py`` checks they agree).
Standard library only (it edits JSON and Markdown).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .paths import PACKAGE_DIR

REPOSITORY = "https://github.com/OWNER/craft-workshop"  # PLACEHOLDER: the real address is not known yet
BRANCH = "main"
CELL_TAG = "colab-setup"
CHECKOUT = PACKAGE_DIR.parent
NOTEBOOKS = CHECKOUT / "notebooks"
README = CHECKOUT / "README.md"
BADGE_START, BADGE_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"


def repository_slug(url: str = REPOSITORY) -> str:
    """``owner/name`` of a GitHub URL."""
    return url.rstrip("/").removesuffix(".git").split("github.com/", 1)[1]


def cell_source(url: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The first code cell of every notebook: on Colab only, install craftlib and fetch LFW; elsewhere nothing."""
    return f'''# Google Colab only: install craftlib and fetch LFW (2-5 minutes). Anywhere else this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "craftlib @ git+{url}@{branch}"], check=True)  # keeps Colab's torch and ipywidgets 7
    import craftlib.data
    craftlib.data.find_lfw()  # scikit-learn's funneled LFW, about 230 MB, with a progress bar'''


def colab_url(notebook: str, url: str = REPOSITORY, branch: str = BRANCH) -> str:
    return f"https://colab.research.google.com/github/{repository_slug(url)}/blob/{branch}/notebooks/{notebook}"


def badges(notebooks: list[Path] | None = None, url: str = REPOSITORY) -> str:
    """The README's block of badges, one per notebook."""
    names = [p.name for p in (notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))]
    lines = [BADGE_START, "| notebook | Colab |", "|---|---|"]
    for name in names:
        lines.append(f"| `notebooks/{name}` | [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                     f"({colab_url(name, url)}) |")
    lines.append(BADGE_END)
    return "\n".join(lines)


def has_cell(nb: dict) -> bool:
    cells = nb.get("cells", [])
    return bool(cells) and CELL_TAG in cells[0].get("metadata", {}).get("tags", [])


def add_cell(path: Path, url: str = REPOSITORY) -> bool:
    """Put the Colab cell first in ``path`` (or refresh it); read fresh, only that cell changes. True if written."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    source = cell_source(url)
    cell = {"cell_type": "code", "execution_count": None, "id": "colab-setup",
            "metadata": {"tags": [CELL_TAG]}, "outputs": [], "source": source.splitlines(keepends=True)}
    if has_cell(nb):
        if "".join(nb["cells"][0]["source"]) == source:
            return False
        nb["cells"][0] = cell
    else:
        nb["cells"].insert(0, cell)
    if nb.get("nbformat", 4) == 4 and nb.get("nbformat_minor", 0) < 5:
        cell.pop("id")
    Path(path).write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def sync(url: str = REPOSITORY) -> list[str]:
    """Rewrite every notebook's Colab cell and the README's badges from ``url``; return what changed."""
    changed = [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if add_cell(p, url)]
    text = README.read_text(encoding="utf-8")
    block = badges(url=url)
    new = re.sub(re.escape(BADGE_START) + ".*?" + re.escape(BADGE_END), lambda _: block, text, flags=re.S)
    if new != text:
        README.write_text(new, encoding="utf-8")
        changed.append(README.name)
    return changed


if __name__ == "__main__":
    print("updated: " + (", ".join(sync()) or "nothing"), file=sys.stderr)
