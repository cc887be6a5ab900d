"""The federated seed study behind docs/RESULTS.md: its arms, resumable runs, and what the records
say.

Every arm of ``STUDY_ARMS`` at every seed is one JSON record under ``OUT/records/`` (``study``: a
rerun skips what is recorded, and a folder refuses runs of another design). Three readings of the
records:

- ``study_table``: DevTest accuracy and silent ``conv1`` per arm, and CRAFT vs none paired by seed;
- ``death_table``: filter death against the *decay budget* each model had, the SGD steps it took and
  the factor by which they shrink a weight that gets no gradient (``decay_factors``; for FedAvg, the
  averaged model's, ``fedavg_decay``), paired against the step-matched control;
- ``reactivation_table``: what server-side and per-client CRAFT renewed, and the silent fraction
  left.

The command line is ``federated_cli``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from craftlib.data import LFW
from craftlib.paths import atomic_write
from craftlib.recipes import Recipe
from craftlib.study.results import fmt, fmt_ci, holm, paired
from craftlib.study.survival import coast, decay_curve, learning_rates
from craftlib.training import TrainConfig

from .federation import (
    CENTRAL,
    CRAFT_MODES,
    FEDERATED,
    FL_STRATEGIES,
    FL_STRATEGY_LABELS,
    SPLITS,
    FedConfig,
    federation,
    run,
)

STUDY_ARMS = (
    [
        (s, sp, c)
        for sp in SPLITS
        for s, cs in (
            ("fedavg", ("none", "server")),
            ("adafedfr", ("none", "server")),
            ("local", ("none", "client")),
        )
        for c in cs
    ]
    + [("central", "iid", c) for c in ("none", "server")]
    + [("fedavg", sp, "client") for sp in SPLITS]
    + [("central_steps", "iid", "none")]
)
"""Seed-major order in ``study``: a cut-off study leaves whole seeds of the main arms first."""


def study(
    out: str | Path,
    seeds: list[int],
    fed: FedConfig = FedConfig(),
    recipe: Recipe = FEDERATED,
    arms=STUDY_ARMS,
    lfw: LFW | None = None,
    log=print,
) -> list[dict]:
    """Every arm at every seed not yet recorded under ``out/records/``; resumable (one JSON per
    run)."""
    check_study_folder(out, fed, recipe)
    lfw = lfw or LFW(size=recipe.train.model.input_size)
    pairs = lfw.pairs("devtest")
    torch.set_num_threads(1)  # records repeat exactly only at a fixed thread count
    cache: dict = {}
    for seed in seeds:
        for strategy, split, craft in arms:
            cfg = fed.but(strategy=strategy, split=split, craft=craft, seed=seed)
            path = Path(out) / "records" / f"{cfg.name}.json"
            if path.is_file():
                continue
            key = (split, seed)
            if key not in cache:
                cache.clear()
                cache[key] = federation(lfw, cfg, pairs)
            log(f"{cfg.name}: {cache[key].sizes() if strategy not in CENTRAL else 'all faces'}")
            record = run(recipe, cfg, cache[key], log=log)
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record)))
            log(
                f"{cfg.name}: DevTest {record['final']['accuracy']:.2%} ({record['seconds']:.0f} s)"
            )
    return load_study(out)


def arm_names() -> dict[str, tuple[str, str, str]]:
    """The study's arms by the names their records carry (``central-all-none``,
    ``fedavg-iid-server``, ...)."""
    return {
        FedConfig(strategy=s, split=sp, craft=c).name.rsplit("-s", 1)[0]: (s, sp, c)
        for s, sp, c in STUDY_ARMS
    }


RUN_FIELDS = (
    "strategy",
    "split",
    "craft",
    "seed",
)  # what differs between a study's runs; the rest is its budget


def check_study_folder(out: str | Path, fed: FedConfig, recipe: Recipe) -> None:
    """Refuse to add runs of another budget or recipe to a folder: one folder, one table, one
    design."""
    mine = {k: v for k, v in asdict(fed).items() if k not in RUN_FIELDS}
    recipe_dict = json.loads(json.dumps(recipe.to_dict()))
    for record in load_study(out):
        theirs = {k: v for k, v in record["fed"].items() if k not in RUN_FIELDS}
        if theirs != mine or record["recipe"] != recipe_dict:
            diff = sorted(k for k in mine if theirs.get(k) != mine[k]) or ["recipe"]
            raise ValueError(
                f"{out} holds runs of another design ({record['name']}: {', '.join(diff)} differ); "
                f"use another --out for this budget"
            )


def load_study(out: str | Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("records/*.json"))]


def study_table(records: list[dict]) -> str:
    """The Markdown table of the study: DevTest accuracy and silent conv1 per arm (mean ± sd over
    seeds), and server-side CRAFT vs none paired by seed (Holm over the arms compared)."""
    cells: dict[tuple, dict[int, dict]] = {}
    for r in records:
        split = "—" if r["strategy"] in CENTRAL else r["split"]
        cells.setdefault((r["strategy"], split, r["craft"]), {})[r["seed"]] = r["final"]
    order = [
        (s, sp, c)
        for s in FL_STRATEGIES
        for sp in ("iid", "dirichlet", "—")
        for c in CRAFT_MODES
        if (s, sp, c) in cells
    ]
    tests = {}
    for s, sp, c in order:
        if c != "none" and (s, sp, "none") in cells:
            common = sorted(set(cells[(s, sp, c)]) & set(cells[(s, sp, "none")]))
            tests[(s, sp, c)] = paired(
                [cells[(s, sp, c)][k]["accuracy"] for k in common],
                [cells[(s, sp, "none")][k]["accuracy"] for k in common],
            )
    adjusted = holm({key: p.t_pvalue for key, p in tests.items()})
    lines = [
        "| strategy | split | re-activation | seeds | DevTest accuracy | silent conv1 (global) | "
        "silent conv1 (per client) | Δ accuracy vs no CRAFT | p (t, Holm) |",
        "|" + "---|" * 9,
    ]
    for key in order:
        runs = cells[key]
        acc = [f["accuracy"] for f in runs.values()]
        silent = [f["silent_fraction"] for f in runs.values()]
        per_client = [
            np.mean(f["client_silent_fraction"])
            for f in runs.values()
            if f.get("client_silent_fraction")
        ]
        test = tests.get(key)
        delta = (
            f"{fmt('accuracy', test.mean_difference, True)}"
            if test and test.mean_difference is not None
            else "—"
        )
        p = (
            f"{fmt('p', test.t_pvalue)} ({fmt('p', adjusted[key])})"
            if test and test.t_pvalue is not None
            else "—"
        )
        lines.append(
            f"| {FL_STRATEGY_LABELS[key[0]]} | {key[1]} | {key[2]} | {len(runs)} | "
            f"{_mean_sd(acc)} | {_mean_sd(silent)} | {_mean_sd(per_client) if per_client else '—'} "
            f"| {delta} | {p} |"
        )
    return "\n".join(lines)


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = f" ± {100 * np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.1f}%{sd}"


# ---------------------------------------------------------------------------------------------
# filter death against the decay budget, and what re-activation did


DEATH_ROWS = [("central", "—"), ("central_steps", "—")] + [
    (s, sp) for s in ("local", "fedavg", "adafedfr") for sp in SPLITS
]
"""The no-CRAFT arms in the order the death table reads them: the two centralised runs, then the
federations."""


def fedavg_decay(
    config: TrainConfig, steps_per_epoch: list[int], faces: list[int], local_epochs: int = 1
) -> float:
    """The factor by which FedAvg's averaged model shrinks a weight that none of its sites gives a
    gradient.

    Each site decays its copy for its own steps of the round (its own one-cycle schedule over the
    whole federation, its momentum kept between rounds, as ``federated.client_round`` does); the
    server then takes the face-weighted mean. ``config.epochs`` is the federation's total (rounds x
    local epochs).
    """
    lrs = [learning_rates(config, n) for n in steps_per_epoch]
    share = np.asarray(faces, float) / np.sum(faces)
    w, momenta = 1.0, [0.0] * len(faces)
    for r in range(config.epochs // local_epochs):
        ends = []
        for i, n in enumerate(steps_per_epoch):
            w_i, v_i = w, momenta[i]
            for w_i, v_i in coast(
                config, lrs[i][r * n * local_epochs : (r + 1) * n * local_epochs], w, v_i
            ):
                pass
            ends.append(w_i)
            momenta[i] = v_i
        w = float(share @ np.asarray(ends))
    return w


def decay_factors(record: dict) -> list[float]:
    """By how much each model of a run shrinks a gradient-free weight by the end: one factor per
    site for local-only (each site is its own model), one for the global model otherwise."""
    fed = record["fed"]
    epochs = fed["rounds"] * fed["local_epochs"]
    config = Recipe.from_dict(record["recipe"]).train.but(epochs=epochs)
    per_epoch = [n // epochs for n in record["steps"]]
    if record["strategy"] in CENTRAL + ("local",):
        return [float(decay_curve(config, n, 0)[-1]) for n in per_epoch]
    return [
        fedavg_decay(
            config, per_epoch, [c["faces"] for c in record["clients"]], fed["local_epochs"]
        )
    ]


def _arm_runs(records: list[dict], strategy: str, split: str, craft: str) -> dict[int, dict]:
    return {
        r["seed"]: r
        for r in records
        if r["strategy"] == strategy
        and r["craft"] == craft
        and (strategy in CENTRAL or r["split"] == split)
    }


def _spread(values, percent: bool = True) -> str:
    """``mean [min–max] (n)``: every seed's value stays in view at 3 seeds and at 10."""
    v = 100 * np.asarray(list(values), float) if percent else np.asarray(list(values), float)
    unit = "%" if percent else ""
    return f"{v.mean():.0f}{unit} [{v.min():.0f}–{v.max():.0f}] ({len(v)})"


