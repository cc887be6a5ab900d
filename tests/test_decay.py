"""The decay race of notebook 02 (``craftlib.decay``): its curves are the real optimizer's, its
verdicts true."""

from __future__ import annotations

import math

import numpy as np
import pytest

from craftlib import decay
from craftlib.study.survival import decay_curve
from craftlib.training import TrainConfig


def test_pure_decay_is_the_closed_form():
    assert np.allclose(decay.pure_decay(0.1, 1e-2, 50), (1 - 0.1 * 1e-2) ** np.arange(51))


def test_momentum_decay_is_what_torch_sgd_does_to_a_gradient_free_weight():
    """Same recurrence as survival.decay_curve, which reads torch's optimizer and scheduler."""
    config = TrainConfig(epochs=2, lr=0.1, momentum=0.9, weight_decay=1e-2, schedule="constant")
    assert np.allclose(decay.momentum_decay(0.1, 1e-2, 0.9, 100), decay_curve(config, 50, 0))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_half_life_halves(momentum):
    steps = decay.half_life(0.1, 1e-2, momentum)
    curve = decay.momentum_decay(0.1, 1e-2, momentum, int(steps) + 200)
    assert abs(curve[round(steps)] - 0.5) < 0.05
    assert math.isinf(decay.half_life(0.1, 0.0))


def test_under_heavy_momentum_the_envelope_halves_at_its_own_pace():
    """At m = 0.99 the 1 / (1 − m) gain would say 7 steps; the weight swings through 0 and its
    envelope halves every ~138 steps, which the simulated curve shows."""
    steps = decay.half_life(0.1, 1e-2, 0.99)
    curve = np.abs(decay.momentum_decay(0.1, 1e-2, 0.99, 1000))
    # the envelope's points
    peaks = np.flatnonzero((curve[1:-1] > curve[:-2]) & (curve[1:-1] > curve[2:])) + 1
    slope = np.polyfit(peaks, np.log(curve[peaks]), 1)[0]
    assert 120 < steps < 160 and steps == pytest.approx(np.log(0.5) / slope, rel=0.05)


def test_momentum_makes_decay_about_ten_times_faster():
    assert decay.half_life(0.1, 1e-2, 0.0) / decay.half_life(0.1, 1e-2, 0.9) == pytest.approx(
        10, rel=0.01
    )


def test_without_task_gradient_both_follow_the_decay_curve():
    race = decay.simulate(grad=0.0, steps=400)
    assert np.allclose(race.gamma, race.decay_momentum) and np.allclose(
        race.norm, race.decay_momentum
    )
    assert not race.survives and "follows the decay curve" in race.verdict()


@pytest.mark.parametrize("grad", [2e-3, 5e-3])
def test_gamma_settles_at_grad_over_wd_and_survives(grad):
    race = decay.simulate(grad=grad, steps=3000)
    assert race.gamma[-1] == pytest.approx(grad / 1e-2, rel=1e-3)
    assert race.survives and race.verdict().startswith("the task wins")


def test_a_weak_channel_loses_and_its_filter_shrinks_with_it():
    weak, strong = decay.simulate(grad=5e-4, steps=2000), decay.simulate(grad=5e-3, steps=2000)
    assert not weak.survives and weak.silent_step is not None and 0 < weak.silent_step < 2000
    assert weak.verdict().startswith("decay wins")
    assert weak.norm[-1] < 0.2 * strong.norm[-1]  # the filter's gradient is proportional to γ


def test_the_border_is_tau_times_wd():
    for wd in (1e-2, 5e-4):
        assert decay.simulate(wd=wd, grad=2 * 0.1 * wd, steps=8000).survives
        assert decay.simulate(wd=wd, grad=0.5 * 0.1 * wd, steps=8000).winner == "decay"


def test_momentum_099_dips_below_tau_then_recovers_and_the_verdict_says_so():
    """The issue's case: γ swings through τ (and through 0) at step ~61, then settles at grad/wd =
    0.2, twice τ."""
    race = decay.simulate(momentum=0.99, grad=2e-3, steps=1000)
    assert race.volume.min() < race.tau and race.gamma.min() < 0  # the momentary dip is real
    assert abs(race.gamma[-1] - 0.2) < 0.1 * race.tau  # ... and so is the recovery
    assert race.survives and race.winner == "task" and race.silent_step is None
    verdict = race.verdict()
    assert (
        verdict.startswith("the task wins")
        and f"dips below τ at step {race.first_dip} then recovers" in verdict
    )
    assert "-" not in verdict.split("gradient-free weight:")[1], "a size is never negative"


def test_a_true_death_under_heavy_momentum_is_dated_when_gamma_stays_below_tau():
    race = decay.simulate(momentum=0.99, grad=5e-4, steps=1000)  # grad/wd = 0.05 < τ
    assert race.winner == "decay" and not race.survives
    assert race.first_dip < race.silent_step  # it swung back above τ before falling silent for good
    assert (
        race.volume[race.silent_step :].max() < race.tau
        and race.volume[race.silent_step - 1] >= race.tau
    )
    assert race.verdict().startswith(
        f"decay wins: γ falls below τ = 0.1 for good at step {race.silent_step}"
    )


def test_too_few_steps_to_tell_says_not_decided_and_who_will_win():
    # γ < 0 at the end, on its way back
    swinging = decay.simulate(momentum=0.99, grad=2e-3, steps=100)
    assert swinging.winner is None and swinging.verdict().startswith("not decided in 100 steps")
    assert swinging.verdict().endswith("with more steps the task wins")
    slow = decay.simulate(momentum=0.9, grad=9e-4, steps=300)  # still above τ, heading for 0.09
    assert slow.winner is None and slow.verdict().endswith("with more steps decay wins")


def test_the_plot_draws_sizes_and_marks_where_gamma_is_negative():
    from craftlib import viz

    fig = viz.decay_race(decay.simulate(momentum=0.99, grad=2e-3))
    ax = fig.axes[0]
    # a log axis draws them
    assert all(np.nanmin(l.get_ydata()) > 0 for l in ax.lines if l.get_gid() != "silent")
    negative = next(l for l in ax.lines if l.get_gid() == "gamma-negative")
    assert (
        np.isfinite(negative.get_ydata()).sum()
        == (decay.simulate(momentum=0.99, grad=2e-3).gamma < 0).sum()
    )
    assert "γ < 0" in negative.get_label()
    calm = viz.decay_race(decay.simulate(momentum=0.9, grad=2e-3))
    assert not any(l.get_gid() == "gamma-negative" for l in calm.axes[0].lines)


def test_deterministic_for_a_seed():
    a, b = decay.simulate(seed=3), decay.simulate(seed=3)
    assert np.array_equal(a.norm, b.norm) and not np.array_equal(
        a.norm, decay.simulate(seed=4).norm
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0}, "lr"),
        ({"wd": -1}, "wd"),
        ({"momentum": 1.0}, "momentum"),
        ({"steps": 0}, "steps"),
        ({"grad": -1e-3}, "grad"),
        ({"lr": 10, "wd": 0.2}, "lr·wd"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decay.simulate(**kwargs)
