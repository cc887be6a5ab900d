"""The dose–response study read as declared in docs/STUDY.md: Δ per level, the slope of Δ on death,
its figure.

Per level: every arm's silent fraction, Δ accuracy against standard training paired by seed
(t-interval, Holm across levels), and a two-level bootstrap interval that also resamples the test
pairs. Across the 40-px levels: the OLS slope of Δ on standard training's silent fraction with a
stratified seed bootstrap. Everything is computed from the committed records; nothing here trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from craftlib.paths import atomic_write
from craftlib.verification import best_threshold

from .dose import DEFAULT_ROOT, LEVELS
from .experiments import load_records
from .results import METRICS, fmt, holm, paired, run_values

PRIMARY_SIZE = (
    40  # the slope is read over the levels at this input size; the others are read against it
)
# (arm, baseline): the primary comparison, then the declared secondary ones (docs/STUDY.md)
COMPARISONS = (("contextual", "none"), ("random_matched", "none"), ("contextual", "random_matched"))
SLOPE_BOOT, PAIR_BOOT = 10_000, 2_000  # resamples, as declared


def load(root: str | Path = DEFAULT_ROOT) -> dict[str, list[dict]]:
    """Records per level, in the declared order of ``LEVELS`` (levels without records are left
    out)."""
    out = {}
    for level in LEVELS:
        folder = Path(root) / level
        if folder.is_dir():
            records = load_records(folder)
            if records:
                out[level] = records
    return out


def by_seed(records: list[dict], arm: str) -> dict[int, dict]:
    return {r["seed"]: r for r in records if r["arm"] == arm}


def deltas(
    records: list[dict], arm: str, baseline: str = "none", metric: str = "accuracy"
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Seeds both arms have, the paired differences ``arm − baseline`` and the dose at each: the
    silent fraction standard training ends with at that seed (whatever the baseline)."""
    a, b, dose = by_seed(records, arm), by_seed(records, baseline), by_seed(records, "none")
    seeds = sorted(
        s
        for s in set(a) & set(b) & set(dose)
        if a[s].get(metric) is not None and b[s].get(metric) is not None
    )
    diff = np.array([a[s][metric] - b[s][metric] for s in seeds], float)
    silent = np.array([run_values(dose[s])["silent_fraction"] for s in seeds], float)
    return seeds, diff, silent


def slope(
    groups: list[tuple[np.ndarray, np.ndarray]], boot: int = SLOPE_BOOT, seed: int = 0
) -> dict:
    """OLS slope of y on x over all groups' points, with a 95% percentile CI resampling points
    within groups.

    Each group is one level's (silent fraction, Δ) per seed: resampling within levels keeps every
    dose in every resample, so the interval reflects seed noise, not which levels happened to be
    drawn.
    """
    groups = [(np.asarray(x, float), np.asarray(y, float)) for x, y in groups if len(x)]
    if not groups:
        return {"n": 0, "slope": None, "ci95": None, "intercept": None}
    x, y = np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups])
    if len(x) < 3 or np.ptp(x) == 0:
        return {"n": int(len(x)), "slope": None, "ci95": None, "intercept": None}
    b, a = np.polyfit(x, y, 1)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        picks = [rng.integers(0, len(gx), len(gx)) for gx, _ in groups]
        bx = np.concatenate([gx[i] for (gx, _), i in zip(groups, picks)])
        by = np.concatenate([gy[i] for (_, gy), i in zip(groups, picks)])
        if np.ptp(bx) > 0:
            draws.append(np.polyfit(bx, by, 1))
    draws = np.asarray(draws)
    grid = np.linspace(x.min(), x.max(), 21)  # the band only where the levels put points
    band = draws[:, 0][:, None] * grid[None, :] + draws[:, 1][:, None]
    return {
        "n": int(len(x)),
        "slope": float(b),
        "intercept": float(a),
        "ci95": [float(np.percentile(draws[:, 0], 2.5)), float(np.percentile(draws[:, 0], 97.5))],
        "band": {
            "x": grid.tolist(),
            "low": np.percentile(band, 2.5, axis=0).tolist(),
            "high": np.percentile(band, 97.5, axis=0).tolist(),
        },
    }


def cv_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> float:
    """The 10-fold protocol's accuracy (threshold from the other folds) on a possibly resampled pair
    list."""
    accs = []
    for k in np.unique(folds):
        test = folds == k
        if test.any() and (~test).any() and same[~test].any() and (~same[~test]).any():
            t = best_threshold(scores[~test], same[~test])
            accs.append(np.mean((scores[test] > t) == same[test]))
    return float(np.mean(accs))