def _span(values: list[float], form: str) -> str:
    lo, hi = min(values), max(values)
    return (
        format(lo, form)
        if format(lo, form) == format(hi, form)
        else f"{format(lo, form)}–{format(hi, form)}"
    )


def _versus(a: dict[int, float], b: dict[int, float]) -> str:
    common = sorted(set(a) & set(b))
    test = paired([a[s] for s in common], [b[s] for s in common])
    if test.mean_difference is None:
        return "—"
    ci = f" {fmt_ci('silent_fraction', test.ci95)}" if test.ci95 else ""
    return f"{fmt('silent_fraction', test.mean_difference, True)}{ci}"


def site_points(records: list[dict]) -> list[dict]:
    """One point per site of every no-CRAFT federated run: its SGD steps and its silent fraction at
    the end (its own model on its own faces). Local-only sites are models of their own; FedAvg's are
    not."""
    return [
        {
            "strategy": r["strategy"],
            "split": r["split"],
            "seed": r["seed"],
            "steps": steps,
            "silent": silent,
        }
        for r in records
        if r["craft"] == "none" and r["strategy"] not in CENTRAL
        for steps, silent in zip(r["steps"], r["final"]["client_silent_fraction"])
    ]


def death_table(records: list[dict]) -> str:
    """Silent conv1 at the end of every no-CRAFT arm beside its decay budget, each arm paired by
    seed against the step-matched control (``central_steps``), and how death follows steps across
    local-only sites."""
    silent = {
        (s, sp): {
            k: r["final"]["silent_fraction"] for k, r in _arm_runs(records, s, sp, "none").items()
        }
        for s, sp in DEATH_ROWS
    }
    control = silent[("central_steps", "—")]
    lines = [
        "| model | split | SGD steps per model | a gradient-free weight ends at | silent conv1 at "
        "the end, "
        "mean [range] (seeds) | Δ vs step-matched control, paired, 95% CI |",
        "|" + "---|" * 6,
    ]
    for s, sp in DEATH_ROWS:
        runs = _arm_runs(records, s, sp, "none")
        if not runs:
            continue
        steps = [n for r in runs.values() for n in r["steps"]]
        decay = [f for r in runs.values() for f in decay_factors(r)]
        where = " (each site)" if s == "local" else " (the average)" if s not in CENTRAL else ""
        versus = "—" if s == "central_steps" else _versus(silent[(s, sp)], control)
        lines.append(
            f"| {FL_STRATEGY_LABELS[s]} | {sp} | {_span(steps, ',')} | "
            f"{_span(decay, '.2g')}×{where} | "
            f"{_spread(silent[(s, sp)].values())} | {versus} |"
        )
    local = [p for p in site_points(records) if p["strategy"] == "local"]
    if len(local) > 2:
        rho = stats.spearmanr([p["steps"] for p in local], [p["silent"] for p in local]).statistic
        lines.append(
            f"\nLocal-only sites, each a model of its own: Spearman ρ = {rho:.2f} between a site's "
            f"SGD steps "
            f"and its silent fraction ({len(local)} sites: every local-only run, both splits)."
        )
    return "\n".join(lines)


