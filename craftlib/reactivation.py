"""Re-activation: give inactive filters new weights, and reset what would undo that.

Strategies (all behind ``new_filters``):
- ``contextual`` (CRAFT, our operationalisation): sample from a Gaussian fitted to the *strong* filters
  at this moment (mean and shrunk covariance of their flattened weights);
- ``perturbed``: a copy of a random strong filter plus noise at the strong filters' per-weight spread;
- ``orthogonal`` (RePr-like): random directions orthogonal to the strong filters' span;
- ``random``: a fresh Kaiming init, the ablation that tells whether *context* matters;
- ``none``: detect and log only (standard training with the same bookkeeping).
Context strategies are rescaled to the strong filters' median L2 norm so the new filter is heard.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .activity import check_tau, model_scores
from .training import Callback

STRATEGIES = ("contextual", "perturbed", "orthogonal", "random", "none")
STRATEGY_LABELS = {"none": "standard training", "random": "random re-init", "contextual": "CRAFT (contextual)",
                   "perturbed": "CRAFT (perturbed copy)", "orthogonal": "orthogonal (RePr-like)"}


class ReactivationWarning(UserWarning):
    """A degenerate case (no or one strong filter, nothing left to orthogonalise against)."""


def _kaiming(n: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``nn.init.kaiming_normal_`` for ``n`` filters of ``fan_in`` weights (gain sqrt(2), fan-in mode)."""
    return torch.randn(n, fan_in, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / fan_in)


