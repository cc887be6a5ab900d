"""``ReactivationCallback`` inside real (tiny) training runs on LFW faces at 32 px, built by
``CraftSpec``.

A short CPU run kills no filter by itself, so a ``Silence`` callback placed before it plays the role
of training: it shrinks a few ``conv1`` filters to 0.1% and zeroes their BatchNorm gamma and beta
(dead by weight *and* silent), then notes which filters a detector must now see. An ``Observer``
placed after it records the scores right after the re-activation. Every run: 30 identities, 3 steps
per epoch; the runs of three or more epochs are marked slow.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from craftlib.activity import model_scores, snapshot_scores
from craftlib.callbacks import Callback
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import (
    PAPER_READING,
    PRELU_INIT,
    STRATEGIES,
    CraftSpec,
    ReactivationCallback,
)
from craftlib.training import Trainer

KILLED = list(range(8))
TAU = 0.1
# max |w| < 0.1 of the strongest, every live filter as context, nothing downstream
WEIGHT_SPEC = PAPER_READING


class Silence(Callback):
    """Kill ``KILLED`` at the end of every epoch (or every step), then record what a detector
    sees."""

    def __init__(self, every: str = "epoch", score: str = "max", tau: float = TAU):
        self.every, self.score, self.tau = every, score, tau
        self.seen: list[dict] = []

    def _kill(self, trainer) -> None:
        model = trainer.model
        with torch.no_grad():
            model.conv1.weight[KILLED] *= 1e-3
            model.bn1.weight[KILLED] = 0.0
            model.bn1.bias[KILLED] = 0.0
        scores = model_scores(model, self.score, probe=trainer.probe)
        self.seen.append(
            {
                "epoch": trainer.epoch,
                "step": trainer.step,
                "inactive": np.flatnonzero(scores < self.tau).tolist(),
                "weight": model.conv1.weight.detach().clone(),
                "consumer": model.body[0][0].weight.detach().clone(),
            }
        )

    def on_epoch_end(self, trainer) -> None:
        if self.every == "epoch":
            self._kill(trainer)

    def on_step_end(self, trainer) -> None:
        if self.every == "step":
            self._kill(trainer)


class Observer(Callback):
    """Scores right after the callbacks before it have acted."""

    def __init__(self, score: str = "max"):
        self.score, self.seen, self.consumer = score, [], []

    def on_epoch_end(self, trainer) -> None:
        self.seen.append(model_scores(trainer.model, self.score, probe=trainer.probe))
        self.consumer.append(trainer.model.body[0][0].weight.detach().clone())


def run(data, config, epochs: int, callbacks: list[Callback]) -> Trainer:
    trainer = Trainer(data, config.but(epochs=epochs), callbacks, progress=False)
    trainer.fit()
    return trainer


def assert_finite_training(trainer: Trainer) -> None:
    losses = [h["loss"] for h in trainer.history[1:]]
    assert len(losses) == trainer.config.epochs and all(math.isfinite(x) for x in losses)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ---------------------------------------------------------------------------------------------
# the paper's reading: weight detector, at epoch ends


@pytest.fixture(scope="module")
def epoch_run(tiny_faces, tiny_recipe):
    """3 epochs, contextual re-activation by max |w| at the end of epochs 1..2 only."""
    craft = WEIGHT_SPEC.but(last_epoch=2).callback(seed=0, epochs=3)
    silence, observer = Silence(), Observer()
    trainer = run(tiny_faces, tiny_recipe.train, 3, [silence, craft, observer])
    return trainer, silence, observer


@pytest.mark.slow
def test_fires_at_the_scheduled_epochs_only(epoch_run):
    trainer, _, _ = epoch_run
    assert [e["epoch"] for e in trainer.events] == [1, 2]  # never at epoch 3 > last_epoch
    assert [e["step"] for e in trainer.events] == [
        trainer.steps_per_epoch,
        2 * trainer.steps_per_epoch,
    ]
    assert all(
        e["strategy"] == "contextual" and e["total"] == 64 and e["score"] == "max"
        for e in trainer.events
    )


@pytest.mark.slow
def test_events_name_exactly_the_inactive_filters(epoch_run):
    trainer, silence, _ = epoch_run
    for event, seen in zip(trainer.events, silence.seen):
        assert event["filters"] == seen["inactive"]
        assert set(KILLED) <= set(event["filters"])


@pytest.mark.slow
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


@pytest.mark.slow
def test_keep_leaves_the_next_layer_and_the_slope_alone(epoch_run):
    trainer, silence, observer = epoch_run
    for event, seen in zip(trainer.events, silence.seen):
        e = event["epoch"]
        before, after = (
            trainer.history[e - 1]["conv1"]["slope"],
            trainer.history[e]["conv1"]["slope"],
        )
        assert not np.all(np.asarray(after)[event["filters"]] == PRELU_INIT)  # trained slopes kept
        # the next conv: not one bit changed
        assert torch.equal(observer.consumer[e - 1], seen["consumer"])
        assert before != after  # (the slopes did train in between)


@pytest.mark.slow
def test_training_continues_with_finite_loss(epoch_run):
    trainer, _, _ = epoch_run
    assert_finite_training(trainer)


@pytest.mark.slow
def test_strong_filters_untouched_by_the_callback(epoch_run):
    """Between Silence (before) and Observer (after), only the re-activated filters changed."""
    trainer, silence, _ = epoch_run
    for event, seen in zip(trainer.events, silence.seen):
        after = torch.tensor(trainer.history[event["epoch"]]["conv1"]["weight"])
        keep = np.setdiff1d(np.arange(64), event["filters"])
        assert torch.equal(after[keep], seen["weight"][keep])
        assert not torch.equal(after[event["filters"]], seen["weight"][event["filters"]])


# ---------------------------------------------------------------------------------------------
# the schedule


@pytest.mark.slow
def test_every_n_steps(tiny_faces, tiny_recipe):
    """``every=2`` with last_epoch=1 acts at steps 2 (and, were there more, 4, ...) while still in
    epoch 1, then never."""
    craft = WEIGHT_SPEC.but(every=2, last_epoch=1).callback(seed=0, epochs=2)
    silence = Silence(every="step")
    trainer = run(tiny_faces, tiny_recipe.train, 2, [silence, craft])
    spe = trainer.steps_per_epoch
    assert [e["step"] for e in trainer.events] == list(range(2, spe + 1, 2)) == [2]
    assert all(e["epoch"] == 0 for e in trainer.events)  # epochs completed when it acted
    by_step = {s["step"]: s["inactive"] for s in silence.seen}
    for event in trainer.events:
        assert event["filters"] == by_step[event["step"]] and set(KILLED) <= set(event["filters"])
    assert_finite_training(trainer)


@pytest.mark.slow
def test_first_epoch_delays_the_start(tiny_faces, tiny_recipe):
    craft = WEIGHT_SPEC.but(strategy="random", first_epoch=2, last_epoch=3).callback(
        seed=0, epochs=4
    )
    trainer = run(tiny_faces, tiny_recipe.train, 4, [Silence(), craft])
    assert [e["epoch"] for e in trainer.events] == [2, 3]


@pytest.mark.slow
def test_none_logs_but_changes_nothing(tiny_faces, tiny_recipe):
    """Same seed with and without a ``none`` callback: it logs the dead filters, the models are
    identical."""
    # no epochs: the spec's stop, set at the start
    craft = ReactivationCallback(WEIGHT_SPEC.but(strategy="none"))
    logged = run(tiny_faces, tiny_recipe.train, 3, [Silence(), craft])
    plain = run(tiny_faces, tiny_recipe.train, 3, [Silence()])
    assert craft.last_epoch == 2
    assert [e["epoch"] for e in logged.events] == [1, 2]
    assert all(set(KILLED) <= set(e["filters"]) for e in logged.events)
    assert plain.events == []
    for (name, a), (_, b) in zip(
        logged.model.state_dict().items(), plain.model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert np.all(model_scores(logged.model)[KILLED] < TAU)


# ---------------------------------------------------------------------------------------------
# the functional detector: silent channels on the trainer's probe, with the full reset


@pytest.mark.slow
def test_silent_detector_with_downstream_rescale(tiny_faces, tiny_recipe):
    # silent < 0.01, top half as context, next layer rescaled
    spec = CraftSpec(last_epoch=1, downstream="rescale")
    craft = spec.callback(seed=0, epochs=2)
    silence = Silence(score="silent", tau=spec.tau)
    observer = Observer(score="silent")
    trainer = run(tiny_faces, tiny_recipe.train, 2, [silence, craft, observer])
    (event,) = trainer.events
    assert event["score"] == "silent" and event["strategy"] == "contextual"
    assert event["filters"] == silence.seen[0]["inactive"] and set(KILLED) <= set(event["filters"])
    renewed = event["filters"]
    assert np.all(observer.seen[0][renewed] >= spec.tau)  # silent before, heard after
    snap = trainer.history[1]["conv1"]
    assert np.all(np.asarray(snap["slope"])[renewed] == PRELU_INIT)
    live = [c for c in range(64) if c not in renewed]
    before, after = silence.seen[0]["consumer"], observer.consumer[0]
    norms_before = before.transpose(0, 1).flatten(1).norm(dim=1)
    norms_after = after.transpose(0, 1).flatten(1).norm(dim=1)
    np.testing.assert_allclose(
        norms_after[renewed].numpy(), np.median(norms_before[live].numpy()), rtol=1e-5
    )
    assert torch.equal(after[:, live], before[:, live])
    assert_finite_training(trainer)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategy": "craft"}, "strategy"),
        ({"every": 0}, "every"),
        ({"every": "weekly"}, "every"),
        ({"tau": 1.5}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"downstream": "mute"}, "downstream"),
    ],
)
def test_bad_arguments(kwargs, match):
    """The spec refuses a bad field when it is made; the callback takes nothing but a spec (a seed,
    a run length)."""
    with pytest.raises(ValueError, match=match):
        CraftSpec(**kwargs)
    with pytest.raises(TypeError, match="expected a CraftSpec"):
        ReactivationCallback(kwargs.get("strategy", "contextual"))


def test_every_strategy_is_accepted():
    for strategy in STRATEGIES:
        assert ReactivationCallback(CraftSpec(strategy=strategy)).strategy == strategy


def test_a_callback_from_a_spec_alone_is_the_studys_detector():
    """Issue 23: ``ReactivationCallback(CraftSpec())``, no other argument, runs the study's CRAFT
    (silent < 0.01, the stronger half as context, the next layer zeroed, Adam's step restarted), not
    the paper's reading.

    Three channels are made silent (gamma and beta 0) with full-size filters: the weight detector
    cannot see them.
    """
    spec = CraftSpec()
    assert (spec.score, spec.tau, spec.strong_quantile, spec.downstream, spec.reset_step) == (
        "silent",
        0.01,
        0.5,
        "zero",
        True,
    )
    model = FaceCNN(ModelConfig(input_size=16))
    probe = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(probe).square().mean().backward()
    opt.step()  # every tensor now has Adam state and a step counter
    with torch.no_grad():
        model.bn1.weight[:3], model.bn1.bias[:3] = 0.0, 0.0

    def loop():
        return SimpleNamespace(
            model=model,
            optimizer=opt,
            probe=probe,
            config=SimpleNamespace(epochs=3),
            epoch=1,
            step=1,
            events=[],
        )

    paper = ReactivationCallback(PAPER_READING)
    paper.on_train_start(state := loop())
    paper.on_epoch_end(state)
    assert state.events[0]["filters"] == []  # max |w| sees nothing wrong with these filters

    craft = ReactivationCallback(spec)
    craft.on_train_start(state := loop())
    assert craft.last_epoch == spec.stop_epoch(3) == 2  # the spec's stop from the loop's run length
    craft.on_epoch_end(state)
    (event,) = state.events
    assert (
        event["score"] == "silent"
        and event["filters"] == [0, 1, 2]
        and event["strategy"] == "contextual"
    )
    consumer = model.stem_consumers()[0].weight
    assert torch.all(consumer[:, :3] == 0) and torch.all(consumer[:, 3:] != 0)  # downstream "zero"
    assert opt.state[model.conv1.weight]["step"].item() == 0  # reset_step
    assert torch.all(model.bn1.weight[:3] == 1)
