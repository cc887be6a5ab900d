"""The seed study's figures: spreads over seeds with paired differences, inactive fraction against
τ, survival of renewed filters, and the PNGs ``python -m craftlib compare`` writes. Drawn from a
``results.Summary``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from craftlib.activity import SCORE_LABELS, SILENT_TAU, relative
from craftlib.viz import ACTIVE, ARM_COLORS, death_timeline, new_figure, roc_curves

from .results import METRIC_LABELS, PERCENT, Summary, first_runs, fmt, fmt_ci


def draw_seed_comparison(
    ax, summary: Summary, metric: str = "accuracy", arms: list[str] | None = None
) -> None:
    """Box + points per arm, one point per seed, the paired Δ's 95% CI and p-value vs the baseline
    above."""
    names = [a for a in summary.arms if arms is None or a in arms]
    values = {a: [v for v in summary.arms[a].values[metric] if v is not None] for a in names}
    ys = [v for a in names for v in values[a]]
    # one point per seed, spread sideways by a fixed jitter: the same picture on every draw
    jitter = np.random.default_rng(0)
    for i, name in enumerate(names):
        if values[name]:
            x = i + jitter.uniform(-0.08, 0.08, len(values[name]))
            ax.scatter(x, values[name], s=25, color="black", linewidths=0, zorder=3)
    ax.set_xticks(range(len(names)), [summary.arms[a].label for a in names])
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.boxplot(
        [values[a] for a in names],
        positions=range(len(names)),
        widths=0.5,
        showfliers=False,
        manage_ticks=False,
        medianprops={"color": ACTIVE},
    )
    for i, name in enumerate(names):
        p = summary.arms[name].vs_baseline.get(metric)
        text = (
            "baseline"
            if p is None
            else (
                f"Δ {fmt(metric, p.mean_difference, True)}\n"
                f"CI {fmt_ci(metric, p.ci95)}\np = {fmt('p', p.t_pvalue)}"
            )
        )
        ax.annotate(
            text,
            (i, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="top",
            fontsize=10,
            gid="pvalue",
        )
    top, bottom = (max(ys), min(ys)) if ys else (1.0, 0.0)
    ax.set_ylim(top=top + 0.6 * ((top - bottom) or abs(top) * 0.1 or 0.1))
    if metric in PERCENT:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    seeds = max((len(values[a]) for a in names), default=0)
    ax.set(
        ylabel=METRIC_LABELS.get(metric, metric),
        title=f"{METRIC_LABELS.get(metric, metric)}, {seeds} seed(s)",
    )


def seed_comparison(
    summary: Summary, metric: str = "accuracy", arms: list[str] | None = None
) -> Figure:
    """Spread over seeds of one metric per arm, with the paired difference to the baseline
    annotated."""
    fig = new_figure((max(5.0, 2.2 * len(summary.arms) + 1), 4.4))
    draw_seed_comparison(fig.subplots(), summary, metric, arms)
    return fig


def tau_curves(summary: Summary, score: str = "silent") -> Figure:
    """Inactive fraction against the threshold, one line per arm: no conclusion rests on one τ."""
    fig = new_figure((6.5, 4))
    ax = fig.subplots()
    for name, arm in summary.arms.items():
        ax.plot(
            summary.taus,
            arm.curves[score],
            "o-",
            color=ARM_COLORS.get(name),
            label=f"{arm.label} (area {arm.curve_area(score):.3f})",
        )
    ax.set_xscale("log")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(
        xlabel=f"threshold τ (relative {SCORE_LABELS.get(score, score)}, log)",
        ylabel="conv1 filters below τ",
        title=f"inactive fraction vs τ at the end of training ({score} score)",
        ylim=(0, 1),
    )
    ax.legend(fontsize=10)
    return fig


def survival_curves(summary: Summary) -> Figure:
    """Share of re-activated filters still not silent k epochs after their renewal, per arm, against
    the share of standard training's live filters still alive over the same windows."""
    fig = new_figure((6.5, 4))
    ax = fig.subplots()
    for name, arm in summary.arms.items():
        if arm.survival:
            ax.plot(
                range(len(arm.survival)),
                arm.survival,
                "o-",
                color=ARM_COLORS.get(name),
                label=f"{arm.label}: re-activated filters",
            )
    if summary.baseline_survival:
        ax.plot(
            range(len(summary.baseline_survival)),
            summary.baseline_survival,
            "s--",
            color="grey",
            label="standard training: filters alive at the same epochs",
        )
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(
        xlabel="epochs since re-activation",
        ylabel="still not silent",
        ylim=(0, 1.02),
        title="survival of re-activated filters",
    )
    ax.legend(fontsize=10, loc="lower left")
    return fig


def record_matrix(record: dict, score: str = "silent") -> np.ndarray:
    """Filters x epochs relative scores from a run record's timeline (``silent``, ``max`` or
    ``gamma``)."""
    key = {"silent": "output_std", "max": "max", "gamma": "gamma"}[score]
    return np.stack([relative(np.asarray(col)) for col in record["timeline"][key]], axis=1)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def save_comparison_figures(summary: Summary, records: list[dict], out: str | Path) -> list[Path]:
    """Write the comparison's PNGs into ``out``: seed spreads, τ curves, survival, and seed-0
    timelines."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        _save(seed_comparison(summary, m), out / f"seeds_{m}.png")
        for m in ("accuracy", "silent_fraction")
    ]
    paths += [_save(tau_curves(summary, s), out / f"tau_curve_{s}.png") for s in ("silent", "max")]
    paths.append(_save(survival_curves(summary), out / "survival.png"))
    chosen = first_runs(records)
    paths.append(
        _save(
            roc_curves(
                {f"{summary.arms[a].label} (seed {r['seed']})": r for a, r in chosen.items()}
            ),
            out / "roc.png",
        )
    )
    for arm, record in chosen.items():
        x = record["timeline"]["epoch"]
        fig = death_timeline(record_matrix(record), SILENT_TAU, record["events"], x=x)
        paths.append(_save(fig, out / f"timeline_{arm}.png"))
    return paths
