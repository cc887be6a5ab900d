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

from craftlib import pages
from craftlib.paths import atomic_write

from .dose import DEFAULT_ROOT, LEVELS
from .experiments import load_records
from .results import METRICS, fmt, fmt_ci, holm, paired, run_values

PRIMARY_SIZE = (
    40  # the slope is read over the levels at this input size; the others are read against it
)
# (arm, baseline): the primary comparison, then the declared secondary ones (docs/STUDY.md)
COMPARISONS = (("contextual", "none"), ("random_matched", "none"), ("contextual", "random_matched"))
TITLES = {
    ("contextual", "none"): "CRAFT vs standard training",
    ("random_matched", "none"): "Random (matched scale) vs standard training",
    ("contextual", "random_matched"): "CRAFT vs random (matched scale): does the context matter?",
}
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


def _thresholds(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``best_threshold`` for every resample at once: ``s`` sorted scores, ``y`` their labels,
    ``w[b, i]`` how often resample ``b`` draws pair ``i``.

    Cut 0 lies below every drawn score, cut g + 1 just above score group g (tied scores form one
    group); only groups a resample draws give it a cut, and the first best cut wins, as there.
    """
    starts = np.flatnonzero(np.r_[True, s[1:] > s[:-1]])
    values, n_groups = s[starts], len(starts)
    pos, neg = np.add.reduceat(w * y, starts, axis=1), np.add.reduceat(w * ~y, starts, axis=1)
    drawn = (pos + neg) > 0
    zero = np.zeros((len(w), 1), dtype=pos.dtype)
    # correct at each cut: negatives below it + positives above it
    correct = np.hstack([zero, np.cumsum(neg, 1)]) + pos.sum(1, keepdims=True)
    correct -= np.hstack([zero, np.cumsum(pos, 1)])
    cut = np.argmax(np.where(np.hstack([np.ones_like(zero, bool), drawn]), correct, -1), 1)
    # the next drawn group at or after each group (n_groups: none): the score above the cut
    nxt = np.where(drawn, np.arange(n_groups), n_groups)
    nxt = np.hstack([np.minimum.accumulate(nxt[:, ::-1], 1)[:, ::-1], zero + n_groups])
    values = np.r_[values, np.nan]
    below, above = values[np.maximum(cut - 1, 0)], values[nxt[np.arange(len(w)), cut]]
    return np.where(
        cut == 0,
        values[nxt[:, 0]] - 1e-6,
        np.where(np.isnan(above), below + 1e-6, (below + above) / 2),
    )


def cv_accuracy(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """The 10-fold protocol's accuracy on many resamples of one pair list at once.

    ``counts[b, i]``: how often pair ``i`` is drawn in resample ``b``. Row ``b`` is the protocol
    run on the resampled list (``best_threshold`` on the other folds, accuracy on this one, mean
    over folds; a fold without test pairs or without both labels in its training part is left out,
    which a resample can cause) — from cumulative counts in score order instead of one sort per
    resample: the 2,000-resample interval in seconds, not hours.
    """
    order = np.argsort(scores, kind="stable")
    same = np.asarray(same, bool)
    s, y, f, w = scores[order], same[order], folds[order], np.asarray(counts)[:, order]
    per_fold = []
    for k in np.unique(folds):
        test = f == k
        t = _thresholds(s[~test], y[~test], w[:, ~test])
        right = (((s[test][None, :] > t[:, None]) == y[test]) * w[:, test]).sum(1)
        n_test, n_pos = w[:, test].sum(1), (w[:, ~test] * y[~test]).sum(1)
        ok = (n_test > 0) & (n_pos > 0) & (n_pos < w[:, ~test].sum(1))
        per_fold.append(np.where(ok, right / np.maximum(n_test, 1), np.nan))
    kept = [r[~np.isnan(r)] for r in np.array(per_fold).T]
    return np.array([r.mean() if r.size else np.nan for r in kept])  # nan: every fold left out


def _pair_counts(cluster_of: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` cluster bootstrap resamples of a pair list as counts per pair (``cv_accuracy``'s
    input): clusters are drawn with replacement and every pair of a drawn cluster comes along.
    ``cluster_of``: each pair's cluster as an index 0..k-1 (``np.unique(..., return_inverse)``)."""
    k = int(cluster_of.max()) + 1  # one draw call per resample: the declared interval's stream
    counts = [np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(n)]
    return np.array(counts, dtype=np.int32)[:, cluster_of]


def _no_nan(diff: np.ndarray, cluster_of: np.ndarray) -> None:
    if np.isnan(diff).any():
        raise ValueError(
            f"{int(np.isnan(diff).sum())} of {diff.size} pair resamples left every fold without "
            "test pairs or without both labels to choose its threshold: "
            f"{int(cluster_of.max()) + 1} clusters are too few for a clustered pair bootstrap "
            "(DevTest has 463); report the seed interval alone"
        )


def two_level_ci(
    a: dict[int, list[float]],
    b: dict[int, list[float]],
    same: np.ndarray,
    folds: np.ndarray,
    clusters: np.ndarray,
    boot: int = PAIR_BOOT,
    seed: int = 0,
) -> list[float] | None:
    """The declared 95% interval of mean(acc_a − acc_b): resample seeds, then, for each drawn seed,
    the test pairs clustered by identity (``clusters``: a label per pair).

    ``a``/``b``: per-seed pair scores of two arms. One pair resample serves both arms of a seed, so
    the difference stays paired. Each drawn seed's own pair resample averages the test set's
    sampling error over seeds, and its pair-level noise, already in the seeds' spread, is counted
    again: ``crossed_ci`` (ours) separates the two.
    """
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    cluster_of = np.unique(clusters, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    drawn, counts = [], []  # draw by draw: the seeds, then a pair resample per drawn seed
    for _ in range(boot):
        drawn.append(rng.choice(seeds, len(seeds)))
        counts.extend(_pair_counts(cluster_of, len(seeds), rng))
    drawn, counts = np.concatenate(drawn), np.array(counts)
    diff = np.empty(len(drawn))
    for s in seeds:
        mine = drawn == s
        acc_a = cv_accuracy(np.asarray(a[s], float), same, folds, counts[mine])
        acc_b = cv_accuracy(np.asarray(b[s], float), same, folds, counts[mine])
        diff[mine] = acc_a - acc_b
    _no_nan(diff, cluster_of)
    draws = [np.mean(d) for d in diff.reshape(boot, len(seeds))]
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def crossed_ci(
    a: dict[int, list[float]],
    b: dict[int, list[float]],
    same: np.ndarray,
    folds: np.ndarray,
    clusters: np.ndarray,
    boot: int = PAIR_BOOT,
    seed: int = 0,
) -> dict | None:
    """Ours: a 95% interval of mean(acc_a − acc_b) over seeds *and* over test sets like DevTest.

    Every run is scored on the one DevTest set, so part of its sampling error is shared by all
    seeds and does not average out; the rest (which pairs a given seed happens to flip) is already
    in the seeds' spread. A pair resample shared by all seeds (crossed) measures both together;
    the method of moments separates them (Owen 2007, crossed random effects): with ``v_n`` the
    variance over resamples of the seeds' mean Δ and ``v_1`` the seeds' mean variance of their own
    Δ, the shared part is (n·v_n − v_1)/(n − 1). Interval: mean ± t(n−1)·√(s²/n + shared), s² the
    seeds' variance of Δ. Resampling seeds and pairs at once would count the per-seed part twice.
    Returns ``ci95``, ``shared_se`` (√shared) and ``seed_se`` (s/√n), in accuracy units.
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    n = len(seeds)
    if n < 2:
        return None
    cluster_of = np.unique(clusters, return_inverse=True)[1]
    counts = _pair_counts(cluster_of, boot, np.random.default_rng(seed))
    whole = np.ones((1, len(same)), dtype=np.int32)
    full, diff = [], []
    for s in seeds:
        sa, sb = np.asarray(a[s], float), np.asarray(b[s], float)
        full.append((cv_accuracy(sa, same, folds, whole) - cv_accuracy(sb, same, folds, whole))[0])
        diff.append(cv_accuracy(sa, same, folds, counts) - cv_accuracy(sb, same, folds, counts))
    diff = np.array(diff)  # (seed, resample)
    _no_nan(diff, cluster_of)
    v_n, v_1 = diff.mean(0).var(ddof=1), diff.var(1, ddof=1).mean()
    shared = max(0.0, (n * v_n - v_1) / (n - 1))
    seed_var = np.var(full, ddof=1) / n
    half = stats.t.ppf(0.975, n - 1) * np.sqrt(seed_var + shared)
    mean = float(np.mean(full))
    return {
        "ci95": [mean - half, mean + half],
        "shared_se": float(np.sqrt(shared)),
        "seed_se": float(np.sqrt(seed_var)),
    }


def people_clusters(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """A cluster label per pair such that pairs sharing a person, directly or through others, share
    a label: the connected components of the graph whose nodes are people and whose edges are pairs.

    Why (ours): clustering by the first image's identity treats two pairs that share their *second*
    person as independent (in DevTest, 293 of the 500 different-person pairs have a second person
    who is in another pair). Components put every such dependence inside one cluster (DevTest: 463
    clusters of 1–25 pairs) without inflating each pair's own noise, as product weights over
    people (a node bootstrap) would."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    people, ends = np.unique(np.r_[left, right], return_inverse=True)
    a, b = ends[: len(left)], ends[len(left) :]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(people), len(people)))
    return connected_components(graph, directed=False)[1][a]


