"""The room as one experiment: every laptop runs the comparison's arms at its own seed; the folders
are pooled.

The notebooks train with ``runs.train_or_load``, so notebook 05 finds the runs notebooks 01 and 04
already made at the same seed. ``run_seat`` turns a seat's runs into comparison records, one small
JSON per finished arm (a stopped notebook resumes where it stopped), with a line of progress per
run. The instructor pools the room's folders with ``results.summarize_folders`` or the comparison
dashboard, which accepts a list of folders.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from craftlib.data import LFW
from craftlib.recipes import ARM_LABELS, DEFAULT_ARMS, Recipe
from craftlib.runs import train_or_load

from .experiments import (
    drive,
    fingerprint,
    fingerprint_diff,
    load_records,
    measure,
    pending,
    same_kind,
)
from .results import fmt

ENV_SEED = "CRAFT_SEED"


def seat_seed(default: int = 0) -> int:
    """This laptop's seed in the room's experiment: ``$CRAFT_SEED`` (``make lab SEED=7``), else
    ``default``."""
    value = os.environ.get(ENV_SEED, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(
            f"${ENV_SEED} must be a non-negative integer (your seat number), got {value!r}"
        )
    return int(value)


def run_seat(
    recipe: Recipe,
    seed: int,
    out: str | Path,
    arms: tuple[str, ...] = DEFAULT_ARMS,
    lfw: LFW | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> list[dict]:
    """Every arm at ``seed`` not yet recorded in ``out``: reuse saved runs, train the rest, write
    one record each (``experiments.drive``, the study's own driver).

    Returns all of ``out``'s records. Progress: one line before and after each run, with the time it
    took and an estimate of what is left (from the runs this call trained).
    """
    lfw = lfw or LFW(size=recipe.train.model.input_size)
    data = lfw.training_set(max_identities=recipe.max_identities)
    pairs = lfw.pairs("devtest")
    todo = len(pending(out, [seed], arms))
    took: dict[str, float] = {}  # wall seconds per arm this call ran (trained or loaded)
    start = time.perf_counter()

    def one(seed: int, arm: str) -> dict:
        log(f"[{len(took) + 1}/{todo}] {ARM_LABELS.get(arm, arm)} ({arm}), seed {seed}")
        t0 = time.perf_counter()
        trainer = train_or_load(data, recipe, seed, arm, folder=folder, progress=progress, log=log)
        record = measure(
            trainer, pairs, recipe, arm, seed, sum(h["seconds"] for h in trainer.history)
        )
        took[arm] = time.perf_counter() - t0
        return record

    def line(record: dict) -> str:
        this = took[record["arm"]]
        fresh = [s for s in took.values() if s > 0.5 * record["train_seconds"]]  # not loaded
        left = todo - len(took)
        eta = (
            f"; about {left * sum(fresh) / len(fresh) / 60:.1f} min left" if left and fresh else ""
        )
        return (
            f"      accuracy {fmt('accuracy', record['accuracy'])}, {this:.0f} s; "
            f"{(time.perf_counter() - start) / 60:.1f} min so far{eta}"
        )

    return drive(out, fingerprint(recipe, lfw.variant), [seed], arms, one, 1, log, line)


def room_folders(root: str | Path | None) -> list[Path]:
    """The results folders under a shared room folder: every folder (``root`` included) holding
    records/*.json."""
    if root is None:
        return []
    root = Path(root)
    return sorted({p.parent.parent for p in root.glob("**/records/*.json")})


def poolable(folders: list[str | Path]) -> tuple[list[Path], list[str]]:
    """The folders whose records may be pooled with the first one's, and a note for each one left
    out.

    Pooling needs one fingerprint (recipe, data variant, code version) for every record; a folder
    made otherwise, or holding no records yet, is left out with the reason instead of failing the
    whole pool. Seeds that a kept folder repeats from an earlier one get a note too: the pool keeps
    the earlier folder's runs (the learner's own, first), so the pooled numbers are not the
    committed ones for those seeds.
    """
    kept, notes, meta, seen = [], [], None, {}
    for folder in map(Path, folders):
        records = load_records(folder) if folder.is_dir() else []
        if not records:
            notes.append(f"left out {folder}: no records yet")
            continue
        theirs = records[0]["fingerprint"]
        if meta is None:
            meta = theirs
        elif not same_kind(theirs, meta):
            notes.append(
                f"left out {folder}: made with another recipe, data or code "
                f"({fingerprint_diff(theirs, meta)})"
            )
            continue
        kept.append(folder)
        repeats: dict[Path, set[int]] = {}
        for r in records:
            first = seen.setdefault((r["arm"], r["seed"]), folder)
            if first != folder:
                repeats.setdefault(first, set()).add(r["seed"])
        notes += [
            f"{folder} repeats seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))} "
            f"of {first}: the pool keeps {first}'s runs (the same seed on another machine or "
            "thread count takes a slightly different path, so their numbers differ)"
            for first, s in repeats.items()
        ]
    return kept, notes
