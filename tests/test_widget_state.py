"""Every widget agrees with itself after every control change, is readable, fits a laptop, and is
colour-blind safe.

Driven in Python (no browser): set a control, then read every place the widget shows a count — the
status line, captions, figure titles and the framed filters — and require one number. The figures
are checked for text under 10 px at the size they are shown and for a PNG that fits a 1366×768
screen. Runs on synthetic faces and on the committed FAST comparison records: no LFW needed.
"""

from __future__ import annotations

import re
import shutil
import struct

import matplotlib
import numpy as np
import pytest
import torch

from craftlib import decay, recipes, viz
from craftlib import widgets as cw
from craftlib.data import FaceSet
from craftlib.study import dashboard, reference
from craftlib.study.results import fmt
from craftlib.training import Trainer

MAX_W, MAX_H = 1000, 640  # inside JupyterLab's notebook area on a 1366x768 screen (side bar folded)
COUNT = re.compile(r"(\d+) / 64 inactive")


def png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def counts(text: str) -> list[int]:
    return [int(c) for c in COUNT.findall(re.sub("<[^>]+>", "", text))]


@pytest.fixture
def trainer() -> Trainer:
    rng = np.random.default_rng(0)
    data = FaceSet(
        rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8),
        np.repeat(np.arange(16), 10),
        [f"p{i}" for i in range(16)],
        [f"p{i // 10}/{i}.jpg" for i in range(160)],
    )
    t = Trainer(data, recipes.FAST.train.but(epochs=2), progress=False)
    t.train_steps(3)
    with torch.no_grad():  # stand-ins for dead filters: tiny weights and a collapsed γ
        t.model.conv1.weight[[2, 11, 30, 47, 63]] *= 1e-3
        t.model.bn1.weight[[2, 11, 30, 47, 63]] = 1e-4
    return t


def assert_readable(png: bytes, fig=None) -> None:
    w, h = png_size(png)
    assert w <= MAX_W and h <= MAX_H, f"figure is {w}x{h} px, more than {MAX_W}x{MAX_H}"
    if fig is not None:
        assert viz.small_text(fig, viz.WIDGET_DPI) == []


# ---------------------------------------------------------------------------------------------
# the decay race


@pytest.mark.slow
def test_decay_race_follows_every_slider():
    race = cw.DecayRace(grad=0.002, steps=300)
    seen = {race.image.value}
    for control, value in (
        (race.grad, 0.0005),
        (race.lr, 0.05),
        (race.wd, 2e-2),
        (race.momentum, 0.5),
        (race.steps, 400),
    ):
        control.value = value
        assert race.error.value == ""
        expected = decay.simulate(
            race.lr.value, race.wd.value, race.momentum.value, race.grad.value, race.steps.value
        )
        assert html_text(race.verdict.value).startswith(expected.verdict())
        assert race.image.value not in seen, f"the figure did not change with {control.description}"
        seen.add(race.image.value)
        simulated = [l for l in race.axes[0].lines if l.get_gid() == "simulated"][0]
        assert np.allclose(simulated.get_ydata(), np.maximum(np.abs(expected.gamma), 1e-4))
    assert_readable(race.image.value, race.figure)


def html_text(value: str) -> str:
    import html

    return html.unescape(re.sub("<[^>]+>", "", value))


def test_decay_view_is_the_widget_picture():
    fig = cw.decay_view(grad=0.0005)
    assert len(fig.axes) == 2 and "decay wins" in fig._suptitle.get_text()


# ---------------------------------------------------------------------------------------------
# the re-activation lab: one state, every view


def lab_counts(lab) -> dict[str, int]:
    grid_ax = next(ax for ax in lab.grid_figure.axes if ax.get_label() == "grid")
    status = counts(lab.status.value)
    return {
        "status": status[-1],
        "caption": counts(lab.grid_caption.value)[0],
        "title": counts(grid_ax.get_title())[0],
        "frames": len(viz.marked_filters(grid_ax)),
        "state": lab.state["count"],
    }


def assert_consistent(lab) -> None:
    c = lab_counts(lab)
    assert len(set(c.values())) == 1, f"the lab shows different counts: {c}"
    expected = (cw.lab_scores(lab.trainer, lab.score.value) < lab.tau.value).sum()
    assert c["state"] == expected
    last = [e for e in lab.state["log"] if e.get("inactive") is not None][-1]
    assert last["inactive"] == pytest.approx(expected / 64)  # the curve ends at the same count
    assert lab.error.value == ""


