"""The federated runs on screen: a rounds slider over finished runs, per-client and global numbers
at that round.

``RoundsExplorer(records).widget`` has a run menu and a rounds slider; it draws (left) the global
DevTest accuracy of every run over rounds with the chosen round marked, (middle) each client's
accuracy at that round (its own model on DevTest where measured, and its top-1 on its own
identities), and (right) each client's dead (silent) first-layer filters, the global model's beside
them, and how many filters the server renewed. Its static twin ``rounds_view(records, run, round_)``
draws the same figure. The work is done by ``round_state`` and ``rounds_figure``, tested without a
browser. ``death_figure(records)`` draws the committed study's filter death: over rounds per
strategy, and per model against the SGD steps it took.
"""

from __future__ import annotations

import html

import numpy as np
from matplotlib.figure import Figure

from craftlib import redraw, viz
from craftlib.activity import SILENT_TAU

from .federation import CENTRAL, FL_STRATEGY_LABELS
from .study import DEATH_ROWS, site_points

WIDTH = 13.4  # inches, as the workshop's other widgets
STRATEGY_COLORS = {
    "central": viz.OKABE_ITO["black"],
    "central_steps": viz.OKABE_ITO["reddish purple"],
    "local": viz.OKABE_ITO["vermillion"],
    "fedavg": viz.OKABE_ITO["blue"],
    "adafedfr": viz.OKABE_ITO["sky blue"],
}


def run_label(record: dict) -> str:
    """``FedAvg (private heads), dirichlet, CRAFT on the server`` for a run record."""
    craft = {"none": "no CRAFT", "server": "CRAFT on the server", "client": "CRAFT on each client"}[
        record["craft"]
    ]
    split = "" if record["strategy"] in CENTRAL else f", {record['split']}"
    return f"{FL_STRATEGY_LABELS[record['strategy']]}{split}, {craft}"


def round_state(record: dict, round_: int) -> dict:
    """Everything the figure shows at one round (1-based) of one run, as plain numbers."""
    rounds = record["rounds"]
    if not 1 <= round_ <= len(rounds):
        raise ValueError(f"round must be in 1..{len(rounds)}, got {round_}")
    row = rounds[round_ - 1]
    clients = row["clients"]
    return {
        "round": round_,
        "rounds": len(rounds),
        "global_accuracy": [((r.get("global") or {}).get("accuracy")) for r in rounds],
        "client_accuracy": [c.get("accuracy") for c in clients],
        "client_train_acc": [c.get("train_acc") for c in clients],
        "client_silent": [c.get("silent_fraction") for c in clients],
        "client_identities": [c.get("identities") for c in clients],
        "global_silent": row.get("global_silent_fraction"),
        "server_renewed": len(row.get("server_renewed", [])),
        "client_renewed": [len(c.get("renewed", [])) for c in clients],
    }


def state_text(record: dict, state: dict) -> str:
    acc = state["global_accuracy"][state["round"] - 1]
    parts = [
        f"round {state['round']}/{state['rounds']}",
        "global DevTest " + ("n/a" if acc is None else f"{acc:.1%}"),
        f"global silent conv1 {state['global_silent']:.0%}"
        if state["global_silent"] is not None
        else "",
        f"server renewed {state['server_renewed']}" if record["craft"] == "server" else "",
    ]
    return " · ".join(p for p in parts if p)


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def rounds_figure(records: dict[str, dict], run: str, round_: int) -> Figure:
    """Global accuracy over rounds (all runs), per-client accuracy and dead filters (the chosen run)
    at ``round_``."""
    fig = rounds_canvas(records, run)
    show_round(fig, records[run], round_)
    return fig


