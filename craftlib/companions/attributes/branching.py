"""Attribute heads that branch off a face CNN's trunk at chosen depths, fine-tuned with the
verification loss.

After Baumgartner & Culpepper's "deep architectures for face attributes": one identity-trained trunk
serves every attribute, and each attribute's head reads the trunk where that attribute's information
lives. ``BranchingNet`` runs the trunk **once** per batch, keeps the output of every stage a head
needs, and hands each head its stage; ``finetune`` trains trunk, margin head and attribute heads
jointly; ``macs_table`` prices one shared trunk against separate networks.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from craftlib.data import FaceSet, to_input
from craftlib.losses import MarginHead, margin_loss
from craftlib.models import FaceCNN, count_macs
from craftlib.runtime import evaluating, seed_everything

from .labels import UNKNOWN

STAGES = ("stem", "block1", "block2", "block3", "block4", "block5", "embedding")
"""Every stage of ``FaceCNN``: the stem (conv1 -> BN -> PReLU), the five body blocks, the
embedding."""


def stage_modules(model: FaceCNN) -> dict[str, nn.Module]:
    """Stage name -> the module whose output is that stage (``act1``, ``body[i]``, ``head``)."""
    mods: dict[str, nn.Module] = {"stem": model.act1}
    mods.update({f"block{i + 1}": block for i, block in enumerate(model.body)})
    mods["embedding"] = model.head
    return mods


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return stage


def trunk_outputs(
    trunk: FaceCNN, x: torch.Tensor, until: str = "embedding"
) -> dict[str, torch.Tensor]:
    """Every stage's output up to ``until``, computing each stage once (the trunk's own forward,
    unrolled)."""
    stop = STAGES.index(check_stage(until))
    out = {"stem": trunk.stem(x)}
    h = out["stem"]
    for i, block in enumerate(trunk.body, start=1):
        if i > stop:
            return out
        h = out[f"block{i}"] = block(h)
    if stop == len(STAGES) - 1:
        out["embedding"] = trunk.head(h)
    return out


class AttributeHead(nn.Module):
    """Pool a stage's map to ``pool`` x ``pool`` cells, standardise (BatchNorm) and read one
    logit."""

    def __init__(self, features: int, pool: int = 2):
        super().__init__()
        self.pool = pool
        self.norm = nn.BatchNorm1d(features)
        self.linear = nn.Linear(features, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim == 4:
            h = F.adaptive_avg_pool2d(h, self.pool)
        return self.linear(self.norm(h.flatten(1))).squeeze(1)


def stage_dims(trunk: FaceCNN, pool: int = 2) -> dict[str, int]:
    """Features each stage hands a head (channels x pool x pool for maps)."""
    size = trunk.config.input_size
    with evaluating(trunk), torch.no_grad():
        outs = trunk_outputs(trunk, torch.zeros(1, 3, size, size))
    return {s: (o.shape[1] * pool * pool if o.ndim == 4 else o.shape[1]) for s, o in outs.items()}


class BranchingNet(nn.Module):
    """A face CNN trunk plus one attribute head per attribute, each branching off at its stage.

    ``forward(x)`` returns ``(embedding, {attribute: logit})``; the trunk runs once, whatever the
    number of heads, and only as deep as needed (``embedding=False`` stops at the deepest branch).
    """

    def __init__(self, trunk: FaceCNN, branches: dict[str, str], pool: int = 2):
        super().__init__()
        if not branches:
            raise ValueError("a branching net needs at least one attribute head")
        self.trunk, self.branches, self.pool = (
            trunk,
            {a: check_stage(s) for a, s in branches.items()},
            pool,
        )
        dims = stage_dims(trunk, pool)
        self.heads = nn.ModuleDict(
            {a: AttributeHead(dims[s], pool) for a, s in self.branches.items()}
        )

    def deepest(self) -> str:
        return max(self.branches.values(), key=STAGES.index)

    def forward(
        self, x: torch.Tensor, embedding: bool = True
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        outs = trunk_outputs(self.trunk, x, "embedding" if embedding else self.deepest())
        return outs.get("embedding"), {a: self.heads[a](outs[s]) for a, s in self.branches.items()}


class TrunkTo(nn.Module):
    """The trunk up to one stage, as a network of its own (what a separate attribute network would
    run)."""

    def __init__(self, trunk: FaceCNN, stage: str):
        super().__init__()
        self.trunk, self.stage = trunk, check_stage(stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return trunk_outputs(self.trunk, x, self.stage)[self.stage]


def macs_table(trunk: FaceCNN, branches: dict[str, str], pool: int = 2) -> dict:
    """Multiply-accumulates per face (``models.count_macs``, torch's FlopCounterMode) of three
    designs:

    * ``shared``: one trunk computing the embedding and every head at its branch point;
    * ``separate_truncated``: the face network plus, per attribute, its own copy of the trunk up to
      its branch point and its head (the best a set of single-attribute networks of this shape could
      do);
    * ``separate_full``: the face network plus one whole network per attribute.
    """
    size = trunk.config.input_size
    full = count_macs(trunk, size)
    net = BranchingNet(trunk, branches, pool)
    dims = stage_dims(trunk, pool)
    head = {a: count_macs(_HeadOnly(net.heads[a], dims[s]), size) for a, s in branches.items()}
    upto = {s: count_macs(TrunkTo(trunk, s), size) for s in set(branches.values())}
    shared = count_macs(net, size)
    truncated = full + sum(upto[s] + head[a] for a, s in branches.items())
    full_each = full * (1 + len(branches)) + sum(head.values())
    return {
        "input_size": size,
        "trunk": full,
        "heads": head,
        "trunk_to_stage": upto,
        "shared": shared,
        "separate_truncated": truncated,
        "separate_full": full_each,
        "attributes": len(branches),
    }


class _HeadOnly(nn.Module):
    """A head fed by a zero feature vector of the right size, so ``count_macs`` can count it
    alone."""

    def __init__(self, head: AttributeHead, features: int):
        super().__init__()
        self.head, self.features = head, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.linear(torch.zeros(x.shape[0], self.features))


# --------------------------------------------------------------------------------------------
# joint fine-tuning


@dataclass(frozen=True)
class FinetuneConfig:
    """Joint fine-tuning: identity loss (the trunk's margin head) + ``attribute_weight`` x attribute
    losses.

    ``attribute_weight=0`` is the control: the same extra training without attributes. Gentle by
    default (lr 0.01, weight decay 5e-4 off BatchNorm) so that fine-tuning does not restart filter
    death.
    """

    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.01
    head_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    attribute_weight: float = 1.0
    flip: bool = True
    seed: int = 0
    max_steps: int | None = None  # stop early (FAST mode, tests)

    def to_dict(self) -> dict:
        return asdict(self)


def _pos_weight(y: np.ndarray) -> torch.Tensor:
    """Per attribute n_negative / n_positive among labelled faces: balances each loss like balanced
    accuracy."""
    pos = (y == 1).sum(0).astype(float)
    neg = (y == 0).sum(0).astype(float)
    return torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)


def finetune(
    net: BranchingNet,
    margin_head: MarginHead,
    data: FaceSet,
    y: np.ndarray,
    config: FinetuneConfig = FinetuneConfig(),
    log=None,
) -> list[dict]:
    """Train trunk, margin head and attribute heads together on ``data``; ``y`` holds one column per
    head (in ``net.branches`` order), ``UNKNOWN`` where a face has no label (left out of that head's
    loss). Returns one history row per epoch (losses, seconds)."""
    names = list(net.branches)
    if y.shape != (len(data.images), len(names)):
        raise ValueError(
            f"y is {y.shape}, expected ({len(data.images)}, {len(names)}) for heads {names}"
        )
    seed_everything(config.seed)
    device = next(net.parameters()).device
    trunk_params = list(net.trunk.parameters()) + list(margin_head.parameters())
    decay = [p for p in trunk_params if p.ndim > 1]
    no_decay = [p for p in trunk_params if p.ndim <= 1]
    opt = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": list(net.heads.parameters()), "weight_decay": 0.0, "lr": config.head_lr},
        ],
        lr=config.lr,
        momentum=config.momentum,
    )
    steps_per_epoch = max(1, len(data.images) // config.batch_size)
    total = (
        steps_per_epoch * config.epochs
        if config.max_steps is None
        else min(config.max_steps, steps_per_epoch * config.epochs)
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total))
    )
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    targets = torch.from_numpy(y.astype(np.float32))
    known = torch.from_numpy(y != UNKNOWN)
    pos_weight = _pos_weight(y).to(device)
    history, step = [], 0
    net.train()
    margin_head.train()
    for epoch in range(config.epochs):
        g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order, flips = (
            torch.randperm(len(labels), generator=g),
            torch.rand(len(labels), generator=g) < 0.5,
        )
        start, id_losses, attr_losses = time.perf_counter(), [], []
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            x = to_input(images[idx])
            if config.flip:
                x = torch.where(flips[idx, None, None, None], x.flip(3), x)
            x = x.to(device)
            emb, logits = net(x)
            id_loss, _ = margin_loss(margin_head, emb, labels[idx].to(device))
            t, m = targets[idx].to(device), known[idx].to(device)
            per = torch.stack(
                [
                    F.binary_cross_entropy_with_logits(
                        logits[a], t[:, j], reduction="none", pos_weight=pos_weight[j]
                    )
                    for j, a in enumerate(names)
                ],
                1,
            )
            attr_loss = (per * m).sum() / m.sum().clamp(min=1)
            loss = id_loss + config.attribute_weight * attr_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"fine-tuning loss became {loss.item()} at step {step}: lower lr ({config.lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            id_losses.append(id_loss.item())
            attr_losses.append(attr_loss.item())
        row = {
            "epoch": epoch + 1,
            "step": step,
            "identity_loss": float(np.mean(id_losses)) if id_losses else math.nan,
            "attribute_loss": float(np.mean(attr_losses)) if attr_losses else math.nan,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        if log is not None:
            log(row)
        if step >= total:
            break
    net.eval()
    return history


@torch.no_grad()
def predict(net: BranchingNet, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Each head's logit for every face (eval mode; the trunk stops at the deepest branch)."""
    out: dict[str, list[np.ndarray]] = {a: [] for a in net.branches}
    device = next(net.parameters()).device
    with evaluating(net):
        for i in range(0, len(images), batch_size):
            _, logits = net(
                to_input(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))).to(
                    device
                ),
                embedding=False,
            )
            for a, v in logits.items():
                out[a].append(v.float().cpu().numpy())
    return {a: np.concatenate(v) for a, v in out.items()}


def margin_head_from(ckpt: dict) -> MarginHead:
    """The trained margin head stored in a training checkpoint (``Trainer.save``), to keep the
    identity loss warm."""
    cfg = ckpt["config"]
    head = MarginHead(
        cfg["model"]["embedding_dim"],
        ckpt["num_classes"],
        cfg.get("head", "cosface"),
        cfg.get("scale", 30.0),
        cfg.get("margin"),
    )
    head.load_state_dict(ckpt["head"])
    return head
