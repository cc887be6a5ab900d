"""Device choice, seeding, borrowing a module in eval mode, and tensors to NumPy."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from craftlib.runtime import evaluating, pick_device, seed_everything, to_numpy


def test_pick_device_names_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    # a name is taken as given, even if absent
    assert pick_device("cuda:1") == torch.device("cuda:1")
    expected = "cuda" if torch.cuda.is_available() else None
    auto = pick_device()
    assert auto.type in {"cpu", "cuda", "mps"}
    if expected:
        assert auto.type == expected


def test_pick_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")


def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first
    seed_everything(4)
    assert draw() != first
    seed_everything(2**40 + 3)  # numpy takes seeds below 2**32 only: reduced, not refused
    assert np.isfinite(np.random.rand())


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluating_restores_the_mode(was_training):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5)).train(was_training)
    with evaluating(model) as borrowed:
        assert borrowed is model
        assert not model.training and not model[1].training and not model[2].training
    assert model.training == was_training and model[1].training == was_training


def test_evaluating_restores_the_mode_after_an_error():
    model = nn.BatchNorm1d(3).train()
    with pytest.raises(KeyError):
        with evaluating(model):
            raise KeyError("boom")
    assert model.training


def test_evaluating_keeps_batchnorm_statistics():
    bn = nn.BatchNorm1d(3).train()
    with evaluating(bn), torch.no_grad():
        bn(torch.randn(8, 3) * 5 + 2)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(
        bn.running_var, torch.ones(3)
    )


def test_to_numpy():
    t = torch.arange(6.0, requires_grad=True).reshape(2, 3) * 2
    out = to_numpy(t)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) and out[1, 2] == 10.0
    assert to_numpy([1, 2]).tolist() == [1, 2]
    arr = np.ones(3)
    assert to_numpy(arr) is arr
