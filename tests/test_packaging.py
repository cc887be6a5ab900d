"""The install story stays consistent: pyproject, environment.yml, constraints.txt, README, and no
data in git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def _key(spec: str) -> tuple[str, str, str]:
    req = Requirement(spec)
    return canonicalize_name(req.name), str(req.specifier), str(req.marker or "")


def pyproject_requirements(extras: tuple[str, ...] | None = None) -> set[tuple[str, str, str]]:
    """The base dependencies plus the given extras (all extras when None)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for name, extra in project.get("optional-dependencies", {}).items():
        if extras is None or name in extras:
            specs += extra
    return {_key(s) for s in specs}


LEARNER = ("lab",)  # environment.yml is the learner environment: no test or federated packages


def environment_pip_requirements() -> set[tuple[str, str, str]]:
    """The ``- pip:`` list of environment.yml, read without a YAML parser (it is a flat list)."""
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    specs = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(line) - len(line.lstrip()) <= indent:
            break
        item = line.strip().removeprefix("- ").split(" #")[0].strip()
        if not item.startswith("-e"):  # `-e .` installs craftlib itself
            specs.append(item)
    return {_key(s) for s in specs}


def test_environment_yml_matches_pyproject():
    env, project = environment_pip_requirements(), pyproject_requirements(LEARNER)
    assert env == project, (
        f"only in environment.yml: {sorted(env - project)}; only in pyproject: "
        f"{sorted(project - env)}"
    )


def test_environment_yml_parses_as_yaml_too():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in doc["dependencies"] if isinstance(d, dict))
    assert {_key(s) for s in pip if not s.startswith("-e")} == pyproject_requirements(LEARNER)


def test_constraints_pin_every_dependency():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    for name, spec, marker in pyproject_requirements():
        if marker and not Marker(marker).evaluate():
            continue  # e.g. numpy<2 on Intel Macs only: CI's pins are for this platform
        assert name in pins, f"constraints.txt does not pin {name}"
        assert Requirement(f"{name}{spec}").specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {spec}"
        )


def test_readme_names_the_two_commands():
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing (pyproject.toml names it as the project readme)"
    text = readme.read_text()
    assert "make demo" in text and "make test" in text


def test_no_lfw_data_is_tracked_by_git():
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    images = [f for f in files if f.lower().endswith((".jpg", ".jpeg", ".npy", ".tgz"))]
    pair_files = [
        f
        for f in files
        if Path(f).name
        in {"pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt", "people.txt", "lfw-names.txt"}
    ]
    lfw_dirs = [
        f
        for f in files
        if any(part in {"lfw-deepfunneled", "lfw_funneled", "lfw_home"} for part in Path(f).parts)
    ]
    assert not images and not pair_files and not lfw_dirs, images[:5] + pair_files + lfw_dirs[:5]
