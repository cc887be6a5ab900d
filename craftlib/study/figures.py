"""The seed study's figures: spreads over seeds with paired differences, inactive fraction against
τ, survival of renewed filters, and the PNGs ``python -m craftlib compare`` writes. Drawn from a
``results.Summary``."""

from __future__ import annotations

import html
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.cbook import boxplot_stats
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from craftlib.activity import SCORE_LABELS, SILENT_TAU, relative
from craftlib.viz import ACTIVE, ARM_COLORS, death_timeline, new_figure, roc_curves

from .results import METRIC_LABELS, PERCENT, Summary, first_runs, fmt, fmt_ci


def seed_spread(summary: Summary, metric: str = "accuracy", arms: list[str] | None = None) -> dict:
    """What the seed-spread panel shows, drawing aside: per arm its label, one value per seed with
    a fixed sideways jitter, and its paired Δ to the baseline; the y range; title and label. The
    matplotlib figure and the dashboard's SVG both draw from it."""
    names = [a for a in summary.arms if arms is None or a in arms]
    jitter = np.random.default_rng(0)  # the same picture on every draw
    panel = []
    for i, name in enumerate(names):
        values = [v for v in summary.arms[name].values[metric] if v is not None]
        p = summary.arms[name].vs_baseline.get(metric)
        panel.append(
            {
                "label": summary.arms[name].label,
                "values": values,
                "x": i + jitter.uniform(-0.08, 0.08, len(values)) if values else np.zeros(0),
                "note": "baseline"
                if p is None
                else (
                    f"Δ {fmt(metric, p.mean_difference, True)}\n"
                    f"CI {fmt_ci(metric, p.ci95)}\np = {fmt('p', p.t_pvalue)}"
                ),
            }
        )
    ys = [v for a in panel for v in a["values"]]
    top, bottom = (max(ys), min(ys)) if ys else (1.0, 0.0)
    seeds = max((len(a["values"]) for a in panel), default=0)
    return {
        "arms": panel,
        "top": top + 0.6 * ((top - bottom) or abs(top) * 0.1 or 0.1),  # room for the notes
        "percent": metric in PERCENT,
        "ylabel": METRIC_LABELS.get(metric, metric),
        "title": f"{METRIC_LABELS.get(metric, metric)}, {seeds} seed(s)",
    }


