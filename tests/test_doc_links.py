"""Every file a doc or notebook points at is in the repository, and nothing points outside it.

Scans README.md, docs/*.md, data/README.md and the notebooks' Markdown cells for Markdown links and
for file names in backticks; each must resolve to a file or folder of this checkout. Names of things
that are *not* meant to be in it (LFW's files, run outputs, the full weights) are listed below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = (
    "../shared",
    "shared/data",
    "shared/models",
    "shared/docs",
    "BACKGROUND.md",
    "team docs",
)
# mentioned on purpose, never committed: LFW's files, the full weights, outputs, local folders
NOT_IN_REPO = {
    "pairs.txt",
    "pairsDevTrain.txt",
    "pairsDevTest.txt",
    "people.txt",
    "lfw-names.txt",
    "omitted_images.txt",
    "mobilefacenet.pt",
    "mobilefacenet_scripted.pt",
    "weights/mobilefacenet.pt",
    "history.json",
    "metrics.json",
    "checkpoint.pt",
    "summary.json",
    "junit.xml",
    "results.json",
    "bin_metrics.json",
    "model.pt",
    "manifest.json",
    "train_v2.py",
    # upstream code named in docs/SCALE.md and notebook 06 (insightface, the Top-K paper)
    "topK.py",
    "female_names.txt",
    "male_names.txt",
    "lfw_with_smile_label.txt",  # LFW attribute files (notebook 07's data)
}
GENERATED = (
    "runs/",
    "build/",
    "test-artifacts/",
    "workspace/",
    "room-kit/",
    "data/cache",
    "data/lfw",
    "data/models",
    ".venv",
    "~",
    "/",
    "lfw-deepfunneled/",
    "lfw_funneled/",
    "lfw/",
    "wheels/",
    "handout/",
    "licenses/",
    "records/",
    "benchmarks/out",
)
FILE_RE = re.compile(r"`([A-Za-z0-9_.\-/]+\.(?:md|py|ipynb|json|toml|yml|yaml|png|txt|pt|sh|cfg))`")
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def documents() -> list[tuple[Path, str]]:
    docs = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    out = [(p, p.read_text(encoding="utf-8")) for p in docs if p.is_file()]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        out.append(
            (nb, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"))
        )
    return out


def resolves(name: str, where: Path) -> bool:
    name = name.split("#", 1)[0].rstrip("/")
    if not name:
        return True
    packages = [d for d in (REPO / "craftlib").rglob("*") if d.is_dir() and d.name != "__pycache__"]
    bases = [
        where.parent,
        REPO,
        REPO / "docs",
        REPO / "notebooks",
        REPO / "craftlib",
        *packages,
        REPO / "tests",
    ]
    return any((base / name).exists() for base in bases)


def skipped(name: str) -> bool:
    return (
        name in NOT_IN_REPO
        or Path(name).name in NOT_IN_REPO
        or name.startswith(GENERATED)
        or any(c in name for c in "*{}<>$")
    )


def dangling() -> list[str]:
    out = []
    for path, text in documents():
        rel = path.relative_to(REPO)
        for target in LINK_RE.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not resolves(target, path):
                out.append(f"{rel}: link to {target}")
        for name in FILE_RE.findall(text):
            if not skipped(name) and not resolves(name, path):
                out.append(f"{rel}: mentions `{name}`")
    return sorted(set(out))


def test_every_doc_reference_resolves_to_a_file_in_the_repository():
    missing = dangling()
    assert not missing, "docs point at files that are not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_no_doc_points_outside_the_repository(needle):
    hits = [str(p.relative_to(REPO)) for p, text in documents() if needle in text]
    assert not hits, f"{needle!r} appears in {hits}: write what learners need into docs/ instead"


def test_the_checker_catches_a_dangling_name(tmp_path):
    doc = tmp_path / "x.md"
    assert (
        not resolves("PROVENANCE.md", doc)
        and resolves("docs/DATA.md", doc)
        and resolves("RECIPE.md", doc)
    )
    assert skipped("runs/demo/summary.json") and not skipped("docs/NOPE.md")
