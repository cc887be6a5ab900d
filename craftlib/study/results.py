"""The comparison summary: one schema, one loader, one formatter, three renderers (text, Markdown,
HTML).

Statistics are paired by seed against the baseline arm: mean difference with its 95% t-interval,
paired t and Wilcoxon p-values, Holm's correction across arms, the power a pre-declared effect would
have had, and the minimum detectable effect (80% power, two-sided α = 0.05) at the observed spread.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import integrate, optimize, special, stats

from craftlib.activity import SILENT_TAU
from craftlib.reactivation import PAPER_READING
from craftlib.recipes import ARM_LABELS
from craftlib.training import TrainConfig

from .experiments import fingerprint_diff, load_records, same_kind
from .survival import new_deaths, survival, survival_curve, survival_stats

SCHEMA = "craftlib-summary-2"
WEIGHT_TAU = PAPER_READING.tau
TAUS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # ~log-spaced: the curve's grid
CURVE_SCORES = ("silent", "max", "effective")
METRICS = (
    "accuracy",
    "auc",
    "eer",
    "tar@far=0.01",
    "tar@far=0.001",
    "silent_fraction",
    "weight_fraction",
)
METRIC_LABELS = {
    "accuracy": "DevTest accuracy",
    "auc": "ROC AUC",
    "eer": "EER",
    "tar@far=0.01": "TAR@FAR=1e-2",
    "tar@far=0.001": "TAR@FAR=1e-3",
    "silent_fraction": f"silent conv1 (τ={SILENT_TAU:g})",
    "weight_fraction": f"small-weight conv1 (max|w| τ={WEIGHT_TAU:g})",
}
PERCENT = {"accuracy", "tar@far=0.01", "tar@far=0.001", "silent_fraction", "weight_fraction", "eer"}
DELTA_STAR = 0.01  # the pre-declared effect of interest: 1 point of DevTest accuracy


@dataclass
class Paired:
    """One arm vs the baseline on one metric, over the seeds both have."""

    n: int
    mean_difference: float | None
    sd_difference: float | None
    ci95: tuple[float, float] | None
    t_pvalue: float | None
    wilcoxon_pvalue: float | None
    holm_pvalue: float | None = None
    power: float | None = None  # at DELTA_STAR, for the primary metric
    mde: float | None = None


@dataclass
class Arm:
    name: str
    label: str
    seeds: list[int]
    values: dict[str, list[float | None]]
    curves: dict[str, list[float]] = field(default_factory=dict)
    vs_baseline: dict[str, Paired] = field(default_factory=dict)
    survival: list[float] = field(default_factory=list)
    # survival_stats of the renewed filters (end of training)
    renewal: dict = field(default_factory=dict)

    def mean(self, metric: str) -> float | None:
        vals = [v for v in self.values[metric] if v is not None]
        return float(np.mean(vals)) if vals else None

    def std(self, metric: str) -> float | None:
        vals = [v for v in self.values[metric] if v is not None]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else None

    def curve_area(self, score: str) -> float:
        """Mean inactive fraction over the log-spaced τ grid: one τ-free number per score."""
        return float(np.mean(self.curves[score]))


@dataclass
class Summary:
    baseline: str
    arms: dict[str, Arm]
    fingerprint: dict
    taus: tuple[float, ...] = TAUS
    primary: str = "accuracy"
    delta_star: float = DELTA_STAR
    baseline_survival: list[float] = field(default_factory=list)
    # survival_stats of standard training's live filters
    baseline_renewal: dict = field(default_factory=dict)
    schema: str = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "Summary":
        if d.get("schema") != SCHEMA:
            raise ValueError(
                f"summary schema {d.get('schema')!r} is not {SCHEMA!r}: regenerate it with "
                "`python -m craftlib report RESULTS_DIR --write`"
            )
        arms = {}
        for name, a in d["arms"].items():
            vs = {
                m: Paired(**{**p, "ci95": tuple(p["ci95"]) if p["ci95"] else None})
                for m, p in a["vs_baseline"].items()
            }
            arms[name] = Arm(**{**a, "vs_baseline": vs})
        return cls(**{**d, "arms": arms, "taus": tuple(d["taus"])})


# ---------------------------------------------------------------------------------------------
# statistics


def power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test to detect a true mean difference ``delta`` (noncentral
    t)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df, nc = n - 1, abs(delta) / (sd / np.sqrt(n))
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    # chi-square density's normaliser, in logs
    log_norm = df / 2 * math.log(2.0) + math.lgamma(df / 2)

    def integrand(
        v: float,
    ) -> float:  # P(|T| > crit | V = v) * chi2.pdf(v, df), T = (Z + nc) / sqrt(V / df)
        c = crit * math.sqrt(v / df)
        density = math.exp(special.xlogy(df / 2 - 1, v) - v / 2 - log_norm)
        return (special.ndtr(nc - c) + special.ndtr(-c - nc)) * density

    # scipy's noncentral t loses precision for large nc; integrating over the chi-square does not.
    # The
    # integrand uses scipy.special directly (same values as stats.norm / stats.chi2 to ~1e-15, 100x
    # faster:
    # the dashboard recomputes an MDE per arm and metric on every click)
    value, _ = integrate.quad(integrand, 0, np.inf, limit=200)
    return float(min(1.0, value))


def mde(sd: float, n: int, target: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true difference a paired t-test finds with probability ``target``.

    Power depends on ``delta / sd`` only, so this is ``sd`` times the MDE at ``sd = 1``, solved once
    per ``n`` (the dashboard asks for one per arm and metric on every click).
    """
    if n < 2 or not sd > 0:
        return float("nan")
    return sd * _unit_mde(n, target, alpha)


