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

import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from craftlib.checkpoints import CheckpointError, load_checkpoint
from craftlib.data import LFW
from craftlib.paths import folder_lock, remove_orphans
from craftlib.recipes import DEFAULT_ARMS, WORKSHOP, Recipe

from .experiments import (
    check_folder,
    fingerprint,
    forked,
    read_record,
    record_path,
    run_arm,
    write_record,
)

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
    """(level, seed, arm) runs not yet recorded, seed-major, the 40-px levels (the primary analysis)
    before the 64-px ones; within each, standard training runs one seed ahead of the other arms, so
    their fork points (``fork_point``) exist by the time they start. A stopped study leaves whole
    seeds at every 40-px level."""

    def order(task: tuple[str, int, str]) -> tuple:
        lv, s, a = task
        lead = a != "none"  # the other arms of seed s run after standard training of seed s + 1
        return (LEVELS[lv][1], s + lead, lead, levels.index(lv), arms.index(a))

    todo = [(lv, s, a) for s in seeds for lv in levels for a in arms]
    return sorted(
        (t for t in todo if not record_path(Path(root) / t[0], t[2], t[1]).is_file()), key=order
    )


def checkpoint_paths(models: Path, level: str, arm: str, seed: int) -> tuple[Path, Path]:
    """Where a run keeps its finished checkpoint (the ablation's) and its per-epoch ones."""
    folder = Path(models) / level
    return folder / f"{arm}-s{seed}.pt", folder / f"{arm}-s{seed}-e{{epoch}}.pt"


def at_epoch(per_epoch: Path, epoch: int) -> Path:
    """The file of one epoch's checkpoint, from ``checkpoint_paths``' per-epoch pattern."""
    return Path(str(per_epoch).format(epoch=epoch))


def fork_point(root: str | Path, models: str | Path, level: str, seed: int, arm: str):
    """Standard training's checkpoint that ``arm``'s run at (level, seed) may start from, and its
    epoch; None when it must start from scratch.

    Until its detector first finds a filter, a CRAFT or control run *is* standard training: the
    same weights, data order and generators (nothing renewed draws nothing), and the same detector
    (the arms differ only in ``strategy``). So it may start from standard training's checkpoint at
    the last epoch before the first detection (its finished model when nothing was ever found);
    the records are identical to a run from scratch (tests/test_dose.py) and only the time differs.
    """
    standard, r = record_path(Path(root) / level, "none", seed), recipe(level)
    if arm == "none" or not standard.is_file() or r.arm(arm).but(strategy="none") != r.arm("none"):
        return None
    fired = [e["epoch"] for e in read_record(standard)["events"] if e["filters"]]
    final, per_epoch = checkpoint_paths(Path(models), level, "none", seed)
    if not fired:
        return (final, r.train.epochs) if final.is_file() else None
    epoch = min(fired) - 1
    path = at_epoch(per_epoch, epoch)
    return (path, epoch) if epoch > 0 and path.is_file() else None


def run_stamp(level: str, arm: str, seed: int, variant: str) -> dict:
    """Which run a checkpoint belongs to: recipe, data variant and code (the study's fingerprint),
    arm and seed. Only the same run continues from it."""
    return {**fingerprint(recipe(level), variant), "arm": arm, "seed": seed}


def await_standard(root: str | Path, models: str | Path, level: str, seed: int, wait: float = 180):
    """Wait for standard training's record at (level, seed) while its run has finished training
    (its final checkpoint is saved) but is still being measured and written.

    Why: with two workers, the one that finished standard training takes the next task at once,
    often an arm of the same seed, before the parent has written the record the arm forks from;
    without it the arm trains from scratch (same record, several times the time)."""
    record = record_path(Path(root) / level, "none", seed)
    final, _ = checkpoint_paths(Path(models), level, "none", seed)
    deadline = time.monotonic() + wait
    while final.is_file() and not record.is_file() and time.monotonic() < deadline:
        time.sleep(1)


