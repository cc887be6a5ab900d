"""Every figure of craftlib.viz drawn from real data: LFW faces, a real CRAFT run, the released
MobileFaceNet; the comparison figures from a ``results.Summary`` (synthetic records here, a real
comparison in one slow test).
"""

from __future__ import annotations

import copy
import struct

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from craftlib import redraw, viz
from craftlib.activity import filter_scores, inactive_mask, model_scores, relative, timeline
from craftlib.reactivation import PAPER_READING, reactivate_model
from craftlib.study import figures
from craftlib.study.experiments import load_records
from craftlib.study.results import ARM_LABELS, METRIC_LABELS, SILENT_TAU, summarize

TAU = 0.3  # the tiny run re-activates silent filters below 0.3 (FAST's τ)


@pytest.fixture(scope="module")
def mfn_scores(stem):
    return filter_scores(stem[0])


@pytest.fixture(scope="module")
def face(devtest):
    return devtest.images[0]


@pytest.fixture(scope="module")
def summary(synthetic_records):
    return summarize(synthetic_records)


def main_axes(fig: Figure):
    """Axes that are not colorbars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_filter_grid_marks_exactly_the_dead_filters_of_mobilefacenet(stem, mfn_scores):
    fig = viz.filter_grid(stem[0].weight, mfn_scores, tau=0.1)
    ax = main_axes(fig)[0]
    expected = np.flatnonzero(inactive_mask(mfn_scores, 0.1)).tolist()
    assert len(expected) == 31
    assert viz.marked_filters(ax) == expected
    assert "31 / 64 inactive" in ax.get_title()
    red_labels = [t for t in ax.texts if t.get_text().startswith("✕") and t.get_visible()]
    assert len(red_labels) == 31
    assert len(fig.axes) == 2  # the grid and its weight colorbar
    fig.canvas.draw()


def test_filter_grid_without_channels_and_with_an_explicit_mask(tiny_run):
    mask = np.zeros(64, bool)
    mask[[3, 5, 7]] = True
    fig = viz.filter_grid(tiny_run.model.conv1.weight, mask=mask, channels=False, title="three")
    (ax,) = fig.axes
    assert viz.marked_filters(ax) == [3, 5, 7]
    assert ax.get_title() == "three"
    h, w = ax.images[0].get_array().shape[:2]
    assert h < w * 1.5  # 8 x 8 square-ish tiles of 3 x 3


def test_dead_filter_tile_is_flat_grey(stem, mfn_scores):
    dead = int(np.argmin(mfn_scores))
    w = viz.as_weight(stem[0].weight)
    tile = viz.filter_tile(w[dead], float(np.abs(w).max()))
    composite = tile[:6, :6]
    assert np.allclose(composite, 0.5, atol=0.02)
    live = viz.filter_tile(w[int(np.argmax(mfn_scores))], float(np.abs(w).max()))
    assert live[:6, :6].std() > 10 * composite.std()


def test_score_bars_sorted_coloured_and_tau_line(mfn_scores):
    fig = viz.score_bars(mfn_scores, 0.1)
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 64 and heights == sorted(heights)
    red = [
        p
        for p in ax.patches
        if np.allclose(p.get_facecolor()[:3], viz.matplotlib.colors.to_rgb(viz.INACTIVE))
    ]
    assert len(red) == 31
    tau_line = next(l for l in ax.lines if l.get_gid() == "tau")
    assert list(tau_line.get_ydata()) == [0.1, 0.1]
    assert ax.get_title().startswith("31 / 64 inactive (48%)")
    viz.update_score_bars(ax, mfn_scores, 0.5)
    assert list(tau_line.get_ydata()) == [0.5, 0.5]
    assert ax.get_title().startswith(f"{int((mfn_scores < 0.5).sum())} / 64")


@pytest.mark.parametrize("log", [False, True])
def test_score_histogram_splits_at_tau(mfn_scores, log):
    fig = viz.score_histogram(mfn_scores, 0.1, log=log)
    (ax,) = fig.axes
    assert [l.get_gid() for l in ax.lines] == ["tau"]
    assert ax.get_xscale() == ("log" if log else "linear")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["active", "inactive (< τ)", "τ = 0.10"]
    inactive_bars = ax.containers[1]
    assert round(sum(p.get_height() for p in inactive_bars)) == 31


def test_tau_text():
    assert [viz.tau_text(t) for t in (0.1, 0.3, 0.01, 0.005, 0.0)] == [
        "0.10",
        "0.30",
        "0.01",
        "0.005",
        "0.00",
    ]


def test_death_timeline_orders_by_death_and_marks_events(tiny_run):
    matrix = timeline(tiny_run.history, "silent")
    events = tiny_run.events
    fig = viz.death_timeline(matrix, TAU, events)
    ax = main_axes(fig)[0]
    assert ax.images[0].get_array().shape == (64, len(tiny_run.history))
    died = viz.death_times(matrix, TAU, events)
    order = [int(t.get_text()) for t in ax.get_yticklabels()]
    assert list(np.sort(died)) == list(died[order])  # rows ordered by time of death (or renewal)
    assert all(died[f] <= events[0]["epoch"] for f in events[0]["filters"])
    renewed = [c for c in ax.collections if c.get_gid() == "renewed"]
    assert [len(c.get_offsets()) for c in renewed] == [len(e["filters"]) for e in events]
    assert len([l for l in ax.lines if l.get_color() == viz.EVENT]) == len(events) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "re-activation" in legend and any(t.startswith("first score < τ") for t in legend)


@pytest.mark.slow
def test_death_timeline_ignores_detect_only_events_and_takes_steps(tiny_run):
    matrix = timeline(tiny_run.history, "silent")
    detected = [
        {**e, "strategy": "none"} for e in tiny_run.events
    ]  # the standard arm logs, renews nothing
    ax = main_axes(viz.death_timeline(matrix, TAU, detected))[0]
    assert not [c for c in ax.collections if c.get_gid() == "renewed"]
    assert not [l for l in ax.lines if l.get_color() == viz.EVENT]
    steps = [h["step"] for h in tiny_run.history]
    ax = main_axes(
        viz.death_timeline(matrix, TAU, tiny_run.events, x=steps, xlabel="step", log=True)
    )[0]
    event_lines = [l for l in ax.lines if l.get_color() == viz.EVENT]
    assert sorted(l.get_xdata()[0] for l in event_lines) == [e["step"] for e in tiny_run.events]


def test_activation_maps_on_mobilefacenet_dead_filters_are_black(stem, mfn_scores, face):
    mask = inactive_mask(mfn_scores, 0.1)
    filters = list(range(16))
    fig = viz.activation_maps(stem, face, filters, mfn_scores, 0.1)
    axes = main_axes(fig)
    assert len(axes) == 1 + len(filters)
    assert axes[0].images[0].get_array().shape == face.shape
    maps = [ax.images[0].get_array() for ax in axes[1:]]
    brightest = max(float(m.max()) for m in maps)
    for f, m in zip(filters, maps):
        if mask[f]:
            assert float(m.max()) < 0.05 * brightest
    red_titles = [ax.get_title() for ax in axes[1:] if ax.title.get_color() == viz.INACTIVE]
    assert len(red_titles) == int(mask[filters].sum())


def test_activation_maps_with_a_facecnn_stem_restore_training_mode(tiny_run, face):
    model = copy.deepcopy(tiny_run.model).train()
    fig = viz.activation_maps(model.stem, face, [0, 1, 2])
    assert model.training
    assert main_axes(fig)[1].images[0].get_array().shape == (32, 32)


def test_before_after_shows_renewed_filters_and_their_maps(tiny_run, face):
    model = copy.deepcopy(tiny_run.model)
    before = model.conv1.weight.detach().clone()
    tau = float(np.sort(model_scores(model))[4]) + 1e-6
    result = reactivate_model(
        model, PAPER_READING.but(tau=tau), generator=torch.Generator().manual_seed(0)
    )
    assert len(result.filters) == 5
    fig = viz.before_after(
        before, model.conv1.weight, result.filters, tiny_run.model.stem, model.stem, face
    )
    assert len(fig.axes) == 4 * 5
    labels = [ax.get_ylabel() for ax in fig.axes[::5]]
    assert [("filter" in l, "before" in l) for l in labels] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]
    assert "after" in labels[1] and labels[2].startswith("map") and "after" in labels[3]
    assert len(viz.before_after(before, model.conv1.weight, result.filters).axes) == 2 * 5
    assert "no filters" in viz.before_after(before, before, []).texts[0].get_text()


def test_training_curves_three_panels_event_lines_and_a_second_reading(tiny_run):
    fig = viz.training_curves(
        tiny_run.history, tiny_run.events, tau=TAU, score="silent", second=("max", 0.1)
    )
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len([l for l in ax.lines if l.get_gid() == "event"]) == len(tiny_run.events)
        assert "re-activation" in [t.get_text() for t in ax.get_legend().get_texts()]
    silent, weight = fig.axes[2].lines[0].get_ydata(), fig.axes[2].lines[1].get_ydata()
    assert np.allclose(silent, (timeline(tiny_run.history, "silent") < TAU).mean(0))
    assert np.allclose(weight, (timeline(tiny_run.history, "max") < 0.1).mean(0))


def test_step_curves_from_a_lab_log():
    log = [
        {"step": 0, "loss": float("nan"), "inactive": 0.0},
        {"step": 5, "loss": 9.0, "inactive": None},
        {"step": 10, "loss": 8.5, "inactive": 0.25},
    ]
    fig = viz.step_curves(log, [{"epoch": 0, "step": 10, "filters": [1, 2]}])
    loss_ax, inactive_ax = fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == [5, 10]
    assert list(inactive_ax.lines[0].get_ydata()) == [0.0, 0.25]
    assert any(l.get_gid() == "event" for l in inactive_ax.lines)


# ---------------------------------------------------------------------------------------------
# comparison figures: they draw a Summary, they never read files


def test_roc_curves_log_far_axis(synthetic_records):
    reports = {f"{r['arm']} seed {r['seed']}": r for r in synthetic_records[:3]}
    fig = viz.roc_curves(reports)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert (
        labels[0] == f"none seed 0 (AUC {synthetic_records[0]['auc']:.3f})"
        and labels[-1] == "chance"
    )
    assert len(labels) == 4


def test_seed_comparison_boxes_points_and_the_paired_ci(summary):
    fig = figures.seed_comparison(summary, "accuracy")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [ARM_LABELS[a] for a in summary.arms]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points == 15  # 3 arms x 5 seeds
    notes = [t.get_text() for t in ax.texts if t.get_gid() == "pvalue"]
    assert (
        notes[0] == "baseline"
        and notes[1].startswith("Δ +")
        and "CI [" in notes[1]
        and "p = " in notes[1]
    )
    assert "5 seed(s)" in ax.get_title() and METRIC_LABELS["accuracy"] in ax.get_title()
    one = figures.seed_comparison(summary, "accuracy", arms=["none", "contextual"])
    assert len(one.axes[0].get_xticklabels()) == 2


def test_seed_comparison_of_a_metric_that_is_never_estimable(summary):
    """TAR@FAR=1e-3 on DevTest is None in every run: the figure says n/a instead of failing."""
    fig = figures.seed_comparison(summary, "tar@far=0.001")
    notes = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "pvalue"]
    assert notes[1].startswith("Δ n/a") and "0 seed(s)" in fig.axes[0].get_title()


def test_tau_curves_one_line_per_arm(summary):
    fig = figures.tau_curves(summary, "silent")
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and ax.get_xscale() == "log"
    for line, arm in zip(ax.lines, summary.arms.values()):
        assert (
            list(line.get_xdata()) == list(summary.taus)
            and list(line.get_ydata()) == arm.curves["silent"]
        )
        assert f"area {arm.curve_area('silent'):.3f}" in line.get_label()


def test_survival_curves_against_standard_training(summary):
    fig = figures.survival_curves(summary)
    (ax,) = fig.axes
    labels = [l.get_label() for l in ax.lines]
    assert labels == [
        f"{ARM_LABELS['contextual']}: re-activated filters",
        f"{ARM_LABELS['random_matched']}: re-activated filters",
        "standard training: filters alive at the same epochs",
    ]
    assert list(ax.lines[-1].get_ydata()) == summary.baseline_survival


def test_record_matrix_is_relative_per_epoch(synthetic_records):
    record = synthetic_records[0]
    m = figures.record_matrix(record)
    assert m.shape == (64, len(record["timeline"]["epoch"]))
    np.testing.assert_allclose(m[:, 1], relative(np.asarray(record["timeline"]["output_std"][1])))
    assert figures.record_matrix(record, "max").shape == m.shape
    with pytest.raises(KeyError):
        figures.record_matrix(record, "effective")


@pytest.mark.slow
def test_save_comparison_figures_writes_every_png(summary, synthetic_records, tmp_path):
    paths = figures.save_comparison_figures(summary, synthetic_records, tmp_path / "figs")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "seeds_accuracy.png",
            "seeds_silent_fraction.png",
            "tau_curve_silent.png",
            "tau_curve_max.png",
            "survival.png",
            "roc.png",
            "timeline_none.png",
            "timeline_contextual.png",
            "timeline_random_matched.png",
        ]
    )
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.mark.slow
def test_comparison_figures_of_a_real_comparison(comparison_dir, tmp_path):
    records = load_records(comparison_dir)
    summary = summarize(records)
    assert list(summary.arms) == ["none", "contextual"] and summary.arms["none"].seeds == [0, 1]
    paths = figures.save_comparison_figures(summary, records, tmp_path)
    # 2 arms: 2 timelines
    assert len(paths) == 8 and all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    fig = viz.death_timeline(
        figures.record_matrix(records[0]),
        SILENT_TAU,
        records[0]["events"],
        x=records[0]["timeline"]["epoch"],
    )
    assert main_axes(fig)[0].images[0].get_array().shape == (64, 3)


def test_figures_show_themselves_in_jupyter_without_pyplot(mfn_scores):
    fig = viz.score_bars(mfn_scores, 0.1)
    assert fig._repr_png_()[:4] == b"\x89PNG"  # what IPython displays for a returned figure
    assert viz.figure_png(fig, dpi=50)[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------
# projector mode


def rendered(fig) -> dict:
    """What a widget shows of ``fig``: its PNG's size, each text's font size in pixels, the grid's
    tiles in pixels."""
    png = viz.figure_png(fig, dpi=viz.WIDGET_DPI)
    texts = [
        t for t in fig.findobj(viz.matplotlib.text.Text) if t.get_visible() and t.get_text().strip()
    ]
    ax = fig.axes[0]
    return {
        "png": struct.unpack(">II", png[16:24]),
        "font_px": [t.get_fontsize() * fig.dpi / 72 for t in texts],
        "tile_px": ax.get_window_extent().width / (ax.get_xlim()[1] - ax.get_xlim()[0]),
    }


def test_projector_mode_draws_text_and_tiles_one_and_a_half_times_larger(stem):
    """The lab's filter grid, as the widget renders it, with projector mode off and on."""
    fig = viz.filter_grid(stem[0].weight, channels=False)
    assert viz.render_scale() == 1.0
    normal = rendered(fig)
    try:
        assert viz.presentation(True) == 1.5
        big = rendered(fig)
    finally:
        viz.presentation(False)
    assert len(big["font_px"]) == len(normal["font_px"]) > 64  # tile numbers, title
    assert all(b >= 1.5 * n - 1e-9 for b, n in zip(big["font_px"], normal["font_px"]))
    assert min(big["font_px"]) >= 15 and big["tile_px"] >= 1.5 * normal["tile_px"] - 1e-9
    # off again
    assert big["png"][0] >= 1.5 * normal["png"][0] - 1 and rendered(fig)["png"] == normal["png"]


