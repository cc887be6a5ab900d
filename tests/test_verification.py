"""The LFW verification protocol on scores with known answers, and on the real DevTest pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib.models import FaceCNN, ModelConfig
from craftlib.verification import (
    best_threshold,
    embed,
    evaluate,
    evaluate_pixels,
    evaluate_scores,
    splits,
    threshold_at_far,
)


def _separable(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    same = np.arange(n) % 2 == 0
    scores = np.where(same, rng.uniform(0.6, 1.0, n), rng.uniform(-0.2, 0.4, n))
    return scores, same


def test_perfectly_separable_scores():
    report = evaluate_scores(*_separable())
    assert report["accuracy"] == 1.0 and report["accuracy_std"] == 0.0
    assert report["auc"] == 1.0 and report["eer"] == 0.0
    assert len(report["fold_accuracies"]) == 10 and report["n_pairs"] == 600
    assert all(0.4 <= t <= 0.6 for t in report["thresholds"])


def test_anti_correlated_scores_are_worst():
    scores, same = _separable()
    report = evaluate_scores(-scores, same)
    assert report["auc"] == 0.0 and report["accuracy"] <= 0.5


def test_best_threshold_on_a_hand_built_case():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    same = np.array([0, 0, 1, 1, 0, 1, 1], dtype=bool)
    # cut at 0.25: 2 rejects + 4 accepts right = 6/7; cut at 0.55: 3 + 2 = 5/7; anything else is
    # worse
    t = best_threshold(scores, same)
    assert t == pytest.approx(0.25)
    assert np.mean((scores > t) == same) == pytest.approx(6 / 7)


def test_best_threshold_never_cuts_between_ties():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    same = np.array([False, False, True, True])
    t = best_threshold(scores, same)  # 0.3 and 0.7 both get 3/4 right; 0.5 would split a tie
    assert t == pytest.approx(0.3)
    assert np.mean((scores > t) == same) == 0.75


def test_best_threshold_at_the_ends():
    # accept all
    assert best_threshold(np.array([0.1, 0.2, 0.3]), np.array([True, True, True])) < 0.1
    # reject all
    assert best_threshold(np.array([0.1, 0.2, 0.3]), np.array([False, False, False])) > 0.3


def test_predefined_folds_versus_contiguous_kfold():
    n = 40
    folds = np.arange(n) % 4  # interleaved folds, as if handed over by a protocol
    predefined = [test for _, test in splits(n, folds)]
    assert [sorted(t) for t in predefined] == [list(range(k, n, 4)) for k in range(4)]
    contiguous = [test for _, test in splits(n)]
    assert [list(t) for t in contiguous] == [list(range(4 * k, 4 * k + 4)) for k in range(10)]


def test_evaluate_scores_uses_the_folds_it_is_given():
    """Fold 0 holds the only mislabelled pair: per-fold accuracy says where it went."""
    scores, same = _separable(400)
    scores[0] = -1.0  # a same-person pair with the lowest score
    folds = np.repeat(np.arange(4), 100)
    by_fold = evaluate_scores(scores, same, folds)
    assert len(by_fold["fold_accuracies"]) == 4
    assert by_fold["fold_accuracies"] == [0.99, 1.0, 1.0, 1.0]
    contiguous = evaluate_scores(scores, same)
    assert len(contiguous["fold_accuracies"]) == 10 and contiguous["fold_accuracies"][
        0
    ] == pytest.approx(0.975)


def test_threshold_at_far_on_constructed_scores():
    scores = np.r_[np.arange(100) / 100, np.ones(10)]  # impostors 0.00..0.99, genuines at 1.0
    same = np.r_[np.zeros(100, bool), np.ones(10, bool)]
    for far, accepted in ((0.01, 1), (0.05, 5), (0.5, 50)):
        t = threshold_at_far(scores, same, far)
        assert np.sum(scores[~same] > t) == accepted  # exactly far * 100 impostors get in
        # the lowest such threshold, to the grid's step
        assert np.mean(scores[~same] > t - 0.011) > far


def test_tar_at_far_on_constructed_scores():
    """Impostors uniform in [0, 1); in every fold 30% of genuines score 1.5 and 70% score -0.5."""
    n = 1000
    same = np.arange(n) % 2 == 0
    scores = np.random.default_rng(0).uniform(0, 1, n)
    j = np.arange(n // 2)  # index among genuine pairs: 50 per contiguous fold of 100
    scores[same] = np.where(j % 10 < 3, 1.5, -0.5)
    report = evaluate_scores(scores, same)
    assert report["tar@far=0.01"] == pytest.approx(0.3)
    # 450 impostors per training split cannot set a 1e-3 threshold
    assert report["tar@far=0.001"] is None
    report = evaluate_scores(scores, same, fars=(0.2,))
    assert (
        set(k for k in report if k.startswith("tar@")) == {"tar@far=0.2"}
        and report["tar_notes"] == {}
    )


# --------------------------------------------------------------------------------------------
# TAR@FAR only where the impostor count supports it


def test_tar_at_far_1e3_is_not_estimable_on_devtest(devtest):
    """DevTest: 1,000 pairs in 10 folds, so each threshold is set on 450 impostor pairs (< 1/FAR =
    1,000)."""
    scores = np.where(devtest.same, 0.7, 0.2) + np.random.default_rng(0).normal(
        0, 0.2, len(devtest)
    )
    report = evaluate_scores(scores, devtest.same, devtest.folds)
    assert report["tar@far=0.001"] is None
    assert (
        report["tar_notes"]["0.001"].startswith("not estimable")
        and "450 impostor pairs" in report["tar_notes"]["0.001"]
    )
    # 4.5 impostors: enough
    assert isinstance(report["tar@far=0.01"], float) and "0.01" not in report["tar_notes"]


def test_tar_at_far_1e3_is_a_number_at_view2_size():
    """View 2's size: 6,000 pairs in 10 folds, 2,700 impostors per training split (>= 1,000)."""
    rng = np.random.default_rng(1)
    same = np.tile(np.repeat([True, False], 300), 10)
    folds = np.repeat(np.arange(10), 600)
    scores = np.where(same, rng.normal(0.7, 0.15, 6000), rng.normal(0.1, 0.15, 6000))
    report = evaluate_scores(scores, same, folds)
    assert (
        isinstance(report["tar@far=0.001"], float)
        and 0 < report["tar@far=0.001"] <= report["tar@far=0.01"] <= 1
    )
    assert report["tar_notes"] == {}