def draw_seed_comparison(
    ax, summary: Summary, metric: str = "accuracy", arms: list[str] | None = None
) -> None:
    """Box + points per arm, one point per seed, the paired Δ's 95% CI and p-value vs the baseline
    above."""
    panel = seed_spread(summary, metric, arms)
    for a in panel["arms"]:
        if a["values"]:
            ax.scatter(a["x"], a["values"], s=25, color="black", linewidths=0, zorder=3)
    n = len(panel["arms"])
    ax.set_xticks(range(n), [a["label"] for a in panel["arms"]])
    ax.set_xlim(-0.5, n - 0.5)
    ax.boxplot(
        [a["values"] for a in panel["arms"]],
        positions=range(n),
        widths=0.5,
        showfliers=False,
        manage_ticks=False,
        medianprops={"color": ACTIVE},
    )
    for i, a in enumerate(panel["arms"]):
        ax.annotate(
            a["note"],
            (i, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="top",
            fontsize=10,
            gid="pvalue",
        )
    ax.set_ylim(top=panel["top"])
    if panel["percent"]:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(ylabel=panel["ylabel"], title=panel["title"])


def seed_spread_svg(panel: dict, width: int = 530, height: int = 331) -> str:
    """``seed_spread``'s panel as inline SVG, for the dashboard: the browser lays out its ~30
    labels, where a matplotlib redraw of the panel took most of a click's 100 ms. Boxes as
    matplotlib draws them (quartiles, whiskers to 1.5 IQR, no fliers), the same points and notes."""
    left, right, top, bottom = 66, 6, 26, 40
    w, h = width - left - right, height - top - bottom
    arms = panel["arms"]
    ys = [v for a in arms for v in a["values"]] or [0.0, 1.0]
    lo = min(ys) - 0.05 * ((max(ys) - min(ys)) or 0.1)  # matplotlib's 5% margin below
    hi = panel["top"]
    ticks = [t for t in MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)]
    ticks = [t for t in ticks if lo <= t <= hi]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    scale = 100 if panel["percent"] else 1
    digits = max(0, -int(np.floor(np.log10(step * scale) + 1e-9)))

    def x_of(x: float) -> float:
        return left + (x + 0.5) / max(len(arms), 1) * w

    def y_of(y: float) -> float:
        return top + (hi - y) / (hi - lo) * h

    def text(x, y, s, anchor="middle", **attrs) -> str:
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
        return (
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(s)}</text>'
        )

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="DejaVu Sans, sans-serif" font-size="12" class="craft-spread">',
        text(left + w / 2, 16, panel["title"], font_size="13"),
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="black"/>',
        text(14, top + h / 2, panel["ylabel"], transform=f"rotate(-90 14 {top + h / 2:.1f})"),
    ]
    for t in ticks:
        y = y_of(t)
        label = f"{t * scale:.{digits}f}" + ("%" if panel["percent"] else "")
        out += [
            f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="black"/>',
            text(left - 6, y + 4, label, anchor="end"),
        ]
    for i, a in enumerate(arms):
        cx = x_of(i)
        out.append(text(cx, top + h + 18, a["label"]))
        for k, line in enumerate(a["note"].split("\n")):
            out.append(text(cx, top + 14 + 13 * k, line, font_size="11"))
        if not a["values"]:
            continue
        s = boxplot_stats(a["values"])[0]
        half = 0.25 / max(len(arms), 1) * w
        q1, q3 = y_of(s["q1"]), y_of(s["q3"])
        out += [
            f'<line x1="{cx:.1f}" y1="{y_of(s["whislo"]):.1f}" x2="{cx:.1f}" y2="{q1:.1f}" '
            'stroke="black"/>',
            f'<line x1="{cx:.1f}" y1="{q3:.1f}" x2="{cx:.1f}" y2="{y_of(s["whishi"]):.1f}" '
            'stroke="black"/>',
            *(
                f'<line x1="{cx - half / 2:.1f}" y1="{y:.1f}" x2="{cx + half / 2:.1f}" '
                f'y2="{y:.1f}" stroke="black"/>'
                for y in (y_of(s["whislo"]), y_of(s["whishi"]))
            ),
            f'<rect x="{cx - half:.1f}" y="{q3:.1f}" width="{2 * half:.1f}" '
            f'height="{q1 - q3:.1f}" fill="none" stroke="black"/>',
            f'<line x1="{cx - half:.1f}" y1="{y_of(s["med"]):.1f}" x2="{cx + half:.1f}" '
            f'y2="{y_of(s["med"]):.1f}" stroke="{ACTIVE}" stroke-width="1.5"/>',
            *(
                f'<circle cx="{x_of(x):.1f}" cy="{y_of(v):.1f}" r="2.8"/>'
                for x, v in zip(a["x"], a["values"])
            ),
        ]
    out.append("</svg>")
    return "\n".join(out)


def message_svg(title: str, message: str, width: int = 530, height: int = 331) -> str:
    """A panel that says why there is nothing to draw (``seed_spread_svg``'s size and fonts)."""
    lines = textwrap.wrap(message, 45)
    rows = "".join(
        f'<text x="{width / 2}" y="{height / 2 + 16 * (k - len(lines) / 2):.1f}" '
        f'text-anchor="middle">{html.escape(line)}</text>'
        for k, line in enumerate(lines)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="DejaVu Sans, sans-serif" font-size="12" class="craft-spread">'
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}'
        f"</text>{rows}</svg>"
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
