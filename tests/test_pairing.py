"""The CReLU pairing measure: planted φ/−φ pairs are found, orthogonal filters show none, random is
the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib.companions.sparsity.pairing import (
    anti_partner,
    pair_cosines,
    pairing_summary,
    planted_pairs,
    random_reference,
)


def test_planted_pairs_are_found():
    layer = planted_pairs(8)  # φ1, −φ1, φ2, −φ2, ...
    cos, partner = pair_cosines(layer)
    np.testing.assert_allclose(cos, -1.0, atol=1e-12)
    assert partner.tolist() == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14]
    s = pairing_summary(layer)
    assert s["paired_fraction"] == 1.0 and len(s["mutual_pairs"]) == 8 and s["shift"] < -0.4
    assert anti_partner(layer, 4) == (5, pytest.approx(-1.0))


def test_a_scaled_negative_copy_is_still_a_pair():
    """Cosine is scale-free: a decayed (small) −φ is still φ's pair."""
    phi = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    others = torch.linalg.qr(torch.randn(27, 27, dtype=torch.float64)).Q.T[:6].reshape(6, 3, 3, 3)
    cos, partner = pair_cosines(torch.cat([phi, -1e-3 * phi, others]))
    assert partner[0] == 1 and cos[0] == pytest.approx(-1.0)


def test_orthogonal_filters_have_no_pairs():
    q = torch.linalg.qr(
        torch.randn(27, 27, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ).Q
    layer = q.T[:16].reshape(16, 3, 3, 3)
    cos, _ = pair_cosines(layer)
    np.testing.assert_allclose(cos, 0.0, atol=1e-12)
    s = pairing_summary(layer)
    assert s["paired_fraction"] == 0.0 and s["mutual_pairs"] == [] and s["shift"] > 0.3


def test_random_filters_sit_between_and_define_the_threshold():
    ref = random_reference((64, 3, 3, 3), draws=50)
    # 27 dims: random pairs are far from −1
    assert ref.shape == (64 * 50,) and -0.6 < ref.mean() < -0.3
    s = pairing_summary(
        torch.randn(64, 3, 3, 3, generator=torch.Generator().manual_seed(1)), draws=50
    )
    assert abs(s["shift"]) < 0.05 and s["paired_fraction"] < 0.1
    assert s["threshold"] == pytest.approx(
        np.percentile(random_reference((64, 3, 3, 3), draws=50), 1.0)
    )


def test_mask_restricts_the_comparison():
    layer = torch.cat([planted_pairs(2), torch.randn(4, 3, 3, 3, dtype=torch.float64)])
    keep = np.array([True, False, True, True, True, True, True, True])  # φ1's twin masked out
    cos, partner = pair_cosines(layer, keep)
    assert np.isnan(cos[1]) and partner[1] == -1 and partner[0] != 1
    assert partner[2] == 3 and cos[2] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        pair_cosines(layer, keep[:3])
    assert pairing_summary(layer, mask=[True] + [False] * 7)["mean"] is None


def test_released_mobilefacenet_stem_is_more_paired_than_random(stem):
    """The real anchor: a ReLU6 face model's conv1 shows CReLU's pairing phenomenon."""
    s = pairing_summary(stem[0].weight)
    assert s["n"] == 64 and s["shift"] < 0 and s["paired_fraction"] > 0.1


def test_matched_reference_separates_pairs_from_crowded_directions():
    """Filters crowded into 3 directions look "paired" against isotropic random filters, not against
    matched ones."""
    g = torch.Generator().manual_seed(0)
    crowded = (
        torch.randn(64, 3, generator=g, dtype=torch.float64)
        @ torch.randn(3, 27, generator=g, dtype=torch.float64)
    ).reshape(64, 3, 3, 3)
    s = pairing_summary(crowded, draws=50)
    assert s["paired_fraction"] > 0.9 and s["matched"]["paired_fraction"] < 0.05
    planted = pairing_summary(planted_pairs(8), draws=50)
    assert planted["matched"]["paired_fraction"] == 1.0  # real pairs survive the stricter reference
    assert pairing_summary(planted_pairs(8), matched=False).get("matched") is None


def test_matched_reference_has_the_layers_second_moment():
    from craftlib.companions.sparsity.pairing import second_moment

    layer = planted_pairs(4)
    m = second_moment(layer)
    assert m.shape == (27, 27) and np.trace(m) == pytest.approx(1.0)
    ref = random_reference((8, 3, 3, 3), draws=20, moment=m)
    assert ref.shape == (160,) and np.all(ref >= -1 - 1e-9)


def _twin_model(beta_i: float, beta_j: float):
    """A CReLU stem whose filters 0 and 1 are exact twins (w1 = −w0) and whose other filters are
    random."""
    from craftlib.models import FaceCNN, ModelConfig

    model = FaceCNN(
        ModelConfig(
            input_size=16, stem_channels=8, stem_act="crelu", widths=(4, 8, 8), embedding_dim=8
        )
    )
    with torch.no_grad():
        w = torch.randn_like(model.conv1.weight)
        w[1] = -w[0]
        model.conv1.weight.copy_(w)
        bn = model.bn1
        bn.weight.fill_(1.0), bn.running_mean.zero_(), bn.running_var.fill_(1.0)
        bn.bias.zero_()
        bn.bias[0], bn.bias[1] = beta_i, beta_j
    return model


def test_twins_with_mirrored_shifts_cut_at_one_threshold():
    """β_j = −β_i: relu(z_i) and relu(−z_j) fire on exactly the same positions (gap 0, nothing
    disagrees)."""
    from craftlib.companions.sparsity.pairing import twin_thresholds, twin_verdict

    torch.manual_seed(0)
    model, faces = _twin_model(0.3, -0.3), torch.randn(4, 3, 16, 16)
    [t] = [t for t in twin_thresholds(model, faces) if {t["i"], t["j"]} == {0, 1}]
    assert t["cos"] == pytest.approx(-1.0) and t["r"] == pytest.approx(-1.0)
    assert t["gap"] == pytest.approx(0.0, abs=1e-6) and t["disagree"] == 0.0
    assert twin_verdict([t["gap"]]) == "one threshold (redundant)"
    assert model.training  # the measurement leaves the model's mode as it found it


def test_twins_with_different_shifts_have_the_predicted_gap():
    """z_i = c + β_i, z_j = −c + β_j: j's zero crossing is at z_i = β_i + β_j, i.e. that many sd of
    c apart."""
    from craftlib.companions.sparsity.pairing import twin_thresholds, twin_verdict

    torch.manual_seed(0)
    model, faces = _twin_model(0.5, 0.4), torch.randn(4, 3, 16, 16)
    [t] = [t for t in twin_thresholds(model, faces) if {t["i"], t["j"]} == {0, 1}]
    model.eval()
    with torch.no_grad():
        c = model.conv1(faces)[:, 0].flatten().double()
    expected = 0.9 * float(np.sqrt(1 + model.bn1.eps)) / float(c.std(unbiased=False))
    assert t["gap"] == pytest.approx(expected, rel=1e-4)
    z = c.numpy() / np.sqrt(1 + model.bn1.eps)
    # the band between the zeros
    assert t["disagree"] == pytest.approx(np.mean((z > -0.5) & (z < 0.4)), abs=1e-6)
    assert twin_verdict([t["gap"]]) == ("two thresholds" if expected >= 0.5 else "inconclusive")
    assert twin_verdict([]) == "no twins"
