"""Re-activation: give inactive filters new weights, and reset everything that would undo that.

Strategies (all behind ``new_filters``):
- ``contextual`` (CRAFT, our operationalisation): sample from a Gaussian fitted to the *strong*
  filters at this moment (mean and shrunk covariance of their flattened weights);
- ``perturbed``: a copy of a random strong filter plus noise at half the strong filters' per-weight
  spread;
- ``orthogonal`` (RePr-like): orthonormal directions, orthogonal to the leading principal directions
  of the strong filters and to each other;
- ``random``: a fresh Kaiming init at Kaiming's scale (the old ablation: direction *and* scale
  differ);
- ``random_matched``: a random direction at the contextual arm's scale, so "does the context
  matter?" compares directions only;
- ``none``: detect and log only (standard training with the same bookkeeping).
Every strategy but ``random`` is rescaled to the strong filters' median L2 norm so the new filter is
heard.

One object decides a CRAFT run: ``CraftSpec`` (detector, threshold, schedule, strategy, resets; its
defaults are the study's). ``ReactivationCallback(spec)`` runs it in a training loop,
``reactivate_model(model, spec)`` once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from .activity import SCORES, SILENT_TAU, check_tau, model_scores
from .callbacks import Callback
from .runtime import to_numpy
from .validation import check

STRATEGIES = ("contextual", "perturbed", "orthogonal", "random", "random_matched", "none")
STRATEGY_LABELS = {
    "none": "standard training",
    "random": "random re-init (Kaiming scale)",
    "random_matched": "random re-init (matched scale)",
    "contextual": "CRAFT (contextual)",
    "perturbed": "CRAFT (perturbed copy)",
    "orthogonal": "orthogonal (RePr-like)",
}
DOWNSTREAM = ("keep", "rescale", "zero", "reinit")
PRELU_INIT = 0.25  # nn.PReLU's default slope
ORTHOGONAL_ENERGY = (
    0.9  # principal directions kept: those explaining 90% of the strong filters' energy
)


class ReactivationWarning(UserWarning):
    """A degenerate case (no or one strong filter, fewer free directions than new filters)."""


SAMPLERS: dict = {}
"""Strategies added with ``register_strategy`` (a learner's own reading of "context"): name ->
sampler."""


def register_strategy(name: str, sampler, label: str | None = None) -> str:
    """Add a strategy: ``sampler(strong, n, generator)`` returns ``n`` new flattened filters from
    the ``k x d`` strong ones (float64); like the built-in context strategies they are rescaled to
    the strong median norm."""
    if name in STRATEGIES:
        raise ValueError(f"{name!r} is a built-in strategy; choose another name")
    SAMPLERS[name] = sampler
    STRATEGY_LABELS[name] = label or name
    return name


def check_strategy(strategy: str) -> str:
    """The one place a strategy name is validated."""
    if strategy not in STRATEGIES and strategy not in SAMPLERS:
        raise ValueError(
            f"strategy must be one of {STRATEGIES + tuple(SAMPLERS)}, got {strategy!r}"
        )
    return strategy


def check_downstream(mode: str) -> str:
    """The one place a ``downstream`` mode is validated."""
    if mode not in DOWNSTREAM:
        raise ValueError(f"downstream must be one of {DOWNSTREAM}, got {mode!r}")
    return mode


def _kaiming(n: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``nn.init.kaiming_normal_`` for ``n`` filters of ``fan_in`` weights (gain sqrt(2), fan-in
    mode)."""
    return torch.randn(n, fan_in, generator=generator, dtype=torch.float64) * math.sqrt(
        2.0 / fan_in
    )


def _rescale(new: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    # the ordinary median (torch.median takes the lower one)
    target = torch.quantile(strong.norm(dim=1), 0.5)
    return new / new.norm(dim=1, keepdim=True).clamp_min(1e-12) * target


def context_gaussian(strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The "context" ``contextual`` samples from: mean and covariance of the ``k x d`` flattened
    strong filters.

    With few strong filters (k <= d) the sample covariance is singular, so it is shrunk toward its
    mean variance (0.9 cov + 0.1 var I); one strong filter gives an isotropic covariance.
    """
    strong = strong.detach().to(torch.float64).cpu()
    k, d = strong.shape
    if k == 0:
        raise ValueError("no strong filters: the context is undefined")
    mean = strong.mean(0)
    if k == 1:
        # d may be 1
        return mean, torch.eye(d, dtype=torch.float64) * strong.var(correction=0).clamp_min(1e-12)
    cov = torch.cov(strong.T).reshape(d, d)
    # k < d makes cov singular: shrink to full rank
    shrink = 0.1 * cov.diagonal().mean().clamp_min(1e-12)
    return mean, 0.9 * cov + shrink * torch.eye(d, dtype=torch.float64)


def principal_directions(
    strong: torch.Tensor, n_new: int, energy: float = ORTHOGONAL_ENERGY
) -> torch.Tensor:
    """``d x r`` orthonormal leading right-singular directions of the strong filters (RePr's
    "span").

    ``r`` is the fewest directions holding ``energy`` of the filters' squared norm, capped at ``d -
    n_new`` so that ``n_new`` mutually orthogonal filters still fit in what is left.
    """
    _, s, vh = torch.linalg.svd(strong, full_matrices=False)
    share = torch.cumsum(s**2, 0) / (s**2).sum().clamp_min(1e-300)
    r = int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype)).item()) + 1
    return vh[: max(0, min(r, strong.shape[1] - n_new))].T


def orthogonal_filters(
    strong: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[str]]:
    """``n`` unit filters orthogonal to ``principal_directions(strong)`` and to each other, plus
    notes."""
    d = strong.shape[1]
    notes = []
    q = principal_directions(strong, n)
    if n > d:
        notes.append(
            f"orthogonal: {n} new filters but only {d} dimensions; filters beyond the first {d} "
            f"repeat the construction and are orthogonal within groups of {d} only"
        )
    elif q.shape[1] < principal_directions(strong, 0).shape[1]:
        notes.append(
            f"orthogonal: kept {q.shape[1]} principal directions (not more) so that {n} new "
            f"filters fit"
        )
    blocks = []
    for start in range(0, n, d):
        m = min(d, n - start)
        raw = torch.randn(d, m, generator=generator, dtype=torch.float64)
        raw = raw - q @ (q.T @ raw) if n <= d else raw
        blocks.append(torch.linalg.qr(raw).Q.T)
    return torch.cat(blocks), notes


def new_filters(
    strategy: str, strong: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[str]]:
    """``n`` new flattened filters (float64, ``n x d``) drawn by ``strategy`` from the ``k x d``
    strong ones.

    Returns the filters and notes on any degenerate case (also raised as ``ReactivationWarning``).
    """
    if check_strategy(strategy) == "none":
        raise ValueError("strategy 'none' draws no filters")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    strong = strong.detach().to(torch.float64).cpu()
    k, d = strong.shape
    if strategy == "random":
        return _kaiming(n, d, g), []
    if not torch.isfinite(strong).all():  # fail clearly here, not deep inside a Cholesky or QR
        raise FloatingPointError(
            f"{strategy}: the strong filters contain NaN or inf; no context to take"
        )
    notes: list[str] = []
    if k == 0:
        notes.append(f"{strategy}: no strong filters to take context from; used a Kaiming init")
        new = _kaiming(n, d, g)
        return _warn(new, notes)
    if strategy == "contextual":
        if k == 1:
            notes.append("contextual: only one strong filter; sampled isotropically around it")
        mean, cov = context_gaussian(strong)
        new = (
            mean
            + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
        )
    elif strategy == "perturbed":
        src = strong[torch.randint(k, (n,), generator=g)]
        if k == 1:
            notes.append("perturbed: only one strong filter; noise scaled by its mean |w|")
        spread = strong.std(0) if k > 1 else strong.abs().mean().expand(d)
        new = src + torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 * spread
    elif strategy == "random_matched":
        new = torch.randn(n, d, generator=g, dtype=torch.float64)
    elif strategy in SAMPLERS:
        new = torch.as_tensor(SAMPLERS[strategy](strong, n, g), dtype=torch.float64).reshape(n, d)
    else:  # orthogonal
        new, notes = orthogonal_filters(strong, n, g)
    return _warn(_rescale(new, strong), notes)


def _warn(new: torch.Tensor, notes: list[str]) -> tuple[torch.Tensor, list[str]]:
    for note in notes:
        warnings.warn(note, ReactivationWarning, stacklevel=3)
    return new, notes


# ---------------------------------------------------------------------------------------------
# resetting what surrounds a new filter


def surroundings(
    conv: nn.Conv2d,
    bn: nn.Module | None,
    act: nn.Module | None,
    consumers: list[nn.Conv2d],
    downstream: str,
) -> list[tuple[torch.Tensor, int]]:
    """What surrounds a renewed filter of ``conv``: each parameter that holds numbers of its output
    channel, with the dimension that indexes the channel.

    The filter and its bias, its BatchNorm's gamma and beta, and unless ``downstream="keep"`` a
    per-channel activation slope and the input weights of the ``consumers`` (the convolutions that
    read the channel). ``reactivate`` resets these and clears their optimizer state;
    ``federated.forget_renewed`` clears a client's.
    """
    around = [(conv.weight, 0)] + ([(conv.bias, 0)] if conv.bias is not None else [])
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine:
        around += [(bn.weight, 0), (bn.bias, 0)]
    if check_downstream(downstream) == "keep":  # "keep" leaves everything after BatchNorm as it was
        return around
    if isinstance(act, nn.PReLU) and act.weight.numel() > 1:
        around.append((act.weight, 0))
    return around + [(c.weight, 1) for c in consumers]


def stem_parts(
    model: nn.Module,
) -> tuple[nn.Conv2d, nn.Module | None, nn.Module | None, list[nn.Conv2d]]:
    """A FaceCNN-like model's first layer and what surrounds its filters: ``conv1``, ``bn1``,
    ``act1``, consumers."""
    return (
        model.conv1,
        getattr(model, "bn1", None),
        getattr(model, "act1", None),
        stem_consumers(model),
    )


def forget(
    optimizer: torch.optim.Optimizer | None,
    around: list[tuple[torch.Tensor, int]],
    rows,
    reset_step: bool = False,
) -> None:
    """Clear the optimizer's state for channels ``rows`` of every parameter ``around`` them
    (``surroundings``): stale momentum would push a renewed filter straight back to where it
    died."""
    for param, dim in around:
        clear_optimizer_state(optimizer, param, rows, dim=dim, reset_step=reset_step)


@torch.no_grad()
def clear_optimizer_state(
    optimizer: torch.optim.Optimizer | None,
    param: torch.Tensor,
    index,
    dim: int = 0,
    reset_step: bool = False,
) -> None:
    """Zero the optimizer's per-weight state (momentum, Adam moments) for ``index`` along ``dim`` of
    ``param``.

    ``reset_step`` also sets Adam's step counter back to 0 (it is one number per tensor, so the
    whole tensor restarts its bias correction: a fresh moment estimate is not divided by a mature
    one's correction, which would otherwise make the first updates of the new weights ~3x too
    large).
    """
    if optimizer is None or param not in optimizer.state:
        return
    state = optimizer.state[param]
    for key, value in state.items():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.index_fill_(dim, torch.as_tensor(index, device=value.device), 0)
        elif key == "step" and reset_step:
            state[key] = torch.zeros_like(value) if torch.is_tensor(value) else 0


@torch.no_grad()
def reset_batchnorm(bn: nn.Module | None, rows: torch.Tensor) -> None:
    """Return BatchNorm channels to their initial state: gamma 1, beta 0, running mean 0 and var
    1."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        return
    if bn.affine:
        bn.weight[rows] = 1.0
        bn.bias[rows] = 0.0
    if bn.track_running_stats:
        bn.running_mean[rows] = 0.0
        bn.running_var[rows] = 1.0


@torch.no_grad()
def reset_activation(act: nn.Module | None, rows: torch.Tensor) -> None:
    """A per-channel PReLU slope goes back to its initial 0.25 (a slope learnt on a dead channel
    means nothing)."""
    if isinstance(act, nn.PReLU) and act.weight.numel() > 1:
        act.weight[rows] = PRELU_INIT


@torch.no_grad()
def reset_downstream(
    consumers: list[nn.Conv2d],
    rows: torch.Tensor,
    mode: str,
    generator: torch.Generator | None = None,
) -> None:
    """What the next layer does with a renewed channel: its input weights for ``rows`` in every
    consumer.

    ``keep``: unchanged (they decayed while the channel was constant, so the new filter starts
    muted; ``reactivate`` then also leaves the PReLU slope as it was); ``rescale``: each renewed
    input slice scaled to the median norm of the live slices (heard at once); ``zero``: ReDo /
    Continual Backprop's choice (the new unit starts unheard and must earn its way in); ``reinit``:
    fresh Kaiming weights for those input slices.
    """
    if check_downstream(mode) == "keep" or len(rows) == 0:
        return
    for conv in consumers:
        w = conv.weight  # out x in x kh x kw: the renewed channels are input slices w[:, rows]
        if mode == "zero":
            w[:, rows] = 0.0
        elif mode == "reinit":
            fan_in = w[0].numel()
            fresh = torch.randn(
                w.shape[0], len(rows), *w.shape[2:], generator=generator, dtype=torch.float64
            )
            w[:, rows] = (fresh * math.sqrt(2.0 / fan_in)).to(w.dtype).to(w.device)
        else:
            norms = w.detach().transpose(0, 1).flatten(1).norm(dim=1)
            live = torch.ones(len(norms), dtype=torch.bool)
            live[rows.cpu()] = False
            target = (
                torch.quantile(norms[live.to(norms.device)].double(), 0.5)
                if live.any()
                else norms.mean()
            )
            current = norms[rows].clamp_min(1e-12)
            w[:, rows] *= (target / current).to(w.dtype).reshape(1, -1, 1, 1)


@dataclass
class Reactivation:
    """What one call changed: which filters, with which strategy, and any degenerate case met."""

    strategy: str
    filters: list[int]
    total: int
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def reactivate(
    conv: nn.Conv2d,
    mask,
    strategy: str = "contextual",
    bn: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    strong=None,
    act: nn.Module | None = None,
    consumers: list[nn.Conv2d] = (),
    downstream: str = "keep",
    reset_step: bool = False,
) -> Reactivation:
    """Re-initialise the filters of ``conv`` where ``mask`` is True; leave every other filter
    bit-for-bit.

    ``strong`` (default: every filter not in ``mask``) is the context the new filters are drawn
    from. Then the channel's BatchNorm and, unless ``downstream="keep"``, its PReLU slope and its
    input weights in the ``consumers`` are reset, with the optimizer state of all of those
    (``surroundings``): otherwise stale momentum, a collapsed gamma or muted downstream weights push
    the new filter straight back to silence.
    """
    check_downstream(downstream)  # before anything is written
    mask = torch.as_tensor(to_numpy(mask), dtype=torch.bool)
    if mask.shape != (conv.out_channels,):
        raise ValueError(
            f"mask must have one entry per filter ({conv.out_channels}), got shape "
            f"{tuple(mask.shape)}"
        )
    strong = (
        ~mask if strong is None else torch.as_tensor(to_numpy(strong), dtype=torch.bool) & ~mask
    )
    rows = mask.nonzero().flatten()
    result = Reactivation(check_strategy(strategy), rows.tolist(), conv.out_channels)
    if strategy == "none" or len(rows) == 0:
        return result
    weight = conv.weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReactivationWarning)
        new, result.notes = new_filters(
            strategy, weight.detach().flatten(1)[strong], len(rows), generator
        )
    for note in result.notes:
        warnings.warn(note, ReactivationWarning, stacklevel=2)
    if not torch.isfinite(new).all():  # never write NaN/inf into a model
        raise FloatingPointError(
            f"{strategy}: produced non-finite filters; the strong filters may contain NaN"
        )
    rows = rows.to(weight.device)
    weight[rows] = new.reshape(len(rows), *weight.shape[1:]).to(weight.device, weight.dtype)
    if conv.bias is not None:
        conv.bias[rows] = 0.0
    reset_batchnorm(bn, rows)
    # "keep" leaves everything after BatchNorm as it was (the first release)
    if downstream != "keep":
        reset_activation(act, rows)
        reset_downstream(list(consumers), rows, downstream, generator)
    forget(optimizer, surroundings(conv, bn, act, consumers, downstream), rows, reset_step)
    return result


def strong_mask(scores: np.ndarray, inactive: np.ndarray, quantile: float = 0.0) -> np.ndarray:
    """The context: filters not inactive whose score is at or above the ``quantile`` of all scores.

    ``quantile=0`` is "every filter above τ" (the first reading); 0.5 keeps the stronger half, so
    near-dead filters just above τ do not pull the context toward zero.
    """
    check("strong_quantile", quantile)
    return ~np.asarray(inactive) & (np.asarray(scores) >= np.quantile(scores, quantile))


def stem_consumers(model: nn.Module) -> list[nn.Conv2d]:
    """The convolutions that read ``conv1``'s channels (a model names them with
    ``stem_consumers()``)."""
    return list(model.stem_consumers()) if hasattr(model, "stem_consumers") else []


# ---------------------------------------------------------------------------------------------
# one CRAFT run: its spec, one call, the callback


@dataclass(frozen=True)
class CraftSpec:
    """Everything that decides what CRAFT does in a run: detector, threshold, schedule, strategy,
    resets.

    The defaults are the study's CRAFT, defined here and nowhere else. ``score="silent"`` detects by
    what the network hears (a channel whose output no longer varies on a fixed probe batch);
    ``score="max"`` is the paper's reading (max |w| relative to the strongest filter).
    ``last_epoch=None`` stops re-activating 1/3 before the end. ``strong_quantile`` picks the
    context (filters at or above that quantile of the scores),
    ``downstream`` what the next layer's input weights for a renewed channel become, ``reset_step``
    whether Adam's step counter restarts. Every field is checked here, once, when the spec is made.
    """

    strategy: str = "contextual"
    score: str = "silent"
    tau: float = SILENT_TAU
    reference: str | float = "max"
    every: str | int = "epoch"
    first_epoch: int = 1
    last_epoch: int | None = None
    strong_quantile: float = 0.5
    downstream: str = "zero"
    reset_step: bool = True

    def __post_init__(self):
        check_strategy(self.strategy)
        check_tau(self.tau)
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        check_downstream(self.downstream)
        check("strong_quantile", self.strong_quantile)
        check("first_epoch", self.first_epoch)
        if (
            check("last_epoch", self.last_epoch, optional=True) is not None
            and self.last_epoch < self.first_epoch
        ):
            raise ValueError(
                f"last_epoch must be >= first_epoch ({self.first_epoch}) so that CRAFT acts at "
                f"all, "
                f"got {self.last_epoch}"
            )
        if self.every != "epoch":
            check("every", self.every)

    def but(self, **changes) -> "CraftSpec":
        return replace(self, **changes)

    def stop_epoch(self, epochs: int) -> int:
        return self.last_epoch if self.last_epoch is not None else (2 * epochs) // 3

    def callback(self, seed: int, epochs: int, cls: type | None = None) -> "ReactivationCallback":
        """The training callback for this spec in a run of ``epochs`` at ``seed``: the one place
        craftlib builds one (``cls``: a subclass, e.g. ``distributed.SyncedReactivation``; default
        ``ReactivationCallback``)."""
        return (cls or ReactivationCallback)(self, seed=seed, epochs=epochs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CraftSpec":
        return cls(**d)


PAPER_READING = CraftSpec(
    score="max", tau=0.1, strong_quantile=0.0, downstream="keep", reset_step=False
)
"""The first release's CRAFT: weight detector at τ = 0.1, every filter above τ as context, no
downstream reset."""


def _spec(spec: CraftSpec) -> CraftSpec:
    if not isinstance(spec, CraftSpec):
        raise TypeError(
            f"expected a CraftSpec, e.g. CraftSpec(tau=0.05) or PAPER_READING, got {spec!r}"
        )
    return spec


def reactivate_model(
    model: nn.Module,
    spec: CraftSpec,
    optimizer: torch.optim.Optimizer | None = None,
    probe: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    scores: np.ndarray | None = None,
) -> Reactivation:
    """Detect inactive ``conv1`` filters of a FaceCNN-like model by ``spec`` and re-activate them in
    one call.

    ``probe`` is the fixed batch a probe detector (``silent``) listens to. ``scores`` (default:
    computed here by ``spec.score``) lets a caller detect on numbers it has agreed on, e.g. the same
    scores on every rank of a data-parallel run.
    """
    spec = _spec(spec)
    scores = (
        model_scores(model, spec.score, spec.reference, probe)
        if scores is None
        else np.asarray(scores)
    )
    mask = scores < spec.tau
    conv, bn, act, consumers = stem_parts(model)
    if spec.downstream != "keep" and not consumers:
        raise ValueError(
            f"downstream={spec.downstream!r} needs model.stem_consumers(); "
            f"{type(model).__name__} has none"
        )
    strong = strong_mask(scores, mask, spec.strong_quantile)
    return reactivate(
        conv,
        mask,
        spec.strategy,
        bn,
        optimizer,
        generator,
        strong,
        act,
        consumers,
        spec.downstream,
        spec.reset_step,
    )


def event_record(trainer, result: Reactivation, **extra) -> dict:
    """The entry a re-activation leaves in ``trainer.events`` (the callback and the lab write the
    same)."""
    event = {
        "epoch": trainer.epoch,
        "step": trainer.step,
        "strategy": result.strategy,
        "filters": result.filters,
        "total": result.total,
        "notes": result.notes,
        **extra,
    }
    trainer.events.append(event)
    return event


class ReactivationCallback(Callback):
    """CRAFT during training: detect inactive ``conv1`` filters and re-activate them on ``spec``'s
    schedule.

    ``ReactivationCallback(CraftSpec())`` runs the study's CRAFT; ``seed`` seeds the generator the
    new filters are drawn from. A spec without ``last_epoch`` stops at ``spec.stop_epoch`` of the
    run's length: ``epochs``, or the trainer's at the start of training. ``every="epoch"`` acts at
    the end of epochs ``first_epoch..last_epoch`` (1-based); an integer acts every that many steps
    while ``epoch < last_epoch``. Each action is appended to ``trainer.events``.
    """

    def __init__(self, spec: CraftSpec, seed: int = 0, epochs: int | None = None):
        self.spec = _spec(spec)
        self.generator = torch.Generator().manual_seed(seed)
        # the spec's fields as plain attributes with last_epoch resolved: the hooks read them,
        # runs._run_key hashes them
        vars(self).update(
            spec.to_dict(),
            last_epoch=spec.last_epoch if epochs is None else spec.stop_epoch(epochs),
        )

    def on_train_start(self, trainer) -> None:
        if self.last_epoch is None:
            self.last_epoch = self.spec.stop_epoch(trainer.config.epochs)

    def state_dict(self) -> dict:
        """The generator the new filters are drawn from: a resumed CRAFT run draws what the straight
        one would."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def scores(self, trainer) -> np.ndarray:
        """The detector's numbers for the current model (a subclass may agree on them across
        processes)."""
        return model_scores(trainer.model, self.spec.score, self.spec.reference, trainer.probe)

    def _act(self, trainer) -> None:
        result = reactivate_model(
            trainer.model,
            self.spec,
            trainer.optimizer,
            generator=self.generator,
            scores=self.scores(trainer),
        )
        event_record(trainer, result, score=self.spec.score)

    def on_epoch_end(self, trainer) -> None:
        if self.every == "epoch" and self.first_epoch <= trainer.epoch <= self.last_epoch:
            self._act(trainer)

    def on_step_end(self, trainer) -> None:
        if (
            self.every != "epoch"
            and trainer.step % self.every == 0
            and self.first_epoch - 1 <= trainer.epoch < self.last_epoch
        ):
            self._act(trainer)
