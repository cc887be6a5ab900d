"""The widgets' callbacks as plain functions, then the widgets themselves driven by setting values
and clicking.

The explorer runs on the released MobileFaceNet stem with real faces, the lab on a real (tiny)
trainer, the dashboard on results folders of run records (``records_dir``: synthetic numbers in the
exact shape ``compare`` writes; one slow test on a real comparison).
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import time

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from craftlib import viz
from craftlib import widgets as cw
from craftlib.activity import filter_scores, inactive_mask
from craftlib.reactivation import CraftSpec
from craftlib.recipes import ARM_LABELS
from craftlib.study import dashboard, figures
from craftlib.study.experiments import load_records
from craftlib.study.results import METRIC_LABELS, PERCENT, render_html, summarize
from craftlib.training import NonFiniteLossError


@pytest.fixture(scope="module")
def probe(devtest):
    return devtest.images[:64]


@pytest.fixture(scope="module")
def source(stem, probe):
    return cw.score_source(stem, probe)


@pytest.fixture(scope="module")
def face(devtest):
    return devtest.images[0]


KILLED = [2, 11, 30, 47, 63]


def kill(trainer, filters=KILLED) -> list[int]:
    """Shrink some filters to 0.1 % (a few steps kill none): they stand in for dead filters at τ =
    0.1 (max |w|)."""
    with torch.no_grad():
        trainer.model.conv1.weight[filters] *= 1e-3
    return list(filters)


def silence(trainer, filters=KILLED) -> list[int]:
    """Zero some channels' BatchNorm γ and β: their output is 0, silent for the functional
    detector."""
    with torch.no_grad():
        trainer.model.bn1.weight[filters] = 0.0
        trainer.model.bn1.bias[filters] = 0.0
    return list(filters)


# ---------------------------------------------------------------------------------------------
# threshold explorer


def test_threshold_state_counts_follow_tau(source):
    scores = source.scores["max"]
    low, high = cw.threshold_state(scores, 0.1), cw.threshold_state(scores, 0.5)
    assert (low["count"], low["total"], low["text"]) == (31, 64, "31 / 64 inactive (48%)")
    assert high["count"] > low["count"]
    assert np.array_equal(low["mask"], inactive_mask(scores, 0.1))
    assert list(scores[low["order"]]) == sorted(scores)


def test_score_source_has_every_kind_for_the_mobilefacenet_stem(source, stem, probe):
    assert list(source.scores) == ["max", "l1", "l2", "gamma", "effective", "silent", "activation"]
    assert np.allclose(source.scores["l2"], filter_scores(stem[0], "l2"))
    expected = filter_scores(stem[0], "activation", stem=stem, probe=cw.as_probe(probe))
    assert np.allclose(source.scores["activation"], expected)
    dead = source.scores["max"] < 0.1
    # the released model's dead filters are silent too
    assert np.all(source.scores["silent"][dead] < 0.01)
    assert source.weight.shape == (64, 3, 3, 3)


def test_score_source_accepts_a_facecnn_a_conv_bn_pair_and_a_conv(trainer, probe):
    model = trainer.model
    assert {"silent", "activation"} <= set(cw.score_source(model, probe).scores)
    assert list(cw.score_source((model.conv1, model.bn1)).scores) == [
        "max",
        "l1",
        "l2",
        "gamma",
        "effective",
    ]
    assert list(cw.score_source(model.conv1).scores) == ["max", "l1", "l2"]
    with pytest.raises(TypeError, match="FaceCNN"):
        cw.score_source("conv1")


def test_as_probe_normalises_uint8_faces(probe):
    x = cw.as_probe(probe)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() < x.max() <= 1
    assert (
        cw.as_probe(x) is not None and torch.equal(cw.as_probe(x), x) and cw.as_probe(None) is None
    )


def test_threshold_update_is_fast_and_matches_inactive_mask(source):
    timings = []
    for tau in np.linspace(0, 1, 101):
        start = time.perf_counter()
        state = cw.threshold_update(source, "activation", tau)
        timings.append(time.perf_counter() - start)
        assert np.array_equal(state["mask"], inactive_mask(source.scores["activation"], tau))
    assert np.median(timings) < 0.05
    with pytest.raises(ValueError, match="not available"):
        cw.threshold_update(source, "nonsense", 0.1)


@pytest.mark.slow
def test_explorer_slider_and_menu_update_count_and_figure(stem, probe):
    explorer = cw.ThresholdExplorer(stem, probe)
    assert explorer.tau.continuous_update is False
    assert isinstance(explorer.tau, cw.W.FloatLogSlider)  # log-scaled, as the lab's: 0.001 to 1
    assert (explorer.tau.base, explorer.tau.min, explorer.tau.max, explorer.tau.step) == (
        10,
        -3,
        0,
        0.05,
    )
    assert "31 / 64 inactive (48%)" in explorer.count.value
    first_png = explorer.image.value
    explorer.tau.value = 0.5  # what dragging the slider does
    assert explorer.state["tau"] == 0.5
    assert (
        f"{explorer.state['count']} / 64" in explorer.count.value and explorer.state["count"] > 31
    )
    assert explorer.image.value != first_png and explorer.image.value[:4] == b"\x89PNG"
    grid = next(ax for ax in explorer.figure.axes if ax.get_label() == "grid")
    assert viz.marked_filters(grid) == np.flatnonzero(explorer.state["mask"]).tolist()
    explorer.score.value = "silent"
    assert explorer.state["score"] == "silent"
    bars = next(ax for ax in explorer.figure.axes if ax.get_label() == "bars")
    assert bars.get_ylabel() == "output spread (std after BN + activation) (log scale)"
    scores = explorer.state["scores"]
    assert bars.get_yscale() == "log" and bars.get_ylim()[0] < scores[scores > 0].min()
    # exact zeros: stubs
    assert sum(p.get_hatch() is not None for p in bars.patches) == (scores == 0).sum()


def test_explorer_bars_show_silent_filters_on_a_log_scale(stem, probe):
    """The released stem's dead channels are ~0.1% of the loudest: on the bars' log axis each is at
    least a tenth of the plot's height, where a linear axis would give them under a pixel."""
    fig = cw.threshold_figure(cw.score_source(stem, probe), "silent", 0.01)
    bars = next(ax for ax in fig.axes if ax.get_label() == "bars")
    low, high = (np.log10(v) for v in bars.get_ylim())
    silent = [p.get_height() for p in bars.patches if p.get_height() < 0.01]
    assert len(silent) >= 20 and all((np.log10(h) - low) / (high - low) > 0.1 for h in silent)