def devtest_design(data: str | Path | None = None) -> dict | None:
    """DevTest's labels, folds, first-image identities (``clusters``, declared) and the clusters of
    pairs linked by a shared person (``linked``, ours) in record order (``None`` without the pair
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
    first = np.array([p.left.split("/")[0] for p in pairs])  # a pair's two people
    second = np.array([p.right.split("/")[0] for p in pairs])
    return {
        "same": np.array([p.same for p in pairs]),
        "folds": np.array([p.fold for p in pairs]),
        "clusters": first,
        "linked": people_clusters(first, second),
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
    rows = []
    for level, records in levels.items():
        wd, size = LEVELS[level]
        for arm, baseline in comparisons:
            seeds, diff, silent = deltas(records, arm, baseline)
            mean = {a: _arm_means(records, a, seeds) for a in {arm, baseline, "none"}}
            row = {
                "level": level,
                "weight_decay": wd,
                "size": size,
                "arm": arm,
                "baseline": baseline,
                "seeds": seeds,
                "silent": silent.tolist(),  # per seed: the dose (standard training's silent)
                "delta": diff.tolist(),  # per seed: the paired Δ accuracy
                "none": mean["none"],
                "baseline_means": mean[baseline],
                "arm_means": mean[arm],
                **{
                    m: _paired(records, arm, m, baseline)
                    for m in ("accuracy", "auc", "eer", "tar@far=0.01")
                },
            }
            row.update(_pair_intervals(records, arm, baseline, design, pair_boot))
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
        # which runs it read, so a summary can be checked while later records arrive
        "records": {
            lv: sorted(f"{r['arm']}-s{r['seed']}" for r in rs) for lv, rs in levels.items()
        },
    }
    out["verdict"] = verdict(out)
    out["second_size"] = second_size(out)
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


def _arm_means(records: list[dict], arm: str, seeds: list[int]) -> dict:
    """An arm's means over the seeds a comparison pairs (so dose and Δ describe the same runs)."""
    runs = [r for s, r in by_seed(records, arm).items() if s in seeds]
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


