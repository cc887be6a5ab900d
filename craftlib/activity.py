"""Filter activity: which first-layer filters are *inactive* (weights near zero, or silent outputs).

Every score is relative to a reference so that it is scale-free (BatchNorm makes the absolute scale
of a conv filter meaningless): the strongest filter (``reference="max"``, the paper's reading) or a
high percentile (``reference=95``), so that one outlier filter cannot make all others look dead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .callbacks import Callback
from .runtime import evaluating, to_numpy
from .validation import check

WEIGHT_SCORES = ("max", "l1", "l2")
PROBE_SCORES = ("activation", "silent")
SCORES = WEIGHT_SCORES + ("gamma", "effective") + PROBE_SCORES
SILENT_TAU = 0.01
"""What *silent* means everywhere (detector, records, figures): output spread below 1% of the
loudest channel's."""
SCORE_LABELS = {
    "max": "max |w|",
    "l1": "L1 norm",
    "l2": "L2 norm",
    "gamma": "BN |γ|",
    "effective": "effective filter max |w·γ/σ|",
    "activation": "mean |activation| (ReDo)",
    "silent": "output spread (std after BN + activation)",
}


def filter_norms(weight: torch.Tensor, norm: str = "max") -> np.ndarray:
    """One number per output filter of a conv weight ``out x in x kh x kw``."""
    w = weight.detach().float().flatten(1).abs().cpu()
    if norm == "max":
        return w.amax(1).numpy()
    if norm == "l1":
        return w.sum(1).numpy()
    if norm == "l2":
        return w.pow(2).sum(1).sqrt().numpy()
    raise ValueError(f"norm must be one of {WEIGHT_SCORES}, got {norm!r}")


def relative(values: np.ndarray, reference: str | float = "max") -> np.ndarray:
    """Divide by the strongest value (``"max"``), the layer mean (``"mean"``) or a percentile (a
    number)."""
    values = np.asarray(values, dtype=np.float64)
    if reference == "max":
        ref = values.max()
    elif reference == "mean":
        ref = values.mean()
    elif isinstance(reference, (int, float)) and 0 < reference <= 100:
        ref = np.percentile(values, reference)
    else:
        raise ValueError(
            f"reference must be 'max', 'mean' or a percentile in (0, 100], got {reference!r}"
        )
    return values / ref if ref > 0 else np.zeros_like(values)


