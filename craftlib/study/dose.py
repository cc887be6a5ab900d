"""The dose–response study (docs/STUDY.md, "Dose–response"): does CRAFT's effect grow with how many
filters die?

The *dose* is the decay budget — weight decay on every parameter, BatchNorm γ included, the knob
that kills filters (docs/RECIPE.md) — at the workshop recipe's 10 epochs; the *response* of standard
training is the share of its ``conv1`` filters that end silent; the *outcome* is CRAFT − standard
DevTest accuracy, paired by seed. Each level is an ordinary seed-study folder
(``<root>/<level>/records/<arm>-s<seed>.json``), so fingerprints, pooling and resuming are the seed
study's own; this module only names the levels, schedules their runs and reads them together.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from craftlib.data import LFW
from craftlib.paths import folder_lock
from craftlib.recipes import DEFAULT_ARMS, WORKSHOP, Recipe

from .experiments import check_folder, fingerprint, forked, record_path, run_arm, write_record

DEFAULT_ROOT = Path("docs/results/dose")

LEVELS: dict[str, tuple[float, int]] = {
    "wd5e-4": (5e-4, 40),
    "wd2e-3": (2e-3, 40),
    "wd5e-3": (5e-3, 40),
    "wd1e-2": (1e-2, 40),
    "wd2e-2": (2e-2, 40),
    "wd5e-3-64px": (5e-3, 64),
    "wd1e-2-64px": (1e-2, 64),
}
"""Level name -> (weight decay on all parameters, input size in px); everything else is the workshop
recipe."""


def recipe(level: str) -> Recipe:
    """The workshop recipe at one dose level (its fingerprint names the weight decay and the
    size)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    wd, size = LEVELS[level]
    base = WORKSHOP.but(weight_decay=wd, model__input_size=size)
    return replace(
        base,
        name="dose",
        description=f"the workshop recipe at weight decay {wd:g} on all "
        f"parameters, {size} px ({level})",
    )


def tasks(
    root: str | Path, seeds: list[int], levels: list[str], arms: tuple[str, ...] = DEFAULT_ARMS
) -> list[tuple[str, int, str]]:
    """(level, seed, arm) runs not yet recorded, seed-major: a stopped study leaves whole seeds at
    every level."""
    return [
        (lv, s, a)
        for s in seeds
        for lv in levels
        for a in arms
        if not record_path(Path(root) / lv, a, s).is_file()
    ]


def run(
    root: str | Path = DEFAULT_ROOT,
    seeds: list[int] = range(10),
    levels: list[str] | None = None,
    arms: tuple[str, ...] = DEFAULT_ARMS,
    jobs: int = 2,
    data: str | Path | None = None,
    models: str | Path | None = None,
    log=print,
) -> int:
    """Run every (level, seed, arm) not yet recorded under ``root``; each finished run is saved at
    once.

    Returns the number of runs done. ``models`` keeps each run's checkpoint (for the "silent"
    ablation) as ``<models>/<level>/<arm>-s<seed>.pt``, outside the committed records.
    """
    levels = list(levels or LEVELS)
    recipes = {lv: recipe(lv) for lv in levels}
    with ExitStack() as held:  # one writer per level folder: a second study (or compare) stops here
        for lv in levels:
            held.enter_context(folder_lock(Path(root) / lv))
        todo = tasks(root, list(seeds), levels, arms)
        log(
            f"{len(todo)} run(s) to do ({len(list(seeds)) * len(levels) * len(arms) - len(todo)} "
            f"already recorded)"
        )
        if not todo:
            return 0
        sets, metas = {}, {}
        for size in sorted({recipes[lv].train.model.input_size for lv, _, _ in todo}):
            lfw = LFW(data, size=size)
            sets[size] = (lfw.training_set(), lfw.pairs("devtest"), lfw.variant)
        for lv in levels:
            size = recipes[lv].train.model.input_size
            if size in sets:
                metas[lv] = fingerprint(recipes[lv], sets[size][2])
                check_folder(Path(root) / lv, metas[lv])

        def one(level: str, seed: int, arm: str) -> tuple[str, dict]:
            r = recipes[level]
            train_set, pairs, _ = sets[r.train.model.input_size]
            ckpt = Path(models) / level / f"{arm}-s{seed}.pt" if models is not None else None
            return level, run_arm(train_set, pairs, r, arm, seed, checkpoint=ckpt)

        for level, record in forked(one, todo, jobs):
            write_record(Path(root) / level, record, metas[level])
            log(
                f"{level:>12} seed {record['seed']} {record['arm']:>15}: accuracy "
                f"{record['accuracy']:.2%}  "
                f"({record['train_seconds']:.0f} s)"
            )
        return len(todo)
