"""FaceCNN: shapes, the ArcFace-like first layer, its config round trip, MAC count and the stem's
consumers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from craftlib.models import FaceCNN, ModelConfig, count_macs, topk_at_inference


@pytest.mark.parametrize("stem_bn", [True, False])
@pytest.mark.parametrize("stem_act", ["prelu", "relu"])
@pytest.mark.parametrize("size", [32, 40])
def test_facecnn_shapes(stem_bn, stem_act, size):
    model = FaceCNN(ModelConfig(input_size=size, stem_bn=stem_bn, stem_act=stem_act)).eval()
    x = torch.randn(3, 3, size, size)
    assert model.stem(x).shape == (3, 64, size, size)  # stride 1: the stem keeps the resolution
    assert model(x).shape == (3, 128)
    assert isinstance(model.bn1, nn.BatchNorm2d) == stem_bn
    assert isinstance(model.act1, nn.PReLU if stem_act == "prelu" else nn.ReLU)
    assert (model.conv1.bias is None) == stem_bn  # a bias before BatchNorm would be redundant


def test_conv1_mirrors_arcface():
    conv = FaceCNN().conv1
    assert (conv.in_channels, conv.out_channels) == (3, 64)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert FaceCNN().config.embedding_dim == 128


def test_config_round_trips_through_a_dict():
    cfg = ModelConfig(input_size=40, stem_bn=False, widths=(16, 32, 64), embedding_dim=64)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert FaceCNN(cfg)(torch.randn(2, 3, 40, 40)).shape == (2, 64)


@pytest.mark.parametrize("bad", [dict(input_size=36), dict(stem_act="gelu")])
def test_bad_model_config_raises(bad):
    with pytest.raises(ValueError):
        FaceCNN(ModelConfig(**bad))


def test_count_macs_matches_a_hand_count():
    model = FaceCNN(ModelConfig(input_size=32))
    conv = lambda side, cout, cin: side * side * cout * cin * 9  # noqa: E731
    expected = (
        conv(32, 64, 3)
        + conv(16, 32, 64)
        + conv(8, 64, 32)
        + conv(8, 64, 64)
        + conv(4, 128, 64)
        + conv(4, 128, 128)
        + 128 * 4 * 4 * 128
    )
    assert count_macs(model) == expected
    assert model.training  # count_macs leaves the mode as it found it


def test_count_macs_leaves_an_eval_model_in_eval_mode_and_takes_a_size():
    model = FaceCNN(ModelConfig(input_size=32)).eval()
    at_32 = count_macs(model)
    assert not model.training and at_32 > 0
    # no config: the size is an argument
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    assert count_macs(conv, input_size=16) == 16 * 16 * 8 * 3 * 9


def test_stem_consumers_read_every_conv1_channel():
    model = FaceCNN(ModelConfig(input_size=32, stem_channels=16, widths=(8, 16, 16)))
    (consumer,) = model.stem_consumers()
    assert consumer is model.body[0][0] and isinstance(consumer, nn.Conv2d)
    assert consumer.in_channels == model.conv1.out_channels == 16
    with torch.no_grad():  # a channel the consumer ignores changes nothing downstream
        consumer.weight[:, 3] = 0
        x = torch.randn(2, 3, 32, 32)
        model.eval()
        before = model(x)
        model.conv1.weight[3] *= 10
        assert torch.allclose(model(x), before, atol=1e-5)


def test_a_forward_split_at_any_stage_is_the_forward():
    """``from_stage(s, up_to(s, x))`` runs the same layers on the same tensors as ``forward``: equal
    to the bit, with a Top-K layer at that stage, at another, or none (the Top-K explorer relies on
    it to keep activations while K moves)."""
    torch.manual_seed(0)
    model = FaceCNN(ModelConfig(input_size=32)).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        for stage in range(4):
            assert torch.equal(model(x), model.from_stage(stage, model.up_to(stage, x)))
            for at in {stage, (stage + 1) % 4}:
                with topk_at_inference(model, 0.3, (at,)):
                    split = model.from_stage(stage, model.up_to(stage, x))
                    assert torch.equal(model(x), split), (stage, at)
