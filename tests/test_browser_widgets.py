"""Every widget, in JupyterLab in a real browser at 1366×768: it fits, it follows each control, its counts agree.

Two notebooks run in a JupyterLab on loopback driven by Debian's Chromium (Playwright):
1. ``tests/notebooks/widgets_state.ipynb`` — the decay race, the threshold explorer (MobileFaceNet), the
   re-activation lab and the comparison dashboard pooling two laptops' folders. After each control change
   the test reads every count the widget displays (status line, captions, table) and requires them to
   agree; each widget must fit the 1366×768 screen.
2. ``notebooks/03_contextual_reactivation.ipynb`` in FAST mode, as a learner runs it: no cell may show a
   warning box (stderr output), and its lab must agree with itself too.
Screenshots go to ``test-artifacts/``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from craftlib import reference

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
STATE_NOTEBOOK = Path(__file__).parent / "notebooks" / "widgets_state.ipynb"
LAB_NOTEBOOK = ROOT / "notebooks" / "03_contextual_reactivation.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREEN = {"width": 1366, "height": 768}
COUNT = re.compile(r"(\d+) / 64 inactive")

pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium"),
]


# ---------------------------------------------------------------------------------------------
# JupyterLab and the browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_lab_settings(settings_dir: Path) -> None:
    for name, settings in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                           ("notebook-extension/tracker", {"autoStartDefaultKernel": True})):
        path = settings_dir / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, lfw_root):
    """JupyterLab on 127.0.0.1 (random token), FAST mode, a fresh runs folder and two laptops' result folders."""
    root = tmp_path_factory.mktemp("lab")
    work, home, room = root / "work", root / "home", root / "room"
    work.mkdir()
    shutil.copy(STATE_NOTEBOOK, work / STATE_NOTEBOOK.name)
    shutil.copy(LAB_NOTEBOOK, work / LAB_NOTEBOOK.name)
    records = sorted((reference.FAST_DIR / "records").glob("*.json"))
    if not records:
        pytest.skip("docs/results/fast/records is not committed")
    for path in records:
        laptop = room / ("laptop-a" if int(path.stem.rsplit("-s", 1)[1]) < 4 else "laptop-b") / "records"
        laptop.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, laptop / path.name)
    quiet_lab_settings(home / "config" / "lab" / "user-settings")
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "OMP_NUM_THREADS": "1", "CRAFT_FAST": "1", "CRAFTLIB_DATA": str(lfw_root),
           "CRAFTLIB_RUNS": str(root / "runs"), "CRAFT_TEST_ROOM": str(room)}
    jupyter = Path(sys.executable).with_name("jupyter")
    log = root / "jupyter.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", f"--ServerApp.token={token}", f"--ServerApp.port={port}",
             "--ServerApp.ip=127.0.0.1", "--allow-root", f"--ServerApp.root_dir={work}",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jupyter lab did not answer:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"url": lambda name: f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}", "root": root, "log": log}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def until(read, ok, timeout: float = 120, what: str = "condition"):
    """Poll ``read()`` until ``ok(value)``; return the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.25)


def quiet_kernel(page, quiet: float = 2.0, timeout: float = 300) -> None:
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


def run_all(page, url: str) -> None:
    page.goto(url, timeout=120_000)
    page.locator(".jp-NotebookPanel").wait_for(timeout=120_000)
    quiet_kernel(page, quiet=3.0)
    if page.locator(".jp-Dialog").count():
        page.locator(".jp-Dialog .jp-mod-accept").click()
    sidebar = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if sidebar.count():  # fold the file browser away, when JupyterLab opened it (it restores the last layout)
        sidebar.first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt")
    until(lambda: all(p.strip("[]: ").isdigit() for p in prompts.all_inner_texts()), bool, timeout=1800,
          what="every cell executed")
    quiet_kernel(page)


def shot(element, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    element.screenshot(path=str(ARTIFACTS / name))


def fits(element, name: str) -> None:
    box = element.bounding_box()
    assert box is not None, f"{name} is not displayed"
    assert box["width"] <= SCREEN["width"] and box["height"] <= SCREEN["height"] - 100, \
        f"{name} is {box['width']:.0f}x{box['height']:.0f} px: it does not fit a 1366x768 screen"


def count(locator) -> int:
    found = COUNT.findall(locator.inner_text())
    assert found, f"no count in {locator.inner_text()!r}"
    return int(found[-1])


def no_warning_boxes(page, name: str) -> None:
    boxes = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert boxes.count() == 0, f"{name}: warning box(es): {boxes.first.inner_text()[:300]}"
    assert page.locator(".craft-error").count() == 0, f"{name}: a widget shows an error"
    assert "Traceback" not in page.locator(".jp-Notebook").inner_text()


def slider_keys(widget, selector: str, key: str, times: int = 1) -> None:
    handle = widget.locator(f"{selector} .noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)


def browser_page(pw, root: Path):
    context = pw.chromium.launch_persistent_context(
        user_data_dir=str(root / "chromium"), executable_path=str(CHROMIUM), headless=True,
        args=CHROMIUM_ARGS, viewport=SCREEN)
    return context, context.new_page()


# ---------------------------------------------------------------------------------------------
# the tests


def test_every_widget_fits_follows_its_controls_and_agrees_with_itself(lab_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context, page = browser_page(pw, lab_server["root"])
        try:
            run_all(page, lab_server["url"](STATE_NOTEBOOK.name))
            no_warning_boxes(page, STATE_NOTEBOOK.name)
            check_race(page)
            check_explorer(page)
            check_lab(page, page.locator(".craft-lab"))
            check_dashboard(page)
            no_warning_boxes(page, STATE_NOTEBOOK.name)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_widgets_failure.png"), full_page=True)
            shutil.copy(lab_server["log"], ARTIFACTS / "jupyter_widgets.log")
            raise
        finally:
            context.close()


def check_race(page) -> None:
    race = page.locator(".craft-race")
    fits(race, "the decay race")
    verdict, image = race.locator(".craft-race-verdict"), race.locator("img.craft-figure")
    until(verdict.inner_text, lambda t: t.startswith("the task wins"), what="the race's first verdict")
    before = image.get_attribute("src")
    slider_keys(race, ".widget-slider:has-text('task gradient')", "Home")  # task gradient 0: decay wins
    until(verdict.inner_text, lambda t: t.startswith("decay wins") and "follows the decay curve" in t,
          what="the verdict with no task gradient")
    until(lambda: image.get_attribute("src"), lambda s: s != before, what="the race's figure")
    shot(race, "decay_race.png")


def check_explorer(page) -> None:
    explorer = page.locator(".craft-explorer")
    fits(explorer, "the threshold explorer")
    label = explorer.locator(".craft-count")
    until(label.inner_text, lambda t: "31 / 64 inactive (48%) at τ = 0.10" in t, what="the explorer's count")
    image = explorer.locator("img.craft-figure")
    before = image.get_attribute("src")
    slider_keys(explorer, ".craft-tau", "PageUp", 2)
    until(label.inner_text, lambda t: "τ = 0.20" in t and "31 / 64" not in t, what="the count at τ = 0.20")
    until(lambda: image.get_attribute("src"), lambda s: s != before, what="the explorer's figure")
    shot(explorer, "threshold_explorer.png")


def lab_counts(lab) -> tuple[int, int]:
    return count(lab.locator(".craft-lab-status")), count(lab.locator(".craft-lab-count"))


def check_lab(page, lab, expect_dead: int | None = 8) -> None:
    fits(lab, "the re-activation lab")
    status = lab.locator(".craft-lab-status")
    until(lambda: lab_counts(lab), lambda c: c[0] == c[1], what="the lab's status and grid caption")
    if expect_dead is not None:
        assert lab_counts(lab) == (expect_dead, expect_dead)
    grid = lab.locator("img.craft-lab-grid")
    for key in ("PageUp", "PageUp", "PageDown"):  # τ moves: status, caption and grid follow together
        before = (status.inner_text(), grid.get_attribute("src"))
        slider_keys(lab, ".craft-lab-tau", key)
        until(lambda: (status.inner_text(), grid.get_attribute("src")),
              lambda now: now[0] != before[0] and now[1] != before[1], what=f"the lab after τ {key}")
        quiet_kernel(page, quiet=1.0)
        status_n, caption_n = lab_counts(lab)
        assert status_n == caption_n, f"after τ {key}: status says {status_n}, the grid caption {caption_n}"
    n_before = count(status)
    lab.locator("button.craft-reactivate").click()
    until(status.inner_text, lambda t: "re-activated" in t, what="the status after Re-activate")
    quiet_kernel(page, quiet=1.0)
    renewed = int(re.search(r"(\d+) / 64 filters below", status.inner_text()).group(1))
    assert renewed == n_before, f"{n_before} were inactive, {renewed} re-activated"
    last = lab.locator(".craft-lab-last").inner_text()
    assert f"last re-activation: {renewed} filters" in last, last
    status_n, caption_n = lab_counts(lab)
    assert status_n == caption_n, f"after Re-activate: status says {status_n}, the grid caption {caption_n}"
    lab.locator(".widget-text input").fill("6")
    lab.locator(".widget-text input").press("Enter")
    lab.locator("button.craft-train").click()
    until(status.inner_text, lambda t: "trained 6 steps" in t, timeout=300, what="the status after training")
    quiet_kernel(page, quiet=1.0)
    status_n, caption_n = lab_counts(lab)
    assert status_n == caption_n
    assert f"last re-activation: {renewed} filters" in lab.locator(".craft-lab-last").inner_text()
    shot(lab, "reactivation_lab.png")


def check_dashboard(page) -> None:
    dashboard = page.locator(".craft-dashboard")
    fits(dashboard, "the comparison dashboard")
    caption, table = dashboard.locator(".craft-comparison-caption"), dashboard.locator(".craft-comparison-table")
    until(caption.inner_text, lambda t: "8 seed(s), 24 runs" in t, what="the pooled caption (two laptops)")
    assert "CRAFT" in table.inner_text() and "[" in table.inner_text()  # a CI column with values
    dashboard.locator("select").last.select_option(label="ROC AUC")
    until(caption.inner_text, lambda t: t.startswith("ROC AUC"), what="the caption after the metric change")
    until(table.inner_text, lambda t: "ROC AUC" in t, what="the table after the metric change")
    seeds = dashboard.locator("select[multiple]").nth(1)
    seeds.select_option(label=["0", "1", "5"])
    until(caption.inner_text, lambda t: "3 seed(s), 9 runs" in t, what="the caption after picking 3 seeds")
    rows = table.locator("tbody tr")
    assert [r.locator("td").nth(1).inner_text() for r in rows.all()] == ["3"] * rows.count()
    shot(dashboard, "comparison_dashboard.png")


def test_notebook_03_in_fast_mode_shows_no_warning_box_and_a_consistent_lab(lab_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context, page = browser_page(pw, lab_server["root"])
        try:
            run_all(page, lab_server["url"](LAB_NOTEBOOK.name))
            no_warning_boxes(page, LAB_NOTEBOOK.name)
            lab = page.locator(".craft-lab")
            check_lab(page, lab, expect_dead=None)
            no_warning_boxes(page, LAB_NOTEBOOK.name)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_nb03_failure.png"), full_page=True)
            raise
        finally:
            context.close()