def _rescale(new: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    target = torch.quantile(strong.norm(dim=1), 0.5)  # the ordinary median (torch.median takes the lower one)
    return new / new.norm(dim=1, keepdim=True).clamp_min(1e-12) * target


def context_gaussian(strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The "context" ``contextual`` samples from: mean and covariance of the ``k x d`` flattened strong filters.

    With few strong filters (k <= d) the sample covariance is singular, so it is shrunk toward its
    mean variance (0.9 cov + 0.1 var I); one strong filter gives an isotropic covariance.
    """
    strong = strong.detach().to(torch.float64).cpu()
    k, d = strong.shape
    if k == 0:
        raise ValueError("no strong filters: the context is undefined")
    mean = strong.mean(0)
    if k == 1:
        return mean, torch.eye(d, dtype=torch.float64) * strong.var(correction=0).clamp_min(1e-12)  # d may be 1
    cov = torch.cov(strong.T).reshape(d, d)
    shrink = 0.1 * cov.diagonal().mean().clamp_min(1e-12)  # k < d makes cov singular: shrink to full rank
    return mean, 0.9 * cov + shrink * torch.eye(d, dtype=torch.float64)


def new_filters(strategy: str, strong: torch.Tensor, n: int, generator: torch.Generator | None = None,
                match_scale: bool = True) -> torch.Tensor:
    """``n`` new flattened filters (float64, ``n x d``) drawn by ``strategy`` from the ``k x d`` strong ones."""
    if strategy not in STRATEGIES or strategy == "none":
        raise ValueError(f"strategy must be one of {STRATEGIES[:-1]}, got {strategy!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    strong = strong.detach().to(torch.float64).cpu()
    k, d = strong.shape
    if strategy == "random":
        return _kaiming(n, d, g)
    if not torch.isfinite(strong).all():  # fail clearly here, not deep inside a Cholesky or QR
        raise FloatingPointError(f"{strategy}: the strong filters contain NaN or inf; no context to take")
    if k == 0:
        warnings.warn(f"{strategy}: no strong filters to take context from; using a Kaiming init", ReactivationWarning)
        return _kaiming(n, d, g)
    if strategy == "contextual":
        if k == 1:
            warnings.warn("contextual: only one strong filter; sampling isotropically around it", ReactivationWarning)
        mean, cov = context_gaussian(strong)
        chol = torch.linalg.cholesky(cov)
        new = mean + torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
    elif strategy == "perturbed":
        src = strong[torch.randint(k, (n,), generator=g)]
        if k == 1:
            warnings.warn("perturbed: only one strong filter; noise scaled by its mean |w|", ReactivationWarning)
        spread = strong.std(0) if k > 1 else strong.abs().mean().expand(d)
        new = src + torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 * spread
    else:  # orthogonal
        q = torch.linalg.qr(strong.T).Q if k < d else torch.empty(d, 0, dtype=torch.float64)
        if k >= d:
            warnings.warn("orthogonal: strong filters span the whole space; using random directions",
                          ReactivationWarning)
        new = torch.randn(n, d, generator=g, dtype=torch.float64)
        new = new - (new @ q) @ q.T
    return _rescale(new, strong) if match_scale else new


@torch.no_grad()
def clear_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero the optimizer's per-weight state (momentum, Adam moments) for ``rows`` of ``param``."""
    if optimizer is None or param not in optimizer.state:
        return
    for value in optimizer.state[param].values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[rows] = 0


@torch.no_grad()
def reset_batchnorm(bn: nn.Module | None, rows: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Return BatchNorm channels to their initial state: gamma 1, beta 0, running mean 0 and var 1."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        return
    if bn.affine:
        bn.weight[rows] = 1.0
        bn.bias[rows] = 0.0
        clear_optimizer_state(optimizer, bn.weight, rows)
        clear_optimizer_state(optimizer, bn.bias, rows)
    if bn.track_running_stats:
        bn.running_mean[rows] = 0.0
        bn.running_var[rows] = 1.0


@dataclass
class Reactivation:
    """What one call changed: which filters, with which strategy."""

    strategy: str
    filters: list[int]
    total: int
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def reactivate(conv: nn.Conv2d, mask: np.ndarray | torch.Tensor, strategy: str = "contextual",
               bn: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
               generator: torch.Generator | None = None, match_scale: bool | None = None) -> Reactivation:
    """Re-initialise the filters of ``conv`` where ``mask`` is True; leave every other filter bit-for-bit.

    Also resets the following BatchNorm's channels and the optimizer state of exactly those weights,
    otherwise stale momentum and a collapsed gamma push the new filter straight back to zero.
    """
    mask = torch.as_tensor(mask.detach().cpu() if torch.is_tensor(mask) else np.asarray(mask), dtype=torch.bool)
    if mask.shape != (conv.out_channels,):
        raise ValueError(f"mask must have one entry per filter ({conv.out_channels}), got shape {tuple(mask.shape)}")
    rows = mask.nonzero().flatten()
    result = Reactivation(strategy, rows.tolist(), conv.out_channels)
    if strategy == "none" or len(rows) == 0:
        return result
    weight = conv.weight
    flat = weight.detach().flatten(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReactivationWarning)
        new = new_filters(strategy, flat[~mask], len(rows), generator,
                          match_scale if match_scale is not None else strategy != "random")
    for w in caught:
        result.notes.append(str(w.message))
        warnings.warn(w.message, ReactivationWarning, stacklevel=2)
    if not torch.isfinite(new).all():  # never write NaN/inf into a model
        raise FloatingPointError(f"{strategy}: produced non-finite filters; the strong filters may contain NaN")
    weight[rows.to(weight.device)] = new.reshape(len(rows), *weight.shape[1:]).to(weight.device, weight.dtype)
    clear_optimizer_state(optimizer, weight, rows.to(weight.device))
    if conv.bias is not None:
        conv.bias[rows.to(weight.device)] = 0.0
        clear_optimizer_state(optimizer, conv.bias, rows.to(weight.device))
    reset_batchnorm(bn, rows.to(weight.device), optimizer)
    return result


def reactivate_model(model: nn.Module, tau: float = 0.1, strategy: str = "contextual", score: str = "max",
                     reference: str | float = "max", optimizer: torch.optim.Optimizer | None = None,
                     probe: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Reactivation:
    """Detect inactive ``conv1`` filters of a FaceCNN-like model and re-activate them in one call."""
    mask = model_scores(model, score, reference, probe) < check_tau(tau)
    return reactivate(model.conv1, mask, strategy, getattr(model, "bn1", None), optimizer, generator)


class ReactivationCallback(Callback):
    """CRAFT during training: detect inactive ``conv1`` filters and re-activate them on a schedule.

    ``every="epoch"`` acts at the end of epochs ``first_epoch..last_epoch`` (1-based); an integer acts
    every that many steps while ``epoch < last_epoch``. Stopping before the end matters: re-activating
    up to the last epoch leaves new filters no time to settle (and would flatter the final count).
    Each action is appended to ``trainer.events``.
    """

    def __init__(self, strategy: str = "contextual", tau: float = 0.1, score: str = "max",
                 reference: str | float = "max", every: str | int = "epoch", first_epoch: int = 1,
                 last_epoch: int | None = None, seed: int = 0, probe_size: int = 256):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if every != "epoch" and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be 'epoch' or a positive number of steps, got {every!r}")
        self.strategy, self.tau, self.score, self.reference = strategy, check_tau(tau), score, reference
        self.every, self.first_epoch, self.last_epoch = every, first_epoch, last_epoch
        self.generator = torch.Generator().manual_seed(seed)
        self.probe_size, self.probe = probe_size, None

    def on_train_start(self, trainer) -> None:
        if self.last_epoch is None:
            self.last_epoch = trainer.config.epochs - 1
        if self.score == "activation":
            from .training import to_input

            self.probe = to_input(trainer.images[: self.probe_size]).to(trainer.device)

    def _act(self, trainer) -> None:
        result = reactivate_model(trainer.model, self.tau, self.strategy, self.score, self.reference,
                                  trainer.optimizer, self.probe, self.generator)
        trainer.events.append({"epoch": trainer.epoch, "step": trainer.step, "strategy": self.strategy,
                               "filters": result.filters, "total": result.total, "notes": result.notes})

    def on_epoch_end(self, trainer) -> None:
        if self.every == "epoch" and self.first_epoch <= trainer.epoch <= self.last_epoch:
            self._act(trainer)

    def on_step_end(self, trainer) -> None:
        if self.every != "epoch" and trainer.step % self.every == 0 and self.first_epoch - 1 <= trainer.epoch < self.last_epoch:
            self._act(trainer)
