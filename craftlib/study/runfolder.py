"""One training run per folder (``python -m craftlib train --out``): checked before any work, never
mixed.

Every file a run writes (``checkpoint.pt`` after each epoch, then ``history.json`` and
``metrics.json``) carries the run's fingerprint. A folder holding another run's files, or files
without a fingerprint, is refused rather than overwritten; one holding this run is continued only
when asked (``--resume``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from craftlib.checkpoints import CheckpointError, load_checkpoint
from craftlib.recipes import Recipe
from craftlib.training import NonFiniteLossError

from .experiments import fingerprint, fingerprint_diff, same_kind

CHECKPOINT = "checkpoint.pt"
RUN_FILES = (CHECKPOINT, "history.json", "metrics.json")


class RunFolderError(ValueError):
    """``--out`` cannot take this run: a file, not writable, or another run's folder (exit 2,
    nothing written)."""


def run_fingerprint(recipe: Recipe, data_variant: str, protocol: str) -> dict:
    """What every file of a training run carries: the seed study's fingerprint plus the evaluation
    protocol."""
    return {**fingerprint(recipe, data_variant), "protocol": protocol}


def check_writable(out: Path) -> None:
    """``out`` is a folder this process may write, or one it may create (no file in the way)."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose another --out")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise RunFolderError(
            f"--out {out}: {existing} is a file, so the folder cannot be made; choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {out}: {existing} is not writable; choose another --out")


def read_stamp(path: Path) -> dict | None:
    """The run fingerprint a run file carries (``None``: written without one, by an older
    craftlib)."""
    try:
        blob = load_checkpoint(path) if path.suffix == ".pt" else json.loads(path.read_text())
    except (CheckpointError, OSError, ValueError) as err:
        raise RunFolderError(
            f"{path} is unreadable ({err}); nothing was overwritten: move it away or "
            "choose another --out"
        ) from None
    return blob.get("run") if isinstance(blob, dict) else None


def resume_path(resume: str | None, out: Path) -> Path | None:
    """``--resume`` alone continues ``OUT/checkpoint.pt``; ``--resume PATH`` another checkpoint."""
    if resume is None:
        return None
    return Path(resume) if resume else out / CHECKPOINT


def check_run(out: Path, stamp: dict, resume: Path | None) -> None:
    """Refuse ``out`` unless it is empty of run files or holds this very run and ``resume`` is asked
    for."""
    check_writable(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    for name in found:
        theirs = read_stamp(out / name)
        if theirs is None:
            raise RunFolderError(
                f"{out} holds {name} without a run fingerprint (an older craftlib's run); nothing "
                "was overwritten: choose another --out"
            )
        if not same_kind(theirs, stamp):
            raise RunFolderError(
                f"{out} holds another run ({name}: {fingerprint_diff(theirs, stamp)}); nothing was "
                "overwritten: choose another --out, or resume that run with its own flags"
            )
    if found and resume is None:
        raise RunFolderError(
            f"{out} already holds this run ({', '.join(found)}): continue it with --resume, "
            "or choose another --out"
        )
    if resume is not None and not resume.is_file():
        raise RunFolderError(f"--resume: there is no checkpoint at {resume}")


def stopped_message(out: Path, err: BaseException, epochs: int) -> str:
    """What a run stopped early says: why, what is kept, and how to go on from there."""
    ckpt, why = out / CHECKPOINT, str(err) or "interrupted"
    if not ckpt.is_file():
        return (
            f"stopped ({why}) before any epoch finished: nothing was saved in {out}; run the "
            f"command again"
        )
    kept = (
        f"the last good checkpoint is {ckpt} (epoch {load_checkpoint(ckpt)['epoch']} of {epochs})"
    )
    if isinstance(err, NonFiniteLossError):
        return (
            f"error: {err}\n{kept}. To go on from it with the changed setting, train into a new "
            f"folder: "
            f"the same command with the changed flag, --out NEW_FOLDER and --resume {ckpt}"
        )
    return f"stopped ({why}); {kept}. To continue, run the same command again with --resume"
