"""Why filters die, as a race you can simulate: weight decay against the gradient a channel
receives.

Notebook 02 builds the intuition here before any real training. One first-layer channel is followed
by BatchNorm, so two numbers decide its fate:

- its BatchNorm scale ``γ``: weight decay pulls it toward 0 every step; the task pushes it back up
  with a gradient of size ``grad`` (how much the network needs this channel). With plain SGD, γ
  settles where the two balance, ``grad / wd``;
- its filter ``w`` (27 weights): BatchNorm makes the output independent of ``‖w‖``, so the task
  gradient on ``w`` is orthogonal to ``w``, proportional to ``γ`` (the channel's volume) and to ``1
  / ‖w‖``. An orthogonal step *lengthens* ``w``; decay shortens it. While γ is held up, ``‖w‖``
  settles too; once γ has lost the race, no gradient reaches ``w`` and it follows the pure decay
  curve.

A gradient-free weight under SGD shrinks by ``(1 − lr·wd)`` per step; with momentum ``m`` the
same decay term is accumulated ~``1 / (1 − m)`` times, so it shrinks ~10× faster at ``m = 0.9``
(``momentum_decay``, the recurrence ``survival.decay_curve`` follows under a real schedule).
Heavy momentum overshoots: γ can swing below τ, even through 0 (the channel's sign flips), and come
back. So the verdict reads the settled state (``Race.winner``), never a momentary dip, and the plot
draws |γ| with the stretches where γ < 0 marked. Everything here is a toy with a constant learning
rate: plain NumPy, deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DIM = 27  # weights of one 3x3 RGB filter
FILTER_GAIN = 15.0
"""The filter's task gradient is ``FILTER_GAIN · grad · γ / ‖w‖``: it sums over every position of
every face, so it is larger than γ's; 15 keeps a well-used channel's filter near its starting length
at the workshop's lr 0.1, wd 1e-2, momentum 0.9."""


def pure_decay(lr: float, wd: float, steps: int) -> np.ndarray:
    """``(1 − lr·wd)ⁿ`` for n = 0..steps: plain SGD's shrink factor for a weight with no task
    gradient."""
    _check(lr, wd, 0.0, steps)
    return (1.0 - lr * wd) ** np.arange(steps + 1, dtype=float)


def momentum_decay(lr: float, wd: float, momentum: float, steps: int) -> np.ndarray:
    """The same weight under SGD with momentum: ``v ← m·v + wd·w; w ← w − lr·v`` from ``w = 1, v =
    0``."""
    _check(lr, wd, momentum, steps)
    out, w, v = np.empty(steps + 1), 1.0, 0.0
    out[0] = 1.0
    for n in range(1, steps + 1):
        v = momentum * v + wd * w
        w -= lr * v
        out[n] = w
    return out


def half_life(lr: float, wd: float, momentum: float = 0.0) -> float:
    """Steps until a gradient-free weight has halved (momentum counted as its ``1 / (1 − m)`` gain).

    With heavy momentum (``(1 + m − lr·wd)² < 4m``) the weight swings through 0 instead: what halves
    is its envelope, ``√m`` per step, however small ``lr·wd`` is.
    """
    _check(lr, wd, momentum, 1)
    if momentum > 0 and (1 + momentum - lr * wd) ** 2 < 4 * momentum:
        return math.log(2) / (-0.5 * math.log(momentum))
    rate = lr * wd / (1.0 - momentum)
    return math.inf if rate <= 0 else (math.log(2) / -math.log1p(-rate) if rate < 1 else 1.0)


