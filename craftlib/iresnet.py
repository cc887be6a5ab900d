"""insightface's iResNet (``arcface_torch/backbones/iresnet.py``): the backbone family of the
ArcFace/CRAFT papers.

Faithful to arcface_torch: the same layers, initialisation and ``state_dict`` keys (so its released
``model.pt`` files load), and the same mixed-precision split (``fc`` and the feature BatchNorm run
in fp32 under autocast). Two additions for craftlib: ``input_size`` (112 in the field; any multiple
of 16, so CPU tests can use 32 px), and the stem exposed as ``FaceCNN`` exposes it (``conv1``,
``bn1``, ``act1``, ``stem``) so that ``activity`` and
``reactivation`` work on it unchanged. Dilation, groups and ``zero_init_residual`` (unused defaults
upstream) are left out.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import FaceCNN, ModelConfig

LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
"""Blocks per stage, as in arcface_torch."""


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """Residual block BN-conv-BN-PReLU-conv(stride)-BN plus the input (projected when the shape
    changes)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        out += x if self.downsample is None else self.downsample(x)
        return out


def _stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
    """One stage: a strided block with a 1x1 projection, then ``blocks - 1`` plain blocks (every
    stage halves)."""
    downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05)
    )
    return nn.Sequential(
        IBasicBlock(inplanes, planes, 2, downsample),
        *(IBasicBlock(planes, planes) for _ in range(blocks - 1)),
    )


class IResNet(nn.Module):
    """Stem (3x3, 3->64, stride 1, BN, PReLU), four stages to 512 channels, then BN-Dropout-FC-BN to
    the embedding."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        dropout: float = 0.0,
        num_features: int = 512,
        input_size: int = 112,
    ):
        super().__init__()
        if input_size % 16:
            raise ValueError(
                f"input_size must be a multiple of 16 (four stride-2 stages), got {input_size}"
            )
        self.input_size = input_size
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = _stage(64, 64, layers[0])
        self.layer2 = _stage(64, 128, layers[1])
        self.layer3 = _stage(128, 256, layers[2])
        self.layer4 = _stage(256, 512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * (input_size // 16) ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # arcface_torch freezes the embedding BN's scale
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @property
    def act1(self) -> nn.PReLU:
        """``FaceCNN``'s name for the stem activation (a property, so ``state_dict`` keeps
        insightface's keys)."""
        return self.prelu

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 -> BN -> PReLU: the first layer whose filters CRAFT watches."""
        return self.prelu(self.bn1(self.conv1(x)))

    def stem_consumers(self) -> list[nn.Conv2d]:
        """The convolutions that read the stem's channels: the first block's conv (after its BN) and
        projection."""
        return [self.layer1[0].conv1, self.layer1[0].downsample[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        # as arcface_torch's fp16 path: the FC in fp32
        with torch.autocast(x.device.type, enabled=False):
            return self.features(self.fc(x.float()))


def iresnet18(**kw) -> IResNet:
    return IResNet(LAYERS["iresnet18"], **kw)


def iresnet34(**kw) -> IResNet:
    return IResNet(LAYERS["iresnet34"], **kw)


def iresnet50(**kw) -> IResNet:
    return IResNet(LAYERS["iresnet50"], **kw)


def iresnet100(**kw) -> IResNet:
    return IResNet(LAYERS["iresnet100"], **kw)


BACKBONES = ("facecnn",) + tuple(LAYERS)


def build_backbone(name: str, **kw) -> nn.Module:
    """``iresnet18|34|50|100`` (``dropout``, ``num_features``, ``input_size``) or ``facecnn``
    (``ModelConfig`` fields)."""
    if name == "facecnn":
        return FaceCNN(ModelConfig(**kw))
    if name not in LAYERS:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    return IResNet(LAYERS[name], **kw)


def backbone_for(name: str, config: ModelConfig) -> nn.Module:
    """The backbone ``name`` sized by a craftlib ``ModelConfig`` (an iResNet uses its size,
    embedding and dropout)."""
    if name == "facecnn":
        return FaceCNN(config)
    return build_backbone(
        name,
        input_size=config.input_size,
        num_features=config.embedding_dim,
        dropout=config.dropout,
    )


def backbone_name(state_dict: dict) -> str:
    """Which backbone a ``state_dict`` belongs to: ``facecnn``, or the iResNet whose stage depths it
    has."""
    if "layer1.0.conv1.weight" not in state_dict:
        return "facecnn"
    depths = tuple(
        len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{i}.")})
        for i in range(1, 5)
    )
    for name, layers in LAYERS.items():
        if layers == depths:
            return name
    raise ValueError(f"an iResNet with stage depths {depths}, which is none of {tuple(LAYERS)}")


def iresnet_from_state_dict(state_dict: dict) -> IResNet:
    """Rebuild and load an iResNet from its weights alone (depth, embedding size and input size are
    all in them)."""
    fc = state_dict["fc.weight"]
    side = round((fc.shape[1] / 512) ** 0.5)
    model = build_backbone(
        backbone_name(state_dict), num_features=fc.shape[0], input_size=16 * side
    )
    model.load_state_dict(state_dict)
    return model
