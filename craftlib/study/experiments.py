"""Seed comparisons: every arm at every seed, one small JSON record per finished run, resumable and
mergeable.

A results folder holds ``records/<arm>-s<seed>.json``; ``compare`` skips records already there (so a
stopped run resumes and a second call appends seeds), and ``results.summarize_folders`` pools
folders made on different machines — refusing to mix runs whose recipe, data variant or code differ.
"""

from __future__ import annotations

import json
import platform
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from craftlib import __version__
from craftlib.activity import model_scores
from craftlib.data import LFW, FaceSet, PairSet
from craftlib.paths import atomic_write, folder_lock, remove_orphans
from craftlib.recipes import DEFAULT_ARMS, Recipe
from craftlib.runtime import sigterm_as_interrupt
from craftlib.threads import worker_threads
from craftlib.training import train
from craftlib.validation import check_batch
from craftlib.verification import evaluate_scores, pair_scores

RECORD_SCORES = ("max", "effective", "gamma", "silent")
"""The per-filter scores kept for every run, final and per epoch (relative to the layer's
strongest)."""


def fingerprint(recipe: Recipe, data_variant: str) -> dict:
    """What must agree before two runs may be pooled: recipe (config + spec), data variant, code
    version.

    Normalised through JSON, so that a fingerprint read back from a record compares equal.
    """
    return json.loads(
        json.dumps({"recipe": recipe.to_dict(), "data_variant": data_variant, "code": __version__})
    )


def _timeline(history: list[dict]) -> dict:
    """Per-epoch raw first-layer numbers (small enough to commit): norms, γ and output spread per
    filter."""
    from craftlib.activity import filter_norms

    out = {
        "epoch": [h["epoch"] for h in history],
        "step": [h["step"] for h in history],
        "lr": [h["lr"] for h in history],
        "loss": [h["loss"] for h in history],
    }
    for key, values in (
        ("max", lambda c: filter_norms(torch.tensor(c["weight"]), "max")),
        ("l2", lambda c: filter_norms(torch.tensor(c["weight"]), "l2")),
        ("gamma", lambda c: np.abs(np.asarray(c["gamma"]))),
        ("output_std", lambda c: np.asarray(c["output_std"])),
    ):
        out[key] = [[round(float(v), 7) for v in values(h["conv1"])] for h in history]
    return out


def _thin_roc(roc: dict, points: int = 40) -> dict:
    """The ROC at log-spaced false-accept rates (a record stays a few KB; the curve looks the
    same)."""
    fpr = np.geomspace(1e-3, 1.0, points)
    return {
        "fpr": fpr.round(6).tolist(),
        "tpr": np.interp(fpr, roc["fpr"], roc["tpr"]).round(6).tolist(),
    }


def run_arm(
    data: FaceSet,
    pairs: PairSet,
    recipe: Recipe,
    arm: str,
    seed: int,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    every_epoch: str | Path | None = None,
    start_from: str | Path | None = None,
    stamp: dict | None = None,
) -> dict:
    """Train one arm at one seed and measure it: scores, verification report, events and timeline.

    Every arm gets a callback (``none`` detects and logs without changing anything), so the arms
    differ only in what happens to the inactive filters. ``checkpoint``: the finished run is saved
    there; ``every_epoch``: a path naming ``{epoch}``, saved after every epoch; ``start_from``: a
    checkpoint of this recipe and seed to continue (``dose.fork_point`` says when another arm's
    checkpoint is this run's own past); ``stamp``: what its checkpoints say about the run.
    """
    config = recipe.train.but(seed=seed)
    spec = recipe.arm(arm)
    start = time.perf_counter()
    trainer = train(
        data,
        config,
        [spec.callback(seed, config.epochs)],
        progress=progress,
        resume_from=start_from,
        checkpoint=every_epoch,
        stamp=stamp,
    )
    seconds = time.perf_counter() - start
    if checkpoint is not None:
        trainer.save(checkpoint)
    return measure(trainer, pairs, recipe, arm, seed, seconds)


def measure(trainer, pairs: PairSet, recipe: Recipe, arm: str, seed: int, seconds: float) -> dict:
    """The record of a finished run of ``arm`` at ``seed`` (however it was trained: ``run_arm``, or
    a run the notebooks kept with ``runs.train_cached``)."""
    spec = recipe.arm(arm)
    scores = pair_scores(trainer.model, pairs)  # what `evaluate` computes, kept per pair
    report = evaluate_scores(scores, pairs.same, pairs.folds)
    return {
        "arm": arm,
        "seed": seed,
        "spec": spec.to_dict(),
        "train_seconds": seconds,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        **{k: v for k, v in report.items() if k not in ("roc", "thresholds")},
        "roc": _thin_roc(report["roc"]),
        "scores": {
            s: [round(float(v), 7) for v in model_scores(trainer.model, s, probe=trainer.probe)]
            for s in RECORD_SCORES
        },
        "events": trainer.events,
        "timeline": _timeline(trainer.history),
        "pair_scores": [
            round(float(v), 6) for v in scores
        ],  # DevTest order: pair-level resampling needs them
    }


