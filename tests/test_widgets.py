"""The widgets' callbacks as plain functions, then the widgets themselves driven by setting values and clicking."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from craft_data import TAU, comparison_dir, faces32, fresh_trainer, mobilefacenet
from craftlib import viz, widgets as cw
from craftlib.activity import filter_scores, inactive_mask
from craftlib.training import NonFiniteLossError


@pytest.fixture(scope="module")
def stem():
    return mobilefacenet()


@pytest.fixture(scope="module")
def probe():
    return faces32()[:64]


@pytest.fixture(scope="module")
def source(stem, probe):
    return cw.score_source(stem, probe)


@pytest.fixture
def trainer():
    return fresh_trainer(steps=3)


KILLED = [2, 11, 30, 47, 63]


def kill(trainer, filters=KILLED) -> list[int]:
    """Shrink some filters to 0.1 % (a few FAST steps kill none): they stand in for dead filters at τ = 0.1."""
    with torch.no_grad():
        trainer.model.conv1.weight[filters] *= 1e-3
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
    assert list(source.scores) == ["max", "l1", "l2", "gamma", "effective", "activation"]
    assert np.allclose(source.scores["l2"], filter_scores(stem[0], "l2"))
    expected = filter_scores(stem[0], "activation", stem=stem, probe=cw.as_probe(probe))
    assert np.allclose(source.scores["activation"], expected)
    assert source.weight.shape == (64, 3, 3, 3)


def test_score_source_accepts_a_facecnn_a_conv_bn_pair_and_a_conv(trainer, probe):
    model = trainer.model
    assert "activation" in cw.score_source(model, probe).scores
    assert list(cw.score_source((model.conv1, model.bn1)).scores) == ["max", "l1", "l2", "gamma", "effective"]
    assert list(cw.score_source(model.conv1).scores) == ["max", "l1", "l2"]
    with pytest.raises(TypeError, match="FaceCNN"):
        cw.score_source("conv1")


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


def test_explorer_slider_and_menu_update_count_and_figure(stem, probe):
    explorer = cw.ThresholdExplorer(stem, probe)
    assert explorer.tau.continuous_update is False
    assert (explorer.tau.min, explorer.tau.max, explorer.tau.step) == (0.0, 1.0, 0.01)
    assert "31 / 64 inactive (48%)" in explorer.count.value
    first_png = explorer.image.value
    explorer.tau.value = 0.5  # what dragging the slider does
    assert explorer.state["tau"] == 0.5
    assert f"{explorer.state['count']} / 64" in explorer.count.value and explorer.state["count"] > 31
    assert explorer.image.value != first_png and explorer.image.value[:4] == b"\x89PNG"
    grid = next(ax for ax in explorer.figure.axes if ax.get_label() == "grid")
    assert viz.marked_filters(grid) == np.flatnonzero(explorer.state["mask"]).tolist()
    explorer.score.value = "activation"
    assert explorer.state["score"] == "activation"
    bars = next(ax for ax in explorer.figure.axes if ax.get_label() == "bars")
    assert bars.get_ylabel() == "mean |activation| (ReDo)"


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
    assert result["filters"] == expected and result["count"] == 5
    after = trainer.model.conv1.weight.detach()
    changed = torch.nonzero((after != before).flatten(1).any(1)).flatten().tolist()
    assert changed == expected
    assert trainer.events[-1] == result["event"] and result["event"]["source"] == "lab"
    assert (result["inactive_before"], result["inactive_after"]) == (5 / 64, 0.0)
    assert "5 / 64 filters" in result["text"]
    assert np.array_equal(result["before"], before.numpy())


def test_lab_reactivate_none_only_detects_and_bad_strategy_raises(trainer):
    kill(trainer, [0, 1, 2])
    before = trainer.model.conv1.weight.detach().clone()
    result = cw.lab_reactivate(trainer, "none", 0.1)
    assert result["count"] == 3 and torch.equal(before, trainer.model.conv1.weight)
    assert "left unchanged" in result["text"]
    with pytest.raises(ValueError, match="strategy"):
        cw.lab_reactivate(trainer, "magic", 0.1)


def test_lab_train_runs_the_steps_and_reports_progress(trainer):
    seen = []
    start = trainer.step
    result = cw.lab_train(trainer, 7, TAU, on_progress=lambda done, total: seen.append((done, total)))
    assert trainer.step == start + 7 and result["steps"] == list(range(start + 1, start + 8))
    assert len(result["losses"]) == 7 and np.all(np.isfinite(result["losses"]))
    assert seen == [(5, 7), (7, 7)]
    with pytest.raises(ValueError, match="between 1 and"):
        cw.lab_train(trainer, 0)


def test_reactivation_view_previews_without_touching_the_trainer(trainer):
    kill(trainer, [4, 5, 6, 7])
    weight, events = trainer.model.conv1.weight.detach().clone(), list(trainer.events)
    fig = cw.reactivation_view(trainer, "contextual", 0.1, face=faces32()[0])
    assert isinstance(fig, Figure)
    assert torch.equal(weight, trainer.model.conv1.weight) and trainer.events == events
    assert len(fig.axes) == 4 * 4 + 2  # 4 filters x (2 tiles + 2 maps), then the two curves


# ---------------------------------------------------------------------------------------------
# re-activation lab: the widget


def test_lab_reactivate_button_updates_status_figure_and_curve(trainer):
    kill(trainer)
    lab = cw.ReactivationLab(trainer, face=faces32()[0], tau=0.05)
    first_grid, first_curves = lab.grid_image.value, lab.curves_image.value
    assert "5 / 64 inactive" in lab.status.value and first_grid[:4] == b"\x89PNG"
    assert lab.filters_image.value == b""  # nothing re-activated yet
    lab.tau.value = 0.0
    assert "0 / 64 inactive" in lab.status.value
    lab.tau.value = 0.1
    lab.reactivate_button.click()
    assert lab.error.value == ""
    assert "5 / 64 filters below τ = 0.10 re-activated; inactive 8% → 0%" in lab.status.value
    assert lab.filters_image.value[:4] == b"\x89PNG"
    assert lab.grid_image.value != first_grid and lab.curves_image.value != first_curves
    assert len(trainer.events) == 1 and lab.log[-1]["step"] == trainer.step
    assert not any(b.disabled for b in lab.buttons)


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
# comparison dashboard


@pytest.fixture(scope="module")
def results():
    return comparison_dir()


@pytest.fixture(scope="module")
def summary(results):
    return json.loads((results / "summary.json").read_text())


def table_rows(table: str) -> int:
    return table.count("<tr>") - 1  # minus the header


def test_comparison_table_rows_values_and_pvalues(summary):
    table = cw.comparison_table(summary, metric="accuracy")
    assert table_rows(table) == 2
    assert "standard training" in table and "CRAFT (contextual)" in table
    p = summary["arms"]["contextual"]["accuracy_pvalue_t"]
    assert ("n/a" if p is None else f">{p:.3f}</td>") in table
    assert table_rows(cw.comparison_table(summary, arms=["contextual"], metric="auc")) == 1


def test_select_recomputes_on_a_subset(summary, results):
    runs = json.loads((results / "runs.json").read_text())
    one = cw.select(summary, runs, seeds=[1])
    assert one["arms"]["none"]["seeds"] == [1] and one["arms"]["contextual"]["accuracy_pvalue_t"] is None
    assert cw.select(summary, [], seeds=[0, 1])["arms"]["none"]["accuracy"] == summary["arms"]["none"]["accuracy"]
    with pytest.raises(ValueError, match="nothing selected"):
        cw.select(summary, runs, arms=[])


def test_dashboard_controls_change_table_and_figure(results):
    dash = cw.ComparisonDashboard(results)
    assert table_rows(dash.table.value) == 2 and dash.error.value == ""
    first_png = dash.image.value
    dash.arms.value = ("contextual",)
    assert table_rows(dash.table.value) == 1
    dash.seeds.value = (0,)
    assert "per seed" in dash.table.value and dash.image.value != first_png
    dash.metric.value = "inactive_fraction"
    assert "inactive conv1 filters" in dash.table.value
    dash.arms.value = ()
    assert "nothing selected" in dash.error.value  # shown, not raised


def test_dashboard_from_a_summary_dict_and_static_view(summary, results):
    dash = cw.ComparisonDashboard(summary)
    assert table_rows(dash.table.value) == 2
    assert len(cw.comparison_view(summary, "accuracy").axes) == 1
    assert len(cw.comparison_view(results, "auc").axes) == 2  # with runs.json: ROC too
    with pytest.raises(FileNotFoundError, match="summary.json"):
        cw.load_results(results / "missing")