@pytest.mark.parametrize("impostors, estimable", [(99, False), (100, True)])
def test_tar_at_far_needs_one_over_far_impostors_per_training_split(impostors, estimable):
    same = np.r_[np.ones(50, bool), np.zeros(impostors, bool)]
    same = np.r_[same, same]
    folds = np.repeat([0, 1], len(same) // 2)  # two folds: each threshold is set on the other fold
    scores = np.where(same, 1.0, 0.0) + np.random.default_rng(0).uniform(0, 0.5, len(same))
    report = evaluate_scores(scores, same, folds, fars=(0.01,))
    assert (report["tar@far=0.01"] is not None) == estimable
    assert ("0.01" in report["tar_notes"]) != estimable


@pytest.mark.parametrize(
    "scores, same, match",
    [
        (np.array([0.1, np.nan, 0.3, 0.4]), np.array([0, 0, 1, 1], bool), "NaN"),
        (np.array([0.1, np.inf, 0.3, 0.4]), np.array([0, 0, 1, 1], bool), "NaN or inf"),
        (np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 1, 1, 1], bool), "both"),
        (np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 0, 0], bool), "both"),
        (np.array([0.1, 0.2, 0.3]), np.array([0, 0, 1, 1], bool), "same length"),
        (np.ones((4, 2)), np.ones((4, 2), bool), "1-D"),
    ],
)
def test_bad_inputs_raise(scores, same, match):
    with pytest.raises(ValueError, match=match):
        evaluate_scores(scores, same)


@pytest.mark.parametrize("far", [0.0, 1.0, -0.1, 1.5])
def test_far_outside_the_open_unit_interval_raises(far):
    scores, same = _separable(100)
    with pytest.raises(ValueError, match="FAR"):
        threshold_at_far(scores, same, far)
    with pytest.raises(ValueError, match="FAR"):
        evaluate_scores(scores, same, fars=(far,))


# --------------------------------------------------------------------------------------------
# embeddings and the real DevTest pairs


def test_raw_pixel_baseline_on_devtest(devtest):
    report = evaluate_pixels(devtest)
    assert 0.55 <= report["accuracy"] <= 0.70
    assert report["n_pairs"] == 1000 and len(report["fold_accuracies"]) == 10
    assert 0.5 < report["auc"] < 0.8


def test_flip_embedding_is_flip_invariant(devtest):
    model = FaceCNN(ModelConfig(input_size=32))
    torch.manual_seed(0)
    images = devtest.images[:24]
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    a, b = embed(model, images), embed(model, mirrored)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(
        embed(model, images, flip=False), embed(model, mirrored, flip=False), atol=1e-3
    )


def test_embed_is_batch_size_independent(devtest):
    model = FaceCNN(ModelConfig(input_size=32))
    images = devtest.images[:20]
    np.testing.assert_allclose(
        embed(model, images, batch_size=7), embed(model, images, batch_size=64), atol=1e-5
    )


def test_evaluate_on_devtest_reports_everything(devtest_subset):
    # seconds on 1 core
    small = ModelConfig(input_size=32, stem_channels=8, widths=(8, 8, 8), embedding_dim=16)
    report = evaluate(FaceCNN(small), devtest_subset)
    assert {
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar@far=0.01",
        "tar@far=0.001",
        "roc",
        "thresholds",
        "tar_notes",
    } <= set(report)
    assert 0.3 < report["accuracy"] < 0.8  # an untrained network: near chance, but a number
    assert (
        report["n_pairs"] == 250
        and report["tar@far=0.001"] is None
        and "0.001" in report["tar_notes"]
    )


@pytest.mark.parametrize("training", [True, False])
def test_embed_hands_the_model_back_in_its_mode(devtest_subset, training):
    model = FaceCNN(
        ModelConfig(input_size=32, stem_channels=8, widths=(8, 8, 8), embedding_dim=16)
    ).train(training)
    running = model.bn1.running_mean.clone()
    embed(model, devtest_subset.images[:8])
    assert model.training == training
    # embedded with running statistics, not the batch's
    assert torch.equal(model.bn1.running_mean, running)