def _pair_intervals(
    records: list[dict], arm: str, baseline: str, design: dict | None, boot: int
) -> dict:
    """The declared two-level interval and our crossed one (``None`` without a pair design)."""
    if design is None:
        return {"two_level_ci95": None, "crossed_ci95": None, "pair_shared_se": None}
    a = {s: r["pair_scores"] for s, r in by_seed(records, arm).items() if "pair_scores" in r}
    b = {s: r["pair_scores"] for s, r in by_seed(records, baseline).items() if "pair_scores" in r}
    same, folds = design["same"], design["folds"]
    crossed = crossed_ci(a, b, same, folds, design["linked"], boot)  # ours: linked pairs
    return {
        "two_level_ci95": two_level_ci(a, b, same, folds, design["clusters"], boot),
        "crossed_ci95": crossed and crossed["ci95"],
        "pair_shared_se": crossed and crossed["shared_se"],
    }


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


def second_size(summary: dict, arm: str = "contextual") -> list[dict]:
    """The declared reading of the other input sizes: does each level's Δ fall inside the primary
    size's line (its 95% bootstrap band) at that level's silent fraction? ``inside`` is ``None``
    where the level has fewer than two seed pairs or lies outside the silent range the band
    covers."""
    s = summary["slopes"].get(arm, {})
    out = []
    for r in summary["rows"]:
        if (r["arm"], r["baseline"]) != (arm, "none") or r["size"] == PRIMARY_SIZE:
            continue
        acc, x = r["accuracy"], r["none"]["silent_fraction"]
        row = {"level": r["level"], "seeds": acc["n"], "silent_fraction": x, "delta": acc["mean"]}
        row["ci95"] = acc["ci95"]
        row["predicted"] = row["band"] = row["inside"] = row["off_line_ci95"] = None
        if s.get("slope") is not None and x is not None:
            grid = np.asarray(s["band"]["x"])
            row["predicted"] = s["intercept"] + s["slope"] * x
            if grid[0] <= x <= grid[-1]:
                band = [float(np.interp(x, grid, s["band"][k])) for k in ("low", "high")]
                row["band"] = band
                if acc["n"] >= 2:  # one seed pair is no reading yet
                    row["inside"] = bool(band[0] <= acc["mean"] <= band[1])
            if acc["ci95"] is not None and row["band"] is not None:  # ours: Δ − line, the two
                half = np.hypot(np.diff(acc["ci95"])[0], np.diff(row["band"])[0]) / 2  # 95% halves
                gap = acc["mean"] - row["predicted"]
                row["off_line_ci95"] = [float(gap - half), float(gap + half)]
        out.append(row)
    return out


