"""Survival of renewed filters against the schedule's own decay: the analytic curve, and the record readers.

The key check (issue #9): a ``conv1`` filter that receives no task gradient, trained with the workshop
recipe's optimizer and one-cycle schedule, shrinks exactly as ``survival.decay_curve`` says.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib.callbacks import Callback
from craftlib.experiments import _timeline
from craftlib.reactivation import clear_optimizer_state
from craftlib.recipes import FAST, WORKSHOP
from craftlib.survival import decay_curve, learning_rates, new_deaths, survival, survival_curve, survival_stats
from craftlib.training import Trainer

FROZEN = 11  # no task gradient from the start
RESTARTED = 40  # no task gradient either, and its momentum is cleared after epoch 1, as re-activation does


class RestartMomentum(Callback):
    def on_epoch_end(self, trainer) -> None:
        if trainer.epoch == 1:
            clear_optimizer_state(trainer.optimizer, trainer.model.conv1.weight, torch.tensor([RESTARTED]))


@pytest.fixture(scope="module")
def gradient_free_run(tiny_faces):
    """The workshop recipe (SGD momentum 0.9, wd 1e-2 on everything, one-cycle over 10 epochs) at 32 px and
    batch 32: 3 steps per epoch on ``tiny_faces``. Two conv1 filters get their task gradient zeroed."""
    config = WORKSHOP.train.but(batch_size=32, model__input_size=32)
    trainer = Trainer(tiny_faces, config, [RestartMomentum()], progress=False)
    rows = torch.tensor([FROZEN, RESTARTED])
    trainer.model.conv1.weight.register_hook(lambda grad: grad.index_fill(0, rows, 0.0))
    trainer.fit()
    return trainer


def norms(trainer: Trainer, f: int) -> np.ndarray:
    return np.array([np.linalg.norm(np.asarray(h["conv1"]["weight"][f], dtype=np.float64)) for h in trainer.history])


@pytest.mark.slow
def test_a_gradient_free_filter_follows_the_decay_curve(gradient_free_run):
    trainer = gradient_free_run
    spe = trainer.steps_per_epoch
    assert spe == 3 and len(trainer.history) == 11
    curve = decay_curve(trainer.config, spe, 0)
    w = norms(trainer, FROZEN)
    np.testing.assert_allclose(w / w[0], curve[::spe], rtol=1e-5)  # at every epoch, 0..10
    assert curve[-1] < 0.95  # it did decay, by far more than the tolerance (so the comparison means something)
    live = norms(trainer, 0)
    assert abs(live[-1] / live[0] - curve[-1]) > 1e-3  # a filter with a task gradient does not follow it


@pytest.mark.slow
def test_the_curve_restarts_with_the_momentum(gradient_free_run):
    """``start_step``: the momentum buffer is zero then, exactly as after a re-activation."""
    trainer = gradient_free_run
    spe = trainer.steps_per_epoch
    w = norms(trainer, RESTARTED)
    curve = decay_curve(trainer.config, spe, spe)
    np.testing.assert_allclose(w[1:] / w[1], curve[::spe], rtol=1e-5)
    assert not np.allclose(w[1:] / w[1], decay_curve(trainer.config, spe, 0)[::spe][: len(w) - 1], rtol=1e-5)


@pytest.mark.slow
def test_survival_ratio_of_a_coasting_filter_is_one(gradient_free_run):
    """Read through a run record as ``compare`` stores it: a renewed filter with no gradient has ratio 1."""
    trainer = gradient_free_run
    spe = trainer.steps_per_epoch
    record = {"timeline": _timeline(trainer.history),
              "events": [{"epoch": 1, "step": spe, "strategy": "contextual", "filters": [RESTARTED]},
                         {"epoch": 1, "step": spe, "strategy": "none", "filters": [FROZEN]}]}  # not a renewal
    (row,) = survival(record, trainer.config, tau=0.01)
    assert row["filter"] == RESTARTED and row["epoch"] == 1 and len(row["ratio"]) == 10
    np.testing.assert_allclose(row["ratio"], 1.0, rtol=1e-4)
    assert row["alive"] == [s >= 0.01 for s in row["silent_score"]]


@pytest.mark.slow
def test_learning_rates_are_the_trainers(tiny_faces):
    config = FAST.train.but(batch_size=32, epochs=2)
    trainer = Trainer(tiny_faces, config, progress=False)
    seen = []

    class Lr(Callback):
        def on_step_end(self, t):
            seen.append(t.optimizer.param_groups[0]["lr"])

    lrs = learning_rates(config, trainer.steps_per_epoch)
    assert len(lrs) == 6 and 0 < lrs.min() <= lrs.max() <= config.lr
    trainer.callbacks.append(Lr())
    trainer.train_steps(5)
    np.testing.assert_allclose(seen, lrs[1:6], rtol=1e-12)  # the lr after each step is the next step's


def test_decay_curve_by_hand():
    """Constant lr: v <- m v + wd w; w <- w - lr v, from w = 1, v = 0."""
    config = FAST.train.but(schedule="constant", lr=0.5, momentum=0.5, weight_decay=0.1, epochs=1)
    curve = decay_curve(config, steps_per_epoch=3, start_step=0)
    w, v, expected = 1.0, 0.0, [1.0]
    for _ in range(3):
        v = 0.5 * v + 0.1 * w
        w -= 0.5 * v
        expected.append(w)
    np.testing.assert_allclose(curve, expected, rtol=1e-12)
    assert len(decay_curve(config, 3, 2)) == 2  # from step 2: one step left
    with pytest.raises(ValueError, match="SGD"):
        decay_curve(config.but(optimizer="adam"), 3, 0)


def test_survival_rows_from_a_record(make_record):
    record = make_record("contextual", 0, 0.8, renewed=(0, 1, 2))
    rows = survival(record, FAST.train, tau=0.3)
    assert [r["filter"] for r in rows] == [0, 1, 2] and all(r["epoch"] == 1 for r in rows)
    tl = record["timeline"]
    for r in rows:
        assert len(r["silent_score"]) == len(r["ratio"]) == len(r["alive"]) == 3  # epochs 1, 2, 3
        assert r["ratio"][0] == pytest.approx(1.0)  # relative to the moment of renewal
        col = np.asarray(tl["output_std"])
        expected = [col[c, r["filter"]] / col[c].max() for c in (1, 2, 3)]
        np.testing.assert_allclose(r["silent_score"], expected)
        assert r["alive"] == [s >= 0.3 for s in expected]
    assert survival(make_record("none", 0, 0.8), FAST.train, 0.3) == []  # detected, not renewed


def test_new_deaths_follow_standard_trainings_live_filters(make_record):
    record = make_record("none", 0, 0.8)
    std = np.asarray(record["timeline"]["output_std"])
    rows = new_deaths(record, [1, 2], tau=0.5)
    alive_at = {e: np.flatnonzero(std[e] / std[e].max() >= 0.5) for e in (1, 2)}
    assert len(rows) == len(alive_at[1]) + len(alive_at[2])
    for r in rows:
        assert r["alive"][0] is True and len(r["alive"]) == 4 - r["epoch"]
        assert r["alive"] == [bool(std[c, r["filter"]] / std[c].max() >= 0.5) for c in range(r["epoch"], 4)]


def test_survival_curve_fractions_and_gaps():
    rows = [{"alive": [True, True, False]}, {"alive": [True, False]}, {"alive": [True]}]
    np.testing.assert_allclose(survival_curve(rows, 3), [1.0, 0.5, 0.0, np.nan])
    assert np.isnan(survival_curve([], 2)).all()


def test_survival_stats_resample_whole_seeds():
    """Seed 0's two filters survive, seed 1's three die: 40% pooled; the interval moves by whole runs."""
    def row(alive, ratio):
        return {"alive": [True, alive], "ratio": [1.0, ratio]}
    rows = {0: [row(True, 4.0), row(True, 6.0)], 1: [row(False, 1.0)] * 3, 2: []}
    s = survival_stats(rows)
    assert s["filters"] == 5 and s["runs"] == 2 and s["alive_end"] == pytest.approx(0.4)
    low, high = s["alive_end_ci95"]
    assert low == 0.0 and high == 1.0  # a resample of only seed 1 / only seed 0
    np.testing.assert_allclose(s["ratio_end"], np.percentile([4, 6, 1, 1, 1], [25, 50, 75]))
    assert survival_stats(rows) == s  # seeded: the same table every time
    assert survival_stats({0: [row(True, 2.0)]})["alive_end_ci95"] is None  # one run: no interval
    assert "ratio_end" not in survival_stats({0: [{"alive": [True, False]}]})  # standard training's rows
    assert survival_stats({}) == {"filters": 0, "runs": 0}
