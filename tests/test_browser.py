"""The widgets in a real browser: JupyterLab on loopback, Debian's Chromium driven by Playwright.

Runs ``tests/notebooks/widgets_browser.ipynb``, moves the explorer's τ slider with the keyboard,
presses the lab's *Re-activate* button and changes the dashboard's metric, checking each time that
what is *displayed* changes. Screenshots go to ``test-artifacts/`` and, when
``CRAFTLIB_SCREENSHOTS`` is set, to that folder too (``make screenshots`` writes the README's set
into ``docs/img``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from craftlib.recipes import ARM_LABELS
from craftlib.study.results import METRIC_LABELS

from lab_browser import NEEDS_CHROMIUM, lab_page, quiet_kernel, run_all, running_lab, shot, until

NOTEBOOK = Path(__file__).parent / "notebooks" / "widgets_browser.ipynb"

pytestmark = [pytest.mark.browser, NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, comparison_dir):
    """JupyterLab serving the widgets notebook, with a results folder of real run records for its
    dashboard."""
    with running_lab(
        tmp_path_factory.mktemp("lab"), [NOTEBOOK], {"CRAFT_TEST_RESULTS": str(comparison_dir)}
    ) as lab:
        yield lab


def wait_for_change(read, before, timeout: float = 60):
    """Poll ``read()`` until it differs from ``before``; return the new value."""
    return until(read, lambda now: now != before, timeout=timeout, what="the display")


def test_widgets_respond_in_jupyterlab(lab_server):
    with lab_page(lab_server, {"width": 1400, "height": 1700}, "browser_failure") as page:
        phases = {
            "run all cells": lambda: run_all(page, lab_server["url"](NOTEBOOK.name), timeout=180),
            "threshold explorer": lambda: check_threshold_explorer(page),
            "re-activation lab": lambda: check_reactivation_lab(page),
            "comparison dashboard": lambda: check_comparison_dashboard(page),
        }
        for name, phase in phases.items():  # timings show with -rP, or on failure
            start = time.monotonic()
            phase()
            print(f"{name}: {time.monotonic() - start:.1f} s")
        assert page.locator(".craft-error").count() == 0
        assert "Traceback" not in page.locator(".jp-Notebook").inner_text()


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
        handle.press("PageUp")  # τ 0.10 -> 0.32: a log slider, five steps of 10^0.05 per PageUp
    expect(count).to_contain_text("τ = 0.32", timeout=30_000)
    expect(count).not_to_contain_text("31 / 64")
    wait_for_change(lambda: image.get_attribute("src"), src_before)
    quiet_kernel(page, quiet=1.0)
    shot(explorer, "threshold_explorer.png")


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
    quiet_kernel(page, quiet=1.0)
    shot(lab, "reactivation_lab.png")


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
    quiet_kernel(page, quiet=1.0)
    shot(dashboard, "comparison_dashboard.png")
