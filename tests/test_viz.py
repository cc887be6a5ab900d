"""Every figure of craftlib.viz drawn from real data (LFW faces, a FAST run, the released MobileFaceNet)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from craft_data import TAU, comparison_dir, faces32, fast_run, mobilefacenet
from craftlib import viz
from craftlib.activity import filter_scores, inactive_mask, model_scores, timeline
from craftlib.reactivation import reactivate_model


@pytest.fixture(scope="module")
def stem():
    return mobilefacenet()


@pytest.fixture(scope="module")
def mfn_scores(stem):
    return filter_scores(stem[0])


@pytest.fixture(scope="module")
def run():
    return fast_run()


@pytest.fixture(scope="module")
def face():
    return faces32()[0]


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
    red_labels = [t for t in ax.texts if t.get_text().startswith("✕")]
    assert len(red_labels) == 31
    assert len(fig.axes) == 2  # the grid and its weight colorbar
    fig.canvas.draw()


def test_filter_grid_without_channels_and_with_an_explicit_mask(run):
    mask = np.zeros(64, bool)
    mask[[3, 5, 7]] = True
    fig = viz.filter_grid(run.model.conv1.weight, mask=mask, channels=False, title="three")
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
    red = [p for p in ax.patches if np.allclose(p.get_facecolor()[:3], viz.matplotlib.colors.to_rgb(viz.INACTIVE))]
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


def test_death_timeline_orders_by_death_and_marks_events(run):
    matrix = timeline(run.history)
    fig = viz.death_timeline(matrix, TAU, run.events)
    ax = main_axes(fig)[0]
    assert ax.images[0].get_array().shape == (64, len(run.history))
    died = viz.death_times(matrix, TAU, run.events)
    order = [int(t.get_text()) for t in ax.get_yticklabels()]
    assert list(np.sort(died)) == list(died[order])  # rows ordered by time of death (or renewal)
    assert all(died[f] <= run.events[0]["epoch"] for f in run.events[0]["filters"])
    deaths = next(c for c in ax.collections if c.get_gid() == "deaths")
    assert len(deaths.get_offsets()) == int(np.isfinite(viz.death_times(matrix, TAU)).sum()) > 0
    renewed = [c for c in ax.collections if c.get_gid() == "renewed"]
    assert [len(c.get_offsets()) for c in renewed] == [len(e["filters"]) for e in run.events]
    assert len([l for l in ax.lines if l.get_color() == viz.EVENT]) == len(run.events) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "re-activation" in legend and any(t.startswith("first score < τ") for t in legend)


def test_death_timeline_ignores_detect_only_events(run):
    detected = [{**e, "strategy": "none"} for e in run.events]  # the standard arm logs, renews nothing
    ax = main_axes(viz.death_timeline(timeline(run.history), TAU, detected))[0]
    assert not [c for c in ax.collections if c.get_gid() == "renewed"]
    assert not [l for l in ax.lines if l.get_color() == viz.EVENT]


def test_death_timeline_accepts_a_step_axis(run):
    matrix = timeline(run.history)
    steps = [h["step"] for h in run.history]
    fig = viz.death_timeline(matrix, TAU, run.events, x=steps, xlabel="step")
    ax = main_axes(fig)[0]
    event_lines = [l for l in ax.lines if l.get_color() == viz.EVENT]
    assert sorted(l.get_xdata()[0] for l in event_lines) == [e["step"] for e in run.events]


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


def test_activation_maps_with_a_facecnn_stem_restore_training_mode(run, face):
    run.model.train()
    fig = viz.activation_maps(run.model.stem, face, [0, 1, 2])
    assert run.model.training
    assert main_axes(fig)[1].images[0].get_array().shape == (32, 32)


def test_before_after_shows_renewed_filters_and_their_maps(run, face):
    model = copy.deepcopy(run.model)
    before = model.conv1.weight.detach().clone()
    tau = float(np.sort(model_scores(model))[4]) + 1e-6
    result = reactivate_model(model, tau, "contextual", generator=torch.Generator().manual_seed(0))
    assert len(result.filters) == 5
    fig = viz.before_after(before, model.conv1.weight, result.filters, run.model.stem, model.stem, face)
    assert len(fig.axes) == 4 * 5
    assert [ax.get_ylabel() for ax in fig.axes[::5]] == ["filter before", "filter after", "map before", "map after"]
    assert len(viz.before_after(before, model.conv1.weight, result.filters).axes) == 2 * 5
    assert "no filters" in viz.before_after(before, before, []).texts[0].get_text()


def test_training_curves_three_panels_and_event_lines(run):
    fig = viz.training_curves(run.history, run.events, tau=TAU)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len([l for l in ax.lines if l.get_gid() == "event"]) == len(run.events)
        assert "re-activation" in [t.get_text() for t in ax.get_legend().get_texts()]
    inactive = fig.axes[2].lines[0].get_ydata()
    assert np.allclose(inactive, (timeline(run.history) < TAU).mean(0))


def test_step_curves_from_a_lab_log():
    log = [{"step": 0, "loss": float("nan"), "inactive": 0.0}, {"step": 5, "loss": 9.0, "inactive": None},
           {"step": 10, "loss": 8.5, "inactive": 0.25}]
    fig = viz.step_curves(log, [{"epoch": 0, "step": 10, "filters": [1, 2]}])
    loss_ax, inactive_ax = fig.axes
    assert list(loss_ax.lines[0].get_xdata()) == [5, 10]
    assert list(inactive_ax.lines[0].get_ydata()) == [0.0, 0.25]
    assert any(l.get_gid() == "event" for l in inactive_ax.lines)


def test_roc_curves_log_far_axis():
    runs = json.loads((comparison_dir() / "runs.json").read_text())  # each run holds its evaluate() report
    reports = {f"{r['strategy']} seed {r['seed']}": r for r in runs}
    fig = viz.roc_curves(reports)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == f"none seed 0 (AUC {runs[0]['auc']:.3f})" and labels[-1] == "chance"
    assert len(labels) == len(runs) + 1


def test_seed_comparison_boxes_points_and_pvalues():
    summary = json.loads((comparison_dir() / "summary.json").read_text())
    fig = viz.seed_comparison(summary, "accuracy")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["standard training", "CRAFT (contextual)"]
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points == 4  # 2 arms x 2 seeds
    notes = [t.get_text() for t in ax.texts if t.get_gid() == "pvalue"]
    assert notes[0] == "baseline" and notes[1].startswith("p = ")
    assert "2 seed(s)" in ax.get_title()


def test_seed_comparison_single_seed_has_no_pvalue():
    summary = json.loads((comparison_dir() / "summary.json").read_text())
    from craftlib.widgets import select

    one = select(summary, [], seeds=[0])
    notes = [t.get_text() for t in viz.seed_comparison(one, "inactive_fraction").axes[0].texts]
    assert notes[1] == "p = n/a (t)\nn/a (W)"


def test_save_comparison_figures_writes_every_png(tmp_path):
    for name in ("summary.json", "runs.json"):
        (tmp_path / name).write_text((comparison_dir() / name).read_text())
    paths = viz.save_comparison_figures(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(["seeds_accuracy.png", "seeds_inactive_fraction.png", "roc.png", "curves_none.png",
                            "curves_contextual.png", "timeline_none.png", "timeline_contextual.png"])
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_save_comparison_figures_without_runs_and_one_seed(tmp_path):
    summary = json.loads((comparison_dir() / "summary.json").read_text())
    from craftlib.widgets import select

    (tmp_path / "summary.json").write_text(json.dumps(select(summary, [], seeds=[1])))
    assert sorted(p.name for p in viz.save_comparison_figures(tmp_path)) == ["seeds_accuracy.png",
                                                                             "seeds_inactive_fraction.png"]


def test_figures_show_themselves_in_jupyter_without_pyplot(mfn_scores):
    fig = viz.score_bars(mfn_scores, 0.1)
    assert fig._repr_png_()[:4] == b"\x89PNG"  # what IPython displays for a returned figure
    assert viz.figure_png(fig, dpi=50)[:4] == b"\x89PNG"
