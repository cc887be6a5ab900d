"""Standard training vs random re-init vs CRAFT: same data, same budget, several seeds, paired tests."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from .activity import inactive_fraction, model_scores
from .data import LFW, FaceSet, PairSet
from .paths import atomic_write
from .reactivation import STRATEGY_LABELS, ReactivationCallback
from .recipes import Recipe
from .training import train
from .verification import evaluate

ARMS = ("none", "random", "contextual")


def run_arm(data: FaceSet, pairs: PairSet, recipe: Recipe, strategy: str, seed: int,
            progress: bool = False, checkpoint: str | Path | None = None) -> dict:
    """Train one arm at one seed and measure it: inactive fraction, verification report, history.

    Every arm gets the same callback (``none`` detects and logs without changing anything), so
    the arms differ only in what happens to the inactive filters.
    """
    config = replace(recipe.train, seed=seed)
    callback = ReactivationCallback(strategy, recipe.tau, last_epoch=recipe.last_epoch, seed=seed)
    start = time.perf_counter()
    trainer = train(data, config, [callback], progress=progress)
    seconds = time.perf_counter() - start
    if checkpoint is not None:
        trainer.save(checkpoint)
    report = evaluate(trainer.model, pairs)
    scores = model_scores(trainer.model)
    return {
        "strategy": strategy, "seed": seed, "train_seconds": seconds,
        "inactive_fraction": inactive_fraction(scores, recipe.tau),
        "accuracy": report["accuracy"], "accuracy_std": report["accuracy_std"], "auc": report["auc"],
        "eer": report["eer"], "tar@far=0.01": report["tar@far=0.01"], "tar@far=0.001": report["tar@far=0.001"],
        "roc": report["roc"], "scores": scores.tolist(), "events": trainer.events,
        "history": [{k: v for k, v in h.items()} for h in trainer.history],
    }


METRICS = ("inactive_fraction", "accuracy", "auc", "tar@far=0.01", "tar@far=0.001")


def paired_tests(a: list[float], b: list[float]) -> dict:
    """Paired t-test and Wilcoxon signed-rank (two-sided) of ``a`` vs ``b`` across the same seeds."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    out = {"mean_difference": float(np.mean(a - b)), "t_pvalue": None, "wilcoxon_pvalue": None}
    if len(a) >= 2 and np.any(a != b):
        out["t_pvalue"] = float(stats.ttest_rel(a, b).pvalue)
        out["wilcoxon_pvalue"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def summarize(runs: list[dict], baseline: str = "none") -> dict:
    """Per-arm lists, means and stds of every metric, with paired p-values against ``baseline``."""
    arms: dict[str, dict] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        mine = sorted((r for r in runs if r["strategy"] == strategy), key=lambda r: r["seed"])
        entry = {"label": STRATEGY_LABELS[strategy], "seeds": [r["seed"] for r in mine]}
        if all("scores" in r for r in mine):  # rows rebuilt from a summary (widgets.select) carry no scores
            entry["final_scores"] = [[round(v, 5) for v in r["scores"]] for r in mine]
        for m in METRICS:
            values = [r[m] for r in mine]
            entry[m] = values
            entry[f"{m}_mean"] = float(np.mean(values))
            entry[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        arms[strategy] = entry
    if baseline in arms:
        base = arms[baseline]
        for name, entry in arms.items():
            if name == baseline:
                continue
            common = sorted(set(entry["seeds"]) & set(base["seeds"]))
            entry["vs_" + baseline] = {}
            for m in METRICS:
                a = [entry[m][entry["seeds"].index(s)] for s in common]
                b = [base[m][base["seeds"].index(s)] for s in common]
                entry["vs_" + baseline][m] = paired_tests(a, b)
            entry["accuracy_pvalue_t"] = entry["vs_" + baseline]["accuracy"]["t_pvalue"]
            entry["accuracy_pvalue_wilcoxon"] = entry["vs_" + baseline]["accuracy"]["wilcoxon_pvalue"]
            entry["inactive_fraction_pvalue_t"] = entry["vs_" + baseline]["inactive_fraction"]["t_pvalue"]
    return {"arms": arms, "baseline": baseline}


_SHARED: dict = {}  # data for forked workers (copy-on-write, never pickled)


def _run_task(task: tuple[int, str]) -> dict:
    seed, strategy = task
    torch.set_num_threads(_SHARED["threads"])
    return run_arm(_SHARED["data"], _SHARED["pairs"], _SHARED["recipe"], strategy, seed)


def compare(recipe: Recipe, seeds: list[int], arms: tuple[str, ...] = ARMS, lfw: LFW | None = None,
            out: str | Path | None = None, progress: bool = True, log=print, jobs: int = 1) -> dict:
    """Run every arm at every seed (seed-major, so a cut-off run still has paired seeds) and summarise.

    ``jobs > 1`` runs that many trainings at once in forked processes with one thread each: on a
    small CPU, several single-threaded runs use the cores better than one multi-threaded run.
    """
    lfw = lfw or LFW(size=recipe.train.model.input_size)
    data = lfw.training_set(max_identities=recipe.max_identities)
    pairs = lfw.pairs("devtest")
    tasks = [(seed, strategy) for seed in seeds for strategy in arms]
    runs, start = [], time.perf_counter()

    def done(run: dict) -> None:
        runs.append(run)
        log(f"seed {run['seed']} {run['strategy']:>10}: inactive {run['inactive_fraction']:.0%}  "
            f"accuracy {run['accuracy']:.2%}  ({run['train_seconds']:.0f} s)")
        if out is not None:
            _write(out, _summary(recipe, runs, start), runs)

    if jobs > 1:
        import multiprocessing

        _SHARED.update(data=data, pairs=pairs, recipe=recipe, threads=max(1, torch.get_num_threads() // jobs))
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for run in pool.imap(_run_task, tasks):
                done(run)
        _SHARED.clear()
    else:
        for seed, strategy in tasks:
            done(run_arm(data, pairs, recipe, strategy, seed, progress=progress))
    summary = _summary(recipe, runs, start)
    if out is not None:
        _write(out, summary, runs)
    return summary


def _summary(recipe: Recipe, runs: list[dict], start: float) -> dict:
    summary = summarize(runs)
    summary.update(recipe=recipe.name, recipe_description=recipe.description, tau=recipe.tau,
                   reactivate_last_epoch=recipe.last_epoch, train_config=recipe.train.to_dict(),
                   wall_seconds=time.perf_counter() - start,
                   machine={"platform": platform.platform(), "processor": platform.processor(),
                            "threads": torch.get_num_threads(), "torch": torch.__version__})
    return summary


def _write(out: str | Path, summary: dict, runs: list[dict]) -> None:
    out = Path(out)
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    atomic_write(out / "runs.json", lambda tmp: tmp.write_text(json.dumps(runs)))


def format_table(summary: dict) -> str:
    """A plain-text table: one row per arm, mean ± std, p-values against standard training."""
    rows = [f"{'arm':<24}{'inactive':>14}{'accuracy':>18}{'AUC':>10}{'TAR@1e-2':>10}{'p (t / W)':>18}"]
    for name, a in summary["arms"].items():
        p = "" if name == summary["baseline"] else (
            f"{_fmt_p(a.get('accuracy_pvalue_t'))} / {_fmt_p(a.get('accuracy_pvalue_wilcoxon'))}")
        rows.append(f"{a['label']:<24}{a['inactive_fraction_mean']:>8.1%} ±{a['inactive_fraction_std']:>4.0%}"
                    f"{a['accuracy_mean']:>11.2%} ±{a['accuracy_std']:>5.2%}{a['auc_mean']:>10.3f}"
                    f"{a['tar@far=0.01_mean']:>10.3f}{p:>18}")
    return "\n".join(rows)


def tau_sensitivity(summary: dict, taus: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3)) -> str:
    """Mean inactive fraction per arm at several thresholds, from the final ``conv1`` scores (Markdown).

    A count at one τ can hide where the re-activated filters sit; this shows the whole picture.
    """
    rows = ["| arm | " + " | ".join(f"τ = {t:g}" for t in taus) + " |", "|---|" + "---|" * len(taus)]
    for a in summary["arms"].values():
        scores = np.asarray(a["final_scores"])
        rows.append(f"| {a['label']} | " + " | ".join(f"{(scores < t).mean():.0%}" for t in taus) + " |")
    return "\n".join(rows)


def format_markdown(summary: dict) -> str:
    """The same table as ``format_table`` in Markdown, with every metric, for docs/RESULTS.md."""
    rows = ["| arm | seeds | inactive conv1 (τ={:g}) | DevTest accuracy | ROC AUC | TAR@FAR=1e-2 | TAR@FAR=1e-3 "
            "| Δ acc vs standard | p (paired t) | p (Wilcoxon) |".format(summary.get("tau", 0.1)),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in summary["arms"].items():
        vs = a.get(f"vs_{summary['baseline']}", {}).get("accuracy", {})
        delta = "–" if not vs else f"{100 * vs['mean_difference']:+.2f} pts"
        rows.append(f"| {a['label']} | {len(a['seeds'])} | {a['inactive_fraction_mean']:.1%} ± {a['inactive_fraction_std']:.1%} "
                    f"| {a['accuracy_mean']:.2%} ± {a['accuracy_std']:.2%} | {a['auc_mean']:.4f} ± {a['auc_std']:.4f} "
                    f"| {a['tar@far=0.01_mean']:.3f} ± {a['tar@far=0.01_std']:.3f} | {a['tar@far=0.001_mean']:.3f} ± {a['tar@far=0.001_std']:.3f} "
                    f"| {delta} | {_fmt_p(vs.get('t_pvalue')) if vs else '–'} | {_fmt_p(vs.get('wilcoxon_pvalue')) if vs else '–'} |")
    return "\n".join(rows)


def _fmt_p(p) -> str:
    return "n/a" if p is None else f"{p:.3f}"


def load_summary(path: str | Path) -> dict | None:
    """A ``summary.json`` written by ``compare`` (a file or the folder holding it), or None if there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def headline(summary: dict, arm: str = "contextual") -> str:
    """The comparison in two sentences, in the paper's terms: inactive fraction, then accuracy with p-values."""
    arms, base = summary["arms"], summary.get("baseline", "none")
    if base not in arms or arm not in arms:
        return f"needs the arms {base!r} and {arm!r}; this summary has {list(arms)}"
    b, a = arms[base], arms[arm]
    n = len(a["seeds"])
    vs = a.get(f"vs_{base}", {}).get("accuracy", {})
    return (f"inactive conv1 filters (τ = {summary.get('tau', 0.1):g}): {b['label']} {b['inactive_fraction_mean']:.0%} "
            f"→ {a['label']} {a['inactive_fraction_mean']:.0%} (mean of {n} seed{'s' if n != 1 else ''}).\n"
            f"verification accuracy: {b['accuracy_mean']:.2%} ± {b['accuracy_std']:.2%} → "
            f"{a['accuracy_mean']:.2%} ± {a['accuracy_std']:.2%} (Δ {100 * vs.get('mean_difference', float('nan')):+.2f} "
            f"points; paired t p = {_fmt_p(vs.get('t_pvalue'))}, Wilcoxon p = {_fmt_p(vs.get('wilcoxon_pvalue'))}).")