def second_size_markdown(summary: dict) -> str:
    """The other input sizes against the primary line: Δ, the line's prediction and band there."""
    lines = [
        f"| level | seeds | silent, standard | Δ accuracy (95% CI) | {PRIMARY_SIZE}-px line there "
        "(95% band) | inside the band? | Δ − line (95%, ours) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary.get("second_size", []):
        lines.append(
            f"| `{r['level']}` | {r['seeds']} | {fmt('silent_fraction', r['silent_fraction'])} | "
            f"{fmt('accuracy', r['delta'], True)} {fmt_ci('accuracy', r['ci95'])} | "
            f"{fmt('accuracy', r['predicted'], True)} {fmt_ci('accuracy', r['band'])} | "
            + {True: "yes", False: "**no**", None: "n/a"}[r["inside"]]
            + f" | {fmt_ci('accuracy', r.get('off_line_ci95'))} |"
        )
    lines += [
        "",
        "The declared check sets a level's mean Δ against the line's band, which ignores the "
        "level's own seed noise: a level that follows the line can still read **no**. The last "
        "column (our addition) widens the band by the level's own 95% half-width; where it "
        "contains 0 the level is not resolved off the line.",
    ]
    return "\n".join(lines)


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


def _identical(e: dict) -> bool:
    """A paired endpoint whose every seed difference is exactly 0: the arm's runs are the
    baseline's."""
    return e["ci95"] is None and e["n"] >= 2 and e["mean"] == 0


PAIR_COLUMNS = {  # summary key -> column: the intervals that also resample DevTest's pairs
    "two_level_ci95": "95% CI (seeds × pairs)",
    "crossed_ci95": "95% CI (seeds + shared pair error)",  # ours: crossed, linked pairs
}


def markdown(
    summary: dict, arm: str = "contextual", baseline: str = "none", size: int | None = None
) -> str:
    """The per-level accuracy table of one arm against a baseline (standard training unless named),
    and the slope line under it; ``size`` keeps one input size's levels (``secondary_markdown``:
    the other endpoints).

    Where the detector never fires, the arm's runs *are* standard training's (STUDY.md, amendment):
    every paired difference is exactly 0 and the table says so instead of an interval. A summary
    made without pair resampling (the notebooks': seconds) leaves the pair intervals out."""
    against = "standard" if baseline == "none" else baseline
    mine = [r for r in summary["rows"] if (r["arm"], r["baseline"]) == (arm, baseline)]
    mine = [r for r in mine if size is None or r["size"] == size]
    pairs = list(PAIR_COLUMNS) if any(r.get(k) for r in mine for k in PAIR_COLUMNS) else []
    head = (
        f"| level | wd | px | seeds | silent, standard | silent, arm | accuracy, {against} | Δ "
        "accuracy | 95% CI (seeds) | "
        + "".join(f"{PAIR_COLUMNS[k]} | " for k in pairs)
        + "Holm p |"
    )
    lines = [head, "|" + "---|" * (10 + len(pairs))]
    for r in mine:
        acc = r["accuracy"]
        ci = acc["ci95"]
        identical = _identical(acc)
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
                    *(
                        "identical runs" if identical else fmt_ci("accuracy", interval)
                        for interval in (ci, *(r.get(k) for k in pairs))
                    ),
                    "—" if identical else fmt("p", acc["holm_pvalue"]),
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


SECONDARY = (("eer", "Δ EER"), ("auc", "Δ AUC"), ("tar@far=0.01", "Δ TAR @ FAR 1e-2"))


def secondary_markdown(
    summary: dict, arm: str = "contextual", baseline: str = "none", size: int | None = None
) -> str:
    """The declared secondary verification endpoints per level: mean Δ, its 95% t-interval over
    seeds and the Holm p across levels within each endpoint (a lower EER is better)."""
    lines = [
        "| level | " + " | ".join(label for _, label in SECONDARY) + " |",
        "|---|" + "---|" * len(SECONDARY),
    ]
    for r in summary["rows"]:
        if (r["arm"], r["baseline"]) != (arm, baseline) or size not in (None, r["size"]):
            continue
        cells = []
        for metric, _ in SECONDARY:
            e = r[metric]
            if e["ci95"] is None:
                cells.append("identical runs" if _identical(e) else "n/a")
            else:
                cells.append(
                    f"{fmt(metric, e['mean'], True)} {fmt_ci(metric, e['ci95'])}, "
                    f"Holm {fmt('p', e['holm_pvalue'])}"
                )
        lines.append(f"| `{r['level']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(summary: dict, size: int | None = None) -> str:
    """The three declared comparisons (accuracy, then the secondary endpoints) and the declared
    reading; ``size`` keeps one input size's levels (RESULTS shows the primary size's)."""
    parts = [
        (
            f"#### {TITLES[arm, baseline]}\n\n{markdown(summary, arm, baseline, size)}\n\n"
            f"{secondary_markdown(summary, arm, baseline, size)}"
        )
        for arm, baseline in COMPARISONS
    ]
    parts.append(f"Declared reading: **{summary['verdict']}**.")
    if size != PRIMARY_SIZE and summary.get("second_size"):
        parts.append(
            f"#### The other input sizes against the {PRIMARY_SIZE}-px line (CRAFT vs standard)"
            f"\n\n{second_size_markdown(summary)}"
        )
    return "\n\n".join(parts)


def results_blocks(summary: dict) -> dict[str, str]:
    """What docs/RESULTS.md shows of the study, by block name: the primary size's comparisons, and
    the other sizes read against its line."""
    return {
        "dose:table": report_markdown(summary, size=PRIMARY_SIZE),
        "dose:second": second_size_markdown(summary),
    }


def write_report(
    root: str | Path = DEFAULT_ROOT, log=print, results: str | Path | None = None
) -> str:
    """summary.json, summary.md and dose.png from the records under ``root``, and with
    ``results`` that page's generated blocks (``results_blocks``); returns the Markdown."""
    root = Path(root)
    summary = summarize(root)
    if not summary["rows"]:
        raise SystemExit(
            f"no dose-study records under {root}: run `python -m craftlib.study.dose_cli` first"
        )
    text = report_markdown(summary)
    atomic_write(root / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    atomic_write(root / "summary.md", lambda tmp: tmp.write_text(text + "\n"))
    fig = dose_figure(summary)
    atomic_write(
        root / "dose.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    )
    log(f"wrote {root / 'summary.json'}, summary.md, dose.png")
    if results is not None:
        changed = pages.update(results, results_blocks(summary))
        log(
            f"{results}: rewrote {', '.join(changed)}; reread the prose that reads them and run "
            "`python -m craftlib.workshop.quotes --fix`"
            if changed
            else f"{results}: its dose blocks were already current"
        )
    return text


def dose_figure(summary: dict, arm: str = "contextual"):
    """Left: Δ accuracy against standard training's silent fraction, one point per level (95%
    t-interval) over its seed pairs (faint dots), the 40-px slope and its band. Right: how many
    filters each arm ends with silent, per weight decay."""
    from craftlib.viz import new_figure

    fig = new_figure((11, 4.2))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rows = [r for r in summary["rows"] if (r["arm"], r["baseline"]) == (arm, "none")]
    labels: dict[tuple[float, float], list[str]] = {}
    others: list[str] = []
    for r in rows:
        if r["accuracy"]["mean"] is None:  # no paired seed at this level yet
            continue
        primary = r["size"] == PRIMARY_SIZE
        ax.scatter(  # each seed pair, what the slope is fitted to
            100 * np.asarray(r.get("silent", [])),
            100 * np.asarray(r.get("delta", [])),
            s=10,
            color="C0" if primary else "C3",
            alpha=0.25,
            linewidths=0,
        )
        acc, x = r["accuracy"], 100 * r["none"]["silent_fraction"]
        wd = f"{r['weight_decay']:.0e}".replace("e-0", "e-")  # 5e-3, as the levels are named
        err = (
            None
            if acc["ci95"] is None
            else [[100 * (acc["mean"] - acc["ci95"][0])], [100 * (acc["ci95"][1] - acc["mean"])]]
        )
        ax.errorbar(
            [x],
            [100 * acc["mean"]],
            yerr=err,
            fmt="o" if primary else "sD^v"[len(others) % 4],
            capsize=3,
            color="C0" if primary else "C3",
            label=None if primary else f"wd {wd}, {r['size']} px (n={acc['n']})",
        )
        if primary:  # named on the plot; other sizes in the legend
            labels.setdefault((round(x, 6), round(100 * acc["mean"], 6)), []).append(
                f"{wd} (n={acc['n']})"
            )
        else:
            others.append(r["level"])
    for (x, y), names in labels.items():  # levels at one point (no death, Δ 0) share a label,
        shared = len(names) > 1  # drawn lower with a leader line, clear of the points beside it
        ax.annotate(
            ", ".join(names),
            (x, y),
            textcoords="offset points",
            xytext=(8, -34) if shared else (5, 5),
            arrowprops={"arrowstyle": "-", "lw": 0.5} if shared else None,
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
            label=f"{PRIMARY_SIZE} px slope, 95% band (points: wd, seed pairs)",
        )
    if ax.get_legend_handles_labels()[0]:
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
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    return fig
