"""The decay race of notebook 02 (``craftlib.decay``): its curves are the real optimizer's, its verdicts true."""
from __future__ import annotations

import math

import numpy as np
import pytest

from craftlib import decay
from craftlib.survival import decay_curve
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


def test_momentum_makes_decay_about_ten_times_faster():
    assert decay.half_life(0.1, 1e-2, 0.0) / decay.half_life(0.1, 1e-2, 0.9) == pytest.approx(10, rel=0.01)


def test_without_task_gradient_both_follow_the_decay_curve():
    race = decay.simulate(grad=0.0, steps=400)
    assert np.allclose(race.gamma, race.decay_momentum) and np.allclose(race.norm, race.decay_momentum)
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
        assert decay.simulate(wd=wd, grad=2 * 0.1 * wd, steps=6000).survives
        assert not decay.simulate(wd=wd, grad=0.5 * 0.1 * wd, steps=6000).survives


def test_deterministic_for_a_seed():
    a, b = decay.simulate(seed=3), decay.simulate(seed=3)
    assert np.array_equal(a.norm, b.norm) and not np.array_equal(a.norm, decay.simulate(seed=4).norm)


@pytest.mark.parametrize("kwargs, match", [({"lr": 0}, "lr"), ({"wd": -1}, "wd"), ({"momentum": 1.0}, "momentum"),
                                           ({"steps": 0}, "steps"), ({"grad": -1e-3}, "grad"),
                                           ({"lr": 10, "wd": 0.2}, "lr·wd")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decay.simulate(**kwargs)