def rounds_canvas(records: dict[str, dict], run: str) -> Figure:
    """What no round of ``run`` changes: every run's accuracy curve, the axes, and the chosen run's
    bars and labels, to be set by ``show_round``."""
    record = records[run]
    n = max(len(row["clients"]) for row in record["rounds"])
    fig = viz.new_figure(figsize=(WIDTH, 3.6))
    ax_curve, ax_acc, ax_dead = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    for name, rec in records.items():
        acc = _nan(round_state(rec, 1)["global_accuracy"])
        measured = np.flatnonzero(np.isfinite(acc))
        if not len(measured):  # nothing to draw: no legend entry either
            continue
        x = np.arange(1, len(acc) + 1)
        if len(measured) == 1:  # e.g. local only verified at the last round only: a point, no line
            ax_curve.plot(
                x,
                100 * acc,
                marker="D",
                ms=6,
                ls="none",
                alpha=1 if name == run else 0.8,
                zorder=6,  # above the legend box, which can cover the last round
                label=f"{name} (round {measured[0] + 1} only)",
            )
            continue
        ax_curve.plot(
            x,
            100 * acc,
            marker="o",
            ms=3,
            lw=2.2 if name == run else 1.0,
            alpha=1 if name == run else 0.6,
            label=name,
        )
    ax_curve.plot([], [], "o", ms=10, mfc="none", mec="black", gid="now")
    ax_curve.axvline(1, color="grey", lw=0.8, ls=":", gid="round")
    ax_curve.set(
        xlabel="round",
        ylabel="DevTest accuracy (%)",
        title="global model (local only: mean of clients)",
    )
    ax_curve.legend(fontsize=7, loc="lower right")
    if n:
        x = np.arange(n)
        own, devtest = viz.OKABE_ITO["sky blue"], viz.OKABE_ITO["blue"]
        ax_acc.bar(x - 0.2, np.zeros(n), 0.4, label="top-1 on its own identities", color=own)
        ax_acc.bar(x + 0.2, np.zeros(n), 0.4, label="its model on DevTest", color=devtest)
        ax_acc.legend(fontsize=7, loc="lower right")
    ax_acc.set(ylim=(0, 100), ylabel="accuracy (%)")
    ax_dead.bar(np.arange(n + 1), np.zeros(n + 1), color=[viz.INACTIVE] * n + ["#444444"])
    for i in range(n + 1):  # "k renewed" on each bar, shown where there were renewals
        ax_dead.annotate(
            "", (i, 2), ha="center", fontsize=7, rotation=90, va="bottom", gid=f"renewed-{i}"
        )
    ax_dead.set_xticks(np.arange(n + 1), [f"client {i}" for i in range(n)] + ["global"], fontsize=8)
    ax_dead.set(
        ylim=(0, 100), ylabel=f"silent conv1 filters (%, τ={SILENT_TAU:g})", title="dead filters"
    )
    return fig


def show_round(fig: Figure, record: dict, round_: int) -> None:
    """Set the figure of ``rounds_canvas`` to one round: the marked point, the bars, the renewals,
    the titles (in place; the client labels too, which name each client's identities)."""
    state = round_state(record, round_)
    ax_curve, ax_acc, ax_dead = fig.axes
    acc_now = state["global_accuracy"][round_ - 1]
    now = next(line for line in ax_curve.lines if line.get_gid() == "now")
    now.set_data([round_], [100 * acc_now if acc_now is not None else np.nan])
    now.set_visible(acc_now is not None)
    next(line for line in ax_curve.lines if line.get_gid() == "round").set_xdata([round_] * 2)
    n, bars = len(state["client_train_acc"]), len(ax_dead.patches) - 1
    values = [*_nan(state["client_train_acc"]), *[np.nan] * (bars - n)]
    values += [*_nan(state["client_accuracy"]), *[np.nan] * (bars - n)]
    for bar, v in zip(ax_acc.patches, values):
        bar.set_height(100 * v)
        bar.set_visible(bool(np.isfinite(v)))
    if bars:
        ax_acc.set_xticks(
            np.arange(bars),
            [
                f"client {i}\n{k} ids" if k else f"client {i}"
                for i, k in enumerate(state["client_identities"] + [None] * (bars - n))
            ],
            fontsize=8,
        )
    ax_acc.set_title(f"per client, round {round_}")
    silent = state["global_silent"] if state["global_silent"] is not None else np.nan
    dead = [*_nan(state["client_silent"]), *[np.nan] * (bars - n), silent]
    for bar, v in zip(ax_dead.patches, dead):
        bar.set_height(100 * v)
        bar.set_visible(bool(np.isfinite(v)))
    renewed = [*state["client_renewed"], *[0] * (bars - n), state["server_renewed"]]
    for note, k in zip(ax_dead.texts, renewed):
        note.set_text(f"{k} renewed" if k else "")
        note.set_visible(bool(k))
        note.set_color("white" if note is ax_dead.texts[-1] else "black")
    fig.suptitle(f"{run_label(record)} — {state_text(record, state)}", fontsize=10)


def round_artists(fig: Figure) -> list:
    """What ``show_round`` changes but the client labels: a round's fast redraw."""
    ax_curve, ax_acc, ax_dead = fig.axes
    return [
        *ax_curve.lines[-2:],
        *ax_acc.patches,
        *ax_dead.patches,
        *ax_dead.texts,
        ax_acc.title,
        fig._suptitle,
    ]


def rounds_view(
    records: dict[str, dict], run: str | None = None, round_: int | None = None
) -> Figure:
    """The static twin of ``RoundsExplorer``: the same figure for one run and round (default: first
    run, last round)."""
    run = run or next(iter(records))
    return rounds_figure(records, run, round_ or len(records[run]["rounds"]))


