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
    check_folder,
    fingerprint,
    fingerprint_diff,
    load_records,
    measure,
    pending,
    same_kind,
    write_record,
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
    one record each.

    Returns all of ``out``'s records. Progress: one line before and after each run, with the time it
    took and an estimate of what is left (from the runs this call trained).
    """
    lfw = lfw or LFW(size=recipe.train.model.input_size)
    data = lfw.training_set(max_identities=recipe.max_identities)
    pairs = lfw.pairs("devtest")
    meta = fingerprint(recipe, lfw.variant)
    check_folder(out, meta)
    todo = [arm for _, arm in pending(out, [seed], arms)]
    done = len(arms) - len(todo)
    log(
        f"seed {seed}: {len(todo)} of {len(arms)} arm(s) to run"
        + (f" ({done} already recorded in {out})" if done else "")
    )
    trained: list[float] = []
    start = time.perf_counter()
    for i, arm in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {ARM_LABELS.get(arm, arm)} ({arm}), seed {seed}")
        t0 = time.perf_counter()
        trainer = train_or_load(data, recipe, seed, arm, folder=folder, progress=progress, log=log)
        took = time.perf_counter() - t0
        record = measure(
            trainer, pairs, recipe, arm, seed, sum(h["seconds"] for h in trainer.history)
        )
        write_record(out, record, meta)
        if took > 0.5 * record["train_seconds"]:  # really trained here, not loaded
            trained.append(took)
        left = len(todo) - i
        eta = (
            f"; about {left * sum(trained) / len(trained) / 60:.1f} min left"
            if left and trained
            else ""
        )
        log(
            f"      accuracy {fmt('accuracy', record['accuracy'])}, {took:.0f} s; "
            f"{(time.perf_counter() - start) / 60:.1f} min "
            f"so far{eta}"
        )
    return load_records(out)


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
    whole pool.
    """
    kept, notes, meta = [], [], None
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
    return kept, notes