def test_projector_mode_refuses_a_silly_scale_and_reads_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="between 1 and 4"):
        viz.presentation(True, scale=10)
    assert viz.render_scale() == 1.0
    for value, scale in (("1", 1.5), ("0", 1.0), ("2", 2.0)):
        monkeypatch.setenv(viz.ENV_PRESENTATION, value)
        assert viz._scale_from_env() == scale
    monkeypatch.setenv(viz.ENV_PRESENTATION, "9")
    with pytest.raises(ValueError, match="CRAFT_PRESENTATION"):
        viz._scale_from_env()


def test_a_redrawer_starts_from_another_only_where_the_axes_stand_alone():
    """``Redrawer.start_from`` keeps another redrawer's pixels and draws one axes anew only when
    nothing else can reach into that axes' box; otherwise it refuses, and a full redraw decides."""

    def two_panels(ticks: bool):
        fig = viz.new_figure((6, 3))
        fig.get_layout_engine().set(wspace=0.3)  # room between the panels
        left, right = fig.subplots(1, 2)
        line = left.plot([0, 1], [1, 0])[0]
        right.plot([0, 1], [0, 1], label="before")
        if not ticks:
            left.set_axis_off()
        first = redraw.Redrawer(fig, lambda: [line])
        first.png()
        return fig, right, line, first

    fig, right, line, first = two_panels(ticks=True)
    second = redraw.Redrawer(fig, lambda: [line])
    assert not second.start_from(first, right)  # the left axes' ticks may reach over
    assert second.background is None
    fig, right, line, first = two_panels(ticks=False)
    right.lines[0].set_ydata([1, 0])  # only the right axes changes
    right.set_ylabel("after")
    second = redraw.Redrawer(fig, lambda: [line])
    assert second.start_from(first, right)
    second.png()  # the kept pixels and the changing line
    fast = np.asarray(second.canvas.buffer_rgba()).copy()
    second.png(full=True)
    assert (np.asarray(second.canvas.buffer_rgba()) == fast).all()  # a full redraw's picture
