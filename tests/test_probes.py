"""Linear probes: hooks collect every stage once, statistics are right, and a planted tint is found
at the stem."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from craftlib.companions.attributes import linear_probes as probes
from craftlib.companions.attributes.branching import STAGES
from craftlib.companions.attributes.labels import UNKNOWN, Attribute, identity_split

from attribute_data import toy_model, toy_probe_set


def test_stage_features_shapes_hooks_removed_mode_restored():
    model = toy_model().train()
    images = np.random.default_rng(0).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    feats = probes.stage_features(model, images, pool=2, batch_size=4)
    assert list(feats) == list(STAGES)
    assert feats["stem"].shape == (10, 8 * 4) and feats["block1"].shape == (10, 4 * 4)
    assert feats["embedding"].shape == (10, 8)
    assert model.training, "the model goes back in the mode it came in"
    assert all(not m._forward_hooks for m in model.modules()), "every hook is removed"
    with torch.no_grad():
        from craftlib.data import to_input

        emb = model.eval()(to_input(torch.from_numpy(images))).numpy()
    np.testing.assert_allclose(feats["embedding"], emb, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown stage"):
        probes.stage_features(model, images, stages=("stem", "block9"))


def test_balanced_accuracy_and_identity_bootstrap():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 0, 1, 0, 0, 0, 0, 0, 1, 1], bool)
    assert probes.balanced_accuracy(y, pred) == pytest.approx((2 / 3 + 5 / 7) / 2)
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(200), 5)
    y = rng.random(1000) < 0.3
    pred = np.where(rng.random(1000) < 0.8, y, ~y)
    ba, (lo, hi) = probes.balanced_accuracy_ci(y, pred, groups, n_boot=500)
    assert lo < ba < hi and 0.74 < ba < 0.86 and hi - lo < 0.1
    perfect, ci = probes.balanced_accuracy_ci(y, y, groups, n_boot=100)
    assert perfect == 1.0 and ci == (1.0, 1.0)


def test_fit_probe_leaves_out_unknown_labels_and_respects_people():
    ps = toy_probe_set()
    feats = probes.stage_features(toy_model(), ps.images)
    y = ps.y[:, -1]
    p = probes.fit_probe(feats["stem"], y, ps.identities, ps.train_idx, ps.test_idx, n_boot=50)
    assert p.n_test == int((y[ps.test_idx] != UNKNOWN).sum())
    assert set(p.test_index) <= set(ps.test_idx) and (y[p.test_index] != UNKNOWN).all()
    assert p.C in probes.CS and 0.0 <= p.cv_score <= 1.0
    leaky = np.concatenate([ps.test_idx[:3], ps.train_idx])
    with pytest.raises(ValueError, match="not identity-disjoint"):
        probes.fit_probe(feats["stem"], y, ps.identities, leaky, ps.test_idx)
    one_class = np.zeros_like(y)
    assert (
        probes.fit_probe(feats["stem"], one_class, ps.identities, ps.train_idx, ps.test_idx) is None
    )


@pytest.mark.slow
def test_a_fixed_C_skips_the_cross_validation():
    ps = toy_probe_set()
    feats = probes.stage_features(toy_model(), ps.images)
    args = (feats["block1"], ps.y[:, 0], ps.identities, ps.train_idx, ps.test_idx)
    cv = probes.fit_probe(*args, n_boot=50)
    fixed = probes.fit_probe(*args, n_boot=50, C=cv.C)
    assert fixed.C == cv.C and np.isnan(fixed.cv_score) and not np.isnan(cv.cv_score)
    # the same model, refitted
    assert fixed.balanced_accuracy == pytest.approx(cv.balanced_accuracy, abs=0.02)
    first = probes.run_probes(toy_model(), ps, n_boot=20)
    C = first.C.copy()
    C[0, 0] = np.nan  # a NaN cell is cross-validated
    again = probes.run_probes(toy_model(), ps, n_boot=20, C=C)
    assert np.isnan(again.cv_score[1:, :]).all() and np.isfinite(again.cv_score[0, 0])
    np.testing.assert_array_equal(again.C[np.isfinite(C)], first.C[np.isfinite(C)])


@pytest.mark.slow
def test_probe_results_table_best_stage_and_most_wrong():
    ps = toy_probe_set()
    res = probes.run_probes(toy_model(), ps, n_boot=50)
    assert res.balanced_accuracy.shape == (3, len(STAGES))
    assert np.all(
        (res.ci_low <= res.balanced_accuracy + 1e-9) & (res.balanced_accuracy <= res.ci_high + 1e-9)
    )
    # the bright images: trivially linear at the stem
    assert res.cell(ps.attribute_names[0], "stem") > 0.8
    assert res.best_stage(ps.attribute_names[0]) in STAGES
    wrong = res.most_wrong(ps.attribute_names[1], "embedding", k=5)
    assert 0 < len(wrong) <= 5
    margins = [abs(w["decision"]) for w in wrong]
    assert margins == sorted(margins, reverse=True)
    for w in wrong:  # every face shown really is on the wrong side
        assert (w["decision"] > 0) != bool(w["label"])
    d = res.to_dict()
    assert d["stages"] == list(STAGES) and len(d["balanced_accuracy"]) == 3


def test_plant_tint_is_half_and_bounded():
    images = np.full((400, 4, 4, 3), 250, dtype=np.uint8)
    tinted, label = probes.plant_tint(images, seed=3, strength=12)
    assert 0.4 < label.mean() < 0.6
    assert tinted[label == 1, ..., 0].max() == 255 and tinted[label == 1, ..., 2].min() == 238
    np.testing.assert_array_equal(tinted[label == 0], images[label == 0])


@pytest.mark.slow
def test_planted_tint_is_decoded_best_at_the_stem(faces):
    """A colour tint on a random half of real faces: a trained face CNN's stem reads it best.

    Trains a short run of the workshop recipe at 32 px on the test subset (the face CNN learns to
    ignore a global colour cast on its way to identity), then probes every stage of people it never
    saw.
    """
    from craftlib.recipes import WORKSHOP
    from craftlib.training import train

    config = WORKSHOP.train.but(
        epochs=4, model__input_size=32, threads=int(os.environ.get("OMP_NUM_THREADS", 2))
    )
    trainer = train(faces, config, progress=False)
    ids = np.array([f.split("/")[0] for f in faces.files])
    train_idx, test_idx = identity_split(ids, 0.5, seed=0)
    rows = []
    for seed in range(3):  # three independent plantings: the stem must win on their mean
        tinted, label = probes.plant_tint(faces.images, seed=seed, strength=10)
        ps = replace(
            toy_probe_set(),
            images=tinted,
            files=faces.files,
            identities=ids,
            y=label[:, None],
            attributes=(Attribute("tint", "colour/texture", ()),),
            train_idx=train_idx,
            test_idx=test_idx,
        )
        rows.append(probes.run_probes(trainer.model, ps, n_boot=50).balanced_accuracy[0])
    row = np.mean(rows, 0)
    shown = dict(zip(STAGES, row.round(3)))
    # best at the stem, up to 2 points: stem and block 1 are close on some seeds (one planting gave
    # 0.725 vs 0.738)
    assert row[0] >= row.max() - 0.02, (
        f"the tint is read clearly better at {STAGES[int(np.argmax(row))]}: {shown}"
    )
    assert row[0] > 0.65 and row[0] - row[-1] > 0.1, shown
