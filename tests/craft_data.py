"""Real data shared by the figure, widget and browser tests, computed at most once per pytest process.

Plain cached functions rather than fixtures so that several test modules share one FAST run and one
tiny comparison (each module wraps them in its own fixtures).
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from craftlib.data import LFW
from craftlib.experiments import compare
from craftlib.pretrained import mobilefacenet_stem
from craftlib.reactivation import ReactivationCallback
from craftlib.recipes import FAST
from craftlib.training import Trainer, train

TAU = 0.3  # FAST's 24 steps kill no filter at 0.1; at 0.3 re-activation acts at both epoch ends
IDENTITIES = 100


@functools.cache
def lfw32() -> LFW:
    return LFW(size=32)


@functools.cache
def faces32() -> np.ndarray:
    """Evaluation faces (uint8, N x 32 x 32 x 3), disjoint from the training identities."""
    return lfw32().pairs("devtest").images


@functools.cache
def training_set():
    return lfw32().training_set(max_identities=IDENTITIES)


@functools.cache
def mobilefacenet():
    """The released MobileFaceNet stem: 31 of its 64 filters are dead at τ = 0.1."""
    return mobilefacenet_stem()


@functools.cache
def fast_run() -> Trainer:
    """A finished FAST run (3 epochs, ~8 s) with contextual re-activation at τ = 0.3. Do not mutate it."""
    return train(training_set(), FAST.train, [ReactivationCallback("contextual", TAU, last_epoch=2)], progress=False)


def fresh_trainer(steps: int = 0) -> Trainer:
    """A new FAST trainer that a test may change, after ``steps`` optimisation steps."""
    trainer = Trainer(training_set(), FAST.train, progress=False)
    if steps:
        trainer.train_steps(steps)
    return trainer


@functools.cache
def comparison_dir() -> Path:
    """``summary.json`` + ``runs.json`` of a real two-arm, two-seed comparison (2 epochs each, ~30 s)."""
    out = Path(tempfile.mkdtemp(prefix="craft-compare-"))
    atexit.register(shutil.rmtree, out, True)
    recipe = replace(FAST, train=FAST.train.but(epochs=2), tau=TAU, reactivate_last_epoch=1,
                     max_identities=IDENTITIES)
    compare(recipe, [0, 1], ("none", "contextual"), lfw=lfw32(), out=out, progress=False, log=lambda *_: None)
    return out