@lru_cache(maxsize=256)
def _unit_mde(n: int, target: float, alpha: float) -> float:
    hi = 1.0
    # widen the bracket (NaN also widens, then gives up)
    while not power(hi, 1.0, n, alpha) >= target:
        hi *= 2
        if hi > 1e4:
            return float("nan")
    return float(optimize.brentq(lambda d: power(d, 1.0, n, alpha) - target, 0.0, hi, xtol=1e-14))


def paired(a: list[float], b: list[float]) -> Paired:
    """Paired t (with its 95% CI) and Wilcoxon of ``a - b``; ``None`` where the test is
    undefined."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    n = len(diff)
    if n == 0:
        return Paired(0, None, None, None, None, None)
    sd = float(np.std(diff, ddof=1)) if n > 1 else None
    out = Paired(n, float(diff.mean()), sd, None, None, None)
    if n >= 2 and np.any(diff != 0):
        out.wilcoxon_pvalue = wilcoxon_pvalue(diff)
    # the t-test needs spread: the same difference in every seed (common for fractions of 64 filters
    # at
    # few seeds) has none, and scipy would call it p = 0 with a zero-width CI (and the MDE would be
    # NaN)
    if n >= 2 and sd > 1e-12 * max(1.0, float(np.abs(diff).max())):
        t = stats.ttest_rel(a, b)
        ci = t.confidence_interval(0.95)
        out.t_pvalue, out.ci95 = float(t.pvalue), (float(ci.low), float(ci.high))
        out.mde = mde(sd, n)
    return out


def wilcoxon_pvalue(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value: the number ``scipy.stats.wilcoxon`` gives.

    With ties or zeros among at most 13 differences scipy runs an exact permutation test that
    recomputes the statistic for each of the 2^n sign flips in turn (seconds per dashboard click).
    Flipping signs leaves the ranks of |d| alone, so here the 2^n statistics are one matrix
    product, compared as scipy compares them; every other case is scipy's own.
    """
    d = np.asarray(diff, float)
    nonzero = d[d != 0]
    tied = len(np.unique(np.abs(nonzero))) < len(nonzero)
    if len(d) > 13 or not (tied or len(nonzero) < len(d)):
        return float(stats.wilcoxon(d).pvalue)
    ranks = stats.rankdata(np.abs(nonzero))
    flips = (np.arange(2 ** len(nonzero))[:, None] >> np.arange(len(nonzero))) & 1
    null, observed = flips @ ranks, ranks[nonzero > 0].sum()
    gamma = abs(100 * np.finfo(float).eps * observed)  # scipy's tolerance for equal statistics
    less = np.count_nonzero(null <= observed + gamma) / len(null)
    greater = np.count_nonzero(null >= observed - gamma) / len(null)
    return float(min(1.0, 2 * min(less, greater)))


