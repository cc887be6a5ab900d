"""The install matrix: learners install from ranges (no test packages, CPU torch on Linux laptops),
CI from pins, and `python -m craftlib setup|lab` work from a bare Python on any system."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from craftlib.workshop import install
from craftlib.workshop.cli import main, prepare_workspace

REPO = Path(__file__).resolve().parent.parent
PYENV = Path("/root/.pyenv/versions")


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def ranges(group: str | None = None) -> dict[str, list[Requirement]]:
    p = project()
    specs = p["dependencies"] if group is None else p["optional-dependencies"][group]
    out: dict[str, list[Requirement]] = {}
    for s in specs:
        req = Requirement(s)
        out.setdefault(req.name.lower(), []).append(req)
    return out


def admits(name: str, version: str, group: str | None = None) -> bool:
    reqs = ranges(group)[name]
    return any(r.specifier.contains(version, prereleases=True) for r in reqs if r.marker is None)


def test_python_310_to_313_are_admitted():
    spec = SpecifierSet(project()["requires-python"])
    assert all(spec.contains(v) for v in ("3.10.0", "3.11.7", "3.12.1", "3.13.0"))
    classifiers = " ".join(project()["classifiers"])
    assert all(f"Python :: 3.{m}" in classifiers for m in (10, 11, 12, 13))


def test_ranges_admit_what_learners_have():
    # Colab's 7.x, JupyterLab 4's 8.x
    assert admits("ipywidgets", "7.7.1") and admits("ipywidgets", "8.1.9")
    assert admits("torch", "2.2.2")  # the last Intel-Mac torch
    # the first for Python 3.13 ... the newest here
    assert admits("torch", "2.5.0") and admits("torch", "2.14.1")
    intel_mac = [r for r in ranges()["numpy"] if r.marker is not None]
    assert intel_mac and intel_mac[0].marker.evaluate(
        {"platform_system": "Darwin", "platform_machine": "x86_64"}
    )
    assert not intel_mac[0].marker.evaluate(
        {"platform_system": "Linux", "platform_machine": "x86_64"}
    )


def test_no_exact_pins_in_pyproject_and_no_test_packages_for_learners():
    every = [s for s in project()["dependencies"]] + [
        s for g in project()["optional-dependencies"].values() for s in g
    ]
    assert not [s for s in every if "==" in str(Requirement(s).specifier)], (
        "exact pins belong in constraints.txt (CI)"
    )
    learner = set(ranges()) | set(ranges("lab"))
    assert not learner & {"pytest", "pytest-timeout", "hypothesis", "playwright"}


def test_the_learner_path_never_reads_the_constraints():
    learner = install.plan("py", torch="pypi")
    assert len(learner) == 1 and not any("constraints" in a for a in learner[0])
    assert learner[0][-1].endswith("[lab]") and "test" not in learner[0][-1]
    dev = install.plan("py", dev=True)
    assert dev[-1][-2:] == ["-c", str(REPO / "constraints.txt")] and "[lab,test]" in " ".join(
        dev[-1]
    )
    makefile = (REPO / "Makefile").read_text()
    stamp_recipe = makefile.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    assert "constraints" not in stamp_recipe and "--dev" not in stamp_recipe


def test_cpu_torch_on_linux_laptops_without_an_nvidia_gpu():
    assert install.wants_cpu_torch("auto", system="Linux", gpu=False)
    assert not install.wants_cpu_torch("auto", system="Linux", gpu=True)
    # PyPI's Windows/macOS torch is CPU already
    assert not install.wants_cpu_torch("auto", system="Windows", gpu=False)
    assert install.wants_cpu_torch("cpu", system="Darwin") and not install.wants_cpu_torch(
        "pypi", system="Linux"
    )
    steps = install.plan("py", torch="cpu")
    assert steps[0][steps[0].index("--index-url") + 1] == install.CPU_INDEX
    # pyproject's range, one source
    assert steps[0][-1] == install.torch_requirement() == "torch>=2.1,<2.15"
    assert "190 MB" in install.TORCH_SIZES and "3.0 GB" in install.TORCH_SIZES


def test_kit_install_is_offline():
    (step,) = install.plan("py", kit="/k")
    assert "--no-index" in step and step[step.index("--find-links") + 1] == str(
        Path("/k") / "wheels"
    )


def test_venv_paths_per_system():
    assert install.venv_python("v", windows=True) == Path("v") / "Scripts" / "python.exe"
    assert install.venv_python("v", windows=False) == Path("v") / "bin" / "python"


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_setup_runs_on_a_bare_python_before_anything_is_installed(version, tmp_path):
    """`python -m craftlib setup` imports neither torch nor anything else not in the standard
    library."""
    pythons = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not pythons:
        pytest.skip(f"no Python {version} on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [
            str(pythons[-1]),
            "-S",
            "-m",
            "craftlib",
            "setup",
            "--dry-run",
            "--torch",
            "cpu",
            "--venv",
            str(tmp_path / "v"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (
        install.CPU_INDEX in out.stdout
        and f"{REPO}[lab]" in out.stdout
        and "constraints" not in out.stdout
    )


def test_lab_opens_a_working_copy_and_never_overwrites_edits(tmp_path, capsys):
    source, work = tmp_path / "notebooks", tmp_path / "workspace"
    source.mkdir()
    (source / "00_a.ipynb").write_text("clean 0")
    (source / "01_b.ipynb").write_text("clean 1")
    (source / "helper.ipynb").write_text("not a workshop notebook")
    assert (
        main(
            [
                "lab",
                "--notebooks",
                str(source),
                "--workspace",
                str(work),
                "--dry-run",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in work.iterdir()) == ["00_a.ipynb", "01_b.ipynb"]
    assert "jupyterlab" in capsys.readouterr().out
    (work / "00_a.ipynb").write_text("my edits")
    assert prepare_workspace(source, work) == []
    assert (work / "00_a.ipynb").read_text() == "my edits" and (
        source / "00_a.ipynb"
    ).read_text() == "clean 0"
    assert [p.name for p in prepare_workspace(source, work, refresh=True)] == [
        "00_a.ipynb",
        "01_b.ipynb",
    ]
    assert (work / "00_a.ipynb.bak-1").read_text() == "my edits" and (
        work / "00_a.ipynb"
    ).read_text() == "clean 0"


def test_workspace_and_kits_are_git_ignored():
    ignored = (REPO / ".gitignore").read_text().split()
    assert {"workspace/", "room-kit/", ".venv-*/"} <= set(ignored)


def test_make_lab_calls_the_one_implementation():
    makefile = (REPO / "Makefile").read_text()
    lab = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "-m craftlib lab" in lab and "jupyter lab" not in lab


def test_delegation_runs_in_the_venv_only_when_this_python_lacks_torch(tmp_path, monkeypatch):
    # this Python has torch: it runs here
    assert install.delegate(["check"], tmp_path / "v") is None
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    # no venv: tells the user to run setup
    assert install.delegate(["check"], tmp_path / "none") == 1


@pytest.mark.slow
@pytest.mark.timeout(3600)  # torch alone is a 555 MB download
@pytest.mark.skipif(
    not os.environ.get("CRAFTLIB_INSTALL_TESTS"),
    reason="downloads about 3 GB: set CRAFTLIB_INSTALL_TESTS=1",
)
def test_fresh_venv_on_the_oldest_python_installs_from_ranges(tmp_path):
    """A fresh Python 3.10 venv, `craftlib[lab]` from pyproject's ranges (no constraints), then
    `check`."""
    pythons = sorted(PYENV.glob("3.10.*/bin/python"))
    if not pythons:
        pytest.skip("no Python 3.10 here")
    code = subprocess.call(
        [
            str(pythons[-1]),
            "-m",
            "craftlib",
            "setup",
            "--torch",
            "pypi",
            "--venv",
            str(tmp_path / "v"),
        ],
        cwd=REPO,
        timeout=3000,
    )
    assert code == 0
    py = install.venv_python(tmp_path / "v")
    out = subprocess.run(
        [str(py), "-m", "craftlib", "check", "--no-speed"], cwd=REPO, capture_output=True, text=True
    )
    verdict = {
        line[6:25].strip(): line[:4].strip()
        for line in out.stdout.splitlines()
        if line[:4].strip() in ("OK", "FAIL")
    }
    assert verdict["python"] == "OK" and verdict["packages"] == "OK" and verdict["torch"] == "OK", (
        out.stdout
    )
    assert "3.10" in out.stdout


def test_environment_yml_is_the_learner_environment():
    """conda's file lists exactly pyproject's dependencies and its `lab` extra: no test packages."""
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    items = [
        line.strip()[2:].strip().strip('"')
        for line in lines[start + 1 :]
        if line.strip().startswith("- ")
    ]
    got = {str(Requirement(s)) for s in items if not s.startswith("-e")}
    want = {
        str(Requirement(s))
        for s in project()["dependencies"] + project()["optional-dependencies"]["lab"]
    }
    assert got == want, f"only in environment.yml: {got - want}; only in pyproject: {want - got}"


def test_dev_honours_torch_with_constraints_pins(monkeypatch):
    """`setup --dev --torch cpu`: constraints.txt's torch from the CPU index (no deps), then
    everything at its pins."""
    pin = install.pinned("torch")
    assert pin == next(
        line
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.startswith("torch==")
    )
    cpu, rest = install.plan("py", dev=True, torch="cpu")
    assert cpu[cpu.index("--index-url") + 1] == install.CPU_INDEX and cpu[-2:] == ["--no-deps", pin]
    assert rest[-2:] == ["-c", str(REPO / "constraints.txt")] and "[lab,test]" in " ".join(rest)
    assert len(install.plan("py", dev=True, torch="pypi")) == 1
    monkeypatch.setattr(install, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(install.platform, "system", lambda: "Linux")
    assert install.plan("py", dev=True, torch="auto")[0] == cpu  # auto means the same with --dev
    monkeypatch.setattr(install, "has_nvidia_gpu", lambda: True)
    assert len(install.plan("py", dev=True, torch="auto")) == 1
    with pytest.raises(ValueError, match="pins no notapackage"):
        install.pinned("notapackage")


@pytest.mark.parametrize("torch,cpu", [("cpu", True), ("pypi", False)])
def test_setup_dev_dry_run_shows_the_torch_choice(torch, cpu, tmp_path, capsys):
    assert (
        main(["setup", "--dev", "--torch", torch, "--dry-run", "--venv", str(tmp_path / "v")]) == 0
    )
    out = capsys.readouterr().out
    assert (install.CPU_INDEX in out) == cpu and (
        "--no-deps " + install.pinned("torch") in out
    ) == cpu
    assert f"{REPO}[lab,test]" in out and "constraints.txt" in out and not (tmp_path / "v").exists()