def test_threshold_explorer_and_static_view(stem):
    assert isinstance(cw.threshold_explorer(stem), cw.W.VBox)
    fig = cw.threshold_view(stem, "max", 0.1)
    assert isinstance(fig, Figure)
    grid = next(ax for ax in fig.axes if ax.get_label() == "grid")
    assert len(viz.marked_filters(grid)) == 31


# ---------------------------------------------------------------------------------------------
# re-activation lab: plain callbacks


def test_lab_reactivate_renews_exactly_the_dead_filters(trainer):
    expected = kill(trainer)
    before = trainer.model.conv1.weight.detach().clone()
    result = cw.lab_reactivate(trainer, "contextual", 0.1)
    assert result["filters"] == expected and result["count"] == 5 and result["score"] == "max"
    after = trainer.model.conv1.weight.detach()
    changed = torch.nonzero((after != before).flatten(1).any(1)).flatten().tolist()
    assert changed == expected
    assert trainer.events[-1] == result["event"] and result["event"]["source"] == "lab"
    assert (result["inactive_before"], result["inactive_after"]) == (5 / 64, 0.0)
    assert "5 / 64 filters" in result["text"]
    assert np.array_equal(result["before"], before.numpy())


def test_lab_reactivate_by_the_silent_detector_with_a_recipe_spec(trainer):
    """With ``spec`` (the recipe's CRAFT), the lab also resets what the spec resets: here the next
    layer."""
    silenced = silence(trainer)
    consumer = trainer.model.body[0][0].weight
    result = cw.lab_reactivate(
        trainer, "contextual", 0.01, score="silent", spec=CraftSpec(downstream="zero")
    )
    assert set(silenced) <= set(result["filters"]) and result["score"] == "silent"
    assert np.all(result["scores_before"][silenced] == 0) and np.all(
        result["scores_after"][silenced] > 0.01
    )
    assert torch.all(consumer[:, result["filters"]] == 0)
    assert torch.all(trainer.model.act1.weight[result["filters"]] == 0.25)
    assert result["event"]["score"] == "silent"