def holm(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment (family-wise error) of the p-values that are not ``None``."""
    named = sorted(((p, k) for k, p in pvalues.items() if p is not None))
    adjusted, running = {k: None for k in pvalues}, 0.0
    for i, (p, k) in enumerate(named):
        running = max(running, min(1.0, (len(named) - i) * p))
        adjusted[k] = running
    return adjusted


# ---------------------------------------------------------------------------------------------
# records -> summary


def run_values(record: dict) -> dict[str, float | None]:
    """The metrics of one run record: verification numbers and the two inactive fractions at the
    end."""
    scores = record["scores"]
    return {
        **{m: record.get(m) for m in METRICS[:5]},
        "silent_fraction": float(np.mean(np.asarray(scores["silent"]) < SILENT_TAU)),
        "weight_fraction": float(np.mean(np.asarray(scores["max"]) < WEIGHT_TAU)),
    }


def summarize(records: list[dict], baseline: str = "none", memo: dict | None = None) -> Summary:
    """Pool run records (one per arm and seed) into the paired comparison against ``baseline``.

    ``memo`` keeps each run's survival rows between calls over the same records (the dashboard
    summarises subsets of one pool on every click; the rows depend on the run alone).
    """
    memo = {} if memo is None else memo
    if not records:
        raise ValueError("no run records to summarise")
    meta = records[0]["fingerprint"]
    for r in records:  # a study's records mostly share one fingerprint: compare those as they are
        if r["fingerprint"] != meta and not same_kind(r["fingerprint"], meta):
            raise ValueError(
                f"cannot pool {r['arm']} seed {r['seed']}: "
                f"{fingerprint_diff(r['fingerprint'], meta)}"
            )
    config = TrainConfig.from_dict(meta["recipe"]["train"])
    by_arm: dict[str, dict[int, dict]] = {}
    for r in records:
        if r["seed"] in by_arm.setdefault(r["arm"], {}):
            raise ValueError(
                f"{r['arm']} seed {r['seed']} appears twice; each folder must hold distinct seeds"
            )
        by_arm[r["arm"]][r["seed"]] = r
    order = sorted(by_arm, key=lambda name: (name != baseline, name))  # the baseline's row first
    arms = {name: _arm(name, by_arm[name], config, memo) for name in order}
    summary = Summary(baseline, arms, meta)
    if baseline in arms:
        _compare(summary, by_arm)
        event_epochs = sorted(
            {e["epoch"] for runs in by_arm.values() for r in runs.values() for e in r["events"]}
        )
        rows = {
            s: _kept(memo, ("deaths", s, tuple(event_epochs)), new_deaths, r, event_epochs)
            for s, r in by_arm[baseline].items()
        }
        summary.baseline_survival = _listed(
            survival_curve([x for v in rows.values() for x in v], config.epochs)
        )
        summary.baseline_renewal = survival_stats(rows)
    return summary


def _kept(memo: dict, key: tuple, rows, record: dict, *args) -> list[dict]:
    """``rows(record, *args, SILENT_TAU)``, computed once per ``key`` in ``memo``."""
    if key not in memo:
        memo[key] = rows(record, *args, SILENT_TAU)
    return memo[key]


def _listed(curve: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in curve]


def _arm(name: str, runs: dict[int, dict], config: TrainConfig, memo: dict) -> Arm:
    seeds = sorted(runs)
    values = [run_values(runs[s]) for s in seeds]
    arm = Arm(name, ARM_LABELS.get(name, name), seeds, {m: [v[m] for v in values] for m in METRICS})
    for score in CURVE_SCORES:
        per_run = [(np.asarray(runs[s]["scores"][score])[:, None] < TAUS).mean(0) for s in seeds]
        arm.curves[score] = np.mean(per_run, axis=0).tolist()
    rows = {s: _kept(memo, ("survival", name, s), survival, runs[s], config) for s in seeds}
    flat = [row for v in rows.values() for row in v]
    arm.survival = _listed(survival_curve(flat, config.epochs)) if flat else []
    arm.renewal = survival_stats(rows) if flat else {}
    return arm


def _compare(summary: Summary, by_arm: dict[str, dict[int, dict]]) -> None:
    base = summary.arms[summary.baseline]
    others = [a for a in summary.arms.values() if a.name != summary.baseline]
    for metric in METRICS:
        for arm in others:
            common = [
                s
                for s in arm.seeds
                if s in base.seeds
                and arm.values[metric][arm.seeds.index(s)] is not None
                and base.values[metric][base.seeds.index(s)] is not None
            ]
            arm.vs_baseline[metric] = paired(
                [arm.values[metric][arm.seeds.index(s)] for s in common],
                [base.values[metric][base.seeds.index(s)] for s in common],
            )
        adjusted = holm({a.name: a.vs_baseline[metric].t_pvalue for a in others})
        for arm in others:
            arm.vs_baseline[metric].holm_pvalue = adjusted[arm.name]
    for arm in others:
        p = arm.vs_baseline[summary.primary]
        if p.sd_difference:
            p.power = power(summary.delta_star, p.sd_difference, p.n)


def summarize_folders(folders: list[str | Path], baseline: str = "none") -> Summary:
    """Pool the records of several results folders (e.g. one per laptop) into one summary."""
    records = [r for f in folders for r in load_records(f)]
    if not records:
        raise ValueError(
            f"no run records under {', '.join(map(str, folders))} (expected records/*.json)"
        )
    return summarize(records, baseline)


def load_summary(path: str | Path) -> Summary:
    """A ``summary.json`` (or the folder holding it), version-checked."""
    path = Path(path)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `python -m craftlib compare --out FOLDER` first"
        )
    return Summary.from_dict(json.loads(path.read_text()))


def first_runs(records: list[dict]) -> dict[str, dict]:
    """Per arm, its record with the lowest seed (seed 0 when present): the one per-run figures
    show."""
    chosen: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r["seed"]):
        chosen.setdefault(record["arm"], record)
    return chosen


# ---------------------------------------------------------------------------------------------
# one formatter, three renderers


def fmt(metric: str, value, signed: bool = False) -> str:
    """The one way a number is written: percentages in points, p-values with 2 significant
    digits."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if metric == "p":
        return "< 0.001" if value < 0.001 else f"{value:.2g}" if value < 0.01 else f"{value:.3f}"
    if metric in PERCENT:
        return f"{100 * value:+.2f} pts" if signed else f"{100 * value:.2f}%"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def fmt_ci(metric: str, ci) -> str:
    return "n/a" if ci is None else f"[{fmt(metric, ci[0], True)}, {fmt(metric, ci[1], True)}]"


