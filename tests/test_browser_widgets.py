"""Every widget, in JupyterLab in a real browser at 1366×768: it fits, it follows each control, its
counts agree.

Two notebooks run in a JupyterLab on loopback driven by Debian's Chromium (Playwright):
1. ``tests/notebooks/widgets_state.ipynb`` — the decay race, the threshold explorer (MobileFaceNet),
   the re-activation lab and the comparison dashboard pooling two laptops' folders. After each
   control change the test reads every count the widget displays (status line, captions, table) and
   requires them to agree; each widget must fit the 1366×768 screen.
2. ``notebooks/03_contextual_reactivation.ipynb`` in FAST mode, as a learner runs it: no cell may
   show a warning box (stderr output), its lab must agree with itself too and say that FAST mode
   cannot show what the text describes; then Kernel → Restart and the path the guide gives after one
   (Run All Above Selected Cell, then the lab's cell) must bring the lab back.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

from craftlib.study import reference

from lab_browser import (
    NEEDS_CHROMIUM,
    Latencies,
    lab_page,
    latency_ms,
    notebook,
    quiet_kernel,
    run_all,
    running_lab,
    shot,
    until,
)

ROOT = Path(__file__).resolve().parent.parent
STATE_NOTEBOOK = Path(__file__).parent / "notebooks" / "widgets_state.ipynb"
LAB_NOTEBOOK = ROOT / "notebooks" / "03_contextual_reactivation.ipynb"
SCREEN = {"width": 1366, "height": 768}
COUNT = re.compile(r"(\d+) / 64 inactive")

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3600), NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, lfw_root):
    """JupyterLab (FAST mode, a fresh runs folder) serving both notebooks, and two laptops' result
    folders."""
    root = tmp_path_factory.mktemp("lab")
    room = root / "room"
    records = sorted((reference.FAST_DIR / "records").glob("*.json"))
    if not records:
        pytest.skip("docs/results/fast/records is not committed")
    for path in records:
        laptop = (
            room / ("laptop-a" if int(path.stem.rsplit("-s", 1)[1]) < 4 else "laptop-b") / "records"
        )
        laptop.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, laptop / path.name)
    env = {
        "CRAFT_FAST": "1",
        "CRAFTLIB_DATA": str(lfw_root),
        "CRAFTLIB_RUNS": str(root / "runs"),
        "CRAFT_TEST_ROOM": str(room),
    }
    with running_lab(root, [STATE_NOTEBOOK, LAB_NOTEBOOK], env) as lab:
        yield lab


def fits(element, name: str) -> None:
    box = element.bounding_box()
    assert box is not None, f"{name} is not displayed"
    assert box["width"] <= SCREEN["width"] and box["height"] <= SCREEN["height"] - 100, (
        f"{name} is {box['width']:.0f}x{box['height']:.0f} px: it does not fit a 1366x768 screen"
    )


def count(locator) -> int:
    found = COUNT.findall(locator.inner_text())
    assert found, f"no count in {locator.inner_text()!r}"
    return int(found[-1])


def no_warning_boxes(page, name: str) -> None:
    shown = notebook(page)
    boxes = shown.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert boxes.count() == 0, f"{name}: warning box(es): {boxes.first.inner_text()[:300]}"
    assert shown.locator(".craft-error").count() == 0, f"{name}: a widget shows an error"
    assert "Traceback" not in shown.locator(".jp-Notebook").inner_text()


def slider_keys(widget, selector: str, key: str, times: int = 1) -> None:
    handle = widget.locator(f"{selector} .noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)


# ---------------------------------------------------------------------------------------------
# the tests


def test_every_widget_fits_follows_its_controls_and_agrees_with_itself(lab_server):
    with lab_page(lab_server, SCREEN, "browser_widgets_failure") as page:
        run_all(page, lab_server["url"](STATE_NOTEBOOK.name))
        no_warning_boxes(page, STATE_NOTEBOOK.name)
        check_race(page)
        check_explorer(page, LATENCY)
        check_lab(page, page.locator(".craft-lab"), latencies=LATENCY)
        check_dashboard(page)
        no_warning_boxes(page, STATE_NOTEBOOK.name)
    LATENCY.write()
    busy = LATENCY.load_start[0] > BUSY_LOAD
    for control in FAST_CONTROLS:
        median = LATENCY.median(control)
        verdict = (
            f"{control}: median {median:.0f} ms from key press to the updated page (target "
            f"{RE_READ_MS} ms, guard {GUARD_MS} ms; samples {LATENCY.samples[control]}; 1-min load "
            f"{LATENCY.load_start[0]:.1f} on {os.cpu_count()} cores)"
        )
        if median > RE_READ_MS:  # said in every run's summary until the target is met
            warnings.warn(f"over the target: {verdict}", stacklevel=1)
        if (
            not busy
        ):  # other programs held the cores: recorded, not judged (as benchmarks/threads.py)
            assert median <= GUARD_MS, verdict


LATENCY = Latencies("browser_widgets")
RE_READ_MS = 100  # issue #25's target for a control that only re-reads data: not met yet
GUARD_MS = 300  # no regression: the lab's τ took 292-847 ms before viz.Redrawer (issue #25)
FAST_CONTROLS = ("explorer τ", "lab τ")
# JupyterLab, its kernel, Chromium and pytest keep one or two cores busy: a 1-min load above 1.5 per
# core means other programs were running too
BUSY_LOAD = 1.5 * (os.cpu_count() or 1)


def check_race(page) -> None:
    race = page.locator(".craft-race")
    fits(race, "the decay race")
    verdict, image = race.locator(".craft-race-verdict"), race.locator("img.craft-figure")
    until(
        verdict.inner_text, lambda t: t.startswith("the task wins"), what="the race's first verdict"
    )
    before = image.get_attribute("src")
    # task gradient 0: decay wins
    slider_keys(race, ".widget-slider:has-text('task gradient')", "Home")
    until(
        verdict.inner_text,
        lambda t: t.startswith("decay wins") and "follows the decay curve" in t,
        what="the verdict with no task gradient",
    )
    until(lambda: image.get_attribute("src"), lambda s: s != before, what="the race's figure")
    shot(race, "decay_race.png")


def check_explorer(page, latencies: Latencies) -> None:
    explorer = page.locator(".craft-explorer")
    fits(explorer, "the threshold explorer")
    label = explorer.locator(".craft-count")
    until(
        label.inner_text,
        lambda t: "31 / 64 inactive (48%) at τ = 0.10" in t,
        what="the explorer's count",
    )
    image = explorer.locator("img.craft-figure")
    before = image.get_attribute("src")
    # τ there and back in small steps, then two large ones: each timed to the count, drawn last
    for key in ("ArrowUp",) * 3 + ("ArrowDown",) * 3 + ("PageUp",) * 2:
        act = lambda key=key: slider_keys(explorer, ".craft-tau", key)  # noqa: E731
        latencies.add("explorer τ", latency_ms(page, label, act))
        quiet_kernel(page, quiet=0.5)
    until(
        label.inner_text,
        lambda t: "τ = 0.32" in t and "31 / 64" not in t,
        what="the count at τ = 0.32 (log)",
    )
    until(lambda: image.get_attribute("src"), lambda s: s != before, what="the explorer's figure")
    shot(explorer, "threshold_explorer.png")


def lab_counts(lab) -> tuple[int, int]:
    return count(lab.locator(".craft-lab-status")), count(lab.locator(".craft-lab-count"))


LAB_MAX_HEIGHT = (
    640  # JupyterLab leaves ~648 px of notebook at 1366x768: the whole lab, its result included
)


def check_lab(page, lab, expect_dead: int | None = 8, latencies: Latencies | None = None) -> None:
    fits(lab, "the re-activation lab")
    renewal = lab.locator("img.craft-lab-filters")
    assert renewal.evaluate("img => img.complete && img.naturalWidth > 0"), (
        "a broken image before the first action"
    )
    status = lab.locator(".craft-lab-status")
    until(lambda: lab_counts(lab), lambda c: c[0] == c[1], what="the lab's status and grid caption")
    if expect_dead is not None:
        assert lab_counts(lab) == (expect_dead, expect_dead)
    grid = lab.locator("img.craft-lab-grid")
    # τ moves: status, caption and grid follow together (timed to the status line, drawn last)
    for key in ("PageUp", "PageUp", "PageDown", "ArrowUp", "ArrowDown", "ArrowDown"):
        before = (status.inner_text(), grid.get_attribute("src"))
        act = lambda key=key: slider_keys(lab, ".craft-lab-tau", key)  # noqa: E731
        if latencies is None:
            act()
        else:
            latencies.add("lab τ", latency_ms(page, status, act))
        until(
            lambda: (status.inner_text(), grid.get_attribute("src")),
            lambda now: now[0] != before[0] and now[1] != before[1],
            what=f"the lab after τ {key}",
        )
        quiet_kernel(page, quiet=1.0)
        status_n, caption_n = lab_counts(lab)
        assert status_n == caption_n, (
            f"after τ {key}: status says {status_n}, the grid caption {caption_n}"
        )
    n_before = count(status)
    lab.locator("button.craft-reactivate").click()
    until(status.inner_text, lambda t: "re-activated" in t, what="the status after Re-activate")
    quiet_kernel(page, quiet=1.0)
    renewed = int(re.search(r"(\d+) / 64 filters below", status.inner_text()).group(1))
    assert renewed == n_before, f"{n_before} were inactive, {renewed} re-activated"
    last = lab.locator(".craft-lab-last").inner_text()
    assert f"last re-activation: {renewed} filters" in last, last
    height = lab.bounding_box()["height"]
    assert height <= LAB_MAX_HEIGHT, (
        f"the lab is {height:.0f} px tall with its result: over {LAB_MAX_HEIGHT} px"
    )
    assert (
        renewal.bounding_box()["y"] + renewal.bounding_box()["height"]
        <= lab.bounding_box()["y"] + height
    )
    status_n, caption_n = lab_counts(lab)
    assert status_n == caption_n, (
        f"after Re-activate: status says {status_n}, the grid caption {caption_n}"
    )
    lab.locator(".widget-text input").fill("6")
    lab.locator(".widget-text input").press("Enter")
    lab.locator("button.craft-train").click()
    until(
        status.inner_text,
        lambda t: "trained 6 steps" in t,
        timeout=300,
        what="the status after training",
    )
    quiet_kernel(page, quiet=1.0)
    status_n, caption_n = lab_counts(lab)
    assert status_n == caption_n
    assert f"last re-activation: {renewed} filters" in lab.locator(".craft-lab-last").inner_text()
    shot(lab, "reactivation_lab.png")


def check_dashboard(page) -> None:
    dashboard = page.locator(".craft-dashboard")
    fits(dashboard, "the comparison dashboard")
    caption, table = (
        dashboard.locator(".craft-comparison-caption"),
        dashboard.locator(".craft-comparison-table"),
    )
    until(
        caption.inner_text,
        lambda t: "8 seed(s), 24 runs" in t,
        what="the pooled caption (two laptops)",
    )
    assert "CRAFT" in table.inner_text() and "[" in table.inner_text()  # a CI column with values
    dashboard.locator("select").last.select_option(label="ROC AUC")
    until(
        caption.inner_text,
        lambda t: t.startswith("ROC AUC"),
        what="the caption after the metric change",
    )
    until(table.inner_text, lambda t: "ROC AUC" in t, what="the table after the metric change")
    seeds = dashboard.locator("select[multiple]").nth(1)
    seeds.select_option(label=["0", "1", "5"])
    until(
        caption.inner_text,
        lambda t: "3 seed(s), 9 runs" in t,
        what="the caption after picking 3 seeds",
    )
    rows = table.locator("tbody tr")
    assert [r.locator("td").nth(1).inner_text() for r in rows.all()] == ["3"] * rows.count()
    assert "Ctrl-click" in dashboard.locator(".craft-select-hint").inner_text()
    # no empty chart: the reason
    dashboard.locator("select").last.select_option(label="TAR@FAR=1e-3")
    until(
        caption.inner_text,
        lambda t: "not estimable in 9 of 9 runs" in t and "impostor pairs" in t,
        what="the reason TAR@FAR=1e-3 is not estimable",
    )
    assert "not estimable" in table.inner_text()
    shot(dashboard, "comparison_dashboard.png")


def test_notebook_03_in_fast_mode_shows_no_warning_box_and_a_consistent_lab(lab_server):
    with lab_page(lab_server, SCREEN, "browser_nb03_failure") as page:
        run_all(page, lab_server["url"](LAB_NOTEBOOK.name))
        no_warning_boxes(page, LAB_NOTEBOOK.name)
        lab = notebook(page).locator(".craft-lab")
        # the prose describes full mode
        assert "FAST mode" in lab.locator(".craft-lab-caveat").inner_text()
        check_lab(page, lab, expect_dead=None)
        no_warning_boxes(page, LAB_NOTEBOOK.name)
        after_a_restart_the_guides_path_rebuilds_the_lab(page)
        no_warning_boxes(page, LAB_NOTEBOOK.name)


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(top)}$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).first.click()


def after_a_restart_the_guides_path_rebuilds_the_lab(page) -> None:
    """Kernel → Restart, then what docs/WORKSHOP_DAY.md and the notebook say: click the lab's cell,
    Run → Run All Above Selected Cell, then run the cell. The lab comes back with its counts, and no
    cell shows an error."""
    cell = notebook(page).locator(".jp-CodeCell", has=page.locator(".craft-lab"))
    menu(page, "Kernel", "Restart Kernel…")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    quiet_kernel(page)
    cell.locator(".jp-InputArea-prompt").click()
    menu(page, "Run", "Run All Above Selected Cell")
    prompts = notebook(page).locator(".jp-CodeCell .jp-InputArea-prompt")
    until(
        lambda: "[*]" in "".join(prompts.all_inner_texts()),
        bool,
        timeout=60,
        what="the cells above running",
    )
    until(
        lambda: "[*]" in "".join(prompts.all_inner_texts()),
        lambda busy: not busy,
        timeout=600,
        what="the cells above done",
    )
    quiet_kernel(page)
    cell.locator(".craft-lab").evaluate("el => el.classList.add('before-restart')")
    cell.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")
    fresh = cell.locator(".craft-lab:not(.before-restart)")
    fresh.wait_for(timeout=300_000)
    until(lambda: lab_counts(fresh), lambda c: c[0] == c[1], what="the rebuilt lab's counts")
    assert "Error" not in cell.locator(".jp-OutputArea").inner_text()