def test_lab_spec_defaults_to_the_first_release(trainer):
    spec = cw.lab_spec(None, "orthogonal", 0.2, "max")
    assert (spec.strategy, spec.tau, spec.score, spec.downstream, spec.strong_quantile) == (
        "orthogonal",
        0.2,
        "max",
        "keep",
        0.0,
    )
    assert (
        cw.lab_spec(CraftSpec(downstream="rescale"), "random", 0.05, "silent").downstream
        == "rescale"
    )
    with pytest.raises(ValueError, match="strategy"):
        cw.lab_spec(None, "magic", 0.1, "max")


def test_lab_reactivate_none_only_detects_and_bad_strategy_raises(trainer):
    kill(trainer, [0, 1, 2])
    before = trainer.model.conv1.weight.detach().clone()
    result = cw.lab_reactivate(trainer, "none", 0.1)
    assert result["count"] == 3 and torch.equal(before, trainer.model.conv1.weight)
    assert "left unchanged" in result["text"]
    with pytest.raises(ValueError, match="strategy"):
        cw.lab_reactivate(trainer, "magic", 0.1)


@pytest.mark.slow
def test_lab_train_runs_the_steps_and_reports_progress(trainer):
    seen = []
    start = trainer.step
    result = cw.lab_train(
        trainer, 7, 0.3, on_progress=lambda done, total: seen.append((done, total)), score="silent"
    )
    assert trainer.step == start + 7 and result["steps"] == list(range(start + 1, start + 8))
    assert len(result["losses"]) == 7 and np.all(np.isfinite(result["losses"]))
    assert seen == [(5, 7), (7, 7)]
    assert result["inactive_fraction"] == pytest.approx(np.mean(result["scores"]["silent"] < 0.3))
    with pytest.raises(ValueError, match="between 1 and"):
        cw.lab_train(trainer, 0)


def test_lab_log_keeps_scores_so_any_tau_can_be_drawn(trainer):
    log = cw.lab_log(trainer, 0.3, "silent")
    assert [e["step"] for e in log] == [h["step"] for h in trainer.history]
    for entry, h in zip(log, trainer.history):
        assert set(entry["scores"]) == {"silent", "max"}
        assert entry["inactive"] == pytest.approx(np.mean(entry["scores"]["silent"] < 0.3))


def test_reactivation_view_previews_without_touching_the_trainer(trainer, face):
    kill(trainer, [4, 5, 6, 7])
    weight, events = trainer.model.conv1.weight.detach().clone(), list(trainer.events)
    fig = cw.reactivation_view(trainer, "contextual", 0.1, face=face)
    assert isinstance(fig, Figure)
    assert torch.equal(weight, trainer.model.conv1.weight) and trainer.events == events
    assert len(fig.axes) == 4 * 4 + 2  # 4 filters x (2 tiles + 2 maps), then the two curves


# ---------------------------------------------------------------------------------------------
# re-activation lab: the widget


@pytest.mark.slow
def test_lab_reactivate_button_updates_status_figure_and_curve(trainer, face):
    kill(trainer)
    lab = cw.ReactivationLab(trainer, face=face, tau=0.05)
    first_grid, first_curves = lab.grid_image.value, lab.curves_image.value
    assert "5 / 64 inactive" in lab.status.value and first_grid[:4] == b"\x89PNG"
    lab.tau.value = 1.0  # everything below the strongest filter
    assert "63 / 64 inactive" in lab.status.value
    lab.tau.value = 0.1
    lab.reactivate_button.click()
    assert lab.error.value == ""
    assert (
        "5 / 64 filters below τ = 0.10 re-activated" in lab.status.value
        and "inactive 8% → 0%" in lab.status.value
    )
    assert lab.filters_image.value[:4] == b"\x89PNG"
    assert lab.grid_image.value != first_grid and lab.curves_image.value != first_curves
    assert len(trainer.events) == 1 and lab.log[-1]["step"] == trainer.step
    assert "last re-activation: 5 filters" in lab.last_caption.value
    assert not any(b.disabled for b in lab.buttons)


