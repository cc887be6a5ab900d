"""Real data shared by the figure, widget and browser tests, computed at most once per pytest process.

Plain cached functions rather than fixtures so that several test modules share one FAST run and one
tiny comparison (each module wraps them in its own fixtures).
"""
from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from craftlib.data import LFW, PairSet
from craftlib.experiments import run_arm, summarize
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


def pair_subset(pairs: PairSet, every: int = 4) -> PairSet:
    """Every ``every``-th pair with only the images they use: both classes and all 10 folds, 4x less to embed."""
    keep = np.arange(0, len(pairs), every)
    used = np.unique(np.concatenate([pairs.left[keep], pairs.right[keep]]))
    return PairSet(pairs.images[used], np.searchsorted(used, pairs.left[keep]), np.searchsorted(used, pairs.right[keep]),
                   pairs.same[keep], pairs.folds[keep], [pairs.files[i] for i in used], pairs.name)


@functools.cache
def comparison_dir() -> Path:
    """``summary.json`` + ``runs.json`` as ``compare`` writes them: two arms x two seeds, 2 epochs, 250 pairs."""
    out = Path(tempfile.mkdtemp(prefix="craft-compare-"))
    atexit.register(shutil.rmtree, out, True)
    recipe = replace(FAST, train=FAST.train.but(epochs=2), tau=TAU, reactivate_last_epoch=1)
    pairs = pair_subset(lfw32().pairs("devtest"))
    runs = [run_arm(training_set(), pairs, recipe, arm, seed) for seed in (0, 1) for arm in ("none", "contextual")]
    (out / "summary.json").write_text(json.dumps({**summarize(runs), "tau": TAU}))
    (out / "runs.json").write_text(json.dumps(runs))
    return out