def table_rows(summary: Summary, metric: str = "accuracy") -> tuple[list[str], list[list[str]]]:
    """The table model every renderer draws: header and one row of strings per arm."""
    head = [
        "arm",
        "seeds",
        METRIC_LABELS.get(metric, metric) + " (mean ± sd)",
        "Δ vs standard",
        "95% CI of Δ",
        "p (t)",
        "p (Holm)",
        "p (Wilcoxon)",
        "MDE (80%)",
    ]
    rows = []
    for arm in summary.arms.values():
        p = arm.vs_baseline.get(metric)
        mean_sd = f"{fmt(metric, arm.mean(metric))} ± {fmt(metric, arm.std(metric))}"
        if p is None:
            rows.append([arm.label, str(len(arm.seeds)), mean_sd] + ["—"] * 6)
        else:
            rows.append(
                [
                    arm.label,
                    str(p.n),
                    mean_sd,
                    fmt(metric, p.mean_difference, True),
                    fmt_ci(metric, p.ci95),
                    fmt("p", p.t_pvalue),
                    fmt("p", p.holm_pvalue),
                    fmt("p", p.wilcoxon_pvalue),
                    fmt(metric, p.mde, True).lstrip("+"),
                ]
            )
    return head, rows


def render_text(summary: Summary, metric: str = "accuracy") -> str:
    head, rows = table_rows(summary, metric)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head] + rows)


def render_markdown(summary: Summary, metric: str = "accuracy") -> str:
    head, rows = table_rows(summary, metric)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render_html(summary: Summary, metric: str = "accuracy") -> str:
    head, rows = table_rows(summary, metric)
    cell = ' style="padding:2px 8px;text-align:right;font-size:13px"'
    body = "".join(
        "<tr>" + "".join(f"<td{cell}>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    header = "<tr>" + "".join(f"<th{cell}>{html.escape(h)}</th>" for h in head) + "</tr>"
    return (
        f'<table class="craft-table" style="border-collapse:collapse"><thead>{header}</thead>'
        f"<tbody>{body}</tbody></table>"
    )


def survival_markdown(summary: Summary) -> str:
    """Per arm: renewed filters, the share not silent at the end (95% CI over seeds), their norm vs
    pure decay."""
    lines = [
        "| filters | runs | count | not silent at the end (95% CI, seeds resampled) | final norm / "
        "pure decay "
        "(median [quartiles]) |",
        "|---|---|---|---|---|",
    ]
    rows = [(f"{a.label}: re-activated", a.renewal) for a in summary.arms.values() if a.renewal]
    if summary.baseline_renewal:
        rows.append(
            (
                f"{summary.arms[summary.baseline].label}: alive at the event epochs",
                summary.baseline_renewal,
            )
        )
    for label, r in rows:
        ci = r.get("alive_end_ci95")
        share = f"{r['alive_end']:.0%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")
        q = r.get("ratio_end")
        ratio = f"{q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]" if q else "—"
        lines.append(f"| {label} | {r['runs']} | {r['filters']} | {share} | {ratio} |")
    return "\n".join(lines)


def curve_markdown(
    summary: Summary, score: str = "silent", taus=(0.001, 0.01, 0.05, 0.1, 0.2, 0.5)
) -> str:
    """Inactive fraction per arm at several thresholds, and the area over the whole τ grid
    (Markdown)."""
    idx = [int(np.argmin(np.abs(np.asarray(summary.taus) - t))) for t in taus]
    head = (
        "| arm | " + " | ".join(f"τ = {summary.taus[i]:g}" for i in idx) + " | area (τ 0.001–0.5) |"
    )
    lines = [head, "|---|" + "---|" * (len(idx) + 1)]
    for arm in summary.arms.values():
        cells = [f"{100 * arm.curves[score][i]:.1f}%" for i in idx]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + f" | {arm.curve_area(score):.3f} |")
    return "\n".join(lines)


