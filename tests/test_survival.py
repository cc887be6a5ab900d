"""Survival of renewed filters against the schedule's own decay: the analytic curve, and the record
readers.

The key check (issue #9): a ``conv1`` filter that receives no task gradient, trained with the
workshop recipe's optimizer and one-cycle schedule, shrinks exactly as ``survival.decay_curve``
says.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib import pages
from craftlib.callbacks import Callback
from craftlib.reactivation import clear_optimizer_state
from craftlib.recipes import FAST, WORKSHOP
from craftlib.study.experiments import _timeline
from craftlib.study.survival import (
    decay_curve,
    learning_rates,
    new_deaths,
    survival,
    survival_curve,
    survival_stats,
)
from craftlib.training import Trainer

FROZEN = 11  # no task gradient from the start
RESTARTED = (
    40  # no task gradient either, and its momentum is cleared after epoch 1, as re-activation does
)


class RestartMomentum(Callback):
    def on_epoch_end(self, trainer) -> None:
        if trainer.epoch == 1:
            clear_optimizer_state(
                trainer.optimizer, trainer.model.conv1.weight, torch.tensor([RESTARTED])
            )


@pytest.fixture(scope="module")
def gradient_free_run(tiny_faces):
    """The workshop recipe (SGD momentum 0.9, wd 1e-2 on everything, one-cycle over 10 epochs) at 32
    px and batch 32: 3 steps per epoch on ``tiny_faces``. Two conv1 filters get their task gradient
    zeroed."""
    config = WORKSHOP.train.but(batch_size=32, model__input_size=32)
    trainer = Trainer(tiny_faces, config, [RestartMomentum()], progress=False)
    rows = torch.tensor([FROZEN, RESTARTED])
    trainer.model.conv1.weight.register_hook(lambda grad: grad.index_fill(0, rows, 0.0))
    trainer.fit()
    return trainer


def norms(trainer: Trainer, f: int) -> np.ndarray:
    return np.array(
        [
            np.linalg.norm(np.asarray(h["conv1"]["weight"][f], dtype=np.float64))
            for h in trainer.history
        ]
    )


@pytest.mark.slow
def test_a_gradient_free_filter_follows_the_decay_curve(gradient_free_run):
    trainer = gradient_free_run
    spe = trainer.steps_per_epoch
    assert spe == 3 and len(trainer.history) == 11
    curve = decay_curve(trainer.config, spe, 0)
    w = norms(trainer, FROZEN)
    np.testing.assert_allclose(w / w[0], curve[::spe], rtol=1e-5)  # at every epoch, 0..10
    # it did decay, by far more than the tolerance (so the comparison means something)
    assert curve[-1] < 0.95
    live = norms(trainer, 0)
    # a filter with a task gradient does not follow it
    assert abs(live[-1] / live[0] - curve[-1]) > 1e-3


@pytest.mark.slow
def test_the_curve_restarts_with_the_momentum(gradient_free_run):
    """``start_step``: the momentum buffer is zero then, exactly as after a re-activation."""
    trainer = gradient_free_run
    spe = trainer.steps_per_epoch
    w = norms(trainer, RESTARTED)
    curve = decay_curve(trainer.config, spe, spe)
    np.testing.assert_allclose(w[1:] / w[1], curve[::spe], rtol=1e-5)
    assert not np.allclose(
        w[1:] / w[1], decay_curve(trainer.config, spe, 0)[::spe][: len(w) - 1], rtol=1e-5
    )


@pytest.mark.slow
def test_survival_ratio_of_a_coasting_filter_is_one(gradient_free_run):
    """Read through a run record as ``compare`` stores it: a renewed filter with no gradient has
    ratio 1."""
    trainer = gradient_free_run
    spe = trainer.steps_per_epoch
    record = {
        "timeline": _timeline(trainer.history),
        "events": [
            {"epoch": 1, "step": spe, "strategy": "contextual", "filters": [RESTARTED]},
            {"epoch": 1, "step": spe, "strategy": "none", "filters": [FROZEN]},
        ],
    }  # not a renewal
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
    # the lr after each step is the next step's
    np.testing.assert_allclose(seen, lrs[1:6], rtol=1e-12)


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
        assert r["alive"] == [
            bool(std[c, r["filter"]] / std[c].max() >= 0.5) for c in range(r["epoch"], 4)
        ]


def test_survival_curve_fractions_and_gaps():
    rows = [{"alive": [True, True, False]}, {"alive": [True, False]}, {"alive": [True]}]
    np.testing.assert_allclose(survival_curve(rows, 3), [1.0, 0.5, 0.0, np.nan])
    assert np.isnan(survival_curve([], 2)).all()


def test_survival_stats_resample_whole_seeds():
    """Seed 0's two filters survive, seed 1's three die: 40% pooled; the interval moves by whole
    runs."""

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
    # standard training's rows
    assert "ratio_end" not in survival_stats({0: [{"alive": [True, False]}]})
    assert survival_stats({}) == {"filters": 0, "runs": 0}


def _run(
    epochs: int,
    renewals: dict[int, list[int]],
    silent_after: dict[int, int],
    arm: str = "contextual",
) -> dict:
    """A record of ``epochs`` epochs, 8 filters: ``renewals`` epoch -> filters renewed then;
    ``silent_after`` filter -> the first snapshot at which it is silent (it stays silent after)."""
    n, spe = 8, 4
    std = np.ones((epochs + 1, n))
    for f, e in silent_after.items():
        std[e:, f] = 1e-4
    events = [
        {
            "epoch": e,
            "step": spe * e,
            "strategy": "none" if arm == "none" else arm,
            "filters": renewals.get(e, []),
            "total": n,
            "notes": [],
            "score": "silent",
        }
        for e in range(1, epochs)
    ]
    return {
        "arm": arm,
        "seed": 0,
        "events": events,
        "timeline": {
            "epoch": list(range(epochs + 1)),
            "step": [spe * e for e in range(epochs + 1)],
            "l2": np.ones((epochs + 1, n)).tolist(),
            "output_std": std.tolist(),
        },
    }


def test_a_renewal_again_counts_as_a_death():
    """Filter 3 renewed at epoch 1 goes silent, is detected and renewed again at epoch 3: the
    snapshot after that event shows its loud replacement, yet the first renewal's row is dead from
    epoch 3 on."""
    record = _run(5, {1: [3], 3: [3]}, {})
    first, second = survival(record, FAST.train.but(epochs=5), tau=0.01)
    assert first["epoch"] == 1 and first["renewed_again"] == 3
    assert first["alive"] == [True, True, False, False, False]
    assert second["epoch"] == 3 and second["renewed_again"] is None and all(second["alive"])


def test_stratified_comparison_weights_to_the_renewal_epochs():
    """Standard training loses half its live filters after epoch 1 and none after epoch 3. Renewals
    at epoch 1 all survive (+50 pts there), renewals at epoch 3 survive like anything (0 pts): the
    weighted difference follows CRAFT's epoch mix (1 renewal at epoch 1, 3 at epoch 3 -> +12.5 pts);
    the epoch-3 stratum is marked as one where nothing can die."""
    from craftlib.study import hazard

    config = FAST.train.but(epochs=5)
    craft = _run(5, {1: [0], 3: [1, 2, 3]}, {})
    base = _run(5, {}, {4: 2, 5: 2, 6: 2, 7: 2}, arm="none")  # 4 of 8 die at epoch 2
    rows = hazard.rows_by_seed({0: craft, 1: craft}, {0: base, 1: base}, config, 0.01)
    result = hazard.compare(rows, boot=50)
    by_epoch = {r["epoch"]: r for r in result["strata"]}
    assert (
        by_epoch[1]["renewed_heard"] == 1.0
        and by_epoch[1]["live_heard"] == 0.5
        and by_epoch[1]["dying_possible"]
    )
    assert by_epoch[3]["live_heard"] == 1.0 and not by_epoch[3]["dying_possible"]
    assert result["all"]["difference"] == pytest.approx(0.125)
    assert result["possible"]["difference"] == pytest.approx(0.5) and result["possible"][
        "epochs"
    ] == [1]
    assert result["all"]["ci95"] == pytest.approx([0.125, 0.125])  # identical seeds: no spread
    first = [h for h in result["hazard"] if h["epoch"] == 2][0]
    assert (
        first["live_at_risk"] == 16 and first["live_deaths"] == 8 and first["renewed_deaths"] == 0
    )  # 2 seeds
    assert "weighted to CRAFT's epoch mix" in hazard.markdown(
        result
    ) and "| 2 |" in hazard.hazard_markdown(result)


@pytest.mark.parametrize("folder", ["study", "study-early"])
def test_results_md_survival_tables_are_the_committed_json(folder):
    """RESULTS.md's stratified tables are ``craftlib.study.hazard``'s rendering of
    survival_stratified.json."""
    import json

    from craftlib.paths import REPO_ROOT
    from craftlib.study import hazard

    result = json.loads((REPO_ROOT / "docs/results/survival_stratified.json").read_text())[folder]
    block = pages.read_block(REPO_ROOT / "docs/RESULTS.md", f"survival-stratified:{folder}")
    assert (
        block.strip() == (hazard.markdown(result) + "\n\n" + hazard.hazard_markdown(result)).strip()
    )


@pytest.mark.slow
def test_committed_survival_json_is_the_records():
    """The committed numbers are what the committed records give (point estimates; the bootstrap is
    not rerun)."""
    import json

    from craftlib.paths import REPO_ROOT
    from craftlib.study import hazard

    committed = json.loads((REPO_ROOT / "docs/results/survival_stratified.json").read_text())[
        "study-early"
    ]
    fresh = hazard.of_folder(REPO_ROOT / "docs/results/study-early", boot=0)
    assert fresh["strata"] == committed["strata"] and fresh["hazard"] == committed["hazard"]
    assert fresh["all"]["difference"] == pytest.approx(committed["all"]["difference"], abs=1e-12)
