"""Named recipes — a training config plus the ``reactivation.CraftSpec`` that defines its CRAFT run.

Why the workshop recipe kills filters in minutes (see docs/RECIPE.md): weight decay 1e-2 on *all*
parameters pulls every BatchNorm gamma toward zero; channels the task barely needs lose the race,
their gamma collapses, their filter stops receiving gradient and decay then shrinks it to ~0. The
paper's wd 5e-4 does the same over 100k+ steps; 20x stronger decay compresses that into a few
epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .models import ModelConfig
from .reactivation import PAPER_READING, CraftSpec, ReactivationCallback
from .training import TrainConfig
from .validation import check

ARMS: dict[str, dict] = {
    "none": dict(strategy="none"),
    "contextual": dict(strategy="contextual"),
    "random_matched": dict(strategy="random_matched"),
    "random": dict(strategy="random"),
    "perturbed": dict(strategy="perturbed"),
    "orthogonal": dict(strategy="orthogonal"),
    # the paper's detector and resets, on the recipe's own schedule (every / first_epoch /
    # last_epoch stay)
    "contextual_weight": {
        k: getattr(PAPER_READING, k)
        for k in ("score", "tau", "reference", "strong_quantile", "downstream", "reset_step")
    }
    | {"strategy": "contextual"},
}
"""Comparison arms: changes to a recipe's ``CraftSpec``. Every arm detects (``none`` only logs)."""
ARM_LABELS = {
    "none": "standard training",
    "contextual": "CRAFT (silent detector)",
    "random_matched": "random, matched scale",
    "random": "random, Kaiming scale",
    "perturbed": "CRAFT (perturbed copy)",
    "orthogonal": "orthogonal (RePr-like)",
    "contextual_weight": "CRAFT (paper's weight detector)",
}
DEFAULT_ARMS = ("none", "contextual", "random_matched")


@dataclass(frozen=True)
class Recipe:
    """A training config, the CRAFT spec that goes with it, and the data it expects."""

    name: str
    train: TrainConfig
    craft: CraftSpec = field(default_factory=CraftSpec)
    max_identities: int | None = None
    description: str = ""

    def __post_init__(self):
        check("max_identities", self.max_identities, optional=True)

    @property
    def tau(self) -> float:
        return self.craft.tau

    @property
    def last_epoch(self) -> int:
        return self.craft.stop_epoch(self.train.epochs)

    def arm(self, name: str) -> CraftSpec:
        """The spec of a comparison arm (``ARMS``) on top of this recipe's."""
        if name not in ARMS:
            raise ValueError(f"arm must be one of {sorted(ARMS)}, got {name!r}")
        return self.craft.but(**ARMS[name])

    def callback(self, seed: int | None = None, arm: str | None = None) -> ReactivationCallback:
        """The CRAFT callback of this recipe (or of one of its arms) for a run at ``seed``."""
        spec = self.arm(arm) if arm is not None else self.craft
        return spec.callback(self.train.seed if seed is None else seed, self.train.epochs)

    def but(self, craft: dict | None = None, **train_changes) -> "Recipe":
        """A copy with training fields (``lr=…``, ``model__input_size=…``) and/or spec fields
        changed."""
        return replace(
            self, train=self.train.but(**train_changes), craft=self.craft.but(**(craft or {}))
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "train": self.train.to_dict(),
            "craft": self.craft.to_dict(),
            "max_identities": self.max_identities,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        """Fields added to the configs since ``d`` was written take their defaults."""
        return cls(
            d["name"],
            TrainConfig.from_dict(d["train"]),
            CraftSpec.from_dict(d["craft"]),
            d["max_identities"],
        )


WORKSHOP = Recipe(
    name="workshop",
    train=TrainConfig(
        epochs=10,
        batch_size=64,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-2,
        weight_decay_scope="all",
        schedule="onecycle",
        model=ModelConfig(input_size=40),
    ),
    craft=CraftSpec(last_epoch=6),
    description="accelerated: SGD lr 0.1 one-cycle, wd 1e-2 on all parameters (BN gamma included), "
    "10 epochs, 40 px; "
    "CRAFT re-activates silent filters at the end of epochs 1-6",
)

WORKSHOP_EARLY = replace(
    WORKSHOP,
    name="workshop-early",
    craft=CraftSpec(last_epoch=3),
    description="the workshop recipe with re-activation stopping after epoch 3, so that 7 epochs "
    "of decay "
    "budget remain in which a useless new filter can die again",
)

PAPER = Recipe(
    name="paper",
    train=TrainConfig(
        epochs=40,
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        weight_decay_scope="all",
        schedule="cosine",
        model=ModelConfig(input_size=48),
    ),
    description="paper-like (arcface_torch): SGD lr 0.1, wd 5e-4 on all parameters, CosFace "
    "m=0.35; for GPUs",
)

FAST = Recipe(
    name="fast",
    train=TrainConfig(
        epochs=3,
        batch_size=64,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=2e-2,
        weight_decay_scope="all",
        schedule="onecycle",
        model=ModelConfig(input_size=32),
    ),
    craft=CraftSpec(last_epoch=2, tau=0.3),
    max_identities=150,
    description="CI smoke budget: every code path, a few seconds per run; numbers mean nothing. τ "
    "= 0.3 because "
    "its 24 steps silence no filter at a lower threshold, and re-activation must act",
)

GPU = Recipe(
    name="gpu",
    train=TrainConfig(
        epochs=20,
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        weight_decay_scope="all",
        schedule="cosine",
        head="arcface",
        scale=64.0,
        margin=0.5,
        grad_clip=5.0,
        model=ModelConfig(input_size=112, embedding_dim=512),
    ),
    craft=CraftSpec(),
    description="paper-like on GPUs (arcface_torch's ms1mv2_r50): 112 px, 512-d, ArcFace s=64 "
    "m=0.5, SGD lr 0.1 "
    "for a global batch of 1024 (8 x 128; scale lr linearly for other batches), wd 5e-4 on all "
    "parameters, grad clip 5, cosine schedule, 20 epochs; CRAFT (craftlib's default spec) at the "
    "end "
    "of epochs 1-13",
)

RECIPES = {r.name: r for r in (WORKSHOP, WORKSHOP_EARLY, PAPER, GPU, FAST)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "weight_decay_scope",
    "schedule",
    "head",
    "seed",
    "device",
    "grad_clip",
)
MODEL_FLAGS = {"size": "input_size", "embedding_dim": "embedding_dim"}  # flag -> ModelConfig field
CRAFT_FLAGS = ("strategy", "score", "tau", "last_epoch", "every", "strong_quantile", "downstream")


def recipe_from_flags(args) -> Recipe:
    """The named recipe (``args.recipe``) with every flag the user gave applied: training, model,
    CRAFT spec and ``max_identities``. A command line without some flag simply has no such attribute
    (or ``None``)."""

    def given(names) -> dict:
        return {k: v for k in names if (v := getattr(args, k, None)) is not None}

    train = given(TRAIN_FLAGS) | {
        f"model__{name}": v
        for flag, name in MODEL_FLAGS.items()
        if (v := getattr(args, flag, None)) is not None
    }
    recipe = get_recipe(args.recipe).but(craft=given(CRAFT_FLAGS), **train)
    return replace(recipe, **given(("max_identities",)))
