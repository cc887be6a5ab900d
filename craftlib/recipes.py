"""Named training recipes: the workshop's accelerated one, the paper-like one, and CI's FAST one.

Why the workshop recipe kills filters in minutes (see docs/RECIPE.md): weight decay 2e-2 on *all*
parameters pulls every BatchNorm gamma toward zero; channels the task barely needs lose the race,
their gamma collapses, their filter stops receiving gradient and decay then shrinks it to ~0. The
paper's wd 5e-4 does the same over 100k+ steps; 20x stronger decay compresses that into a few epochs.
"""
from __future__ import annotations

from dataclasses import dataclass

from .models import ModelConfig
from .training import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A training config plus the CRAFT schedule that goes with it and the data it expects."""

    name: str
    train: TrainConfig
    tau: float = 0.1
    reactivate_last_epoch: int | None = None  # default: stop re-activating 1/3 before the end
    max_identities: int | None = None
    description: str = ""

    @property
    def last_epoch(self) -> int:
        return self.reactivate_last_epoch if self.reactivate_last_epoch is not None else (2 * self.train.epochs) // 3


WORKSHOP = Recipe(
    name="workshop",
    train=TrainConfig(epochs=10, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2,
                      weight_decay_scope="all", schedule="onecycle", model=ModelConfig(input_size=40)),
    tau=0.1,
    reactivate_last_epoch=6,
    description="accelerated: SGD lr 0.1 one-cycle, wd 1e-2 on all parameters (BN gamma included), 10 epochs, 40 px; "
                "CRAFT re-activates at the end of epochs 1-6",
)

PAPER = Recipe(
    name="paper",
    train=TrainConfig(epochs=40, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                      weight_decay_scope="all", schedule="cosine", model=ModelConfig(input_size=48)),
    tau=0.1,
    description="paper-like (arcface_torch): SGD lr 0.1, wd 5e-4 on all parameters, CosFace m=0.35; for GPUs",
)

FAST = Recipe(
    name="fast",
    train=TrainConfig(epochs=3, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-2,
                      weight_decay_scope="all", schedule="onecycle", model=ModelConfig(input_size=32)),
    tau=0.1,
    reactivate_last_epoch=2,
    max_identities=150,
    description="CI smoke budget: every code path, a few seconds per run; numbers mean nothing",
)

RECIPES = {r.name: r for r in (WORKSHOP, PAPER, FAST)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]
