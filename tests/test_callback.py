"""``ReactivationCallback`` inside a real (tiny) training run on LFW faces at 32 px.

A short CPU run does not kill filters by itself, so a ``Silence`` callback placed before it plays the
role of training: it shrinks a few ``conv1`` filters to 0.1% and zeroes their BatchNorm gamma and beta
(so they are dead by weight *and* by activation), then notes which filters a detector must now see.
An ``Observer`` placed after it records the scores right after the re-activation.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from craftlib.activity import model_scores, snapshot_scores
from craftlib.reactivation import STRATEGIES, ReactivationCallback
from craftlib.recipes import FAST
from craftlib.training import Callback, Trainer

KILLED = list(range(8))
TAU = 0.1


class Silence(Callback):
    """Kill ``KILLED`` at the end of every epoch (or every step), then record what a detector sees."""

    def __init__(self, every: str = "epoch", score: str = "max", craft: ReactivationCallback | None = None):
        self.every, self.score, self.craft = every, score, craft
        self.seen: list[dict] = []

    def _kill(self, trainer) -> None:
        model = trainer.model
        with torch.no_grad():
            model.conv1.weight[KILLED] *= 1e-3
            model.bn1.weight[KILLED] = 0.0
            model.bn1.bias[KILLED] = 0.0
        probe = self.craft.probe if self.craft is not None else None
        scores = model_scores(model, self.score, probe=probe)
        self.seen.append({"epoch": trainer.epoch, "step": trainer.step, "inactive": np.flatnonzero(scores < TAU).tolist(),
                          "weight": model.conv1.weight.detach().clone()})

    def on_epoch_end(self, trainer) -> None:
        if self.every == "epoch":
            self._kill(trainer)

    def on_step_end(self, trainer) -> None:
        if self.every == "step":
            self._kill(trainer)


class Observer(Callback):
    """Scores right after the callbacks before it have acted."""

    def __init__(self, score: str = "max", craft: ReactivationCallback | None = None):
        self.score, self.craft, self.seen = score, craft, []

    def on_epoch_end(self, trainer) -> None:
        probe = self.craft.probe if self.craft is not None else None
        self.seen.append(model_scores(trainer.model, self.score, probe=probe))


def run(faces, epochs: int, callbacks: list[Callback]) -> Trainer:
    trainer = Trainer(faces, FAST.train.but(epochs=epochs), callbacks, progress=False)
    trainer.fit()
    return trainer


def assert_finite_training(trainer: Trainer) -> None:
    losses = [h["loss"] for h in trainer.history[1:]]
    assert len(losses) == trainer.config.epochs and all(math.isfinite(x) for x in losses)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def epoch_run(faces):
    """3 epochs, contextual re-activation at the end of epochs 1..2 only."""
    craft = ReactivationCallback("contextual", tau=TAU, every="epoch", last_epoch=2)
    silence, observer = Silence(), Observer()
    trainer = run(faces, 3, [silence, craft, observer])
    return trainer, silence, observer


def test_fires_at_the_scheduled_epochs_only(epoch_run):
    trainer, _, _ = epoch_run
    assert [e["epoch"] for e in trainer.events] == [1, 2]  # never at epoch 3 > last_epoch
    assert [e["step"] for e in trainer.events] == [trainer.steps_per_epoch, 2 * trainer.steps_per_epoch]
    assert all(e["strategy"] == "contextual" and e["total"] == 64 for e in trainer.events)


def test_events_name_exactly_the_inactive_filters(epoch_run):
    trainer, silence, _ = epoch_run
    for event, seen in zip(trainer.events, silence.seen):
        assert event["filters"] == seen["inactive"]
        assert set(KILLED) <= set(event["filters"])


def test_reactivated_filters_are_alive_right_after(epoch_run):
    trainer, _, observer = epoch_run
    for event in trainer.events:
        e = event["epoch"]
        after = observer.seen[e - 1]
        assert np.all(after[event["filters"]] >= TAU)
        snap = trainer.history[e]["conv1"]  # the history records the model after the callbacks
        assert np.allclose(snapshot_scores(snap), after)
        assert np.all(np.asarray(snap["gamma"])[event["filters"]] == 1.0)  # BN channel reset
    # after last_epoch nothing re-activates: what Silence killed at epoch 3 stays dead
    final = model_scores(trainer.model)
    assert np.all(final[KILLED] < TAU)


def test_training_continues_with_finite_loss(epoch_run):
    trainer, _, _ = epoch_run
    assert_finite_training(trainer)


def test_strong_filters_untouched_by_the_callback(epoch_run):
    """Between Silence (before) and Observer (after), only the re-activated filters changed."""
    trainer, silence, _ = epoch_run
    for event, seen in zip(trainer.events, silence.seen):
        after = torch.tensor(trainer.history[event["epoch"]]["conv1"]["weight"])
        keep = np.setdiff1d(np.arange(64), event["filters"])
        assert torch.equal(after[keep], seen["weight"][keep])
        assert not torch.equal(after[event["filters"]], seen["weight"][event["filters"]])


def test_every_n_steps(faces):
    """``every=3`` with last_epoch=1 acts at steps 3, 6, 9, ... while still in epoch 1, then never."""
    craft = ReactivationCallback("contextual", tau=TAU, every=3, last_epoch=1)
    silence = Silence(every="step")
    trainer = run(faces, 2, [silence, craft])
    spe = trainer.steps_per_epoch
    assert [e["step"] for e in trainer.events] == list(range(3, spe + 1, 3))
    assert all(e["epoch"] == 0 for e in trainer.events)  # epochs completed when it acted
    by_step = {s["step"]: s["inactive"] for s in silence.seen}
    for event in trainer.events:
        assert event["filters"] == by_step[event["step"]] and set(KILLED) <= set(event["filters"])
    assert_finite_training(trainer)


def test_first_epoch_delays_the_start(tiny_faces):
    craft = ReactivationCallback("random", tau=TAU, every="epoch", first_epoch=2, last_epoch=3)
    trainer = run(tiny_faces, 4, [Silence(), craft])
    assert [e["epoch"] for e in trainer.events] == [2, 3]


def test_none_logs_but_changes_nothing(tiny_faces):
    """Same seed with and without a ``none`` callback: it logs the dead filters, the models are identical."""
    craft = ReactivationCallback("none", tau=TAU)  # default last_epoch: epochs - 1
    logged = run(tiny_faces, 3, [Silence(), craft])
    plain = run(tiny_faces, 3, [Silence()])
    assert craft.last_epoch == 2
    assert [e["epoch"] for e in logged.events] == [1, 2]
    assert all(set(KILLED) <= set(e["filters"]) for e in logged.events)
    assert plain.events == []
    for (name, a), (_, b) in zip(logged.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert np.all(model_scores(logged.model)[KILLED] < TAU)


def test_activation_score_path(faces):
    """``score='activation'`` probes real faces (ReDo's score) and re-activates the silent channels."""
    craft = ReactivationCallback("contextual", tau=TAU, score="activation", every="epoch", last_epoch=1, probe_size=64)
    silence = Silence(score="activation", craft=craft)
    observer = Observer(score="activation", craft=craft)
    trainer = run(faces, 1, [silence, craft, observer])
    assert craft.probe is not None and craft.probe.shape == (64, 3, 32, 32)
    assert len(trainer.events) == 1
    event = trainer.events[0]
    assert event["filters"] == silence.seen[0]["inactive"] and set(KILLED) <= set(event["filters"])
    assert np.all(observer.seen[0][KILLED] > 0)  # silent before, heard after
    assert_finite_training(trainer)


@pytest.mark.parametrize("kwargs, match", [
    ({"strategy": "craft"}, "strategy"),
    ({"every": 0}, "every"),
    ({"every": "weekly"}, "every"),
    ({"tau": 1.5}, "tau"),
    ({"tau": float("nan")}, "tau"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReactivationCallback(**kwargs)


def test_every_strategy_is_accepted():
    for strategy in STRATEGIES:
        assert ReactivationCallback(strategy).strategy == strategy