SECONDARY = ("auc", "eer", "tar@far=0.01")
"""The verification endpoints STUDY.md declared beside accuracy (TAR@FAR=1e-3 is not estimable on
DevTest)."""


def between(summary: Summary, metric: str, arm: str, other: str) -> Paired:
    """``arm`` − ``other`` paired by seed on one metric (e.g. CRAFT − random: does the context
    matter?)."""
    a, b = summary.arms[arm], summary.arms[other]
    seeds = [s for s in a.seeds if s in b.seeds]
    return paired(
        [a.values[metric][a.seeds.index(s)] for s in seeds],
        [b.values[metric][b.seeds.index(s)] for s in seeds],
    )


def endpoints_markdown(
    summary: Summary, contrast: tuple[str, str] = ("contextual", "random_matched")
) -> str:
    """Every declared verification endpoint: Δ vs standard with Holm within the endpoint (two arms,
    as in the summary) *and* across the whole secondary family (every endpoint × arm), then CRAFT −
    random."""
    others = [a for a in summary.arms.values() if a.name != summary.baseline]
    family = holm({(m, a.name): a.vs_baseline[m].t_pvalue for m in SECONDARY for a in others})
    lines = [
        "| endpoint | comparison | seeds | Δ | 95% CI | p (t) | Holm, within endpoint | Holm, "
        "secondary family |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in ("accuracy",) + SECONDARY:
        for a in others:
            p = a.vs_baseline[m]
            fam = "primary" if m == "accuracy" else fmt("p", family[(m, a.name)])
            lines.append(
                f"| {METRIC_LABELS[m]} | {a.label} − standard | {p.n} | "
                f"{fmt(m, p.mean_difference, True)} | "
                f"{fmt_ci(m, p.ci95)} | {fmt('p', p.t_pvalue)} | {fmt('p', p.holm_pvalue)} | {fam} "
                f"|"
            )
        if all(c in summary.arms for c in contrast):
            p = between(summary, m, *contrast)
            lines.append(
                f"| {METRIC_LABELS[m]} | {summary.arms[contrast[0]].label} − "
                f"{summary.arms[contrast[1]].label} | "
                f"{p.n} | {fmt(m, p.mean_difference, True)} | {fmt_ci(m, p.ci95)} | "
                f"{fmt('p', p.t_pvalue)} | "
                "descriptive | descriptive |"
            )
    return "\n".join(lines)


def headline(summary: Summary, arm: str = "contextual") -> str:
    """The comparison in two sentences, from the CI rather than the p-value."""
    if summary.baseline not in summary.arms or arm not in summary.arms:
        return (
            f"needs the arms {summary.baseline!r} and {arm!r}; this summary has "
            f"{list(summary.arms)}"
        )
    b, a = summary.arms[summary.baseline], summary.arms[arm]
    p = a.vs_baseline[summary.primary]
    return (
        f"silent conv1 filters at the end: {b.label} "
        f"{fmt('silent_fraction', b.mean('silent_fraction'))} → "
        f"{a.label} {fmt('silent_fraction', a.mean('silent_fraction'))} ({p.n} paired seeds).\n"
        f"DevTest accuracy Δ {fmt('accuracy', p.mean_difference, True)}, 95% CI "
        f"{fmt_ci('accuracy', p.ci95)}; "
        f"paired t p = {fmt('p', p.t_pvalue)} (Holm {fmt('p', p.holm_pvalue)}); "
        f"80%-power MDE {fmt('accuracy', p.mde, True).lstrip('+')}."
    )