@pytest.mark.slow
def test_lab_detector_menu_switches_to_the_silent_score(trainer):
    silence(trainer, [1, 2, 3])
    lab = cw.ReactivationLab(trainer, tau=0.01, score="max")
    lab.score.value = "silent"
    assert (
        lab.state["score"] == "silent"
        and lab.state["count"] >= 3
        and np.all(lab.state["mask"][[1, 2, 3]])
    )
    assert f"{lab.state['count']} / 64 inactive" in lab.status.value


@pytest.mark.slow
def test_lab_train_button_disables_buttons_while_running(trainer, monkeypatch):
    lab = cw.ReactivationLab(trainer)
    states = []
    real = trainer.train_steps

    def watched(n):
        states.append([b.disabled for b in lab.buttons])
        return real(n)

    monkeypatch.setattr(trainer, "train_steps", watched)
    lab.steps.value = 6
    start = trainer.step
    lab.train_button.click()
    assert states and all(s == [True, True] for s in states)
    assert not any(b.disabled for b in lab.buttons)
    assert trainer.step == start + 6 and (lab.progress.value, lab.progress.max) == (6, 6)
    assert lab.log[-1]["step"] == trainer.step and "trained 6 steps" in lab.status.value


@pytest.mark.slow
def test_lab_errors_land_in_the_error_box(trainer, monkeypatch):
    lab = cw.ReactivationLab(trainer)
    lab.steps.value = 0
    lab.train_button.click()  # must not raise
    assert "craft-error" in lab.error.value and "between 1 and" in lab.error.value

    def explode(n):
        raise NonFiniteLossError("loss became nan <at step 4>")

    monkeypatch.setattr(trainer, "train_steps", explode)
    lab.steps.value = 3
    lab.train_button.click()
    assert "NonFiniteLossError" in lab.error.value and "&lt;at step 4&gt;" in lab.error.value
    assert not any(b.disabled for b in lab.buttons)
    monkeypatch.undo()
    lab.reactivate_button.click()  # a successful action clears the box
    assert lab.error.value == ""


# ---------------------------------------------------------------------------------------------
# comparison dashboard: records in, statistics recomputed on every selection


def table_rows(table: str) -> int:
    return table.count("<tr>") - 1  # minus the header


@pytest.mark.slow
def test_pool_a_folder_several_folders_or_a_summary(records_dir, tmp_path, synthetic_records):
    summary, records = dashboard.pool(records_dir)
    assert summary == summarize(synthetic_records) and len(records) == 15
    assert dashboard.pool(summary) == (summary, [])
    other = tmp_path / "laptop2"
    shutil.copytree(records_dir, other)
    pooled, notes = dashboard.pool_records([records_dir, other])
    assert len(pooled) == 15 and len(notes) == 15 and "kept the first" in notes[0]
    # no full paths
    assert f"in {records_dir.name} and in laptop2" in notes[0] and str(tmp_path) not in notes[0]
    assert {(n.arm, n.seed) for n in notes} == {(r["arm"], r["seed"]) for r in pooled}


@pytest.mark.slow
def test_dashboard_notes_follow_the_selection_and_it_says_how_to_pick_several(
    records_dir, tmp_path
):
    other = tmp_path / "laptop2"
    shutil.copytree(records_dir, other)
    (other / "records" / "none-s0.json").unlink()
    dash = dashboard.ComparisonDashboard([records_dir, other])
    assert (
        "none seed 1 is in" in dash.caption.value and "none seed 0 is in" not in dash.caption.value
    )
    dash.seeds.value = (0, 2)
    assert (
        "seed 1 is in" not in dash.caption.value and "contextual seed 2 is in" in dash.caption.value
    )
    dash.arms.value = ("none",)
    assert "contextual seed" not in dash.caption.value and "none seed 2 is in" in dash.caption.value
    hint = next(
        w
        for w in dash.widget.children[0].children[2].children
        if "craft-select-hint" in w._dom_classes
    )
    assert "Ctrl-click" in hint.value and "Shift-click" in hint.value
    with pytest.raises(FileNotFoundError, match="no run records"):
        dashboard.pool(tmp_path / "empty")