def record_path(out: str | Path, arm: str, seed: int) -> Path:
    return Path(out) / "records" / f"{arm}-s{seed}.json"


def write_record(out: str | Path, record: dict, meta: dict) -> Path:
    """Save one finished run at once (atomically), stamped with the folder's fingerprint."""
    return atomic_write(
        record_path(out, record["arm"], record["seed"]),
        lambda tmp: tmp.write_text(json.dumps({**record, "fingerprint": meta})),
    )


class RecordError(ValueError):
    """A run record that cannot be trusted (truncated, not JSON, not a record), with its file
    named."""


def read_record(path: str | Path) -> dict:
    """One run record, checked: a damaged file is named (and what to do about it), never
    half-read."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(
            f"{path}: not a readable run record ({err}); move it away and run the comparison "
            "again to redo that run"
        ) from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("arm"), str)
        or not isinstance(record.get("seed"), int)
        or not isinstance(record.get("fingerprint"), dict)
    ):
        raise RecordError(
            f"{path}: not a run record (it needs an arm, a seed and a fingerprint); move it away "
            "and run the comparison again to redo that run"
        )
    return record


def load_records(folder: str | Path) -> list[dict]:
    """Every run record in a results folder (sorted by arm, then seed)."""
    paths = sorted(Path(folder).glob("records/*.json"))
    return sorted((read_record(p) for p in paths), key=lambda r: (r["arm"], r["seed"]))


def pending(
    out: str | Path | None, seeds: list[int], arms: tuple[str, ...]
) -> list[tuple[int, str]]:
    """Seed-major (seed, arm) tasks not yet recorded: a cut-off run still leaves complete seed
    pairs."""
    return [
        (s, a) for s in seeds for a in arms if out is None or not record_path(out, a, s).is_file()
    ]


# the forked workers' task function (copy-on-write with the data it closes over, never pickled)
_SHARED: dict = {}


def _forked_task(task: tuple) -> dict:
    torch.set_num_threads(_SHARED["threads"])
    return _SHARED["run"](*task)


def _worker_start() -> None:
    """A worker dies at once on SIGTERM (the pool's ``terminate``), whatever handler its parent
    had."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def forked(run, tasks: list[tuple], jobs: int):
    """Yield ``run(*task)`` for every task, as each finishes, ``jobs`` at once in forked processes.

    On a small CPU several single-threaded trainings use the cores better than one multi-threaded
    run; forking shares the decoded faces copy-on-write instead of pickling them to every worker.
    With ``jobs <= 1`` (or one task) everything runs here, in order.
    """
    if jobs <= 1 or len(tasks) <= 1:
        yield from (run(*task) for task in tasks)
        return
    import multiprocessing

    _SHARED.update(run=run, threads=worker_threads(jobs, torch.get_num_threads()))
    try:  # SIGTERM to this process leaves the pool's block, which terminates the workers with it
        with (
            multiprocessing.get_context("fork").Pool(jobs, _worker_start) as pool,
            sigterm_as_interrupt(),
        ):
            yield from pool.imap_unordered(_forked_task, tasks)
    finally:
        _SHARED.clear()


def drive(
    out: str | Path | None,
    meta: dict,
    seeds: list[int],
    arms: tuple[str, ...],
    run: Callable[[int, str], dict],
    jobs: int = 1,
    log=print,
    line: Callable[[dict], str] | None = None,
) -> list[dict]:
    """The one seed-study driver: every (seed, arm) not yet recorded in ``out``, run and saved.

    One writer per folder (a second driver stops at the lock); the folder's records must share
    ``meta``; tasks run seed-major (``pending``), ``jobs`` at once in forked processes (``forked``);
    each record is written the moment it exists, before its log line (a closed pipe or Ctrl-C must
    not lose a finished run). Returns all of ``out``'s records (or this call's, with no ``out``).
    """
    line = line or run_line
    with folder_lock(out) if out is not None else nullcontext():
        if out is not None:
            check_folder(out, meta)
            remove_orphans(Path(out) / "records")
        tasks = pending(out, list(seeds), tuple(arms))
        log(f"{len(tasks)} run(s) to do ({len(seeds) * len(arms) - len(tasks)} already recorded)")
        records = []
        for record in forked(run, tasks, jobs):
            if out is not None:
                write_record(out, record, meta)
            log(line(record))
            records.append({**record, "fingerprint": meta})
    return load_records(out) if out is not None else records


def run_line(record: dict) -> str:
    """The log line of one finished run."""
    return (
        f"seed {record['seed']} {record['arm']:>17}: accuracy {record['accuracy']:.2%}  "
        f"({record['train_seconds']:.0f} s)"
    )


def compare(
    recipe: Recipe,
    seeds: list[int],
    arms: tuple[str, ...] = DEFAULT_ARMS,
    lfw: LFW | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    log=print,
    jobs: int = 1,
    models: str | Path | None = None,
) -> list[dict]:
    """Run every arm at every seed not yet recorded in ``out``; return all of the folder's records.

    ``jobs > 1`` runs that many trainings at once in forked processes with one thread each: on a
    small CPU, several single-threaded runs use the cores better than one multi-threaded run (but a
    seed's numbers then differ from a 2-thread run's in the last bits: the summation order changes).
    ``models`` is a folder for each run's checkpoint (kept apart from the small, committable
    records).
    """
    lfw = lfw or LFW(size=recipe.train.model.input_size)
    data = lfw.training_set(max_identities=recipe.max_identities)
    check_batch(recipe.train.batch_size, len(data.labels))
    pairs = lfw.pairs("devtest")

    def one(seed: int, arm: str) -> dict:
        ckpt = Path(models) / f"{arm}-s{seed}.pt" if models is not None else None
        return run_arm(
            data, pairs, recipe, arm, seed, progress=progress and jobs == 1, checkpoint=ckpt
        )

    return drive(out, fingerprint(recipe, lfw.variant), seeds, arms, one, jobs, log)


def normalized(meta: dict | None) -> dict | None:
    """A fingerprint with every config field a later version added filled in with its default.

    So a study can resume under code that gained an option, as long as the runs it does are the
    same.
    """
    if not meta:
        return meta
    return json.loads(json.dumps({**meta, "recipe": Recipe.from_dict(meta["recipe"]).to_dict()}))


def same_kind(a: dict | None, b: dict | None) -> bool:
    """May runs with these two fingerprints be pooled?"""
    return normalized(a) == normalized(b)


def check_folder(out: str | Path, meta: dict) -> None:
    """Refuse to add runs to a folder whose existing records were made under another fingerprint (or
    are damaged: every record is read, so a truncated one is named before any training, not
    after)."""
    for path in sorted(Path(out).glob("records/*.json")):
        theirs = read_record(path)["fingerprint"]
        if not same_kind(theirs, meta):
            raise ValueError(
                f"{out} holds runs made with a different recipe, data variant or code version "
                f"({fingerprint_diff(theirs, meta)}); use another --out folder"
            )


def fingerprint_diff(a: dict | None, b: dict | None) -> str:
    """The first differing field of two fingerprints, as ``key: a != b`` (for error messages)."""

    def flat(d, prefix=""):
        items = {}
        for k, v in (d or {}).items():
            items.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return items

    fa, fb = flat(normalized(a)), flat(normalized(b))
    keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return ", ".join(f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in keys[:3]) or "identical"


def view2_leakfree(lfw: LFW, recipe: Recipe, seed: int, arm: str | None = None, log=print) -> dict:
    """LFW View 2 without leakage: one model per fold, trained without that fold's people (10
    trainings).

    Fold k's pairs are scored by model k; its threshold is chosen on the other nine folds' pairs
    scored by the same model (people it may have trained on: that biases the threshold a little,
    never the test). Reported as the mean and std of the ten fold accuracies, like the standard
    protocol.
    """
    from craftlib.data import identities_by_fold, read_pairs
    from craftlib.verification import best_threshold

    pairs = lfw.pairs("view2")
    people = identities_by_fold(read_pairs(lfw.pair_file("view2")))
    accuracies = []
    for fold, names in people.items():
        data = lfw.training_set(
            exclude="", exclude_people=frozenset(names), max_identities=recipe.max_identities
        )
        trainer = train(
            data, recipe.train.but(seed=seed), [recipe.callback(seed, arm)], progress=False
        )
        scores = pair_scores(trainer.model, pairs)
        test = pairs.folds == fold
        t = best_threshold(scores[~test], pairs.same[~test])
        accuracies.append(float(np.mean((scores[test] > t) == pairs.same[test])))
        log(
            f"view2 fold {fold}: {len(data.classes)} training identities (none of the fold's "
            f"{len(names)}), "
            f"accuracy {accuracies[-1]:.2%}"
        )
    return {
        "protocol": "view2-leakfree",
        "spec": (recipe.arm(arm) if arm else recipe.craft).to_dict(),
        "seed": seed,
        "fold_accuracies": accuracies,
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
    }