def effective_weight(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """The filter as the network sees it after BatchNorm: w * gamma / sqrt(running_var + eps)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight.detach() * scale.reshape(-1, 1, 1, 1)


@torch.no_grad()
def activation_scores(
    stem: Callable, probe: torch.Tensor, owner: nn.Module | None = None, statistic: str = "mean_abs"
) -> np.ndarray:
    """Per channel of ``stem`` (conv -> BN -> activation) on a probe batch: what the next layer
    hears.

    ``mean_abs`` is ReDo's s_i (mean |output|). ``std`` is the spread over faces and positions: a
    channel whose output does not vary carries no signal, whatever its weights — the *silent* test.
    ``owner`` (default: ``stem``) is put in eval mode meanwhile, so BatchNorm uses its running
    statistics and the probe does not change them.
    """
    owner = owner if owner is not None else stem
    if statistic not in ("mean_abs", "std"):
        raise ValueError(f"statistic must be 'mean_abs' or 'std', got {statistic!r}")
    with evaluating(owner):
        out = stem(probe.to(next(owner.parameters()).device))
    # reduced per channel in the output's own precision (a float64 copy of a 112-px probe is
    # gigabytes)
    stat = (
        out.abs().mean(dim=(0, 2, 3))
        if statistic == "mean_abs"
        else out.std(dim=(0, 2, 3), correction=0)
    )
    return to_numpy(stat.double())


def filter_scores(
    conv: nn.Conv2d,
    score: str = "max",
    reference: str | float = "max",
    bn: nn.Module | None = None,
    stem: Callable | None = None,
    probe: torch.Tensor | None = None,
    owner: nn.Module | None = None,
) -> np.ndarray:
    """Relative activity of each filter of ``conv``: low means inactive.

    ``gamma`` and ``effective`` need the BatchNorm that follows; ``activation`` and ``silent`` need
    the stem module and a probe batch; ``activation`` defaults to the layer *mean* as its reference,
    as ReDo does.
    """
    if score in WEIGHT_SCORES:
        raw = filter_norms(conv.weight, score)
    elif score in ("gamma", "effective"):
        if not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(
                f"score {score!r} needs the BatchNorm2d that follows the conv (none given)"
            )
        raw = (
            to_numpy(bn.weight.abs().float())
            if score == "gamma"
            else filter_norms(effective_weight(conv, bn))
        )
    elif score in PROBE_SCORES:
        if stem is None or probe is None:
            raise ValueError(
                f"score {score!r} needs stem= (conv->BN->act module) and probe= (a batch of faces)"
            )
        raw = activation_scores(stem, probe, owner, "mean_abs" if score == "activation" else "std")
        reference = "mean" if reference == "max" and score == "activation" else reference
    else:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return relative(raw, reference)


def model_scores(
    model: nn.Module,
    score: str = "max",
    reference: str | float = "max",
    probe: torch.Tensor | None = None,
) -> np.ndarray:
    """``filter_scores`` of a FaceCNN-like model's first layer (``conv1``, ``bn1``, ``stem``).

    The probe scores listen to ``model.filter_response`` where the model has one (one map per
    ``conv1`` filter: a CReLU stem's two phase channels folded into the filter's response), else to
    ``model.stem``.
    """
    return filter_scores(
        model.conv1,
        score,
        reference,
        bn=getattr(model, "bn1", None),
        stem=stem_response(model),
        probe=probe,
        owner=model,
    )


def stem_response(model: nn.Module) -> Callable:
    """What the probe scores listen to: one output map per ``conv1`` filter."""
    return getattr(model, "filter_response", model.stem)


def check_tau(tau: float) -> float:
    """An activity threshold must be a fraction of the reference: 0 <= tau <= 1."""
    return check("tau", float(tau))


def inactive_mask(scores: np.ndarray, tau: float) -> np.ndarray:
    """True for filters whose relative score is below ``tau``."""
    return np.asarray(scores) < check_tau(tau)


def inactive_fraction(scores: np.ndarray, tau: float) -> float:
    """Share of filters below ``tau``."""
    return float(inactive_mask(scores, tau).mean())


def max_cosine(weight, reference, exclude_self: bool = False) -> np.ndarray:
    """For each filter of ``weight``, its largest |cosine similarity| to any filter of
    ``reference``.

    Near 1: the filter repeats (or negates) a pattern ``reference`` already has; low: a new pattern.
    ``exclude_self`` skips the diagonal when both are the same layer.
    """
    a = torch.as_tensor(to_numpy(weight), dtype=torch.float64).flatten(1)
    b = torch.as_tensor(to_numpy(reference), dtype=torch.float64).flatten(1)
    cos = (
        torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    ).abs()
    if exclude_self:
        if cos.shape[0] != cos.shape[1]:
            raise ValueError("exclude_self needs weight and reference to be the same layer")
        cos.fill_diagonal_(-1.0)
    return cos.max(1).values.numpy()


# ---------------------------------------------------------------------------------------------
# the same scores over training


def snapshot_scores(
    snapshot: dict, score: str = "max", reference: str | float = "max"
) -> np.ndarray:
    """Scores of one ``conv1`` snapshot stored in a training history (weights + BN parameters)."""
    w = torch.tensor(snapshot["weight"])
    if score in WEIGHT_SCORES:
        return relative(filter_norms(w, score), reference)
    if score == "silent":
        if "output_std" not in snapshot:
            raise ValueError(
                "score 'silent' needs the probe measurement (output_std), which this history lacks"
            )
        return relative(np.asarray(snapshot["output_std"]), reference)
    if "gamma" not in snapshot:
        raise ValueError(f"score {score!r} needs BatchNorm parameters, which this history lacks")
    gamma = np.abs(np.asarray(snapshot["gamma"]))
    if score == "gamma":
        return relative(gamma, reference)
    if score == "effective":
        scale = torch.tensor(snapshot["gamma"]) / torch.sqrt(
            torch.tensor(snapshot["running_var"]) + snapshot["eps"]
        )
        return relative(filter_norms(w * scale.reshape(-1, 1, 1, 1)), reference)
    raise ValueError(
        f"score {score!r} cannot be computed from a stored snapshot (it needs a probe batch)"
    )


def timeline(history: list[dict], score: str = "max", reference: str | float = "max") -> np.ndarray:
    """Filter x epoch matrix of scores from a training history (column 0 is the initialisation)."""
    return np.stack([snapshot_scores(h["conv1"], score, reference) for h in history], axis=1)


# ---------------------------------------------------------------------------------------------
# death over time


def renewals(events: list[dict] | None) -> list[dict]:
    """Events that changed filters: the ``none`` arm logs what it detects but re-initialises
    nothing."""
    return [e for e in events or [] if e.get("strategy") != "none" and e.get("filters")]


def event_x(event: dict, xlabel: str) -> float:
    return event.get(xlabel, event["epoch"])


def death_times(
    matrix: np.ndarray, tau: float, events: list[dict] | None = None, x=None, xlabel: str = "epoch"
) -> np.ndarray:
    """Column where each filter's score first drops below τ (``inf``: never).

    With ``events``, a filter renewed at an event counts as dead from then on: it was below τ when
    it was detected, even if the snapshot after the event already shows its new weights.
    """
    below = np.asarray(matrix) < tau
    died = np.where(below.any(1), below.argmax(1), np.inf)
    x = np.arange(below.shape[1]) if x is None else np.asarray(x, dtype=float)
    for event in renewals(events):
        column = int(np.argmin(np.abs(x - event_x(event, xlabel))))
        for f in event.get("filters", []):
            died[f] = min(died[f], column)
    return died


def inactive_over_time(history: list[dict], tau: float, score: str = "max") -> np.ndarray:
    """Share of ``conv1`` filters below ``tau`` at every entry of a training history."""
    return (timeline(history, score) < tau).mean(0)


@dataclass
class LayerReport:
    """Counts for one layer at one threshold, ready for a table."""

    score: str
    tau: float
    inactive: int
    total: int

    @property
    def fraction(self) -> float:
        return self.inactive / self.total

    def __str__(self) -> str:
        return (
            f"{self.inactive}/{self.total} filters ({self.fraction:.0%}) below {self.tau:g} by "
            f"{SCORE_LABELS[self.score]}"
        )


def report(scores: np.ndarray, tau: float, score: str = "max") -> LayerReport:
    mask = inactive_mask(scores, tau)
    return LayerReport(score, tau, int(mask.sum()), len(mask))


class ActivityRecorder(Callback):
    """Record ``conv1`` scores every ``every`` steps: a finer filter x time matrix than the
    per-epoch history."""

    def __init__(
        self,
        every: int = 50,
        score: str = "max",
        reference: str | float = "max",
        probe: torch.Tensor | None = None,
    ):
        self.every, self.score, self.reference, self.probe = (
            every,
            score,
            reference,
            probe,
        )  # probe: for "activation"
        self.steps: list[int] = []
        self.scores: list[np.ndarray] = []

    def on_step_end(self, trainer) -> None:
        if trainer.step % self.every == 0:
            self.steps.append(trainer.step)
            self.scores.append(model_scores(trainer.model, self.score, self.reference, self.probe))

    def matrix(self) -> np.ndarray:
        """Filters x recorded steps."""
        return np.stack(self.scores, axis=1) if self.scores else np.empty((0, 0))


def track(
    trainer,
    steps: int,
    every: int = 10,
    scores: tuple[str, ...] = ("max",),
    probe: torch.Tensor | None = None,
) -> dict[str, tuple[list[int], np.ndarray]]:
    """Train ``steps`` more steps and record ``conv1`` scores every ``every`` steps (and once
    before).

    Returns ``{score: (steps, filters x records matrix)}``, ready for ``viz.score_traces``. The
    recorders are removed again afterwards; ``"activation"`` needs ``probe`` (normalised NCHW
    faces).
    """
    recorders = {s: ActivityRecorder(every, s, probe=probe) for s in scores}
    for s, rec in recorders.items():  # the state before the first step
        rec.steps.append(trainer.step)
        rec.scores.append(model_scores(trainer.model, s, probe=probe))
    trainer.callbacks.extend(recorders.values())
    try:
        trainer.train_steps(steps)
    finally:
        for rec in recorders.values():
            trainer.callbacks.remove(rec)
    return {s: (rec.steps, rec.matrix()) for s, rec in recorders.items()}
