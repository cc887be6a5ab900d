"""The room kit: cross-platform wheel sets, offline HTML, and (slow) a CI-sized kit that installs
with the network off and whose handout shows the threshold explorer in a headless Chromium with
networking disabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from craftlib.workshop import handout, kit
from craftlib.workshop.install import venv_python

CHROMIUM = Path("/usr/bin/chromium")
CDNS = ("cdnjs.cloudflare.com", "unpkg.com", "cdn.jsdelivr.net")


def fake_wheel(folder: Path, name: str, version: str, tag: str, requires: list[str]) -> Path:
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        meta = "\n".join(
            [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
        )
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta + "\n")
    return path


def test_platform_only_dependencies_are_found_for_each_target(tmp_path):
    """`pip download --platform` evaluates markers for the building machine; the kit re-reads them
    per target."""
    fake_wheel(
        tmp_path,
        "craftlib",
        "0.2.0",
        "py3-none-any",
        ["tqdm>=4", "jupyterlab>=4; extra == 'lab'", "pytest; extra == 'test'"],
    )
    fake_wheel(
        tmp_path, "tqdm", "4.67.0", "py3-none-any", ['colorama; platform_system == "Windows"']
    )
    fake_wheel(tmp_path, "jupyterlab", "4.2.0", "py3-none-any", ["ipykernel>=6"])
    fake_wheel(
        tmp_path, "ipykernel", "6.29.0", "py3-none-any", ['appnope; platform_system == "Darwin"']
    )
    assert kit.missing_requirements(tmp_path, "linux-x86_64", "3.11") == []
    assert kit.missing_requirements(tmp_path, "windows-x86_64", "3.11") == ["colorama"]
    assert kit.missing_requirements(tmp_path, "macos-arm64", "3.12") == ["appnope"]


def test_wheel_tags_per_target():
    linux, win = kit.target_tags("linux-x86_64", "3.11"), kit.target_tags("windows-x86_64", "3.11")
    from packaging.tags import Tag

    assert (
        Tag("cp311", "cp311", "manylinux_2_17_x86_64") in linux
        and Tag("cp311", "cp311", "win_amd64") not in linux
    )
    assert Tag("cp311", "abi3", "win_amd64") in win and Tag("py3", "none", "any") in win
    assert Tag("cp310", "cp310", "win_amd64") not in win
    mac = kit.target_tags("macos-x86_64", "3.10")
    assert Tag("cp310", "cp310", "macosx_10_9_x86_64") in mac  # torch 2.2.2's Intel-Mac wheel
    # pip does not expand manylinux_2_28
    assert kit.pip_platforms("linux-x86_64")[-1] == "manylinux2014_x86_64"
    assert kit.TARGET_CONSTRAINTS["macos-x86_64"] == ["torch<2.3", "numpy<2"]


def test_environment_pins_are_what_this_environment_holds():
    """The kit pins craftlib[lab,federated]'s closure at the installed versions, nothing of the test
    extra."""
    from importlib.metadata import PackageNotFoundError, version

    pins = kit.environment_pins()
    assert pins["torch"][0] == version("torch") and pins["numpy"][0] == version("numpy")
    assert pins["jupyterlab"][0] == version("jupyterlab") and pins["ipywidgets"][0] == version(
        "ipywidgets"
    )
    assert "craftlib" not in pins and not {
        "pytest",
        "pytest-timeout",
        "hypothesis",
        "playwright",
    } & set(pins)
    try:
        flwr = version("flwr")
    except PackageNotFoundError:
        flwr = None
    assert pins.get("flwr", (None,))[0] == flwr  # the federated extra, when the instructor has it


PINS = {
    "torch": ("2.14.1+cpu", ">=3.10"),
    "numpy": ("2.4.6", ">=3.11"),
    "ipython": ("9.18.1", ">=3.11"),
    "tqdm": ("4.67.1", ">=3.7"),
    "soupsieve": ("4.1.2", ">=3.11.5"),
    "flwr": ("1.39.0", ">=3.11, <4.0"),
}


def test_pins_per_target_and_python():
    lines, unpinned = kit.pins_for(PINS, "linux-x86_64", "3.11")
    assert lines == [
        "flwr==1.39.0",
        "ipython==9.18.1",
        "numpy==2.4.6",
        "torch==2.14.1",
        "tqdm==4.67.1",
    ]  # +cpu dropped: the same release on every platform
    assert unpinned == {
        "soupsieve": "4.1.2 needs Python >=3.11.5"
    }  # a learner's 3.11.0 must install the kit
    lines, unpinned = kit.pins_for(PINS, "windows-x86_64", "3.10")
    assert lines == ["torch==2.14.1", "tqdm==4.67.1"]
    assert unpinned["numpy"] == "2.4.6 needs Python >=3.11" and set(unpinned) == {
        "flwr",
        "ipython",
        "numpy",
        "soupsieve",
    }
    lines, unpinned = kit.pins_for(PINS, "macos-x86_64", "3.12")
    assert "torch==2.14.1" not in lines and "numpy==2.4.6" not in lines
    assert unpinned == {
        "torch": "2.14.1+cpu is held back by torch<2.3 on macos-x86_64",
        "numpy": "2.4.6 is held back by numpy<2 on macos-x86_64",
    }


def test_wheel_plan_pins_torch_and_carries_flower_where_it_installs():
    plan = {
        (s["target"], s["python"]): s
        for s in kit.wheel_plan(list(kit.TARGETS), ["3.10", "3.11"], PINS)
    }
    assert plan["linux-x86_64", "3.11"]["extras"] == ("lab", "federated")
    assert plan["linux-x86_64", "3.10"]["extras"] == ("lab",)  # flwr 1.39 needs Python 3.11
    # the instructor's version, not the newest
    assert plan["linux-x86_64", "3.11"]["cpu_torch"] == "torch==2.14.1"
    assert (
        plan["windows-x86_64", "3.11"]["cpu_torch"] is None
        and "torch==2.14.1" in plan["windows-x86_64", "3.11"]["constraints"]
    )
    mac = plan["macos-x86_64", "3.11"]
    assert mac["constraints"][:2] == ["torch<2.3", "numpy<2"] and not any(
        "==" in c for c in mac["constraints"] if c.startswith(("torch", "numpy"))
    )
    (own,) = kit.wheel_plan(
        ["linux-x86_64"], ["3.11"], PINS, torch_spec="torch==2.13.0", torch_index=""
    )
    assert own["cpu_torch"] is None and "torch==2.13.0" in own["constraints"]
    assert "torch==2.14.1" not in own["constraints"]
    (loose,) = kit.wheel_plan(["linux-x86_64"], ["3.11"], {})
    # nothing installed to pin: pyproject's range
    assert loose["cpu_torch"] == kit.torch_requirement()


def test_download_wheels_asks_pip_for_the_pinned_closure(tmp_path, monkeypatch):
    """The wheel download without the network: pip's calls recorded, the constraints file read as
    pip gets it."""
    calls = []

    # `pip wheel` of the checkout: a craftlib wheel with no dependencies
    def fake_build(cmd, **kwargs):
        fake_wheel(Path(cmd[cmd.index("-w") + 1]), "craftlib", "0.2.0", "py3-none-any", [])
        return 0

    def fake_download(args, log):
        constraints = Path(args[args.index("-c") + 1]).read_text().split() if "-c" in args else []
        calls.append((args, constraints))
        return 0

    monkeypatch.setattr(kit.subprocess, "call", fake_build)
    monkeypatch.setattr(kit, "_pip_download", fake_download)
    result = kit.download_wheels(
        tmp_path / "wheels",
        ["linux-x86_64", "windows-x86_64"],
        ["3.11"],
        pins=PINS,
        log=lambda *_: None,
    )
    assert (
        result["built"] == ["linux-x86_64/3.11", "windows-x86_64/3.11"] and result["failed"] == {}
    )
    assert result["pinned"] == len(PINS)
    assert result["unpinned"]["linux-x86_64/3.11"] == {"soupsieve": "4.1.2 needs Python >=3.11.5"}
    cpu, linux, windows = calls
    assert (
        cpu[0][cpu[0].index("--index-url") + 1] == kit.CPU_INDEX and cpu[0][-1] == "torch==2.14.1"
    )
    for args, constraints in (linux, windows):
        assert args[-1].startswith("craftlib[lab,federated] @ file:")
        assert {"flwr==1.39.0", "numpy==2.4.6", "torch==2.14.1"} <= set(constraints)


def test_offline_exporter_points_every_script_at_static():
    exporter = handout.offline_exporter()
    assert exporter.widget_renderer_url == "static/html-manager/embed-amd.js"
    assert (
        exporter.mathjax_url.startswith("static/mathjax/MathJax.js")
        and exporter.require_js_url == "static/require.js"
    )
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("$x^2$")])
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "version_major": 2,
            "version_minor": 0,
            "state": {},
        }
    }
    html, _ = exporter.from_notebook_node(nb)
    assert not [c for c in CDNS if c in html], "the page still names a CDN"
    assert "static/html-manager/embed-amd.js" in html and "static/mathjax/MathJax.js" in html


# ---------------------------------------------------------------------------------------------
# the CI-sized kit, built once per session (slow)


def local_cpu_torch() -> Path | None:
    """A CPU-only torch wheel among pip's configured find-links (CI must not download 3 GB of CUDA
    wheels)."""
    links = (
        os.environ.get("PIP_FIND_LINKS", "")
        + " "
        + subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
        ).stdout
    )
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in links.split():
        for wheel in (
            sorted(Path(folder).glob(f"torch-*+cpu-{tag}-*.whl")) if Path(folder).is_dir() else []
        ):
            return wheel
    return None


@pytest.fixture(scope="module")
def ci_kit(tmp_path_factory, lfw_root):
    """``python -m craftlib kit`` in its CI-sized form: this platform and Python, a 20-identity LFW
    subset, notebook 02 in FAST mode, and torch from a local CPU wheel."""
    wheel = local_cpu_torch()
    if wheel is None:
        pytest.skip(
            "no local CPU-only torch wheel in pip's find-links: the CI-sized kit would download GBs"
        )
    out = tmp_path_factory.mktemp("kit") / "room-kit"
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "craftlib",
            "kit",
            "--out",
            str(out),
            "--platforms",
            "here",
            "--pythons",
            "here",
            "--lfw-people",
            "20",
            "--notebooks",
            "02",
            "--fast",
            "--data",
            str(lfw_root),
            "--torch-spec",
            f"torch=={wheel.name.split('-')[1].split('+')[0]}",
            "--torch-index",
            "",
        ],
        timeout=3000,
    )
    assert code == 0
    return out


@pytest.mark.slow
def test_ci_kit_has_everything_the_readme_promises(ci_kit):
    manifest = json.loads((ci_kit / "manifest.json").read_text())
    assert manifest["wheels"]["failed"] == {} and manifest["lfw"]["variant"] == "deepfunneled"
    assert (ci_kit / "data" / "lfw" / "pairsDevTest.txt").is_file()
    assert (ci_kit / "runs" / "deepfunneled").is_dir() and (
        ci_kit / "handout" / "02_dying_filters.html"
    ).is_file()
    assert (ci_kit / "licenses" / "NOTICE-mobilefacenet").is_file()
    assert sorted(p.name for p in (ci_kit / "notebooks").glob("*.ipynb"))[:1] == [
        "00_setup_and_data.ipynb"
    ]
    readme = (ci_kit / "README.md").read_text()
    assert (
        "--no-index --find-links wheels" in readme
        and "CRAFTLIB_DATA" in readme
        and "do not" in readme
    )
    wheels = [p.name for p in (ci_kit / "wheels").glob("*.whl")]
    assert any(w.startswith("torch-") and "+cpu" in w for w in wheels) and not any(
        w.startswith("nvidia") for w in wheels
    )
    assert not any(w.startswith(("pytest", "hypothesis", "playwright")) for w in wheels)


def clean_env() -> dict:
    """No pip configuration, find-links or index from this machine: only the kit's wheels."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.mark.slow