def own_past(
    models: str | Path, level: str, arm: str, seed: int, variant: str | None
) -> tuple[Path, int, int | None] | None:
    """Where a stopped run of (level, seed, arm) on LFW ``variant`` can continue: its last epoch
    checkpoint, that epoch, and the epoch of standard training's it had started from (None: from
    scratch). ``variant`` None takes the checkpoint's own (to report without loading LFW).

    None when there is none of this very run (``run_stamp``), or when the run had finished (its
    final checkpoint is there): a missing record then means "redo it", not "continue".
    ``Trainer.resume`` is bit for bit, so a stop costs at most the epoch under way.
    """
    final, per_epoch = checkpoint_paths(Path(models), level, arm, seed)
    if final.is_file():
        return None
    for epoch in range(recipe(level).train.epochs, 0, -1):
        path = at_epoch(per_epoch, epoch)
        try:
            saved = load_checkpoint(path).get("dose_run", {})
        except CheckpointError:  # absent (or unreadable): an earlier epoch may do
            continue
        data = saved.get("run", {}).get("data_variant") if variant is None else variant
        if saved.get("run") == run_stamp(level, arm, seed, data):  # not another run's leftover
            return path, epoch, saved["forked_from"]
    return None


def drop_past(models: str | Path, level: str, arm: str, seed: int) -> None:
    """Remove a recorded run's epoch checkpoints; standard training's stay, the arms fork from
    them."""
    _, per_epoch = checkpoint_paths(Path(models), level, arm, seed)
    if arm != "none":
        for epoch in range(1, recipe(level).train.epochs + 1):
            at_epoch(per_epoch, epoch).unlink(missing_ok=True)


def run_forked(
    train_set, pairs, level: str, arm: str, seed: int, fork: tuple[Path, int] | None, models
) -> dict:
    """One run of the study: from scratch, continued from standard training's ``fork``, or from
    where this run was stopped (``own_past``: every epoch is saved)."""
    final, per_epoch = (
        checkpoint_paths(Path(models), level, arm, seed) if models is not None else (None, None)
    )
    variant = getattr(train_set, "variant", "unknown")
    past = own_past(models, level, arm, seed, variant) if models is not None else None
    if past:
        start, forked = past[0], past[2]
    else:
        start, forked = fork if fork else (None, None)
    r = recipe(level)
    record = run_arm(
        train_set,
        pairs,
        r,
        arm,
        seed,
        checkpoint=final,
        every_epoch=per_epoch,
        start_from=start,
        stamp={"dose_run": {"run": run_stamp(level, arm, seed, variant), "forked_from": forked}},
    )
    if past:  # train_seconds counts this process's part only
        record["resumed_from"] = {"epoch": past[1]}
    if forked:  # the shared past was logged by standard training's callback: it is this arm's too
        strategy = r.arm(arm).strategy
        record["events"] = [
            {**e, "strategy": strategy} if e["epoch"] <= forked else e for e in record["events"]
        ]
        record["forked_from"] = {"arm": "none", "epoch": forked}
    return record


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
    ablation) as ``<models>/<level>/<arm>-s<seed>.pt``, outside the committed records, and standard
    training's after every epoch, from which the other arms start where they may (``fork_point``).
    """
    levels = list(levels or LEVELS)
    recipes = {lv: recipe(lv) for lv in levels}
    with ExitStack() as held:  # one writer per level folder: a second study (or compare) stops here
        for lv in levels:
            held.enter_context(folder_lock(Path(root) / lv))
        todo = tasks(root, list(seeds), levels, arms)
        if models is not None:  # what a stop between record and clean-up, or mid-write, left
            for lv in levels:
                remove_orphans(Path(models) / lv)
                for s in seeds:
                    for a in arms:
                        if record_path(Path(root) / lv, a, s).is_file():
                            drop_past(models, lv, a, s)
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
            train_set, pairs, _ = sets[recipes[level].train.model.input_size]
            fork = None
            if models is not None:
                if arm != "none":
                    await_standard(root, models, level, seed)
                fork = fork_point(root, models, level, seed, arm)
            return level, run_forked(train_set, pairs, level, arm, seed, fork, models)

        for level, record in forked(one, todo, jobs):
            write_record(Path(root) / level, record, metas[level])
            if models is not None:
                drop_past(models, level, record["arm"], record["seed"])
            fork, past = record.get("forked_from"), record.get("resumed_from")
            since = f", from standard training's epoch {fork['epoch']}" if fork else ""
            since += f", continued from its epoch {past['epoch']}" if past else ""
            log(
                f"{level:>12} seed {record['seed']} {record['arm']:>15}: accuracy "
                f"{record['accuracy']:.2%}  ({record['train_seconds']:.0f} s{since})"
            )
        return len(todo)
