"""The optional CReLU stem and Top-K layers of FaceCNN: exact semantics, gradients, re-activation,
checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from craftlib.activity import model_scores
from craftlib.models import (
    CReLU,
    FaceCNN,
    ModelConfig,
    PhaseSplitConv,
    TopK,
    count_macs,
    count_params,
    topk_mask,
)
from craftlib.reactivation import CraftSpec, reactivate_model

SMALL = dict(input_size=16, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)


def test_options_off_leave_the_config_dict_as_it_was():
    """Fingerprints of existing recipes and old checkpoints must not change."""
    d = ModelConfig().to_dict()
    assert "topk" not in d and "topk_after" not in d
    assert ModelConfig.from_dict(d) == ModelConfig()
    cfg = ModelConfig(stem_act="crelu", topk=0.3, topk_after=(0, 2))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_options_off_build_the_same_network_bit_for_bit():
    torch.manual_seed(0)
    a = FaceCNN(ModelConfig(input_size=32))
    assert list(a.sparsify) == [] and isinstance(a.stem_consumers()[0], nn.Conv2d)
    torch.manual_seed(0)
    b = FaceCNN(ModelConfig(input_size=32, topk=1.0, topk_after=()))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_crelu_stem_outputs_both_phases_of_its_conv():
    model = FaceCNN(ModelConfig(input_size=32, stem_act="crelu")).eval()
    assert (
        model.conv1.out_channels == 32
        and model.bn1.num_features == 32
        and isinstance(model.act1, CReLU)
    )
    x = torch.randn(3, 3, 32, 32)
    z = model.bn1(model.conv1(x))
    out = model.stem(x)
    assert out.shape == (3, 64, 32, 32)  # the same output width as the standard stem
    assert torch.equal(out, torch.cat([F.relu(z), F.relu(-z)], dim=1))
    assert torch.equal(model.filter_response(x), z)
    assert torch.allclose(out[:, :32] - out[:, 32:], z)  # nothing lost: relu(z) - relu(-z) = z


def test_crelu_consumer_is_one_convolution_split_by_phase():
    model = FaceCNN(ModelConfig(input_size=32, stem_act="crelu"))
    first = model.body[0][0]
    assert isinstance(first, PhaseSplitConv)
    assert model.stem_consumers() == [first.pos, first.neg]
    assert first.pos.in_channels == first.neg.in_channels == model.conv1.out_channels
    h = torch.randn(2, 64, 32, 32)
    np.testing.assert_allclose(
        first(h).detach(), F.conv2d(h, first.weight, stride=2, padding=1).detach(), atol=1e-5
    )


def test_crelu_halves_conv1_and_costs_fewer_macs():
    std, cre = (
        FaceCNN(ModelConfig(input_size=32)),
        FaceCNN(ModelConfig(input_size=32, stem_act="crelu")),
    )
    # conv1 half, BN half, no PReLU slopes
    assert count_params(std) - count_params(cre) == 32 * 27 + 2 * 32 + 64
    assert count_macs(std) - count_macs(cre) == 32 * 32 * 32 * 27


def test_reactivation_on_a_crelu_stem_renews_a_filter_and_both_of_its_phase_inputs():
    torch.manual_seed(0)
    model = FaceCNN(ModelConfig(stem_act="crelu", **SMALL))
    with torch.no_grad():
        model.conv1.weight[1] = 0.0  # a dead filter: silent in both phases
        model.bn1.running_var.fill_(1.0)
    probe = torch.randn(16, 3, 16, 16)
    scores = model_scores(model, "silent", probe=probe)
    assert scores.shape == (4,) and scores[1] == 0 and (np.delete(scores, 1) > 0).all()
    pos, neg = [c.weight.detach().clone() for c in model.stem_consumers()]
    spec = CraftSpec(strong_quantile=0.0, reset_step=False)  # silent < 0.01, next layer zeroed
    result = reactivate_model(model, spec, probe=probe, generator=torch.Generator().manual_seed(0))
    assert result.filters == [1] and model.conv1.weight[1].abs().sum() > 0
    for before, conv in zip((pos, neg), model.stem_consumers()):
        assert (conv.weight[:, 1] == 0).all()  # both phases of filter 1 start unheard
        # other filters untouched
        assert torch.equal(conv.weight[:, [0, 2, 3]], before[:, [0, 2, 3]])


def test_topk_keeps_exactly_k_values_per_channel_map():
    x = torch.randn(2, 3, 10, 10)
    for fraction, k in ((0.2, 20), (0.05, 5), (0.001, 1)):  # K = max(1, floor(fraction * H * W))
        y = TopK(fraction)(x)
        kept = (y != 0).flatten(2).sum(2)
        assert (kept == k).all()
        flat, yflat = x.flatten(2).abs(), y.flatten(2).abs()
        smallest_kept = torch.where(yflat > 0, yflat, torch.inf).amin(2)
        largest_dropped = torch.where(yflat == 0, flat, -torch.inf).amax(2)
        assert (
            smallest_kept > largest_dropped
        ).all()  # the K largest by magnitude, negatives included
        assert torch.equal(y[y != 0], x[y != 0])  # kept values unchanged
    assert torch.equal(TopK(1.0)(x), x)


def test_topk_gradient_flows_through_kept_entries_only():
    """As the paper's code: out = mask * x with a constant mask, so d out / d x is the mask (no
    straight-through)."""
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y = TopK(0.25)(x)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    mask = topk_mask(x.detach(), 0.25)
    assert torch.equal(x.grad, upstream * mask)
    assert (x.grad[mask == 0] == 0).all()


def test_topk_model_sparsifies_the_chosen_stages():
    model = FaceCNN(ModelConfig(input_size=40, topk=0.2, topk_after=(0, 2))).eval()
    outs = model.stage_outputs(torch.randn(2, 3, 40, 40))
    assert [o.shape[-1] for o in outs] == [40, 20, 10, 5]
    for stage, o in enumerate(outs):
        nonzero = (o != 0).flatten(2).sum(2)
        if stage in (0, 2):
            assert (nonzero <= int(0.2 * o.shape[-1] ** 2)).all()
        else:
            assert (nonzero > int(0.2 * o.shape[-1] ** 2)).any()
    x = torch.randn(2, 3, 40, 40)
    assert torch.allclose(model(x), model.head(model.stage_outputs(x)[-1]))


@pytest.mark.parametrize(
    "bad",
    [
        dict(topk=0.0),
        dict(topk=0.2),
        dict(topk_after=(1,)),
        dict(topk=0.5, topk_after=(4,)),
        dict(stem_act="crelu", stem_channels=7),
        dict(topk=0.5, topk_after=(1, 1)),
    ],
)
def test_bad_options_raise(bad):
    with pytest.raises(ValueError):
        FaceCNN(ModelConfig(**{**SMALL, **bad}))


def test_checkpoints_refuse_a_model_option_mismatch(tmp_path, toy_faces, toy_config):
    from craftlib.checkpoints import CheckpointError, load_checkpoint
    from craftlib.training import Trainer

    cfg = toy_config.but(model__stem_act="crelu", model__topk=0.5, model__topk_after=(1,))
    trainer = Trainer(toy_faces, cfg, progress=False)
    trainer.train_steps(1)
    path = trainer.save(tmp_path / "c.pt")
    assert load_checkpoint(path, expect_model=cfg.model)
    for other in (
        toy_config.model,
        cfg.but(model__topk=0.3).model,
        cfg.but(model__stem_act="prelu").model,
    ):
        with pytest.raises(CheckpointError, match="model does not match"):
            load_checkpoint(path, expect_model=other)
    with pytest.raises(CheckpointError):
        Trainer(toy_faces, toy_config, progress=False).resume(path)


def test_a_crelu_topk_model_trains_with_craft(toy_faces, toy_config):
    from craftlib.training import train

    cfg = toy_config.but(model__stem_act="crelu", model__topk=0.5, model__topk_after=(2,))
    spec = CraftSpec(strategy="contextual", score="silent", tau=0.5, last_epoch=2)
    trainer = train(toy_faces, cfg, [spec.callback(0, cfg.epochs)], progress=False)
    snap = trainer.history[-1]["conv1"]
    assert np.array(snap["weight"]).shape == (4, 3, 3, 3) and len(snap["output_std"]) == 4
    assert trainer.events and all(max(e["filters"], default=0) < 4 for e in trainer.events)
    assert np.isfinite(trainer.history[-1]["loss"])
