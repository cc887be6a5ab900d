"""Filter activity scores, anchored on a real released face model whose first layer is half dead.

foamliu's MobileFaceNet (``$CRAFTLIB_MODELS/foamliu_mobilefacenet/mobilefacenet.pt``, see its
PROVENANCE.md): 31 of its 64 first-layer filters have max |w| below 5% of the strongest, the same 31
channels have a collapsed BatchNorm gamma, and on real faces those channels output about nothing.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from torch import nn

import craftlib.pretrained as pretrained
from craftlib.activity import (SCORES, ActivityRecorder, check_tau, effective_weight, filter_norms, filter_scores,
                               inactive_fraction, inactive_mask, model_scores, relative, report, snapshot_scores,
                               timeline)
from craftlib.data import load_face, read_pairs
from craftlib.models import FaceCNN, ModelConfig
from craftlib.recipes import FAST
from craftlib.training import Trainer, conv1_snapshot, to_input

DEAD_IN_MOBILEFACENET = 31


@pytest.fixture(scope="module")
def stem() -> nn.Sequential:
    """The released model's ``conv -> BN -> ReLU6`` stem, checksum-verified, never downloaded here."""
    try:
        return pretrained.mobilefacenet_stem(download=False)
    except pretrained.ModelNotFoundError as err:
        pytest.skip(f"MobileFaceNet weights not available (set CRAFTLIB_MODELS): {err}")


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
    """Folding BN into the conv adds one more filter below 5% (32) and another below 10% (33), per PROVENANCE.md."""
    eff = filter_scores(stem[0], "effective", bn=stem[1])
    assert (eff < 0.05).sum() == 32 and (eff < 0.10).sum() == 33
    assert np.all(eff[dead] < 0.05)  # every raw-dead filter stays dead after folding


def test_dead_channels_are_silent_on_real_faces(stem, dead, lfw):
    """ReDo's activation score on 16 DevTest faces at the model's 112 px: the dead channels output ~0."""
    pairs = read_pairs(lfw.pair_file("devtest"))[:8]
    images = np.stack([load_face(lfw.image_root / name, size=112) for p in pairs for name in (p.left, p.right)])
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
# finding the weights: checksum and a clear error


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty CRAFTLIB_MODELS, with the repo's data/models fallback pointed away too."""
    monkeypatch.setenv("CRAFTLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(pretrained, "REPO_ROOT", tmp_path / "repo")
    return tmp_path / "models"


def test_wrong_bytes_fail_the_checksum(models_dir):
    path = models_dir / "foamliu_mobilefacenet" / "mobilefacenet.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the weights")
    with pytest.raises(pretrained.ModelNotFoundError, match="SHA-256"):
        pretrained.mobilefacenet_stem(download=False)


def test_missing_file_names_the_variable_and_the_url(models_dir):
    with pytest.raises(pretrained.ModelNotFoundError) as info:
        pretrained.find_mobilefacenet(download=False)
    message = str(info.value)
    assert "CRAFTLIB_MODELS" in message and pretrained.MOBILEFACENET["url"] in message
    assert isinstance(info.value, FileNotFoundError)


def test_bad_download_is_not_saved(models_dir, monkeypatch):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"a tampered file"

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(pretrained.ModelNotFoundError, match="wrong SHA-256"):
        pretrained.find_mobilefacenet(download=True)
    assert not any((pretrained.REPO_ROOT / "data").rglob("*.pt"))


def test_failed_download_explains(models_dir, monkeypatch):
    def offline(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", offline)
    with pytest.raises(pretrained.ModelNotFoundError, match="download failed") as info:
        pretrained.find_mobilefacenet(download=True)
    assert pretrained.MOBILEFACENET["url"] in str(info.value)


def test_pinned_checksum_matches_provenance():
    """The pin in the code is the one in PROVENANCE.md (and the URL names the same commit)."""
    assert pretrained.MOBILEFACENET["sha256"] == "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4"
    assert "a6cc9032a659b615f477833e1a70b5e7931bcccc" in pretrained.MOBILEFACENET["url"]


def test_the_file_on_disk_is_the_pinned_one(stem):
    path = pretrained.find_mobilefacenet(download=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pretrained.MOBILEFACENET["sha256"]


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
    assert np.all(relative(np.zeros(4)) == 0)  # an all-zero layer: everything inactive, no division by zero
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
    assert np.allclose(filter_scores(conv, "gamma", bn=bn), relative(bn.weight.detach().abs().numpy()))


def test_effective_filter_equals_folded_conv_output():
    """The effective filter really is what the network sees: conv+BN (eval) = conv with the effective weight + bias."""
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


def test_activation_score_needs_a_probe():
    model = FaceCNN(ModelConfig(input_size=32))
    with pytest.raises(ValueError, match="probe"):
        model_scores(model, "activation")
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
    snap = conv1_snapshot(model)
    for score in ("max", "l1", "l2", "gamma", "effective"):
        assert np.allclose(snapshot_scores(snap, score), model_scores(model, score), atol=1e-6), score
    with pytest.raises(ValueError, match="probe"):
        snapshot_scores(snap, "activation")


# ---------------------------------------------------------------------------------------------
# scores over a tiny real training run


@pytest.fixture(scope="module")
def tiny_run(faces):
    """Two FAST epochs on real LFW faces (32 px), with an ActivityRecorder every 3 steps."""
    recorder = ActivityRecorder(every=3)
    trainer = Trainer(faces, FAST.train.but(epochs=2), [recorder], progress=False)
    trainer.fit()
    return trainer, recorder


def test_timeline_is_filters_by_epochs(tiny_run):
    trainer, _ = tiny_run
    for score in ("max", "l2", "gamma", "effective"):
        t = timeline(trainer.history, score)
        assert t.shape == (64, 3), score  # column 0 is the initialisation
        assert np.isfinite(t).all() and np.allclose(t.max(0), 1.0)
    assert np.allclose(timeline(trainer.history)[:, -1], model_scores(trainer.model), atol=1e-6)
    assert not np.allclose(timeline(trainer.history)[:, 0], timeline(trainer.history)[:, -1])  # it trained


def test_recorder_records_every_k_steps(tiny_run):
    trainer, recorder = tiny_run
    total = 2 * trainer.steps_per_epoch
    assert recorder.steps == list(range(3, total + 1, 3))
    assert recorder.matrix().shape == (64, total // 3)
    if total % 3 == 0:  # the last record was taken after the last step
        assert np.allclose(recorder.matrix()[:, -1], model_scores(trainer.model), atol=1e-6)
    assert ActivityRecorder().matrix().shape == (0, 0)