def renewed_count(record: dict) -> int:
    """Filters re-activated over the whole run: by the server (or the centralised callback), or by
    the sites."""
    return sum(
        len(r["server_renewed"]) + sum(len(c.get("renewed", [])) for c in r["clients"])
        for r in record["rounds"]
    )


def blended_count(record: dict) -> int:
    """Per-client CRAFT: filters renewed on two or more sites in the same round, which the average
    then blends (each site drew its own new filter for that index)."""
    return sum(
        sum(n >= 2 for n in Counter(f for c in r["clients"] for f in c.get("renewed", [])).values())
        for r in record["rounds"]
    )


def reactivation_table(records: list[dict]) -> str:
    """Every CRAFT arm: how many filters it renewed (and, per client under FedAvg, how many the
    average blended), the silent fraction it left, and that fraction paired by seed against its
    no-CRAFT twin."""
    lines = [
        "| model | split | re-activation | filters renewed per run, mean [range] (seeds) | of "
        "which renewed on "
        "≥ 2 sites in one round | silent conv1 at the end, mean [range] (seeds) | Δ vs no CRAFT, "
        "paired, 95% CI |",
        "|" + "---|" * 7,
    ]
    for s in FL_STRATEGIES:
        for sp in ("—",) if s in CENTRAL else SPLITS:
            for craft in CRAFT_MODES[1:]:
                runs = _arm_runs(records, s, sp, craft)
                if not runs:
                    continue
                left = {k: r["final"]["silent_fraction"] for k, r in runs.items()}
                twin = {
                    k: r["final"]["silent_fraction"]
                    for k, r in _arm_runs(records, s, sp, "none").items()
                }
                renewed = _spread([renewed_count(r) for r in runs.values()], percent=False)
                blended = (
                    _spread([blended_count(r) for r in runs.values()], percent=False)
                    if craft == "client" and s != "local"
                    else "—"
                )
                lines.append(
                    f"| {FL_STRATEGY_LABELS[s]} | {sp} | {craft} | {renewed} | {blended} | "
                    f"{_spread(left.values())} | "
                    f"{_versus(left, twin)} |"
                )
    return "\n".join(lines)
