"""Margin-softmax heads: CosFace and ArcFace as special cases of ``arcface_torch``'s combined
margin.

logit_target = s * (cos(m1*theta + m2) - m3); CosFace is (1, 0, m), ArcFace is (1, m, 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MARGINS = {"cosface": (1.0, 0.0, 0.35), "arcface": (1.0, 0.5, 0.0)}


class MarginHead(nn.Module):
    """Normalised class centres and a margin on the target logit; returns the scaled logits."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        kind: str = "cosface",
        scale: float = 30.0,
        margin: float | None = None,
    ):
        super().__init__()
        if kind not in MARGINS:
            raise ValueError(f"kind must be one of {sorted(MARGINS)}, got {kind!r}")
        m1, m2, m3 = MARGINS[kind]
        if margin is not None:
            m2, m3 = (margin, 0.0) if kind == "arcface" else (0.0, margin)
        if scale <= 0 or m2 < 0 or m3 < 0:
            raise ValueError(
                f"scale must be > 0 and margin >= 0, got scale={scale}, margin={margin}"
            )
        self.kind, self.scale, self.m1, self.m2, self.m3 = kind, scale, m1, m2, m3
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim).normal_(0, 0.01))

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(emb), F.normalize(self.weight))

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(emb).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        # additive angular margin, kept monotonic past theta + m2 > pi (as insightface)
        if self.m2 > 0:
            theta = target.acos()
            shifted = torch.cos(self.m1 * theta + self.m2)
            fallback = target - math.sin(math.pi - self.m2) * self.m2
            target_m = torch.where(theta + self.m2 < math.pi, shifted, fallback)
        else:
            target_m = target
        target_m = target_m - self.m3
        logits = cos.scatter(1, labels[:, None], target_m)
        return logits * self.scale


def margin_loss(
    head: MarginHead, emb: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the margin logits, and the batch's (margin-free) top-1 accuracy."""
    logits = head(emb, labels)
    with torch.no_grad():
        acc = (head.cosine(emb).argmax(1) == labels).float().mean()
    return F.cross_entropy(logits, labels), acc