def test_ci_kit_installs_with_no_index_in_a_fresh_venv(ci_kit, tmp_path, lfw_root):
    venv = tmp_path / "learner"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv_python(venv))
    install = subprocess.run(
        [
            py,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(ci_kit / "wheels"),
            "craftlib[lab]",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    env = {
        **clean_env(),
        "CRAFTLIB_DATA": str(ci_kit / "data" / "lfw"),
        "CRAFTLIB_HOME": str(tmp_path / "home"),
    }
    env.pop("CRAFTLIB_MODELS", None)
    check = subprocess.run(
        [py, "-m", "craftlib", "check", "--no-speed"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "packaged with craftlib" in check.stdout and "deep-funneled" in check.stdout
    # an installed wheel keeps its runs out of site-packages
    assert str(tmp_path / "home") in check.stdout


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium")
def test_handout_shows_the_threshold_explorer_offline(ci_kit):
    from playwright.sync_api import sync_playwright

    page_file = ci_kit / "handout" / "02_dying_filters.html"
    html = page_file.read_text()
    assert not [c for c in CDNS if c in html]
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ],
        )
        context = browser.new_context(offline=True)
        page = context.new_page()
        page.on("request", lambda r: requested.append(r.url))
        page.goto(page_file.as_uri())
        explorer = page.locator(".craft-explorer").first
        explorer.wait_for(state="visible", timeout=60_000)
        count = page.locator(".craft-count").first.inner_text()
        assert "64" in count, count  # the rendered state: "31 / 64 ..." for the stem at τ 0.1
        assert explorer.locator("img").count() >= 1
        assert page.locator(".widget-slider, .jupyter-widgets .slider").count() >= 1
        page.wait_for_function("() => window.MathJax && window.MathJax.version", timeout=30_000)
        # the bundled copy loaded from static/
        assert page.evaluate("() => MathJax.version") == "2.7.7"
        artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        explorer.screenshot(path=str(artifacts / "handout_threshold_explorer.png"))
        browser.close()
    outside = [u for u in requested if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert not outside, f"the handout asked the network for {outside[:5]}"