def two_level_ci(
    a: dict[int, list[float]],
    b: dict[int, list[float]],
    same: np.ndarray,
    folds: np.ndarray,
    clusters: np.ndarray,
    boot: int = PAIR_BOOT,
    seed: int = 0,
) -> list[float] | None:
    """95% interval of mean(acc_a − acc_b) resampling seeds, then test pairs clustered by identity.

    ``a``/``b``: per-seed pair scores of two arms. One pair resample serves both arms of a seed, so
    the difference stays paired; identities, not pairs, are resampled because pairs sharing a person
    are not independent.
    """
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    ids = np.unique(clusters)
    members = [np.flatnonzero(clusters == c) for c in ids]
    sa = {s: np.asarray(a[s], float) for s in seeds}
    sb = {s: np.asarray(b[s], float) for s in seeds}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        diffs = []
        for s in rng.choice(seeds, len(seeds)):
            idx = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
            y, f = same[idx], folds[idx]
            diffs.append(cv_accuracy(sa[s][idx], y, f) - cv_accuracy(sb[s][idx], y, f))
        draws.append(np.mean(diffs))
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def devtest_design(data: str | Path | None = None) -> dict | None:
    """DevTest's labels, folds and first-image identities in record order (``None`` without the pair
    file)."""
    from craftlib.data import LFWNotFoundError, find_lfw, read_pairs

    try:
        root = find_lfw(data, download=False)
    except LFWNotFoundError:
        return None
    files = list(root.rglob("pairsDevTest.txt"))
    if not files:
        return None
    pairs = read_pairs(files[0])
    return {
        "same": np.array([p.same for p in pairs]),
        "folds": np.array([p.fold for p in pairs]),
        "clusters": np.array([p.left.split("/")[0] for p in pairs]),
    }


def comparison_name(arm: str, baseline: str = "none") -> str:
    """The key of a comparison's slope: the arm's name against standard training."""
    return arm if baseline == "none" else f"{arm} vs {baseline}"


def summarize(
    root: str | Path = DEFAULT_ROOT,
    comparisons: tuple[tuple[str, str], ...] = COMPARISONS,
    pair_boot: int = PAIR_BOOT,
    slope_boot: int = SLOPE_BOOT,
    data: str | Path | None = None,
) -> dict:
    """The study's summary: one row per level and comparison, the slopes, and the declared
    verdict."""
    levels = load(root)
    design = devtest_design(data) if pair_boot else None
    arms = sorted({a for pair in comparisons for a in pair} | {"none"})
    rows = []
    for level, records in levels.items():
        wd, size = LEVELS[level]
        mean = {arm: _arm_means(records, arm) for arm in arms}
        for arm, baseline in comparisons:
            seeds, _, _ = deltas(records, arm, baseline)
            row = {
                "level": level,
                "weight_decay": wd,
                "size": size,
                "arm": arm,
                "baseline": baseline,
                "seeds": seeds,
                "none": mean["none"],
                "baseline_means": mean[baseline],
                "arm_means": mean[arm],
                **{
                    m: _paired(records, arm, m, baseline)
                    for m in ("accuracy", "auc", "eer", "tar@far=0.01")
                },
            }
            row["two_level_ci95"] = (
                _pair_ci(records, arm, baseline, design, pair_boot) if design is not None else None
            )
            rows.append(row)
    for arm, baseline in comparisons:  # Holm across levels, within each comparison and endpoint
        mine = [r for r in rows if (r["arm"], r["baseline"]) == (arm, baseline)]
        for metric in ("accuracy", "auc", "eer", "tar@far=0.01"):
            adjusted = holm({r["level"]: r[metric]["t_pvalue"] for r in mine})
            for r in mine:
                r[metric]["holm_pvalue"] = adjusted[r["level"]]
    slopes = {}
    for arm, baseline in comparisons:
        groups = []
        for level, records in levels.items():
            if LEVELS[level][1] == PRIMARY_SIZE:
                _, diff, silent = deltas(records, arm, baseline)
                groups.append((silent, diff))
        slopes[comparison_name(arm, baseline)] = slope(groups, slope_boot)
    out = {
        "schema": "craftlib-dose-2",
        "levels": {lv: list(LEVELS[lv]) for lv in levels},
        "rows": rows,
        "slopes": slopes,
    }
    out["verdict"] = verdict(out)
    return out


def committed(root: str | Path | None = None) -> tuple[dict | None, str]:
    """The committed study's summary for the notebooks (no pair resampling: seconds), or ``None``
    and why."""
    from craftlib.paths import REPO_ROOT

    root = Path(root) if root is not None else REPO_ROOT / DEFAULT_ROOT
    levels = load(root)
    if not levels:
        return None, (
            f"no dose-study records under {root} (a pip install has no docs/; in a checkout, "
            "`make dose` runs the study)"
        )
    summary = summarize(root, pair_boot=0)
    runs = sum(len(v) for v in levels.values())
    return summary, (
        f"{runs} committed runs at {len(levels)} levels; declared reading so far: "
        f"{summary['verdict']}"
    )


