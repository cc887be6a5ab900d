"""Google Colab: each notebook's first cell and the README's badges, built from the repository's one
address.

The address is written once, as ``Repository`` under ``[project.urls]`` in pyproject.toml. Until the
publisher sets it there is nothing for Colab to open or to install craftlib from, so the badges and
the cells say plainly that Colab is not available yet, and how to turn it on, instead of pointing at
a placeholder. After setting it, ``python -m craftlib.workshop.colab`` rewrites them
(``tests/test_colab.py`` checks they agree with the address and that no placeholder address is left
anywhere). Standard library only (it edits JSON and Markdown).
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

from craftlib import pages
from craftlib.paths import PACKAGE_DIR

BRANCH = "main"
CELL_TAG = "colab-setup"
CHECKOUT = PACKAGE_DIR.parent
PYPROJECT = CHECKOUT / "pyproject.toml"
NOTEBOOKS = CHECKOUT / "notebooks"
README = CHECKOUT / "README.md"
BADGES = "colab-badges"  # the README's generated block (``craftlib.pages``)
HOW_TO = '`docs/INSTALL.md`, section "Turning on Colab"'
PLACEHOLDER = re.compile(r"github(?:\.com)?/(owner|<owner>|user|username|your-?(user)?name)/", re.I)
"""An address that only stands for one: what no badge, cell or doc may point at."""


def repository(pyproject: Path = PYPROJECT) -> str | None:
    """The repository's address (``[project.urls] Repository``), or None while the publisher has not
    set it.

    Read from the checkout's pyproject.toml; an installed craftlib (or Python 3.10, which lacks
    ``tomllib``) reads the same table from the package metadata pip wrote.
    """
    try:
        import tomllib

        url = (
            tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
            .get("urls", {})
            .get("Repository")
        )
    except (ImportError, OSError):
        try:
            entries = metadata.metadata("craftlib").get_all("Project-URL") or []
        except metadata.PackageNotFoundError:
            entries = []
        url = next(
            (
                u.strip()
                for label, _, u in (e.partition(",") for e in entries)
                if label.strip().lower() == "repository"
            ),
            None,
        )
    return check_address(url) if url else None


def check_address(url: str) -> str:
    """``url`` if it is a real GitHub repository address; a placeholder or another host is
    refused."""
    if PLACEHOLDER.search(url) or not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/?", url):
        raise ValueError(
            f"the repository address {url!r} must be https://github.com/<owner>/<name> with the "
            f"real "
            f"owner: Colab opens and installs from it ({HOW_TO})"
        )
    return url.rstrip("/")


def repository_slug(url: str) -> str:
    """``owner/name`` of a GitHub URL."""
    return url.rstrip("/").removesuffix(".git").split("github.com/", 1)[1]


def cell_source(url: str | None, branch: str = BRANCH) -> str:
    """The first code cell of every notebook: on Colab, install craftlib and fetch LFW (or, without
    an address, say that Colab is not available yet); elsewhere nothing."""
    if url is None:
        return f"""# Google Colab: not available yet. The repository has no public address, so Colab has nothing to install
# craftlib from; the publisher turns it on in one step ({HOW_TO}).
# Anywhere else (your laptop, the room kit) this cell does nothing.
import sys
if "google.colab" in sys.modules:
    raise RuntimeError("Colab is not available for this workshop yet (craftlib has no published address): run "
                       "the notebooks on a laptop (README: python -m craftlib lab) or ask the instructor")"""  # noqa: E501
    return f"""# Google Colab only: install craftlib and fetch LFW (2-5 minutes). Anywhere else this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "craftlib @ git+{url}@{branch}"], check=True)  # keeps Colab's torch and ipywidgets 7
    import craftlib.data
    craftlib.data.find_lfw()  # scikit-learn's funneled LFW, about 230 MB, with a progress bar"""  # noqa: E501


def colab_url(notebook: str, url: str, branch: str = BRANCH) -> str:
    return f"https://colab.research.google.com/github/{repository_slug(url)}/blob/{branch}/notebooks/{notebook}"


def badges(url: str | None, notebooks: list[Path] | None = None) -> str:
    """The README's block: one badge per notebook, or, without an address, why there are none
    yet."""
    if url is None:
        return "\n".join(
            [
                "**Colab is not available yet**: the repository has no public address, so a "
                "badge would open nothing.",
                "The publisher turns the badges and the notebooks' Colab cells "
                f"on in one step ({HOW_TO}).",
            ]
        )
    names = [p.name for p in (notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))]
    lines = ["| notebook | Colab |", "|---|---|"]
    for name in names:
        lines.append(
            f"| `notebooks/{name}` | [![Open In "
            f"Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(name, url)}) |"
        )
    return "\n".join(lines)


def has_cell(nb: dict) -> bool:
    cells = nb.get("cells", [])
    return bool(cells) and CELL_TAG in cells[0].get("metadata", {}).get("tags", [])


def add_cell(path: Path, url: str | None) -> bool:
    """Put the Colab cell first in ``path`` (or refresh it); read fresh, only that cell changes.
    True if written."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    source = cell_source(url)
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "colab-setup",
        "metadata": {"tags": [CELL_TAG]},
        "outputs": [],
        "source": source.splitlines(keepends=True),
    }
    if has_cell(nb):
        if "".join(nb["cells"][0]["source"]) == source:
            return False
        nb["cells"][0] = cell
    else:
        nb["cells"].insert(0, cell)
    if nb.get("nbformat", 4) == 4 and nb.get("nbformat_minor", 0) < 5:
        cell.pop("id")
    Path(path).write_text(
        json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return True


def sync(url: str | None) -> list[str]:
    """Rewrite every notebook's Colab cell and the README's badges from ``url``; return what
    changed."""
    changed = [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if add_cell(p, url)]
    if pages.update(README, {BADGES: badges(url)}):
        changed.append(README.name)
    return changed


if __name__ == "__main__":
    print("updated: " + (", ".join(sync(repository())) or "nothing"), file=sys.stderr)
