"""Filter activity scores, anchored on a real released face model whose first layer is half dead.

foamliu's MobileFaceNet (``$CRAFTLIB_MODELS/foamliu_mobilefacenet/mobilefacenet.pt``, see its
PROVENANCE.md): 31 of its 64 first-layer filters have max |w| below 5% of the strongest, the same 31
channels have a collapsed BatchNorm gamma, and on real faces those channels output about nothing.
Then the *silent* detector (what the next layer hears, not how small the weights are) and the scores
over a training history: timelines, times of death, renewals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from craftlib.activity import (
    SCORES,
    ActivityRecorder,
    activation_scores,
    check_tau,
    death_times,
    effective_weight,
    event_x,
    filter_norms,
    filter_scores,
    inactive_fraction,
    inactive_mask,
    inactive_over_time,
    max_cosine,
    model_scores,
    relative,
    renewals,
    report,
    snapshot_scores,
    timeline,
    track,
)
from craftlib.data import load_face, probe_batch, read_pairs, to_input
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import PAPER_READING, CraftSpec
from craftlib.training import Trainer, conv1_snapshot

DEAD_IN_MOBILEFACENET = 31
# the functional detector's default threshold (0.01 of the loudest channel)
SILENT_TAU = CraftSpec().tau


@pytest.fixture(scope="module")
def dead(stem) -> np.ndarray:
    return filter_scores(stem[0], "max") < 0.05


# ---------------------------------------------------------------------------------------------
# the real anchor


def test_mobilefacenet_has_31_dead_filters(stem, dead):
    scores = filter_scores(stem[0], "max")
    assert scores.shape == (64,) and scores.max() == 1.0
    assert dead.sum() == DEAD_IN_MOBILEFACENET
    assert (scores < 0.10).sum() == DEAD_IN_MOBILEFACENET  # the gap: nothing between 1.2% and ~14%
    assert scores[dead].max() < 0.015 and scores[~dead].min() > 0.13
    assert report(scores, 0.05, "max").inactive == DEAD_IN_MOBILEFACENET
    assert "31/64" in str(report(scores, 0.05, "max"))


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_l1_and_l2_agree_with_max(stem, dead, norm):
    assert np.array_equal(filter_scores(stem[0], norm) < 0.05, dead)


def test_robust_reference_gives_the_same_dead_filters(stem, dead):
    assert np.array_equal(filter_scores(stem[0], "max", reference=95) < 0.05, dead)


def test_dead_filters_have_collapsed_gamma(stem, dead):
    gamma = filter_scores(stem[0], "gamma", bn=stem[1])
    assert np.array_equal(gamma < 0.05, dead)
    assert gamma[~dead].min() > 0.15  # live channels start at 16% of the largest |gamma|


def test_effective_filter_of_mobilefacenet(stem, dead):
    """Folding BN into the conv adds one more filter below 5% (32) and another below 10% (33), per
    PROVENANCE.md."""
    eff = filter_scores(stem[0], "effective", bn=stem[1])
    assert (eff < 0.05).sum() == 32 and (eff < 0.10).sum() == 33
    assert np.all(eff[dead] < 0.05)  # every raw-dead filter stays dead after folding


def test_dead_channels_are_silent_on_real_faces(stem, dead, lfw):
    """ReDo's activation score on 16 DevTest faces at the model's 112 px: the dead channels output
    ~0."""
    pairs = read_pairs(lfw.pair_file("devtest"))[:8]
    images = np.stack(
        [load_face(lfw.image_root / name, size=112) for p in pairs for name in (p.left, p.right)]
    )
    probe = to_input(torch.from_numpy(images))
    assert probe.shape == (16, 3, 112, 112)
    act = filter_scores(stem[0], "activation", stem=stem, probe=probe)  # relative to the layer mean
    assert act.mean() == pytest.approx(1.0)
    assert act[dead].max() < 0.005
    assert np.median(act[~dead]) > 100 * act[dead].max()
    assert not stem.training  # the probe ran in eval mode and left the stem there


def test_one_outlier_fools_max_but_not_a_percentile(stem, dead):
    """One filter x100 makes every other filter look dead by max, not by the 95th percentile."""
    conv = nn.Conv2d(3, 64, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(stem[0].weight)
        conv.weight[np.flatnonzero(~dead)[0]] *= 100
    assert (filter_scores(conv, "max") < 0.05).sum() > 55
    assert np.array_equal(filter_scores(conv, "max", reference=95) < 0.05, dead)


def test_one_outlier_synthetic():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 64, 3, bias=False)
    nn.init.normal_(conv.weight)
    assert inactive_fraction(filter_scores(conv, "max"), 0.05) == 0.0
    with torch.no_grad():
        conv.weight[7] *= 100
    assert inactive_fraction(filter_scores(conv, "max"), 0.05) == 63 / 64
    assert inactive_fraction(filter_scores(conv, "max", reference=95), 0.05) == 0.0


# ---------------------------------------------------------------------------------------------
# thresholds, references and scores on small synthetic layers


@pytest.mark.parametrize("tau", [-0.1, 1.5, math.nan, math.inf, -math.inf])
def test_impossible_thresholds_raise(tau):
    scores = np.linspace(0, 1, 8)
    with pytest.raises(ValueError, match="tau"):
        check_tau(tau)
    with pytest.raises(ValueError, match="tau"):
        inactive_mask(scores, tau)
    with pytest.raises(ValueError, match="tau"):
        inactive_fraction(scores, tau)


def test_threshold_edges():
    scores = np.array([0.0, 0.05, 0.1, 0.5, 1.0])
    assert check_tau(0) == 0.0 and check_tau(1) == 1.0
    assert inactive_mask(scores, 0.0).sum() == 0  # strictly below: tau 0 marks nothing
    assert inactive_mask(scores, 1.0).tolist() == [True, True, True, True, False]
    assert inactive_mask(scores, 0.1).tolist() == [True, True, False, False, False]
    assert inactive_fraction(scores, 0.1) == 0.4


def test_relative_references():
    values = np.array([1.0, 2.0, 4.0, 8.0])
    assert np.allclose(relative(values, "max"), values / 8)
    assert np.allclose(relative(values, "mean"), values / 3.75)
    assert np.allclose(relative(values, 50), values / 3.0)
    # an all-zero layer: everything inactive, no division by zero
    assert np.all(relative(np.zeros(4)) == 0)
    for bad in ("median", 0, 101, -5):
        with pytest.raises(ValueError, match="reference"):
            relative(values, bad)


def test_filter_norms():
    w = torch.zeros(3, 2, 1, 2)
    w[0, 0, 0, 0], w[0, 1, 0, 1] = -3.0, 4.0
    w[1, :, :, :] = 1.0
    assert filter_norms(w, "max").tolist() == [4.0, 1.0, 0.0]
    assert filter_norms(w, "l1").tolist() == [7.0, 4.0, 0.0]
    assert filter_norms(w, "l2").tolist() == [5.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="norm"):
        filter_norms(w, "l3")


def random_conv_bn(out: int = 16, seed: int = 0) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    g = torch.Generator().manual_seed(seed)
    conv, bn = nn.Conv2d(3, out, 3, bias=False), nn.BatchNorm2d(out, eps=1e-3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        bn.weight.copy_(torch.randn(out, generator=g))
        bn.running_var.copy_(torch.rand(out, generator=g) * 3 + 0.01)
    return conv, bn


def test_effective_filter_is_w_gamma_over_sigma():
    conv, bn = random_conv_bn()
    expected = conv.weight * (bn.weight / torch.sqrt(bn.running_var + 1e-3)).reshape(-1, 1, 1, 1)
    assert torch.allclose(effective_weight(conv, bn), expected)
    assert np.allclose(filter_scores(conv, "effective", bn=bn), relative(filter_norms(expected)))
    assert np.allclose(
        filter_scores(conv, "gamma", bn=bn), relative(bn.weight.detach().abs().numpy())
    )


def test_effective_filter_equals_folded_conv_output():
    """The effective filter really is what the network sees: conv+BN (eval) = conv with the
    effective weight + bias."""
    conv, bn = random_conv_bn()
    bn.eval()
    x = torch.randn(2, 3, 8, 8)
    folded_bias = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.functional.conv2d(x, effective_weight(conv, bn), folded_bias.detach())
    assert torch.allclose(bn(conv(x)), folded, atol=1e-4)


@pytest.mark.parametrize("score", ["gamma", "effective"])
def test_bn_scores_need_a_batchnorm(score):
    model = FaceCNN(ModelConfig(input_size=32, stem_bn=False))
    with pytest.raises(ValueError, match="BatchNorm"):
        filter_scores(model.conv1, score)
    with pytest.raises(ValueError, match="BatchNorm"):
        model_scores(model, score)  # bn1 is an Identity here
    with pytest.raises(ValueError, match="BatchNorm"):
        snapshot_scores(conv1_snapshot(model), score)


@pytest.mark.parametrize("score", ["activation", "silent"])
def test_probe_scores_need_a_probe(score):
    model = FaceCNN(ModelConfig(input_size=32))
    with pytest.raises(ValueError, match="probe"):
        model_scores(model, score)
    with pytest.raises(ValueError, match="score"):
        filter_scores(model.conv1, "entropy")


def test_activation_score_does_not_touch_batchnorm():
    model = FaceCNN(ModelConfig(input_size=32)).train()
    before = model.bn1.running_mean.clone()
    scores = model_scores(model, "activation", probe=torch.randn(8, 3, 32, 32))
    assert scores.shape == (64,) and np.isfinite(scores).all()
    assert torch.equal(model.bn1.running_mean, before) and model.training


def test_every_score_on_a_fresh_model():
    model = FaceCNN(ModelConfig(input_size=32))
    probe = torch.randn(4, 3, 32, 32)
    for score in SCORES:
        s = model_scores(model, score, probe=probe)
        assert s.shape == (64,) and np.isfinite(s).all() and s.min() >= 0, score


def test_snapshot_scores_match_live_scores():
    model = FaceCNN(ModelConfig(input_size=32))
    with torch.no_grad():
        model.bn1.weight.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
    probe = torch.randn(8, 3, 32, 32)
    snap = conv1_snapshot(model, probe)
    for score in ("max", "l1", "l2", "gamma", "effective", "silent"):
        assert np.allclose(
            snapshot_scores(snap, score), model_scores(model, score, probe=probe), atol=1e-6
        ), score
    with pytest.raises(ValueError, match="probe"):
        snapshot_scores(snap, "activation")  # mean |output| is not stored; the spread is
    with pytest.raises(ValueError, match="output_std"):
        snapshot_scores(conv1_snapshot(model), "silent")  # a history recorded without a probe


def test_activation_scores_statistics():
    """``mean_abs`` is ReDo's mean |output|, ``std`` the spread over faces and positions, per
    channel."""
    stem = nn.Sequential(nn.Conv2d(3, 4, 1, bias=True))
    with torch.no_grad():
        stem[0].weight.zero_()
        stem[0].weight[0, 0] = 2.0  # channel 0 = 2 * red
        # 1: constant 3; 2: zero; 3: constant -1
        stem[0].bias.copy_(torch.tensor([0.0, 3.0, 0.0, -1.0]))
    probe = torch.randn(5, 3, 4, 4, dtype=torch.float64).float()
    red = probe[:, 0].double()
    np.testing.assert_allclose(
        activation_scores(stem, probe, statistic="mean_abs"),
        [2 * red.abs().mean().item(), 3.0, 0.0, 1.0],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        activation_scores(stem, probe, statistic="std"),
        [2 * red.std(correction=0).item(), 0.0, 0.0, 0.0],
        rtol=1e-6,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="statistic"):
        activation_scores(stem, probe, statistic="median")


def test_max_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[-3.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(max_cosine(a, b), [1.0, np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(max_cosine(a, a, exclude_self=True), [0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError):
        max_cosine(a, b[:1], exclude_self=True)


# ---------------------------------------------------------------------------------------------
# the functional detector: silent means the next layer hears nothing, not that the weights are small


def recalibrate_batchnorm(model: FaceCNN, probe: torch.Tensor) -> None:
    """Let BatchNorm's running statistics catch up with the current filters, as training forwards
    would."""
    model.bn1.reset_running_stats()
    model.bn1.momentum = None  # cumulative average: one pass gives the probe's own statistics
    model.train()
    with torch.no_grad():
        model.stem(probe)
    model.bn1.momentum = 0.1


@pytest.fixture
def face_model(tiny_faces):
    """A fresh FaceCNN whose stem BatchNorm statistics are those of the real probe faces, and that
    probe."""
    torch.manual_seed(0)
    model = FaceCNN(ModelConfig(input_size=32))
    probe = probe_batch(tiny_faces.images)
    recalibrate_batchnorm(model, probe)
    return model, probe


def test_silent_iff_the_output_is_zero_not_when_the_weights_are_small(face_model):
    """Channel 5: γ = β = 0, so BN outputs 0 (silent, healthy weights). Channel 9: weights x 1e-3
    with a healthy γ, so BN rescales it (heard, tiny weights). The silent score flags exactly 5, max
    |w| exactly 9."""
    model, probe = face_model
    silenced, shrunk = 5, 9
    with torch.no_grad():
        model.bn1.weight[silenced] = 0.0
        model.bn1.bias[silenced] = 0.0
        model.conv1.weight[shrunk] *= 1e-3
    # BN now sees the small filter's small spread and rescales it
    recalibrate_batchnorm(model, probe)
    model.eval()
    with torch.no_grad():
        out = model.stem(probe)
    assert out[:, silenced].abs().max() == 0  # what the next layer hears from 5: nothing at all
    # 9 is heard: BN divides by its (tiny) spread; only BN's eps = 1e-5 keeps it from full size
    var = model.bn1.running_var[shrunk]
    loudest = out.transpose(0, 1).flatten(1).std(1).max()
    assert out[:, shrunk].std() > 0.5 * torch.sqrt(var / (var + model.bn1.eps)) * loudest > 0
    silent = model_scores(model, "silent", probe=probe)
    weight = model_scores(model, "max")
    assert np.flatnonzero(silent < SILENT_TAU).tolist() == [silenced]
    assert np.flatnonzero(weight < PAPER_READING.tau).tolist() == [shrunk]
    assert silent[shrunk] > 2 * SILENT_TAU and weight[silenced] > 0.3
    # the BN score agrees with the silent one here
    assert model_scores(model, "gamma")[silenced] == 0


def test_a_constant_channel_is_silent_too(face_model):
    """γ = 0 with β ≠ 0: the channel outputs the same number for every face, which carries no
    signal."""
    model, probe = face_model
    with torch.no_grad():
        model.bn1.weight[7] = 0.0
        model.bn1.bias[7] = 0.8
    out = model.eval().stem(probe).detach()
    assert torch.allclose(out[:, 7], torch.tensor(0.8))
    assert np.flatnonzero(model_scores(model, "silent", probe=probe) < SILENT_TAU).tolist() == [7]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silent_flags_exactly_the_silenced_channels(face_model, seed):
    model, probe = face_model
    channels = np.random.default_rng(seed).choice(64, size=6, replace=False)
    with torch.no_grad():
        model.bn1.weight[channels] = 0.0
        model.bn1.bias[channels] = 0.0
        model.conv1.weight[(channels + 1) % 64] *= 1e-3  # neighbours with small weights stay heard
    recalibrate_batchnorm(model, probe)
    silent = model_scores(model, "silent", probe=probe)
    assert sorted(np.flatnonzero(silent < SILENT_TAU)) == sorted(channels)
    assert model.training  # the measurement ran in eval mode and handed the model back


def test_silent_score_reads_the_same_from_a_history_snapshot(face_model):
    model, probe = face_model
    with torch.no_grad():
        model.bn1.weight[3] = 0.0
        model.bn1.bias[3] = 0.0
    snap = conv1_snapshot(model, probe)
    np.testing.assert_allclose(
        snapshot_scores(snap, "silent"), model_scores(model, "silent", probe=probe), rtol=1e-12
    )
    assert snapshot_scores(snap, "silent")[3] == 0


# ---------------------------------------------------------------------------------------------
# scores over training: timelines, recorders, times of death and renewals


@pytest.fixture(scope="module")
def recorded_run(tiny_faces, tiny_recipe):
    """Two epochs of 3 steps on real LFW faces (32 px), with an ActivityRecorder every 2 steps."""
    recorder = ActivityRecorder(every=2)
    trainer = Trainer(tiny_faces, tiny_recipe.train.but(epochs=2), [recorder], progress=False)
    trainer.fit()
    return trainer, recorder


def test_timeline_is_filters_by_epochs(recorded_run):
    trainer, _ = recorded_run
    for score in ("max", "l2", "gamma", "effective", "silent"):
        t = timeline(trainer.history, score)
        assert t.shape == (64, 3), score  # column 0 is the initialisation
        assert np.isfinite(t).all() and np.allclose(t.max(0), 1.0)
    assert np.allclose(timeline(trainer.history)[:, -1], model_scores(trainer.model), atol=1e-6)
    np.testing.assert_allclose(
        timeline(trainer.history, "silent")[:, -1],
        model_scores(trainer.model, "silent", probe=trainer.probe),
        rtol=1e-9,
    )
    # it trained
    assert not np.allclose(timeline(trainer.history)[:, 0], timeline(trainer.history)[:, -1])


def test_recorder_records_every_k_steps(recorded_run):
    trainer, recorder = recorded_run
    assert trainer.steps_per_epoch == 3
    assert recorder.steps == [2, 4, 6]
    assert recorder.matrix().shape == (64, 3)
    # step 6 is the last
    assert np.allclose(recorder.matrix()[:, -1], model_scores(trainer.model), atol=1e-6)
    assert ActivityRecorder().matrix().shape == (0, 0)


def test_inactive_over_time_is_the_share_below_tau_per_entry(recorded_run):
    trainer, _ = recorded_run
    for score, tau in (("max", 0.5), ("silent", 0.3)):
        expected = (timeline(trainer.history, score) < tau).mean(0)
        np.testing.assert_array_equal(inactive_over_time(trainer.history, tau, score), expected)


def test_track_records_before_and_during_and_detaches(toy_faces, toy_config):
    t = Trainer(toy_faces, toy_config, progress=False)
    probe = to_input(torch.from_numpy(toy_faces.images[:8]))
    tracks = track(t, 6, every=2, scores=("max", "activation", "silent"), probe=probe)
    steps, matrix = tracks["max"]
    assert steps == [0, 2, 4, 6] and matrix.shape == (8, 4)
    assert tracks["activation"][1].shape == tracks["silent"][1].shape == (8, 4)
    assert not any(isinstance(cb, ActivityRecorder) for cb in t.callbacks)


EVENTS = [
    {"epoch": 1, "step": 10, "strategy": "contextual", "filters": [2, 3]},
    {
        "epoch": 2,
        "step": 20,
        "strategy": "none",
        "filters": [0],
    },  # detected and logged, not renewed
    {"epoch": 3, "step": 30, "strategy": "random_matched", "filters": []},
]


def test_renewals_are_events_that_changed_filters():
    assert renewals(EVENTS) == EVENTS[:1]
    assert renewals(None) == [] and renewals([]) == []
    assert event_x(EVENTS[0], "step") == 10 and event_x(EVENTS[0], "epoch") == 1
    assert event_x({"epoch": 4}, "step") == 4  # no step recorded: fall back to the epoch


def test_death_times_first_drop_below_tau_or_renewal():
    matrix = np.array(
        [
            [1.0, 0.5, 0.05, 0.5],  # 0: dies at column 2 (recovers later: still died at 2)
            [1.0, 1.0, 1.0, 1.0],  # 1: never
            [1.0, 1.0, 1.0, 1.0],  # 2: renewed at epoch 1, so dead from column 1
            [0.01, 1.0, 1.0, 1.0],
        ]
    )  # 3: dead at the start
    assert death_times(matrix, 0.1).tolist() == [2, np.inf, np.inf, 0]
    assert death_times(matrix, 0.1, EVENTS).tolist() == [2, np.inf, 1, 0]  # "none" changes nothing
    steps = [0, 10, 20, 30]
    assert death_times(matrix, 0.1, EVENTS, x=steps, xlabel="step").tolist() == [2, np.inf, 1, 0]
