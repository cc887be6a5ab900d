"""The training loop: determinism, callbacks, history, weight-decay groups, optimizers, failures,
resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import craftlib.training as training
from craftlib.activity import activation_scores, model_scores, snapshot_scores
from craftlib.callbacks import Callback
from craftlib.data import probe_batch
from craftlib.recipes import FAST
from craftlib.training import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    conv1_snapshot,
    make_optimizer,
    make_schedule,
    parameter_groups,
)

CFG = FAST.train.but(batch_size=32, epochs=2)  # 105 faces -> 3 steps per epoch on tiny_faces


def _trainer(data, **changes) -> Trainer:
    return Trainer(data, CFG.but(**changes), progress=False)


def _state(trainer: Trainer) -> dict:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _losses(history: list[dict]) -> list[float]:
    return [h["loss"] for h in history[1:]]


# --------------------------------------------------------------------------------------------
# determinism


@pytest.mark.slow
def test_same_seed_repeats_bit_for_bit(tiny_faces):
    a, b = _trainer(tiny_faces), _trainer(tiny_faces)
    a.fit()
    b.fit()
    assert _losses(a.history) == _losses(b.history)
    assert [h["conv1"]["weight"] for h in a.history] == [h["conv1"]["weight"] for h in b.history]
    _assert_same_state(_state(a), _state(b))


@pytest.mark.slow
def test_different_seed_differs(tiny_faces):
    a, b = _trainer(tiny_faces, epochs=1), _trainer(tiny_faces, epochs=1, seed=1)
    a.fit()
    b.fit()
    assert _losses(a.history) != _losses(b.history)
    assert not torch.equal(a.model.conv1.weight, b.model.conv1.weight)


def test_input_size_mismatch_is_explained(tiny_faces):
    with pytest.raises(ValueError, match="40px"):
        _trainer(tiny_faces, model__input_size=40)


# --------------------------------------------------------------------------------------------
# callbacks and history


class Counter(Callback):
    def __init__(self):
        self.calls = {"start": 0, "step": 0, "epoch": 0}
        self.epochs_seen = []

    def on_train_start(self, trainer):
        self.calls["start"] += 1

    def on_step_end(self, trainer):
        self.calls["step"] += 1

    def on_epoch_end(self, trainer):
        self.calls["epoch"] += 1
        self.epochs_seen.append(trainer.epoch)


@pytest.mark.slow
def test_callback_hooks_fire_the_right_number_of_times(tiny_faces):
    counter = Counter()
    trainer = Trainer(tiny_faces, CFG, [counter], progress=False)
    trainer.fit()
    assert trainer.steps_per_epoch == 3
    assert counter.calls == {"start": 1, "step": 6, "epoch": 2}
    assert counter.epochs_seen == [1, 2]  # epoch is already advanced when on_epoch_end runs


@pytest.mark.slow
def test_history_records_each_epoch(tiny_faces):
    trainer = _trainer(tiny_faces)
    history = trainer.fit()
    assert [h["epoch"] for h in history] == [0, 1, 2]  # entry 0: the state before training
    assert [h["step"] for h in history] == [0, 3, 6]
    assert math.isnan(history[0]["loss"])
    for h in history[1:]:
        assert (
            np.isfinite(h["loss"])
            and 0 <= h["train_acc"] <= 1
            and h["lr"] >= 0
            and h["seconds"] > 0
        )
    snap = history[-1]["conv1"]
    assert np.array(snap["weight"]).shape == (64, 3, 3, 3)
    assert (
        len(snap["gamma"])
        == len(snap["beta"])
        == len(snap["running_var"])
        == len(snap["slope"])
        == 64
    )
    assert snap["weight"] == trainer.model.conv1.weight.tolist()
    assert snap["slope"] == trainer.model.act1.weight.tolist()
    assert history[0]["conv1"]["weight"] != snap["weight"]
    assert history[0]["conv1"]["slope"] == [0.25] * 64  # PReLU's initial slope


@pytest.mark.slow
def test_probe_is_a_fixed_batch_of_the_training_faces(tiny_faces):
    a, b = _trainer(tiny_faces), _trainer(tiny_faces, seed=5)
    assert torch.equal(a.probe, probe_batch(tiny_faces.images)) and torch.equal(a.probe, b.probe)
    assert a.probe.shape == (105, 3, 32, 32)  # fewer than 256 faces: all of them
    a.fit(epochs=1)
    assert torch.equal(a.probe, b.probe)  # training does not move it


@pytest.mark.slow
def test_history_records_the_output_spread_on_the_probe(tiny_faces):
    """``output_std`` is the silent score's raw number, measured in eval mode without touching
    BatchNorm."""
    trainer = _trainer(tiny_faces, epochs=1)
    trainer.fit()
    snap = trainer.history[-1]["conv1"]
    expected = activation_scores(trainer.model.stem, trainer.probe, trainer.model, "std")
    np.testing.assert_allclose(snap["output_std"], expected, rtol=1e-12)
    np.testing.assert_allclose(
        snapshot_scores(snap, "silent"),
        model_scores(trainer.model, "silent", probe=trainer.probe),
        rtol=1e-12,
    )
    assert trainer.model.training  # the measurement handed the model back in training mode
    running = trainer.model.bn1.running_mean.clone()
    conv1_snapshot(trainer.model, trainer.probe)
    assert torch.equal(trainer.model.bn1.running_mean, running)


def test_callback_changes_show_in_the_epoch_snapshot(tiny_faces):
    class ZeroFilter0(Callback):
        def on_epoch_end(self, trainer):
            with torch.no_grad():
                trainer.model.conv1.weight[0] = 0

    trainer = Trainer(tiny_faces, CFG.but(epochs=1), [ZeroFilter0()], progress=False)
    trainer.fit()
    assert np.abs(trainer.history[-1]["conv1"]["weight"][0]).max() == 0


def test_history_without_stem_bn_or_prelu(tiny_faces):
    trainer = _trainer(tiny_faces, epochs=1, model__stem_bn=False, model__stem_act="relu")
    trainer.fit()
    assert set(trainer.history[-1]["conv1"]) == {
        "weight",
        "output_std",
    }  # no BatchNorm, no per-channel slope


# --------------------------------------------------------------------------------------------
# weight decay, optimizers and schedules


def _groups(cfg: TrainConfig) -> dict[float, set[str]]:
    from craftlib.losses import MarginHead
    from craftlib.models import FaceCNN

    model, head = FaceCNN(cfg.model), MarginHead(cfg.model.embedding_dim, 10)
    names = {id(p): n for n, p in model.named_parameters()} | {
        id(p): f"head.{n}" for n, p in head.named_parameters()
    }
    groups = parameter_groups(model, head, cfg)
    assert sum(len(g["params"]) for g in groups) == len(names)  # every parameter exactly once
    return {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in groups}


def test_weight_decay_all_decays_batchnorm_too():
    groups = _groups(TrainConfig(weight_decay=2e-2, weight_decay_scope="all"))
    assert list(groups) == [2e-2]
    assert {"conv1.weight", "bn1.weight", "bn1.bias", "head.weight"} <= groups[2e-2]


def test_weight_decay_no_norm_bias_spares_vectors():
    groups = _groups(TrainConfig(weight_decay=5e-4, weight_decay_scope="no_norm_bias"))
    assert sorted(groups) == [0.0, 5e-4]
    assert {"bn1.weight", "bn1.bias", "act1.weight"} <= groups[0.0]
    assert {"conv1.weight", "head.weight"} <= groups[5e-4]
    assert all(not n.startswith("bn1") for n in groups[5e-4])


def test_weight_decay_overrides_by_name_prefix():
    groups = _groups(
        TrainConfig(weight_decay=5e-4, weight_decay_overrides={"conv1": 0.1, "bn1": 0.0})
    )
    assert sorted(groups) == [0.0, 5e-4, 0.1]
    assert groups[0.1] == {"conv1.weight"}
    assert groups[0.0] == {"bn1.weight", "bn1.bias"}


def test_unknown_weight_decay_scope_raises():
    with pytest.raises(ValueError, match="weight_decay_scope"):
        _groups(TrainConfig(weight_decay_scope="norm_only"))


@pytest.mark.parametrize(
    "name, cls",
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "constant"])
def test_optimizers_and_schedules_construct_and_step(name, cls, schedule):
    w = torch.nn.Parameter(torch.ones(4))
    cfg = TrainConfig(optimizer=name, schedule=schedule, lr=0.1, weight_decay=1e-2)
    opt = make_optimizer([{"params": [w], "weight_decay": cfg.weight_decay}], cfg)
    sched = make_schedule(opt, cfg, total_steps=20)
    assert isinstance(opt, cls) and opt.param_groups[0]["weight_decay"] == 1e-2
    lrs = []
    for _ in range(20):
        w.sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert not torch.equal(w.detach(), torch.ones(4))  # the optimizer moved the weights
    assert all(0 <= lr <= 0.1 + 1e-9 for lr in lrs)
    if schedule == "constant":
        assert lrs == [0.1] * 20
    else:
        assert lrs[-1] < 0.1 * 0.5  # every decaying schedule ends well below its peak


@pytest.mark.parametrize("field, value", [("optimizer", "rmsprop"), ("schedule", "linear")])
def test_unknown_optimizer_or_schedule_raises(field, value):
    cfg = TrainConfig(**{field: value})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match=field):
        make_optimizer(opt.param_groups, cfg) if field == "optimizer" else make_schedule(
            opt, cfg, 10
        )


def test_trainer_with_adamw_and_no_norm_bias_trains(tiny_faces):
    trainer = _trainer(
        tiny_faces,
        epochs=1,
        optimizer="adamw",
        lr=1e-3,
        weight_decay_scope="no_norm_bias",
        schedule="cosine",
        head="arcface",
        grad_clip=5.0,
    )
    trainer.fit()
    assert np.isfinite(trainer.history[-1]["loss"])


# --------------------------------------------------------------------------------------------
# failure and partial runs


def test_nan_loss_raises_with_advice(tiny_faces, monkeypatch):
    monkeypatch.setattr(
        training, "margin_loss", lambda head, emb, y: (emb.sum() * float("nan"), torch.tensor(0.0))
    )
    trainer = _trainer(tiny_faces)
    before = trainer.model.conv1.weight.detach().clone()
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "nan" in msg and "lower the learning rate" in msg and "grad_clip" in msg
    assert torch.equal(trainer.model.conv1.weight, before)  # the bad step never reached the weights


def test_huge_learning_rate_ends_in_non_finite_loss_error(tiny_faces):
    trainer = _trainer(tiny_faces, lr=1e6, schedule="constant", epochs=2)
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        trainer.fit()


@pytest.mark.slow
def test_train_steps_crosses_epoch_ends_like_fit(tiny_faces):
    stepped, fitted = _trainer(tiny_faces), _trainer(tiny_faces)
    # 5 steps: epoch 1 done, 2 into epoch 2
    losses = stepped.train_steps(2) + stepped.train_steps(3)
    assert (
        len(losses) == 5 and (stepped.epoch, stepped.step) == (1, 5) and len(stepped.history) == 2
    )
    losses += stepped.train_steps(1)
    assert (stepped.epoch, stepped.step) == (2, 6) and len(stepped.history) == 3
    fitted.fit()
    _assert_same_state(_state(stepped), _state(fitted))
    assert np.mean(losses[:3]) == pytest.approx(fitted.history[1]["loss"])


@pytest.mark.slow
def test_train_steps_past_the_schedule_keeps_the_last_lr(tiny_faces):
    trainer = _trainer(tiny_faces, epochs=1)
    trainer.fit()
    last_lr = trainer.optimizer.param_groups[0]["lr"]
    assert len(trainer.train_steps(4)) == 4 and trainer.step == 7
    assert trainer.optimizer.param_groups[0]["lr"] == last_lr


@pytest.mark.slow
def test_resume_equals_a_straight_run(tiny_faces, tmp_path):
    cfg = dict(epochs=3)
    first = _trainer(tiny_faces, **cfg)
    first.fit(2)
    assert first.epoch == 2
    first.save(tmp_path / "ckpt.pt")
    resumed = _trainer(tiny_faces, **cfg).resume(tmp_path / "ckpt.pt")
    assert (resumed.epoch, resumed.step) == (2, 6)
    resumed.fit()
    straight = _trainer(tiny_faces, **cfg)
    straight.fit()
    assert _losses(resumed.history) == _losses(straight.history)
    _assert_same_state(_state(resumed), _state(straight))
    assert torch.equal(resumed.head.weight, straight.head.weight)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


@pytest.mark.slow
def test_train_function_resumes_from_a_checkpoint(tiny_faces, tmp_path):
    first = _trainer(tiny_faces, epochs=1)
    first.fit()
    first.save(tmp_path / "ckpt.pt")
    trainer = training.train(
        tiny_faces, CFG.but(epochs=1), progress=False, resume_from=tmp_path / "ckpt.pt"
    )
    assert trainer.step == 3 and len(trainer.history) == 2  # nothing left to do: not trained twice