def test_select_recomputes_on_a_subset(records_dir):
    _, records = dashboard.pool(records_dir)
    one = dashboard.select(records, seeds=[1])
    assert (
        one.arms["none"].seeds == [1]
        and one.arms["contextual"].vs_baseline["accuracy"].t_pvalue is None
    )
    two = dashboard.select(records, arms=["none", "contextual"], seeds=[0, 1, 2])
    assert (
        list(two.arms) == ["none", "contextual"]
        and two.arms["contextual"].vs_baseline["accuracy"].n == 3
    )
    with pytest.raises(ValueError, match="nothing selected"):
        dashboard.select(records, arms=[])


@pytest.mark.slow
def test_dashboard_controls_change_table_and_figure(records_dir):
    dash = dashboard.ComparisonDashboard(records_dir)
    assert table_rows(dash.table.value) == 3 and dash.error.value == ""
    assert dash.table.value == render_html(dash.picked, "accuracy")
    assert "15 runs" in dash.caption.value
    first_spread = dash.spread.value
    dash.arms.value = ("none", "contextual")
    assert table_rows(dash.table.value) == 2
    dash.seeds.value = (0, 1, 2)
    assert "3 seed(s)" in dash.caption.value and dash.spread.value != first_spread
    roc, drawn = bytes(dash.image.value), len(dash._rocs)
    dash.seeds.value = (0, 2)  # the ROC panel shows the same runs (each arm's seed 0): kept
    assert bytes(dash.image.value) == roc and len(dash._rocs) == drawn
    assert "2 seed(s)" in " ".join(svg_texts(dash.spread.value))
    dash.seeds.value = (1, 2)  # another first seed: the ROC panel is drawn again
    assert bytes(dash.image.value) != roc and len(dash._rocs) == drawn + 1
    dash.seeds.value = (0, 1, 2)
    dash.metric.value = "silent_fraction"
    assert METRIC_LABELS["silent_fraction"] in dash.table.value
    dash.metric.value = (
        "tar@far=0.001"  # never estimable on DevTest: the reason, not an empty chart or an error
    )
    assert dash.error.value == ""
    reason = (
        "not estimable in 6 of 6 runs: not estimable: 450 impostor pairs per training split, "
        "fewer than 1/FAR"
    )
    assert (
        reason in dash.caption.value
        and reason in dash.table.value
        and "<table" not in dash.table.value
    )
    assert reason in " ".join(svg_texts(dash.spread.value)[1:])  # the panel says why
    figure = dashboard._comparison_figure(dash.picked, dash.records, "tar@far=0.001")
    said = [
        t.get_text().replace("\n", " ")
        for t in figure.axes[0].texts
        if t.get_gid() == "not-estimable"
    ]
    assert (
        said and "450 impostor pairs" in said[0] and "not estimable" in figure.axes[0].get_title()
    )
    dash.metric.value = "accuracy"
    assert "not estimable" not in dash.caption.value and "<table" in dash.table.value
    dash.arms.value = ()
    assert "nothing selected" in dash.error.value  # shown, not raised


def svg_texts(svg: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]


def test_spread_svg_shows_what_the_static_panel_shows(records_dir):
    """The dashboard's SVG spread against ``draw_seed_comparison`` on the same summary: one point
    per seed value, higher values drawn higher, one box per arm, the same notes, title and labels;
    percent ticks for a percent metric."""
    summary = dashboard.ComparisonDashboard(records_dir).summary
    for metric in ("accuracy", "auc"):
        panel = figures.seed_spread(summary, metric)
        svg = figures.seed_spread_svg(panel)
        values = [v for a in panel["arms"] for v in a["values"]]
        dots = [float(y) for y in re.findall(r'<circle cx="[^"]+" cy="([^"]+)"', svg)]
        assert len(dots) == len(values) > 0
        order = np.argsort(values, kind="stable")
        assert all(dots[i] >= dots[j] - 0.05 for i, j in zip(order, order[1:]))  # y grows upward
        assert svg.count("<rect") == 1 + len(panel["arms"])  # the frame and one box per arm
        ax = Figure().subplots()
        figures.draw_seed_comparison(ax, summary, metric)
        texts = svg_texts(svg)
        notes = [t.get_text() for t in ax.texts if t.get_gid() == "pvalue"]
        assert all(line in texts for note in notes for line in note.split("\n"))
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert ax.get_title() in texts and ax.get_ylabel() in texts and set(labels) <= set(texts)
        assert any(t.endswith("%") for t in texts) == (metric in PERCENT)


