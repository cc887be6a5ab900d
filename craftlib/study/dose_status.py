"""How far along the dose–response study is: runs recorded per level and arm, runs under way (their
last saved epoch), and a rough time left — read from the records and checkpoints, nothing trains.

Why: the 64-px levels take hours on a laptop-class machine and outlive a session; whoever picks the
study up needs to see at once what is done, what a stop left half-way, and how long the rest takes
(``python -m craftlib.study.dose_cli --status``).
"""

from __future__ import annotations

import platform
from pathlib import Path
from statistics import median

from craftlib.recipes import DEFAULT_ARMS

from .dose import DEFAULT_ROOT, LEVELS, fork_point, own_past, recipe, tasks
from .experiments import read_record, record_path


def seconds_per_epoch(root: str | Path, size: int, machine: str | None = None) -> float | None:
    """The median wall seconds per trained epoch of the records at this input size, over its levels
    (a forked or continued run trained fewer epochs than the recipe's) — of the records made on
    ``machine`` (default: this one, by ``platform.platform()``) where there are any, since a study
    that outlives a session moves between machines of different speeds; else of all."""
    machine = machine or platform.platform()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for level in (lv for lv, (_, px) in LEVELS.items() if px == size):
        epochs = recipe(level).train.epochs
        for path in sorted((Path(root) / level / "records").glob("*.json")):
            r = read_record(path)
            start = max(r.get(k, {}).get("epoch", 0) for k in ("forked_from", "resumed_from"))
            if epochs > start:
                here = r.get("machine") == machine
                rates[here].append(r["train_seconds"] / (epochs - start))
    mine = rates[True] or rates[False]
    return median(mine) if mine else None


def status(
    root: str | Path = DEFAULT_ROOT,
    models: str | Path | None = None,
    seeds: list[int] = range(10),
    levels: list[str] | None = None,
    arms: tuple[str, ...] = DEFAULT_ARMS,
    jobs: int = 2,
) -> str:
    """A table of recorded runs per level and arm, the runs under way, and the training time left
    (each run to do: its epochs not yet saved or forked, at the median seconds per epoch of its
    input size, ``jobs`` at once)."""
    levels, seeds = list(levels or LEVELS), list(seeds)
    todo = tasks(root, seeds, levels, arms)
    lines = [
        f"| level | {' | '.join(arms)} | s per epoch | epochs to train |",
        "|---" * (len(arms) + 3) + "|",
    ]
    left, unknown, under_way = 0.0, [], []
    for level in levels:
        done = [sum(record_path(Path(root) / level, a, s).is_file() for s in seeds) for a in arms]
        r = recipe(level).train
        rate, epochs, remaining = seconds_per_epoch(root, r.model.input_size), r.epochs, 0
        for lv, seed, arm in (t for t in todo if t[0] == level):
            past = own_past(models, lv, arm, seed, None) if models is not None else None
            saved = past[1] if past else 0
            fork = fork_point(root, models, lv, seed, arm) if models is not None else None
            remaining += epochs - max(saved, fork[1] if fork else 0)
            if saved:
                under_way.append(f"`{lv}` {arm} seed {seed} (epoch {saved} of {epochs} saved)")
        if remaining and rate is None:
            unknown.append(level)
        left += remaining * (rate or 0.0)
        counts = " | ".join(f"{d}/{len(seeds)}" for d in done)
        lines.append(f"| `{level}` | {counts} | {f'{rate:.0f}' if rate else '—'} | {remaining} |")
    lines.append("")
    lines.append(f"Under way (a restart continues them): {', '.join(under_way) or 'none'}.")
    hours = left / max(1, jobs) / 3600
    note = f" (plus {', '.join(unknown)}: no record yet to time)" if unknown else ""
    lines.append(
        f"{len(todo)} run(s) to do: about {hours:.1f} h of training at {jobs} at once{note}, "
        "from the median seconds per epoch so far at each input size, on this machine where it "
        "has recorded runs (a rough guide: load changes it)."
    )
    return "\n".join(lines)
