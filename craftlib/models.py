"""A small face CNN whose first layer mirrors ArcFace's ``conv1`` (3x3, 3->64, stride 1)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture (and so decides whether a checkpoint fits)."""

    input_size: int = 48
    stem_channels: int = 64
    stem_bn: bool = True
    stem_act: str = "prelu"  # "prelu" | "relu"
    widths: tuple[int, int, int] = (32, 64, 128)
    embedding_dim: int = 128
    dropout: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"stem_act must be 'prelu' or 'relu', got {kind!r}")


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class FaceCNN(nn.Module):
    """ArcFace-style stem, three downsampling stages sized for CPU, then a BN-Linear-BN embedding.

    ``conv1`` / ``bn1`` / ``act1`` are named as in ``arcface_torch``'s iresnet so that the activity and
    re-activation code reads the same on both.
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = config
        if c.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {c.input_size}")
        self.config = c
        self.conv1 = nn.Conv2d(3, c.stem_channels, 3, 1, 1, bias=not c.stem_bn)
        self.bn1 = nn.BatchNorm2d(c.stem_channels) if c.stem_bn else nn.Identity()
        self.act1 = _act(c.stem_act, c.stem_channels)
        w1, w2, w3 = c.widths
        self.body = nn.Sequential(
            _block(c.stem_channels, w1, 2),
            _block(w1, w2, 2), _block(w2, w2, 1),
            _block(w2, w3, 2), _block(w3, w3, 1),
        )
        side = c.input_size // 8
        self.head = nn.Sequential(
            nn.BatchNorm2d(w3), nn.Dropout(c.dropout), nn.Flatten(),
            nn.Linear(w3 * side * side, c.embedding_dim), nn.BatchNorm1d(c.embedding_dim),
        )

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Output of conv1 -> BN -> activation: what the first layer hands the rest of the net."""
        return self.act1(self.bn1(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


def count_macs(model: FaceCNN) -> int:
    """Multiply-accumulates of one forward pass (convolutions and linear layers)."""
    total, hooks = 0, []

    def conv_hook(m, _, out):
        nonlocal total
        total += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, _, out):
        nonlocal total
        total += out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        s = model.config.input_size
        model(torch.zeros(1, 3, s, s))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total
