"""A small face CNN whose first layer mirrors ArcFace's ``conv1`` (3x3, 3->64, stride 1).

Two optional variants (off by default; with them off the network is bit-for-bit the original):

- ``stem_act="crelu"`` — a **CReLU stem** (Shang et al., ICML 2016): ``conv1`` has half the filters,
  BatchNorm normalises each filter's linear response ``z``, and the activation hands on
  ``cat(relu(z), relu(-z))``, so the stem's output keeps its width (``stem_channels``). A *filter*
  of this stem is one ``conv1`` filter: it owns one BatchNorm channel and two output channels (its
  positive and negative phase, ``c`` and ``c + stem_channels/2``). Why BatchNorm sits *before* the
  split: CReLU is defined on a filter's linear response and the paper's argument for it is that both
  phases of that *one* response are kept (``relu(z) - relu(-z) = z``: nothing is lost). A BatchNorm
  after the split would give the two phases separate scales and shifts, so they would no longer be
  the two phases of one response (that is PVANet's later, different "C.ReLU"); before the split it
  normalises ``z`` itself and keeps the pair exact. It also keeps one γ per filter, so every
  activity score reads a CReLU filter as it reads an ordinary one.
- ``topk < 1`` with ``topk_after=(stages…)`` — **Top-K activation sparsity** (the "emergence of
  shape bias through activation sparsity" paper, NeurIPS 2023): after each listed stage, each
  channel's map keeps its ``K = max(1, floor(topk·H·W))`` largest values by magnitude and zeroes the
  rest. Stages: 0 = the stem's output, 1-3 = the three downsampling stages of ``body``. The gradient
  is the plain gradient of ``mask * x`` with the mask treated as a constant, as in the paper's
  public code (``sparse_hw``): kept positions pass their gradient unchanged, zeroed positions pass
  none (no straight-through estimator).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import evaluating
from .validation import check

STEM_ACTS = ("prelu", "relu", "crelu")
TOPK_STAGES = (0, 1, 2, 3)
_OPTIONAL = {
    "topk": 1.0,
    "topk_after": (),
}  # left out of to_dict at their defaults (fingerprints stay as they were)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture (and so decides whether a checkpoint fits).

    ``stem_act`` is ``"prelu"``, ``"relu"`` or ``"crelu"`` (half as many ``conv1`` filters, both
    phases kept: see the module docstring). ``topk`` is the fraction of each channel map kept after
    the stages in ``topk_after`` (1.0 and ``()``: no Top-K layer).
    """

    input_size: int = 48
    stem_channels: int = 64
    stem_bn: bool = True
    stem_act: str = "prelu"  # "prelu" | "relu" | "crelu"
    widths: tuple[int, int, int] = (32, 64, 128)
    embedding_dim: int = 128
    dropout: float = 0.0
    topk: float = 1.0
    topk_after: tuple[int, ...] = ()

    def __post_init__(self):
        _check(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["topk_after"] = list(self.topk_after)
        for (
            key,
            default,
        ) in _OPTIONAL.items():  # a config without the options reads exactly as before they existed
            if getattr(self, key) == default:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d["topk_after"] = tuple(d.get("topk_after", ()))
        return cls(**d)

    @property
    def crelu(self) -> bool:
        return self.stem_act == "crelu"

    @property
    def conv1_filters(self) -> int:
        """Filters of ``conv1``: ``stem_channels``, or half of it for a CReLU stem."""
        return self.stem_channels // 2 if self.crelu else self.stem_channels


def _check(c: ModelConfig) -> None:
    """Refuse an impossible architecture when the config is made (three stride-2 stages halve the
    input)."""
    check("input_size", c.input_size)
    if c.stem_act not in STEM_ACTS:
        raise ValueError(f"stem_act must be one of {STEM_ACTS}, got {c.stem_act!r}")
    if c.crelu and c.stem_channels % 2:
        raise ValueError(
            f"a CReLU stem needs an even stem_channels (two phases per filter), got "
            f"{c.stem_channels}"
        )
    if not 0.0 < c.topk <= 1.0:
        raise ValueError(f"topk is the fraction of each map kept, in (0, 1]; got {c.topk}")
    stages = tuple(c.topk_after)
    if any(s not in TOPK_STAGES for s in stages) or len(set(stages)) != len(stages):
        raise ValueError(f"topk_after must list distinct stages from {TOPK_STAGES}, got {stages}")
    if (c.topk < 1.0) != bool(stages):
        raise ValueError(
            f"set both topk < 1 and topk_after, or neither (got topk={c.topk}, topk_after={stages})"
        )


class _PReLUGrad(torch.autograd.Function):
    """``F.prelu`` with a backward made of vectorised elementwise ops instead of ATen's scalar CPU
    kernel.

    Why: on the CPU, torch's PReLU backward (``_prelu_kernel_backward``) runs element by element
    with a branch on each element's sign, so its speed depends on the data; on random faces it costs
    twice these ops, on real faces a few percent of a workshop step more (docs/PERFORMANCE.md).
    These ops compute the same products and the same weight-gradient sum in the same order, so the
    gradients are the same numbers (``tests/test_speed_fixes.py``); only the sign of an exact zero
    may differ.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        w = weight.reshape(1, -1, *[1] * (x.dim() - 2)) if weight.numel() > 1 else weight
        pos = torch.ops.aten.threshold_backward(grad, x, 0)  # grad where x > 0, else 0
        neg = grad - pos  # grad where x <= 0, else 0
        grad_x = (neg * w).add_(pos)  # x > 0: grad; else weight * grad
        # autograd's own reduction of ATen's per-element x * grad
        grad_w = neg.mul_(x).sum_to_size(w.shape)
        return grad_x, grad_w.reshape(weight.shape)


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameters, checkpoints and outputs) whose backward runs at elementwise
    speed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _PReLUGrad.apply(x, self.weight)
        return F.prelu(x, self.weight)


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return PReLU(channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "crelu":
        return CReLU()
    raise ValueError(f"stem_act must be one of {STEM_ACTS}, got {kind!r}")


class CReLU(nn.Module):
    """``cat(relu(z), relu(-z))`` along channels: both phases of every input channel."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(z), F.relu(-z)], dim=1)


def topk_mask(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 where an entry is among the ``max(1, floor(fraction·H·W))`` largest |values| of its channel
    map."""
    n, c, h, w = x.shape
    k = max(1, int(fraction * h * w))
    flat = x.detach().reshape(n, c, h * w)
    index = flat.abs().topk(k, dim=2).indices
    return torch.zeros_like(flat).scatter_(2, index, 1.0).reshape(n, c, h, w)


class TopK(nn.Module):
    """Per-channel spatial Top-K by magnitude; gradient flows through the kept entries only (mask
    constant)."""

    def __init__(self, fraction: float):
        super().__init__()
        self.fraction = float(fraction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fraction >= 1.0:
            return x
        return x * topk_mask(x, self.fraction)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction:g}"


class PhaseSplitConv(nn.Module):
    """The first body convolution of a CReLU model, stored as one conv per phase.

    ``forward(cat(p, n)) = pos(p) + neg(n)`` is exactly one convolution over all channels (its
    weight is ``cat(pos.weight, neg.weight, dim=1)``), but each half is indexed by ``conv1`` filter,
    so that re-activation can reset a renewed filter's input weights in *both* phases by filter
    index.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        # initialised as the one conv it stands for
        full = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        half = cin // 2
        self.pos = nn.Conv2d(half, cout, 3, stride, 1, bias=False)
        self.neg = nn.Conv2d(half, cout, 3, stride, 1, bias=False)
        with torch.no_grad():
            self.pos.weight.copy_(full.weight[:, :half])
            self.neg.weight.copy_(full.weight[:, half:])

    @property
    def weight(self) -> torch.Tensor:
        """The equivalent single convolution's weight (read-only view for inspection)."""
        return torch.cat([self.pos.weight, self.neg.weight], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, n = x.chunk(2, dim=1)
        return self.pos(p) + self.neg(n)


def _block(cin: int, cout: int, stride: int, split: bool = False) -> nn.Sequential:
    conv = (
        PhaseSplitConv(cin, cout, stride)
        if split
        else nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    )
    return nn.Sequential(conv, nn.BatchNorm2d(cout), PReLU(cout))


class FaceCNN(nn.Module):
    """ArcFace-style stem, three downsampling stages sized for CPU, then a BN-Linear-BN embedding.

    ``conv1`` / ``bn1`` / ``act1`` are named as in ``arcface_torch``'s iresnet so that the activity
    and re-activation code reads the same on both.
    """

    STAGES = ((0, 1), (1, 3), (3, 5))  # body blocks of stages 1, 2, 3

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = config
        self.config = c
        self.conv1 = nn.Conv2d(3, c.conv1_filters, 3, 1, 1, bias=not c.stem_bn)
        self.bn1 = nn.BatchNorm2d(c.conv1_filters) if c.stem_bn else nn.Identity()
        self.act1 = _act(c.stem_act, c.stem_channels)
        w1, w2, w3 = c.widths
        self.body = nn.Sequential(
            _block(c.stem_channels, w1, 2, split=c.crelu),
            _block(w1, w2, 2),
            _block(w2, w2, 1),
            _block(w2, w3, 2),
            _block(w3, w3, 1),
        )
        side = c.input_size // 8
        self.head = nn.Sequential(
            nn.BatchNorm2d(w3),
            nn.Dropout(c.dropout),
            nn.Flatten(),
            nn.Linear(w3 * side * side, c.embedding_dim),
            nn.BatchNorm1d(c.embedding_dim),
        )
        self.sparsify = nn.ModuleDict({str(s): TopK(c.topk) for s in sorted(c.topk_after)})

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Output of conv1 -> BN -> activation: what the first layer hands the rest of the net.

        For a CReLU stem: ``cat(relu(z), relu(-z))`` of ``z = bn1(conv1(x))`` (``stem_channels``
        wide).
        """
        return self.act1(self.bn1(self.conv1(x)))

    def filter_response(self, x: torch.Tensor) -> torch.Tensor:
        """One map per ``conv1`` filter: what the next layer hears from that filter (activity scores
        use it).

        The stem's output, except on a CReLU stem, where a filter's two phase channels fold back
        into its linear response ``z`` (``relu(z) - relu(-z) = z``): a filter is silent exactly when
        ``z`` is constant, i.e. when both of its phase channels are.
        """
        if self.config.crelu:
            return self.bn1(self.conv1(x))
        return self.stem(x)

    def stem_consumers(self) -> list[nn.Conv2d]:
        """The convolutions that read ``conv1``'s channels (re-activation resets their input
        weights).

        A CReLU model names two, one per phase, each indexed by ``conv1`` filter.
        """
        first = self.body[0][0]
        return [first.pos, first.neg] if isinstance(first, PhaseSplitConv) else [first]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sparsify:
            return self.head(self.body(self.stem(x)))
        x = self._sparse(0, self.stem(x))
        for stage, (start, stop) in enumerate(self.STAGES, start=1):
            for block in self.body[start:stop]:
                x = block(x)
            x = self._sparse(stage, x)
        return self.head(x)

    def _sparse(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        key = str(stage)
        return self.sparsify[key](x) if key in self.sparsify else x

    def up_to(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """The output of ``stage`` (0: the stem) before its Top-K layer: ``forward(x)`` is
        ``from_stage(stage, up_to(stage, x))``, so a Top-K explorer can keep it while K moves."""
        x = self.stem(x)
        for s, (start, stop) in enumerate(self.STAGES[:stage], start=1):
            x = self._sparse(s - 1, x)
            for block in self.body[start:stop]:
                x = block(x)
        return x

    def from_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """The rest of ``forward`` from ``up_to(stage, ...)``'s output: that stage's Top-K layer,
        the stages above, the embedding head."""
        x = self._sparse(stage, x)
        for s, (start, stop) in enumerate(self.STAGES[stage:], start=stage + 1):
            for block in self.body[start:stop]:
                x = block(x)
            x = self._sparse(s, x)
        return self.head(x)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps after stages 0 (stem) to 3, each after its Top-K layer if it has one."""
        outs = [self._sparse(0, self.stem(x))]
        for stage, (start, stop) in enumerate(self.STAGES, start=1):
            y = outs[-1]
            for block in self.body[start:stop]:
                y = block(y)
            outs.append(self._sparse(stage, y))
        return outs


@contextmanager
def topk_at_inference(model: FaceCNN, fraction: float, stages=(2,)) -> Iterator[FaceCNN]:
    """Run a block with Top-K layers (``fraction`` kept) after ``stages`` of ``model``, then restore
    its own.

    The paper's inference-time experiment: a model trained without Top-K, sparsified only when
    tested. ``fraction=1`` removes every Top-K layer meanwhile. The model's config is not changed
    (nothing is saved).
    """
    saved = model.sparsify
    stages = [] if fraction >= 1.0 else sorted(set(stages))
    if any(s not in TOPK_STAGES for s in stages):
        raise ValueError(f"stages must be from {TOPK_STAGES}, got {stages}")
    model.sparsify = nn.ModuleDict({str(s): TopK(fraction) for s in stages})
    try:
        yield model
    finally:
        model.sparsify = saved


def count_params(model: nn.Module) -> int:
    """Trainable parameters (the embedding network only; the margin head is not part of the face
    model)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass, counted by torch's own ``FlopCounterMode`` (FLOPs /
    2)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = input_size or model.config.input_size
    counter = FlopCounterMode(display=False)
    with evaluating(model), torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2
