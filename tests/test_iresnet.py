"""iResNet: arcface_torch's sizes and keys, the 112 px -> 512-d contract, and CRAFT's stem interface
on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib.activity import model_scores
from craftlib.iresnet import (
    IResNet,
    backbone_for,
    backbone_name,
    build_backbone,
    iresnet18,
    iresnet_from_state_dict,
)
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import PAPER_READING, reactivate_model

# Counted on arcface_torch's backbones/iresnet.py (insightface commit 04a433f) at 112 px and 512-d;
# the model zoo
# quotes iResNet-50 as 43.6M and iResNet-100 as 65.2M parameters.
INSIGHTFACE = {
    "iresnet18": (24_025_600, 187),
    "iresnet34": (34_139_328, 331),
    "iresnet50": (43_590_848, 475),
    "iresnet100": (65_156_160, 925),
}


@pytest.mark.parametrize("name", sorted(INSIGHTFACE))
def test_parameter_count_and_state_dict_size_match_insightface(name):
    with torch.device("meta"):  # sizes only: no memory, no init time
        model = build_backbone(name)
    params, keys = INSIGHTFACE[name]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_state_dict_keys_are_insightface_s():
    """Released arcface_torch weights load by name: no extra key for the ``act1`` alias."""
    with torch.device("meta"):
        keys = set(iresnet18().state_dict())
    assert {
        "conv1.weight",
        "bn1.running_var",
        "prelu.weight",
        "layer1.0.bn1.weight",
        "layer1.0.downsample.0.weight",
        "layer4.1.conv2.weight",
        "bn2.weight",
        "fc.weight",
        "features.weight",
        "features.running_mean",
    } <= keys
    assert not any(k.startswith("act1") for k in keys)


def test_112px_face_gives_512d_embedding_and_arcface_stem():
    torch.manual_seed(0)
    model = iresnet18().eval()
    with torch.no_grad():
        emb = model(torch.randn(2, 3, 112, 112))
    assert emb.shape == (2, 512)
    c = model.conv1
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.bias) == (
        3,
        64,
        (3, 3),
        (1, 1),
        None,
    )
    assert model.act1 is model.prelu and isinstance(model.bn1, torch.nn.BatchNorm2d)
    assert not model.features.weight.requires_grad  # arcface_torch freezes the embedding BN's scale


def test_smaller_faces_for_cpu_and_input_size_checked():
    model = iresnet18(input_size=32, num_features=128)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert model.stem(torch.randn(1, 3, 32, 32)).shape == (1, 64, 32, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        iresnet18(input_size=40)


def test_fc_runs_in_fp32_under_autocast():
    """arcface_torch's mixed-precision split: the body in low precision, the FC and feature BN in
    fp32."""
    model = iresnet18(input_size=16).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 16, 16)).dtype == torch.float32


def test_activity_and_reactivation_work_unchanged():
    torch.manual_seed(0)
    model = iresnet18(input_size=32)
    dead = [3, 10, 40]
    with torch.no_grad():
        model.conv1.weight[dead] *= 1e-3
        model.prelu.weight[dead] = 0.9
    before = model.conv1.weight.detach().clone()
    assert set(np.flatnonzero(model_scores(model) < 0.1)) == set(dead)
    result = reactivate_model(
        model, PAPER_READING.but(downstream="rescale"), generator=torch.Generator().manual_seed(0)
    )
    assert result.filters == dead
    keep = [i for i in range(64) if i not in dead]
    assert torch.equal(model.conv1.weight[keep], before[keep])  # every other filter bit for bit
    assert (model_scores(model)[dead] > 0.1).all()
    assert torch.all(model.prelu.weight[dead] == 0.25)  # act1 is the PReLU: its slope was reset too
    probe = torch.randn(4, 3, 32, 32)
    assert model_scores(model, "silent", probe=probe).shape == (64,)


def test_stem_consumers_read_the_stem_channels():
    model = iresnet18(input_size=32)
    assert [c.in_channels for c in model.stem_consumers()] == [64, 64]


@pytest.mark.slow
def test_weights_alone_rebuild_the_model():
    """What evaluating an arcface_torch ``model.pt`` needs: depth, embedding and input size from the
    weights."""
    torch.manual_seed(0)
    model = build_backbone("iresnet34", input_size=32, num_features=128).eval()
    rebuilt = iresnet_from_state_dict(model.state_dict()).eval()
    assert (backbone_name(model.state_dict()), rebuilt.input_size) == ("iresnet34", 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_builder_names_and_model_config_bridge():
    assert isinstance(build_backbone("facecnn", input_size=32), FaceCNN)
    assert backbone_name(FaceCNN(ModelConfig(input_size=32)).state_dict()) == "facecnn"
    bridged = backbone_for("iresnet18", ModelConfig(input_size=32, embedding_dim=64))
    assert (
        isinstance(bridged, IResNet) and bridged.fc.out_features == 64 and bridged.input_size == 32
    )
    with pytest.raises(ValueError, match="iresnet50"):
        build_backbone("resnet50")
