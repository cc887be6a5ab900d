"""The widgets in a real browser: JupyterLab on loopback, Debian's Chromium driven by Playwright.

Runs ``tests/notebooks/widgets_browser.ipynb``, moves the explorer's τ slider with the keyboard, presses the
lab's *Re-activate* button and changes the dashboard's metric, checking each time that what is *displayed*
changes. Screenshots go to ``test-artifacts/`` and, when ``CRAFTLIB_SCREENSHOTS`` is set, to that folder too
(``make screenshots`` writes the README's set into ``docs/img``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from craftlib.recipes import ARM_LABELS
from craftlib.results import METRIC_LABELS

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = Path(__file__).parent / "notebooks" / "widgets_browser.ipynb"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_lab_settings(settings_dir: Path) -> None:
    """No news toasts over the widgets, no kernel-choice dialog: start the notebook's own kernel."""
    for name, settings in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                           ("notebook-extension/tracker", {"autoStartDefaultKernel": True})):
        path = settings_dir / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, comparison_dir):
    """A JupyterLab on 127.0.0.1 with a random token, config/data/runtime dirs in a temp folder; stopped by PID."""
    root = tmp_path_factory.mktemp("lab")
    work, home = root / "work", root / "home"
    work.mkdir()
    home.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    quiet_lab_settings(home / "config" / "lab" / "user-settings")
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "OMP_NUM_THREADS": "1", "CRAFT_TEST_RESULTS": str(comparison_dir)}
    jupyter = Path(sys.executable).with_name("jupyter")  # the venv's: its python3 kernel is the venv's python
    log = root / "jupyter.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", f"--ServerApp.token={token}", f"--ServerApp.port={port}",
             "--ServerApp.ip=127.0.0.1", "--allow-root", f"--ServerApp.root_dir={work}",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}", "root": root, "log": log}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def save_screenshot(element, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    element.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("CRAFTLIB_SCREENSHOTS"):
        folder = Path(os.environ["CRAFTLIB_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / name, folder / name)


def wait_for_change(read, before, timeout: float = 60):
    """Poll ``read()`` until it differs from ``before``; return the new value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read()
        if now != before:
            return now
        time.sleep(0.2)
    raise AssertionError(f"display did not change from {before!r} within {timeout} s")


def wait_for_quiet_kernel(page, quiet: float = 3.0, timeout: float = 90) -> None:
    """Wait until the kernel has been idle for ``quiet`` seconds: a freshly started one may still reconnect,
    and cells queued before that are silently dropped."""
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    deadline, since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if idle.count():
            since = since or time.monotonic()
            if time.monotonic() - since >= quiet:
                return
        else:
            since = None
        time.sleep(0.25)
    raise TimeoutError(f"kernel not idle within {timeout} s")


def run_all_cells(page) -> None:
    """Run → Run All Cells, then wait until every code cell has an execution count."""
    page.locator(".jp-NotebookPanel").wait_for(timeout=90_000)
    wait_for_quiet_kernel(page)
    dialog = page.locator(".jp-Dialog")  # a kernel-choice dialog, should this JupyterLab still ask
    if dialog.count():
        dialog.locator(".jp-mod-accept").click()
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # fold the file browser away
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt")
    wait_for_change(lambda: all(p.strip("[]: ").isdigit() for p in prompts.all_inner_texts()), False, timeout=180)


def test_widgets_respond_in_jupyterlab(lab_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            user_data_dir=str(lab_server["root"] / "chromium"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1700})
        try:
            page = browser.new_page()
            phases = {"open the notebook": lambda: page.goto(lab_server["url"], timeout=90_000),
                      "run all cells": lambda: run_all_cells(page),
                      "threshold explorer": lambda: check_threshold_explorer(page),
                      "re-activation lab": lambda: check_reactivation_lab(page),
                      "comparison dashboard": lambda: check_comparison_dashboard(page)}
            for name, phase in phases.items():  # timings show with -rP, or on failure
                start = time.monotonic()
                phase()
                print(f"{name}: {time.monotonic() - start:.1f} s")
            assert page.locator(".craft-error").count() == 0
            assert "Traceback" not in page.locator(".jp-Notebook").inner_text()
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_failure.png"), full_page=True)
            shutil.copy(lab_server["log"], ARTIFACTS / "jupyter.log")
            raise
        finally:
            browser.close()


def check_threshold_explorer(page) -> None:
    from playwright.sync_api import expect

    explorer = page.locator(".craft-explorer")
    count = explorer.locator(".craft-count")
    expect(count).to_contain_text("31 / 64 inactive (48%) at τ = 0.10", timeout=120_000)
    image = explorer.locator("img.craft-figure")
    src_before = image.get_attribute("src")
    handle = explorer.locator(".craft-tau .noUi-handle")
    handle.focus()
    for _ in range(2):
        handle.press("PageUp")  # τ 0.10 -> 0.20: five slider steps of 0.01 per PageUp
    expect(count).to_contain_text("τ = 0.20", timeout=30_000)
    expect(count).not_to_contain_text("31 / 64")
    wait_for_change(lambda: image.get_attribute("src"), src_before)
    wait_for_quiet_kernel(page, quiet=1.0)
    save_screenshot(explorer, "threshold_explorer.png")


def check_reactivation_lab(page) -> None:
    from playwright.sync_api import expect

    lab = page.locator(".craft-lab")
    status = lab.locator(".craft-lab-status")
    expect(status).to_contain_text("8 / 64 inactive", timeout=120_000)
    image = lab.locator("img.craft-lab-filters")
    src_before = image.get_attribute("src")
    button = lab.locator("button.craft-reactivate")
    button.click()
    expect(status).to_contain_text("8 / 64 filters below τ = 0.10 re-activated", timeout=60_000)
    expect(status).to_contain_text("inactive 12% → 0%")
    wait_for_change(lambda: image.get_attribute("src"), src_before)
    expect(button).to_be_enabled()
    lab.locator(".widget-text input").fill("10")  # N, then "Train N more steps"
    lab.locator(".widget-text input").press("Enter")
    lab.locator("button.craft-train").click()
    expect(status).to_contain_text("trained 10 steps", timeout=90_000)
    wait_for_quiet_kernel(page, quiet=1.0)
    save_screenshot(lab, "reactivation_lab.png")


def check_comparison_dashboard(page) -> None:
    from playwright.sync_api import expect

    dashboard = page.locator(".craft-dashboard")
    table = dashboard.locator(".craft-comparison-table")
    caption = dashboard.locator(".craft-comparison-caption")
    expect(table).to_contain_text(ARM_LABELS["contextual"], timeout=60_000)
    expect(caption).to_contain_text(METRIC_LABELS["accuracy"])
    dashboard.locator("select").last.select_option(label=METRIC_LABELS["silent_fraction"])
    expect(caption).to_contain_text(METRIC_LABELS["silent_fraction"], timeout=30_000)
    expect(table).to_contain_text(METRIC_LABELS["silent_fraction"])
    wait_for_quiet_kernel(page, quiet=1.0)
    save_screenshot(dashboard, "comparison_dashboard.png")