class RoundsExplorer:
    """A run menu and a rounds slider over finished federated runs (``{name: federated.run(...)
    record}``)."""

    def __init__(self, records: dict[str, dict], run: str | None = None):
        import ipywidgets as W

        if not records:
            raise ValueError("no federated runs to show")
        self.records = records
        self._shown: dict[tuple[str, int], tuple] = {}  # (run, round) -> state, PNG, caption
        self._figures: dict[str, tuple] = {}  # run -> figure, its Redrawer, its client labels
        run = run or next(iter(records))
        rounds = len(records[run]["rounds"])
        self.menu = W.Dropdown(
            options=list(records), value=run, description="run", layout=W.Layout(width="420px")
        )
        self.slider = W.IntSlider(
            value=rounds, min=1, max=rounds, description="round", continuous_update=False
        )
        self.caption = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
        self.menu.observe(self._run_changed, names="value")
        self.slider.observe(lambda _change: self.refresh(), names="value")
        self.widget = W.VBox([W.HBox([self.menu, self.slider]), self.caption, self.image])
        self.widget.add_class("craft-rounds")
        self.refresh()

    def _run_changed(self, _change=None) -> None:
        rounds = len(self.records[self.menu.value]["rounds"])
        self.slider.max = rounds
        self.slider.value = min(self.slider.value, rounds)
        self.refresh()

    def refresh(self) -> dict:
        """Show the chosen run at the chosen round; a (run, round) seen before is cached. A run's
        figure is drawn once; a new round redraws its bars, marks and titles over the kept rest
        (``redraw.Redrawer``), all of it only when the client labels change."""
        key = (self.menu.value, self.slider.value)
        if key not in self._shown:
            record = self.records[key[0]]
            state = round_state(record, key[1])
            caption = html.escape(f"{run_label(record)}: {state_text(record, state)}")
            if key[0] not in self._figures:
                fig = rounds_canvas(self.records, key[0])
                self._figures[key[0]] = (
                    fig,
                    redraw.Redrawer(fig, lambda: round_artists(fig)),
                    None,
                )
            fig, redrawer, labels = self._figures[key[0]]
            show_round(fig, record, key[1])
            now = [t.get_text() for t in fig.axes[1].get_xticklabels()]
            self._figures[key[0]] = (fig, redrawer, now)
            self._shown[key] = (state, redrawer.png(full=now != labels), caption)
        state, self.image.value, self.caption.value = self._shown[key]
        return state


def death_figure(records: list[dict]) -> Figure:
    """The study's filter death without CRAFT. Left: silent conv1 over rounds (global model;
    local-only: the mean of its sites), mean over seeds, per strategy (dashed: Dirichlet split).
    Right: each model's silent fraction at the end against the SGD steps it took — every site for
    the federations, the one model for the centralised runs."""
    fig = viz.new_figure(figsize=(WIDTH, 4.2))
    ax_rounds, ax_steps = fig.subplots(1, 2)
    for strategy, split in DEATH_ROWS:
        runs = [
            r
            for r in records
            if r["strategy"] == strategy
            and r["craft"] == "none"
            and (strategy in CENTRAL or r["split"] == split)
        ]
        if not runs:
            continue
        curve = np.mean(
            [[row["global_silent_fraction"] for row in r["rounds"]] for r in runs], axis=0
        )
        label = FL_STRATEGY_LABELS[strategy] + ("" if strategy in CENTRAL else f", {split}")
        ax_rounds.plot(
            np.arange(1, len(curve) + 1),
            100 * curve,
            marker="o",
            ms=3,
            color=STRATEGY_COLORS[strategy],
            ls="--" if split == "dirichlet" else "-",
            label=f"{label} ({len(runs)} seeds)",
        )
    ax_rounds.set(
        xlabel="round",
        ylabel=f"silent conv1 filters (%, τ={SILENT_TAU:g})",
        title="death over rounds, no CRAFT",
    )
    ax_rounds.legend(fontsize=7)
    for strategy in ("local", "fedavg", "adafedfr"):
        points = [p for p in site_points(records) if p["strategy"] == strategy]
        if points:
            ax_steps.scatter(
                [p["steps"] for p in points],
                [100 * p["silent"] for p in points],
                s=18,
                alpha=0.75,
                color=STRATEGY_COLORS[strategy],
                label=f"{FL_STRATEGY_LABELS[strategy]}: each site",
            )
    for strategy in CENTRAL:
        runs = [r for r in records if r["strategy"] == strategy and r["craft"] == "none"]
        if runs:
            ax_steps.scatter(
                [r["steps"][0] for r in runs],
                [100 * r["final"]["silent_fraction"] for r in runs],
                s=60,
                marker="D",
                color=STRATEGY_COLORS[strategy],
                label=FL_STRATEGY_LABELS[strategy],
            )
    ax_steps.set(
        xscale="log",
        xlabel="SGD steps the model took (log)",
        ylabel="silent conv1 at the end (%)",
        title="death against the decay budget",
    )
    ax_steps.legend(fontsize=7)
    return fig