@pytest.mark.slow
def test_lab_counts_agree_after_every_control_change(trainer):
    lab = cw.ReactivationLab(trainer, spec=recipes.WORKSHOP.craft)
    assert lab.score.value == "silent" and lab.tau.value == pytest.approx(0.01)
    assert_consistent(lab)
    for change in (
        lambda: setattr(lab.tau, "value", 0.1),
        lambda: setattr(lab.score, "value", "max"),
        lambda: setattr(lab.tau, "value", 0.002),
        lambda: setattr(lab.tau, "value", 0.5),
        lambda: setattr(lab.score, "value", "silent"),
        lambda: setattr(lab.tau, "value", 0.05),
    ):
        change()
        assert_consistent(lab)


@pytest.mark.slow
def test_lab_reactivate_and_train_keep_every_view_in_step(trainer):
    lab = cw.ReactivationLab(trainer, score="max", tau=0.05)
    assert lab_counts(lab)["status"] == 5
    lab.reactivate_button.click()
    assert_consistent(lab)
    assert lab.state["count"] == 0
    last = html_text(lab.last_caption.value)
    assert (
        "last re-activation: 5 filters" in last
        and "5 / 64 filters below τ = 0.05 re-activated" in html_text(lab.status.value)
    )
    lab.tau.value = 0.5  # the before/after panel is history: its caption keeps its own τ and count
    assert_consistent(lab)
    assert html_text(lab.last_caption.value) == last
    lab.steps.value = 4
    lab.train_button.click()
    assert_consistent(lab)
    assert "trained 4 steps" in lab.status.value and (lab.progress.value, lab.progress.max) == (
        4,
        4,
    )


def test_lab_before_after_says_how_many_were_renewed_and_shown():
    fig = viz.before_after(
        np.random.default_rng(0).normal(size=(64, 3, 3, 3)),
        np.random.default_rng(1).normal(size=(64, 3, 3, 3)),
        list(range(40)),
    )
    assert fig._suptitle.get_text().startswith("40 re-activated filter(s), the first 12 shown")


@pytest.mark.slow
def test_lab_figures_fit_and_are_readable(trainer):
    lab = cw.ReactivationLab(trainer, face=trainer.data.images[0], score="max", tau=0.05)
    placeholder = lab.filters_image.value
    assert placeholder[:4] == b"\x89PNG", (
        "before the first action the renewal panel is a picture, not a broken image"
    )
    lab.reactivate_button.click()
    assert lab.filters_image.value != placeholder
    for image in (lab.grid_image, lab.curves_image, lab.filters_image):
        assert_readable(image.value)
    assert viz.small_text(lab.grid_figure, viz.WIDGET_DPI) == []
    w_grid, h_grid = png_size(lab.grid_image.value)
    w_curves, h_curves = png_size(lab.curves_image.value)
    w_filters, h_filters = png_size(lab.filters_image.value)
    assert png_size(placeholder) == (
        w_filters,
        h_filters,
    )  # the layout does not jump at the first click
    # the grid beside the curves over the last renewal
    assert w_grid + max(w_curves, w_filters) <= MAX_W
    # the browser test measures the real lab (≤ 640 px); here: images + two rows of controls, status
    # and captions
    assert max(h_grid, h_curves + h_filters) + 30 + 130 <= 640, (
        "the lab is taller than a 768-px screen's notebook"
    )


def test_lab_states_a_caveat_only_when_given(trainer):
    plain = cw.ReactivationLab(trainer, score="max", tau=0.05)
    assert not any("craft-lab-caveat" in c._dom_classes for c in plain.widget.children)
    fast = cw.ReactivationLab(trainer, score="max", tau=0.05, caveat=cw.FAST_LAB_CAVEAT)
    assert fast.widget.children[0] is fast.caveat and "FAST mode" in fast.caveat.value


@pytest.mark.slow
def test_lab_code_cell_pattern_leaves_the_widget_alone(trainer):
    """Notebook 03 scripts the lab's functions on a copy: the widget's controls keep their
    values."""
    lab = cw.ReactivationLab(trainer, steps=20, score="max", tau=0.05)
    other = Trainer(trainer.data, trainer.config, progress=False)
    cw.lab_reactivate(other, "contextual", 0.05, "max")
    cw.lab_train(other, 2)
    assert (
        lab.steps.value == 20 and lab.last_reactivation is None and lab_counts(lab)["status"] == 5
    )


# ---------------------------------------------------------------------------------------------
# the threshold explorer


@pytest.mark.slow
def test_explorer_count_frames_and_bars_agree(trainer):
    probe = trainer.data.images[:32]
    explorer = cw.ThresholdExplorer(trainer.model, probe=probe, score="max", tau=0.1)
    for score, tau in (
        ("max", 0.05),
        ("silent", 0.01),
        ("gamma", 0.2),
        ("max", 0.001),
        ("l2", 0.9),
    ):
        explorer.score.value, explorer.tau.value = score, tau
        grid = next(ax for ax in explorer.figure.axes if ax.get_label() == "grid")
        bars = next(ax for ax in explorer.figure.axes if ax.get_label() == "bars")
        red = [
            p
            for p in bars.patches
            if np.allclose(p.get_facecolor()[:3], matplotlib.colors.to_rgb(viz.INACTIVE))
        ]
        n = counts(explorer.count.value)[0]
        assert (
            n
            == len(viz.marked_filters(grid))
            == len(red)
            == counts(bars.get_title())[0]
            == explorer.state["count"]
        )
    assert_readable(explorer.image.value, explorer.figure)


