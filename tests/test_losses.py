"""The CosFace / ArcFace margin heads on hand-checked values."""

from __future__ import annotations

import math

import pytest
import torch

from craftlib.losses import MarginHead, margin_loss

# --------------------------------------------------------------------------------------------
# margin heads: target logit s*(cos - m) (CosFace) and s*cos(theta + m) (ArcFace)


def _head(kind: str, theta_deg: float, scale: float = 30.0, margin=None):
    """A 2-class, 2-D head with centres on the axes and one embedding at ``theta`` from class 0."""
    head = MarginHead(2, 2, kind, scale, margin)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    t = math.radians(theta_deg)
    # norm must not matter
    emb = torch.tensor([[math.cos(t), math.sin(t)]], dtype=torch.float32) * 3.0
    return head, emb, t


def test_cosface_target_logit():
    head, emb, t = _head("cosface", 60.0)
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * (0.5 - 0.35), abs=1e-4)  # 4.5
    # other class: no margin
    assert logits[0, 1].item() == pytest.approx(30 * math.sin(t), abs=1e-4)


def test_arcface_target_logit():
    head, emb, t = _head("arcface", 60.0)
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(t + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(30 * math.cos(math.pi / 2 - t), abs=1e-4)


def test_custom_margin_and_scale():
    head, emb, t = _head("arcface", 30.0, scale=64.0, margin=0.2)
    assert head(emb, torch.tensor([0]))[0, 0].item() == pytest.approx(
        64 * math.cos(t + 0.2), abs=1e-3
    )
    head, emb, t = _head("cosface", 30.0, scale=10.0, margin=0.1)
    assert head(emb, torch.tensor([0]))[0, 0].item() == pytest.approx(
        10 * (math.cos(t) - 0.1), abs=1e-4
    )


def test_arcface_stays_monotonic_past_pi():
    """For theta + m > pi, insightface's fallback cos(theta) - m*sin(m) replaces cos(theta + m)."""
    head, emb, t = _head("arcface", 170.0)
    expected = math.cos(t) - math.sin(math.pi - 0.5) * 0.5
    assert head(emb, torch.tensor([0]))[0, 0].item() == pytest.approx(30 * expected, abs=1e-4)


def test_margin_makes_the_target_harder():
    for kind in ("cosface", "arcface"):
        head, emb, t = _head(kind, 45.0)
        assert head(emb, torch.tensor([0]))[0, 0] < 30 * math.cos(t)


def test_margin_loss_returns_loss_and_margin_free_accuracy():
    head, emb, _ = _head("cosface", 20.0)
    loss, acc = margin_loss(head, emb, torch.tensor([0]))
    assert loss.item() > 0 and acc.item() == 1.0  # class 0 is nearest, though the margin costs loss
    _, acc = margin_loss(head, emb, torch.tensor([1]))
    assert acc.item() == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [dict(kind="softmax"), dict(margin=-0.1), dict(scale=0.0), dict(kind="arcface", margin=-1)],
)
def test_bad_head_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        MarginHead(8, 4, **kwargs)