def test_dashboard_pools_folders_and_refuses_a_bare_summary(records_dir, tmp_path):
    half = tmp_path / "half"
    (half / "records").mkdir(parents=True)
    for path in sorted((records_dir / "records").glob("*-s[34].json")):
        shutil.move(str(path), half / "records" / path.name)
    dash = dashboard.ComparisonDashboard([records_dir, half])
    assert dash.summary.arms["contextual"].seeds == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError, match="run records"):
        dashboard.ComparisonDashboard(dash.summary)


@pytest.mark.slow
def test_comparison_view_static_twin(records_dir):
    summary, _ = dashboard.pool(records_dir)
    assert len(dashboard.comparison_view(records_dir, "accuracy").axes) == 2  # seed spread and ROC
    # a summary alone: no runs, no ROC
    assert len(dashboard.comparison_view(summary, "auc").axes) == 1
    fig = dashboard.comparison_view(
        records_dir, "accuracy", arms=["none", "random_matched"], seeds=[0, 1]
    )
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == [ARM_LABELS["none"], ARM_LABELS["random_matched"]]


def test_uploaded_records_land_in_the_folder(records_dir, tmp_path):
    files = [
        {"name": p.name, "content": p.read_bytes()}
        for p in sorted((records_dir / "records").glob("none-*"))
    ]
    written = dashboard.save_uploads(files, tmp_path / "room")
    assert [p.name for p in written] == [f["name"] for f in files]
    assert load_records(tmp_path / "room") == [
        r for r in load_records(records_dir) if r["arm"] == "none"
    ]
    with pytest.raises(ValueError, match="not a run record"):
        dashboard.save_uploads(
            [{"name": "notes.json", "content": json.dumps({"hello": 1}).encode()}],
            tmp_path / "room",
        )


@pytest.mark.slow
def test_dashboard_on_a_real_comparison(comparison_dir):
    dash = dashboard.ComparisonDashboard(comparison_dir)
    assert table_rows(dash.table.value) == 2 and dash.error.value == ""
    assert ARM_LABELS["contextual"] in dash.table.value and dash.image.value[:4] == b"\x89PNG"
    dash.seeds.value = (0,)
    assert dash.picked.arms["contextual"].vs_baseline["accuracy"].t_pvalue is None


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.slow
def test_a_fast_redraw_is_pixel_identical_to_a_full_one(stem, probe, trainer):
    """``redraw.Redrawer`` draws only what τ changes over the kept pixels of the rest: the page must
    show exactly what a full redraw of the same state shows, in the explorer and in the lab."""
    explorer = cw.ThresholdExplorer(stem, probe, score="max", tau=0.1)
    fresh = cw.ThresholdExplorer(stem, probe, score="max", tau=0.1)
    # back and forth without a full redraw between: the kept filter marks are pasted again, and a
    # score seen before comes back with its own kept pixels
    for score, tau in [("max", 0.02), ("max", 0.3), ("l2", 0.3), ("max", 0.005), ("l2", 0.02)]:
        explorer.score.value = fresh.score.value = score
        explorer.tau.value = fresh.tau.value = tau
        assert (pixels(explorer.image.value) == pixels(fresh.redrawer.png(full=True))).all()
    assert explorer.redrawer.boxes is not None  # the filters' marks are pasted, not drawn
    silence(trainer, [1, 2, 3])
    lab = cw.ReactivationLab(trainer, tau=0.01, score="silent")
    lab._reactivate()  # a renewal event on the curves
    for tau in (0.05, 0.003, 0.2):
        lab.tau.value = tau
        assert lab.grid_redrawer.boxes is not None
        assert (pixels(lab.grid_image.value) == pixels(lab.grid_redrawer.png(full=True))).all()
        assert (pixels(lab.curves_image.value) == pixels(lab.curves_redrawer.png(full=True))).all()