# ---------------------------------------------------------------------------------------------
# the comparison dashboard, pooled from two folders


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("room")
    records = sorted((reference.FAST_DIR / "records").glob("*.json"))
    if not records:
        pytest.skip("docs/results/fast/records is not committed")
    for path in records:
        seed = int(path.stem.rsplit("-s", 1)[1])
        target = root / ("laptop-a" if seed < 4 else "laptop-b") / "records"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return [root / "laptop-a", root / "laptop-b"]


def table_cells(table: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    return [[html_text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r)] for r in rows]


def assert_dashboard_consistent(dash) -> None:
    assert dash.error.value == ""
    rows = table_cells(dash.table.value)[1:]
    picked = dash.picked
    assert [r[0] for r in rows] == [a.label for a in picked.arms.values()]
    seeds = sorted({s for a in picked.arms.values() for s in a.seeds})
    assert f"{len(seeds)} seed(s)" in html_text(dash.caption.value)
    fig_text = "\n".join(
        html_text(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", dash.spread.value)
    )
    metric = dash.metric.value
    for name, arm in picked.arms.items():
        p = arm.vs_baseline.get(metric)
        # the table and the figure print the same Δ and p
        if p is not None and p.t_pvalue is not None:
            row = next(r for r in rows if r[0] == arm.label)
            assert fmt(metric, p.mean_difference, True) in row and fmt("p", p.t_pvalue) in row
            assert (
                f"p = {fmt('p', p.t_pvalue)}" in fig_text
                and fmt(metric, p.mean_difference, True) in fig_text
            )


@pytest.mark.slow
def test_dashboard_pools_two_folders_with_a_ci(two_folders):
    dash = dashboard.ComparisonDashboard(two_folders)
    p = dash.summary.arms["contextual"].vs_baseline["accuracy"]
    assert p.n == 8 and p.ci95 is not None and p.ci95[0] < p.mean_difference < p.ci95[1]
    assert_dashboard_consistent(dash)
    for change in (
        lambda: setattr(dash.metric, "value", "silent_fraction"),
        lambda: setattr(dash.seeds, "value", (0, 1, 5, 6)),
        lambda: setattr(dash.arms, "value", ("none", "contextual")),
        lambda: setattr(dash.metric, "value", "auc"),
    ):
        change()
        assert_dashboard_consistent(dash)
    assert_readable(dash.image.value)  # the ROC panel; the spread's text is at least 11 px
    sizes = [int(px) for px in re.findall(r'font-size="(\d+)"', dash.spread.value)]
    assert sizes and min(sizes) >= viz.MIN_TEXT_PX
    dash.metric.value = (
        "tar@far=0.001"  # 450 impostor pairs per split cannot set a threshold at FAR 1e-3
    )
    caption = html_text(dash.caption.value)
    assert (
        "not estimable in 8 of 8 runs" in caption and "impostor pairs per training split" in caption
    )
    assert "not estimable" in html_text(dash.table.value) and dash.error.value == ""
    dash.arms.value = ()
    assert "nothing selected" in dash.error.value


@pytest.mark.slow
def test_static_twins_of_every_widget_exist(two_folders, trainer):
    assert len(dashboard.comparison_view(two_folders, "accuracy").axes) == 2
    assert len(cw.threshold_view(trainer.model, "max", 0.1).axes) == 2
    assert cw.reactivation_view(trainer, "contextual", 0.05, score="max").axes
    assert len(cw.decay_view().axes) == 2


# ---------------------------------------------------------------------------------------------
# palette


def test_palette_is_okabe_ito_without_a_red_green_pair():
    for colour in (viz.INACTIVE, viz.ACTIVE, viz.EVENT, *viz.PALETTE, *viz.ARM_COLORS.values()):
        assert colour in viz.OKABE_ITO.values()
    assert viz.OKABE_ITO["bluish green"] not in viz.PALETTE + [viz.INACTIVE, viz.ACTIVE, viz.EVENT]


def test_line_plots_use_the_palette(trainer):
    fig = viz.inactive_curves(
        {"a": trainer.history, "b": trainer.history}, 0.1, score="max", second=("gamma", 0.1)
    )
    allowed = {matplotlib.colors.to_hex(c).lower() for c in viz.OKABE_ITO.values()} | {
        "#808080",
        "#000000",
    }
    for ax in fig.axes:
        for line in ax.lines:
            assert matplotlib.colors.to_hex(line.get_color()).lower() in allowed
