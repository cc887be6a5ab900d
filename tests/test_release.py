"""The package looks like a real one: licence, citation, changelog, and CI that builds and installs
the wheel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import tomllib

import craftlib

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_license_is_the_mit_text_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert (
        text.startswith("MIT License")
        and "Copyright (c)" in text
        and "craft-workshop contributors" in text
    )
    assert (
        "Permission is hereby granted, free of charge" in text
        and 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    )
    assert PROJECT["license"] == {"text": "MIT"}


def test_citation_names_this_version_and_the_craft_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert str(cff["version"]) == craftlib.__version__ == PROJECT["version"]
    assert cff["authors"] == [{"name": "craft-workshop contributors"}]
    paper = next(
        r
        for r in cff["references"]
        if r["title"].startswith("CRAFT: Contextual Re-Activation of Filters")
    )
    assert [a["family-names"] for a in paper["authors"]] == ["Bhatta", "Mery", "Wu", "Bowyer"]
    assert paper["year"] == 2025 and "FG 2025" in paper["conference"]["name"]
    assert any("2312.00072" in i["value"] for i in paper["identifiers"]) and paper[
        "doi"
    ].startswith("10.1109/FG")


def test_changelog_has_the_current_version_and_every_wave():
    text = (REPO / "CHANGELOG.md").read_text()
    assert f"## {craftlib.__version__} " in text and "## Unreleased" in text and "wave 1" in text


def test_ci_builds_checks_and_installs_the_wheel():
    assert "bash .ci/wheel" in (REPO / ".ci" / "run").read_text()
    script = (REPO / ".ci" / "wheel").read_text()
    for step in (
        "-m build",
        "twine check --strict",
        "--no-index",
        'craftlib" check --no-speed',
        "craftlib.workshop.notebooks",
    ):
        assert step in script, step
    subprocess.run(["bash", "-n", str(REPO / ".ci" / "wheel")], check=True)