def _arm_means(records: list[dict], arm: str) -> dict:
    runs = list(by_seed(records, arm).values())
    values = [run_values(r) for r in runs]
    return {
        "runs": len(runs),
        **{
            m: (
                float(np.mean([v[m] for v in values if v[m] is not None]))
                if any(v[m] is not None for v in values)
                else None
            )
            for m in METRICS
        },
    }


def _paired(records: list[dict], arm: str, metric: str, baseline: str = "none") -> dict:
    seeds, diff, _ = deltas(records, arm, baseline, metric)
    p = paired(list(diff), [0.0] * len(diff))
    return {
        "n": p.n,
        "mean": p.mean_difference,
        "ci95": list(p.ci95) if p.ci95 else None,
        "t_pvalue": p.t_pvalue,
        "mde": p.mde,
    }


def _pair_ci(
    records: list[dict], arm: str, baseline: str, design: dict, boot: int
) -> list[float] | None:
    a = {s: r["pair_scores"] for s, r in by_seed(records, arm).items() if "pair_scores" in r}
    b = {s: r["pair_scores"] for s, r in by_seed(records, baseline).items() if "pair_scores" in r}
    return two_level_ci(a, b, design["same"], design["folds"], design["clusters"], boot)


def verdict(summary: dict, arm: str = "contextual") -> str:
    """The declared reading: growth needs the slope's CI above 0 and Δ at the deadliest level above
    0."""
    s = summary["slopes"].get(arm, {})
    if not s or s.get("ci95") is None:
        return "not yet estimable (fewer than three paired points or one dose)"
    lo, hi = s["ci95"]
    primary = [
        r
        for r in summary["rows"]
        if (r["arm"], r["baseline"]) == (arm, "none") and r["size"] == PRIMARY_SIZE
    ]
    deadliest = max(primary, key=lambda r: r["none"]["silent_fraction"])
    ci = deadliest["accuracy"]["ci95"]
    if lo > 0 and ci is not None and ci[0] > 0:
        return "the benefit grows with death"
    if hi < 0:
        return "the effect shrinks as filters die"
    if lo > 0:
        return (
            f"slope above zero, but Δ at the deadliest level ({deadliest['level']}) is not "
            f"resolved above "
            "zero: growth not established by the declared rule"
        )
    return (
        f"no dose–response resolved (the slope's CI allows up to {100 * hi:+.2f} pts per 100 "
        f"pts of silent)"
    )