@dataclass
class Race:
    """One simulated channel: γ and ‖w‖ at every step (both start at 1), and the decay curves to
    compare."""

    lr: float
    wd: float
    momentum: float
    grad: float
    tau: float
    steps: np.ndarray
    gamma: np.ndarray
    norm: np.ndarray
    decay: np.ndarray  # (1 − lr·wd)ⁿ
    decay_momentum: np.ndarray  # the gradient-free path with momentum

    @property
    def equilibrium(self) -> float:
        """Where γ settles: the task's push balances decay's pull (``grad / wd``; infinite without
        decay)."""
        return self.grad / self.wd if self.wd > 0 else math.inf

    @property
    def volume(self) -> np.ndarray:
        """|γ|, the channel's volume: heavy momentum can swing γ through 0, which flips the
        channel's sign but silences it only while |γ| is small."""
        return np.abs(self.gamma)

    @property
    def tail(self) -> np.ndarray:
        """|γ| over the last tenth of the steps: where the verdict reads the settled state."""
        return self.volume[-max(1, len(self.steps) // 10) :]

    @property
    def settled(self) -> bool:
        """γ has stopped moving: over the last tenth it stays within 10% of its journey from 1 to
        ``grad / wd``."""
        if not math.isfinite(self.equilibrium):
            return False
        tail = self.gamma[-len(self.tail) :]
        return float(np.abs(tail - self.equilibrium).max()) <= 0.1 * max(
            abs(1 - self.equilibrium), self.tau
        )

    @property
    def first_dip(self) -> int | None:
        """First step at which |γ| is below τ (perhaps only for a moment), or None."""
        below = np.flatnonzero(self.volume < self.tau)
        return int(self.steps[below[0]]) if below.size else None

    @property
    def winner(self) -> str | None:
        """``"task"`` or ``"decay"`` once the run shows who wins for good, None while momentum still
        swings γ.

        γ heads for ``grad / wd`` (exact for this constant-rate toy): the task wins when that is ≥ τ
        and γ never dipped below τ or has settled above it; decay wins when it is < τ and |γ| stays
        below τ for the last tenth of the run, settled or still falling.
        """
        if self.equilibrium >= self.tau:
            return (
                "task"
                if self.first_dip is None or (self.settled and self.tail.min() >= self.tau)
                else None
            )
        falling = self.first_dip is not None and np.all(np.diff(self.gamma[self.first_dip :]) <= 0)
        return "decay" if self.tail.max() < self.tau and (self.settled or falling) else None

    @property
    def survives(self) -> bool:
        return self.winner == "task"

    @property
    def silent_step(self) -> int | None:
        """When decay wins: the step from which |γ| stays below τ (a dip that recovers is not a
        death)."""
        if self.winner != "decay":
            return None
        loud = np.flatnonzero(self.volume >= self.tau)
        return int(self.steps[loud[-1] + 1]) if loud.size else 0

    def verdict(self) -> str:
        """The race in one sentence: who wins in the settled state, when, and where ‖w‖ ends against
        a gradient-free weight (whose size is given: under heavy momentum it swings through 0)."""
        free = self.decay_momentum
        size = f"{abs(free[-1]):.2g}" + (
            " in size, swinging through 0" if np.any(free < -1e-12) else ""
        )
        target, now = f"grad/wd = {self.equilibrium:.2g}", f"{self.gamma[-1]:.2g}"
        dip = f"dips below τ at step {self.first_dip}" if self.first_dip is not None else ""
        if self.winner == "task":
            where = (
                f"γ settles near {now} ({target}) ≥ τ = {self.tau:g}"
                if self.settled
                else f"γ heads for {target} ≥ τ = {self.tau:g}"
                if math.isfinite(self.equilibrium)
                else f"with no weight decay nothing pulls γ below τ = {self.tau:g}"
            )
            dip = f", after it {dip} then recovers (momentum overshoots)" if dip else ""
            return (
                f"the task wins: {where}{dip}; the filter, still receiving gradient, ends "
                f"at ‖w‖ = {self.norm[-1]:.2g} (a gradient-free weight: {size})"
            )
        if self.winner is None:
            who = "the task" if self.equilibrium >= self.tau else "decay"
            return (
                f"not decided in {self.steps[-1]} steps: γ is now {now}"
                + (f" (first below τ at step {self.first_dip})" if dip else "")
                + f" and heads for {target} {'≥' if who == 'the task' else '<'} τ = {self.tau:g}; "
                f"with more steps {who} wins"
            )
        if self.norm[-1] <= 3 * max(abs(free[-1]), 1e-300):
            return (
                f"decay wins: γ falls below τ = {self.tau:g} for good at step {self.silent_step}; "
                f"with no task "
                f"gradient the filter follows the decay curve down to ‖w‖ = {self.norm[-1]:.2g}"
            )
        return (
            f"decay wins: γ falls below τ = {self.tau:g} for good at step {self.silent_step} and "
            f"heads for "
            f"{target}; the filter's gradient shrinks with γ, so ‖w‖ sinks to {self.norm[-1]:.2g} "
            f"(a gradient-free weight: {size})"
        )


def simulate(
    lr: float = 0.1,
    wd: float = 1e-2,
    momentum: float = 0.9,
    grad: float = 1e-3,
    steps: int = 1000,
    tau: float = 0.1,
    seed: int = 0,
    dim: int = DIM,
) -> Race:
    """Simulate one BatchNorm'd channel under SGD with momentum and weight decay (see the module
    docstring).

    ``grad`` is the task gradient the channel receives: it pushes γ up by ``grad`` per step and
    gives the filter an orthogonal gradient of size ``FILTER_GAIN · grad · γ / ‖w‖`` in a random
    direction (a minibatch's).
    """
    _check(lr, wd, momentum, steps)
    if grad < 0:
        raise ValueError(f"grad is a size, it must be >= 0, got {grad}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)
    w /= np.linalg.norm(w)
    gamma, v_gamma, v_w = 1.0, 0.0, np.zeros(dim)
    gammas, norms = np.empty(steps + 1), np.empty(steps + 1)
    gammas[0], norms[0] = 1.0, 1.0
    for n in range(1, steps + 1):
        v_gamma = momentum * v_gamma + wd * gamma - grad
        gamma -= lr * v_gamma
        length = np.linalg.norm(w)
        direction = rng.standard_normal(dim)
        # orthogonal to w: BatchNorm's scale invariance
        direction -= (direction @ w) / length**2 * w
        direction /= np.linalg.norm(direction)
        v_w = momentum * v_w + wd * w + FILTER_GAIN * grad * abs(gamma) / length * direction
        w = w - lr * v_w
        gammas[n], norms[n] = gamma, np.linalg.norm(w)
    return Race(
        lr,
        wd,
        momentum,
        grad,
        tau,
        np.arange(steps + 1),
        gammas,
        norms,
        pure_decay(lr, wd, steps),
        momentum_decay(lr, wd, momentum, steps),
    )


def _check(lr: float, wd: float, momentum: float, steps: int) -> None:
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if not (0 <= wd and lr * wd < 1):
        raise ValueError(f"need wd >= 0 and lr·wd < 1, got lr {lr}, wd {wd}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