def pilot_markdown(root: str | Path = DEFAULT_ROOT) -> str:
    """The pilot: standard training at seed 0 of every level — does the span reach from none to most
    dying?"""
    lines = [
        "| level | weight decay | input | silent conv1 (τ 0.01) | small-weight conv1 (max\\|w\\| < "
        "0.1) | "
        "DevTest accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for level, records in load(root).items():
        run = by_seed(records, "none").get(0)
        if run is None:
            continue
        v = run_values(run)
        wd, size = LEVELS[level]
        lines.append(
            f"| `{level}` | {wd:g} | {size} px | {fmt('silent_fraction', v['silent_fraction'])} | "
            f"{fmt('weight_fraction', v['weight_fraction'])} | {fmt('accuracy', v['accuracy'])} |"
        )
    return "\n".join(lines)


def markdown(summary: dict, arm: str = "contextual", baseline: str = "none") -> str:
    """The per-level table of one arm against a baseline (standard training unless named), and the
    slope line under it."""
    against = "standard" if baseline == "none" else baseline
    head = (
        f"| level | wd | px | seeds | silent, standard | silent, arm | accuracy, {against} | Δ "
        "accuracy | "
        "95% CI (seeds) | 95% CI (seeds × pairs) | Holm p | Δ EER | Δ AUC | Δ TAR@1e-2 |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in (r for r in summary["rows"] if (r["arm"], r["baseline"]) == (arm, baseline)):
        acc = r["accuracy"]
        ci = acc["ci95"]
        two = r["two_level_ci95"]
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{r['level']}`",
                    f"{r['weight_decay']:g}",
                    str(r["size"]),
                    str(acc["n"]),
                    fmt("silent_fraction", r["none"]["silent_fraction"]),
                    fmt("silent_fraction", r["arm_means"]["silent_fraction"]),
                    fmt("accuracy", r["baseline_means"]["accuracy"]),
                    fmt("accuracy", acc["mean"], True),
                    f"[{fmt('accuracy', ci[0], True)}, {fmt('accuracy', ci[1], True)}]"
                    if ci
                    else "n/a",
                    f"[{fmt('accuracy', two[0], True)}, {fmt('accuracy', two[1], True)}]"
                    if two
                    else "n/a",
                    fmt("p", acc["holm_pvalue"]),
                    fmt("eer", r["eer"]["mean"], True),
                    fmt("auc", r["auc"]["mean"], True),
                    fmt("tar@far=0.01", r["tar@far=0.01"]["mean"], True),
                ]
            )
            + " |"
        )
    s = summary["slopes"][comparison_name(arm, baseline)]
    if s.get("slope") is not None:
        lines.append("")
        lines.append(
            f"Slope of Δ accuracy on standard training's silent fraction ({PRIMARY_SIZE} px "
            f"levels, "
            f"{s['n']} seed pairs): {100 * s['slope']:+.2f} pts per 100 pts of silent, 95% CI "
            f"[{100 * s['ci95'][0]:+.2f}, {100 * s['ci95'][1]:+.2f}] (seeds resampled within "
            f"levels)."
        )
    return "\n".join(lines)


def write_report(root: str | Path = DEFAULT_ROOT, log=print) -> str:
    """summary.json, summary.md and dose.png from the records under ``root``; returns the
    Markdown."""
    root = Path(root)
    summary = summarize(root)
    if not summary["rows"]:
        raise SystemExit(
            f"no dose-study records under {root}: run `python -m craftlib.study.dose_cli` first"
        )
    text = "\n\n".join(
        [
            f"## CRAFT vs standard training\n\n{markdown(summary)}",
            f"## Random (matched scale) vs standard "
            f"training\n\n{markdown(summary, 'random_matched')}",
            "## CRAFT vs random (matched scale): does the context matter?\n\n"
            + markdown(summary, "contextual", "random_matched"),
            f"Declared reading: **{summary['verdict']}**.",
        ]
    )
    atomic_write(root / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    atomic_write(root / "summary.md", lambda tmp: tmp.write_text(text + "\n"))
    fig = dose_figure(summary)
    atomic_write(
        root / "dose.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    )
    log(f"wrote {root / 'summary.json'}, summary.md, dose.png")
    return text


def dose_figure(summary: dict, arm: str = "contextual"):
    """Left: Δ accuracy against standard training's silent fraction, one point per level (95%
    t-interval), the 40-px slope and its band. Right: how many filters each arm ends with silent,
    per weight decay."""
    from craftlib.viz import new_figure

    fig = new_figure((11, 4.2))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rows = [r for r in summary["rows"] if (r["arm"], r["baseline"]) == (arm, "none")]
    for r in rows:
        if r["accuracy"]["mean"] is None:  # no paired seed at this level yet
            continue
        acc, x = r["accuracy"], 100 * r["none"]["silent_fraction"]
        err = (
            None
            if acc["ci95"] is None
            else [[100 * (acc["mean"] - acc["ci95"][0])], [100 * (acc["ci95"][1] - acc["mean"])]]
        )
        ax.errorbar(
            [x],
            [100 * acc["mean"]],
            yerr=err,
            fmt="o" if r["size"] == PRIMARY_SIZE else "s",
            capsize=3,
            color="C0" if r["size"] == PRIMARY_SIZE else "C3",
        )
        ax.annotate(
            f"{r['level']} (n={acc['n']})",
            (x, 100 * acc["mean"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    s = summary["slopes"].get(arm, {})
    if s.get("slope") is not None:
        grid = np.asarray(s["band"]["x"])
        ax.plot(100 * grid, 100 * (s["intercept"] + s["slope"] * grid), color="C0", lw=1)
        ax.fill_between(
            100 * grid,
            100 * np.asarray(s["band"]["low"]),
            100 * np.asarray(s["band"]["high"]),
            color="C0",
            alpha=0.15,
            label=f"{PRIMARY_SIZE} px slope, 95% band",
        )
        ax.legend(fontsize=8, loc="best")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(
        xlabel="standard training: silent conv1 filters at the end (%)",
        ylabel="Δ DevTest accuracy, CRAFT − standard (pts)",
        title="does the benefit grow with death?",
    )
    for name, color in (("none", "k"), (arm, "C0"), ("random_matched", "C2")):
        key = "none" if name == "none" else "arm_means"
        source = (
            rows
            if name != "random_matched"
            else [r for r in summary["rows"] if r["arm"] == "random_matched"]
        )
        pts = sorted(
            (r["weight_decay"], 100 * r[key]["silent_fraction"])
            for r in source
            if r["size"] == PRIMARY_SIZE and r[key]["silent_fraction"] is not None
        )
        if pts:
            ax2.plot(
                *zip(*pts),
                "o-",
                color=color,
                label={"none": "standard", arm: "CRAFT"}.get(name, "random, matched"),
            )
    ax2.set(
        xscale="log",
        xlabel=f"weight decay on all parameters ({PRIMARY_SIZE} px)",
        ylabel="silent conv1 filters (%)",
        title="the dose: how many filters end silent",
    )
    ax2.legend(fontsize=8)
    return fig
