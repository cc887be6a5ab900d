"""The comparison dashboard: the room's run records pooled from laptops' folders, one metric, chosen
arms and seeds, the paired table and figure redrawn from one state; and the instructor's record
upload."""

from __future__ import annotations

import html
import json
import os
import textwrap
from pathlib import Path

import ipywidgets as W
from matplotlib.figure import Figure

from craftlib import viz
from craftlib.widgets import FIGURE_WIDTH, _guarded, png_image, render

from .experiments import load_records
from .figures import draw_seed_comparison, message_svg, seed_spread, seed_spread_svg
from .results import METRIC_LABELS, METRICS, Summary, render_html, summarize

SPREAD_PX = 530  # the seed-spread panel's width; the ROC panel beside it takes the rest of the row


class Duplicate(str):
    """A note on a run found in two folders; it knows its ``arm`` and ``seed``, so a view shows it
    only while that run is selected."""

    def __new__(cls, text: str, arm: str, seed: int):
        note = super().__new__(cls, text)
        note.arm, note.seed = arm, seed
        return note


def pool_records(sources) -> tuple[list[dict], list[Duplicate]]:
    """Every run record of one or several results folders (a room's laptops), and notes on what was
    dropped.

    The same arm and seed in two folders is one experiment run twice: the first folder's record is
    kept. Folders are named relative to their common parent (a laptop's folder, not a full path).
    """
    folders = [sources] if isinstance(sources, (str, Path)) else list(sources)
    common = (
        Path(os.path.commonpath([Path(f).resolve() for f in folders])) if len(folders) > 1 else None
    )
    name = (lambda f: str(Path(f).resolve().relative_to(common)) or ".") if common else str
    records, seen, notes = [], {}, []
    for folder in folders:
        for record in load_records(folder):
            key = (record["arm"], record["seed"])
            if key in seen:
                notes.append(
                    Duplicate(
                        f"{record['arm']} seed {record['seed']} is in {name(seen[key])} and in "
                        f"{name(folder)}: kept the first",
                        *key,
                    )
                )
                continue
            seen[key] = folder
            records.append(record)
    if not records:
        raise FileNotFoundError(
            f"no run records under {', '.join(map(str, folders))}: "
            "run notebook 05 or `python -m craftlib compare --out FOLDER` first"
        )
    return records, notes


def pool(sources) -> tuple[Summary, list[dict]]:
    """(summary, records) from a ``Summary``, a results folder, or several folders pooled (a room's
    laptops)."""
    if isinstance(sources, Summary):
        return sources, []
    records, _ = pool_records(sources)
    return summarize(records), records


def select(records: list[dict], arms=None, seeds=None, memo: dict | None = None) -> Summary:
    """The comparison restricted to some arms and seeds, with the paired statistics recomputed
    (``memo``: ``summarize``'s, kept by a dashboard across selections of one pool)."""
    rows = [
        r
        for r in records
        if (arms is None or r["arm"] in arms) and (seeds is None or r["seed"] in seeds)
    ]
    if not rows:
        raise ValueError("nothing selected: pick at least one arm and one seed")
    return summarize(rows, memo=memo)


def not_estimable(summary: Summary, records: list[dict], metric: str) -> str | None:
    """Why ``metric`` has no value in some runs of ``summary`` — for a TAR, a FAR too low for the
    impostor pairs each threshold is set on (the records' ``tar_notes``) — or None when every run
    has one."""
    values = [v for arm in summary.arms.values() for v in arm.values[metric]]
    missing = sum(v is None for v in values)
    if not missing:
        return None
    far = f"{float(metric.split('=', 1)[1]):g}" if metric.startswith("tar@far=") else None
    reasons = sorted(
        {r.get("tar_notes", {}).get(far) for r in records if r.get(metric, 0) is None} - {None}
    )
    return (
        f"not estimable in {missing} of {len(values)} runs: "
        f"{'; '.join(reasons) or 'no value recorded'}"
    )


def _picked_runs(picked: Summary, records: list[dict]) -> tuple[dict, list[dict]]:
    """The runs of a selection by seed, and each arm's first (the one its ROC curve shows)."""
    chosen, picked_records = {}, []
    for r in sorted(records, key=lambda r: r["seed"]):
        if r["arm"] in picked.arms and r["seed"] in picked.arms[r["arm"]].seeds:
            chosen.setdefault(r["arm"], r)
            picked_records.append(r)
    return chosen, picked_records


def _comparison_figure(picked: Summary, records: list[dict], metric: str) -> Figure:
    chosen, picked_records = _picked_runs(picked, records)
    fig = viz.new_figure((FIGURE_WIDTH if chosen else 7.0, 4.6))
    axes = fig.subplots(
        1, 2 if chosen else 1, squeeze=False, width_ratios=[1.25, 1] if chosen else None
    )[0]
    _draw_metric(axes[0], picked, picked_records, metric)
    if chosen:
        viz.draw_roc(
            axes[1], {f"{picked.arms[a].label} (seed {r['seed']})": r for a, r in chosen.items()}
        )
    return fig


def _draw_metric(ax, picked: Summary, records: list[dict], metric: str) -> None:
    """The seed spread of one metric on ``ax`` or, when no run has it, the reason."""
    if all(v is None for arm in picked.arms.values() for v in arm.values[metric]):
        ax.set_axis_off()
        ax.set_title(f"{METRIC_LABELS[metric]}: not estimable")
        ax.text(
            0.5,
            0.5,
            textwrap.fill(not_estimable(picked, records, metric), 45),
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=10,
            gid="not-estimable",
        )
    else:
        draw_seed_comparison(ax, picked, metric)


def spread_svg(picked: Summary, records: list[dict], metric: str) -> str:
    """The dashboard's seed-spread panel (``_draw_metric`` as SVG): the spread or, when no run has
    the metric, the reason."""
    if all(v is None for arm in picked.arms.values() for v in arm.values[metric]):
        title = f"{METRIC_LABELS[metric]}: not estimable"
        return message_svg(title, not_estimable(picked, records, metric), SPREAD_PX)
    return seed_spread_svg(seed_spread(picked, metric), SPREAD_PX)


def roc_png(picked: Summary, records: list[dict]) -> bytes:
    """The ROC panel beside the spread: each picked arm's first seed (what ``comparison_view``
    shows on the right)."""
    chosen, _ = _picked_runs(picked, records)
    fig = viz.new_figure((FIGURE_WIDTH - SPREAD_PX / viz.WIDGET_DPI, 4.6))
    viz.draw_roc(
        fig.subplots(),
        {f"{picked.arms[a].label} (seed {r['seed']})": r for a, r in chosen.items()},
    )
    return render(fig)


def comparison_view(sources, metric: str = "accuracy", arms=None, seeds=None) -> Figure:
    """Static twin of the dashboard: seed spread with the paired Δ and its CI, plus ROC per arm."""
    summary, records = pool(sources)
    picked = select(records, arms, seeds) if records else summary
    return _comparison_figure(picked, records, metric)


class ComparisonDashboard:
    """Choose arms, seeds and a metric: the table and the plots follow (statistics recomputed on the
    subset).

    ``sources`` may be several folders: each laptop's results are pooled into one paired analysis.
    The seed spread is SVG the browser lays out (a click's whole budget went to matplotlib redrawing
    it); the ROC panel beside it is a PNG drawn again only when it shows other runs. Every state
    seen is kept.
    """

    def __init__(self, sources, metric: str = "accuracy"):
        if isinstance(sources, Summary):
            raise TypeError(
                "the dashboard recomputes statistics from run records: pass a results folder "
                "(or a list of them); for a summary alone use results.render_html"
            )
        self.records, self.notes = pool_records(sources)
        self._memo: dict = {}  # each run's survival rows, for every selection of this pool
        self.summary = summarize(self.records, memo=self._memo)
        seeds = sorted({r["seed"] for r in self.records})
        self._cache = {(tuple(sorted(self.summary.arms)), tuple(seeds)): self.summary}
        self._spreads: dict = {}  # (selection, metric) -> the spread panel as shown
        self._rocs: dict = {}  # the ROC panel's runs -> its PNG
        self.arms = W.SelectMultiple(
            options=[(a.label, n) for n, a in self.summary.arms.items()],
            value=tuple(self.summary.arms),
            description="arms",
            rows=4,
            layout=W.Layout(width="330px"),
        )
        self.seeds = W.SelectMultiple(
            options=seeds,
            value=tuple(seeds),
            description="seeds",
            rows=4,
            layout=W.Layout(width="200px"),
        )
        self.metric = W.Dropdown(
            options=[(METRIC_LABELS[m], m) for m in METRICS],
            value=metric,
            description="metric",
            layout=W.Layout(width="330px"),
        )
        self.table, self.error, self.spread, self.image, self.caption = (
            W.HTML(),
            W.HTML(),
            W.HTML(),
            png_image("craft-figure"),
            W.HTML(),
        )
        self.spread.add_class("craft-spread-panel")
        self.table.add_class("craft-comparison-table")
        self.caption.add_class("craft-comparison-caption")
        hint = W.HTML(
            "<small>arms, seeds: Ctrl-click (⌘-click on a Mac) to add or drop one, Shift-click for "
            "a "
            "range</small>",
            layout=W.Layout(width="260px"),
        )
        hint.add_class("craft-select-hint")
        self.widget = W.VBox(
            [
                W.HBox([self.arms, self.seeds, W.VBox([self.metric, hint])]),
                self.error,
                self.caption,
                self.table,
                W.HBox([self.spread, self.image]),
            ]
        )
        self.widget.add_class("craft-dashboard")
        for control in (self.arms, self.seeds, self.metric):
            control.observe(self.refresh, names="value")
        self.refresh()

    def refresh(self, _change=None) -> None:
        """Re-select, re-tabulate and redraw; an empty selection shows a message instead of
        failing."""

        def work():
            key = (tuple(sorted(self.arms.value)), tuple(sorted(self.seeds.value)))
            # a summary holds every metric: switching the metric costs no statistics
            if key not in self._cache:
                self._cache[key] = select(self.records, list(key[0]), list(key[1]), self._memo)
            picked, metric = self._cache[key], self.metric.value
            self.picked = picked
            chosen = [r for r in self.records if r["arm"] in key[0] and r["seed"] in key[1]]
            if (key, metric) not in self._spreads:
                self._spreads[key, metric] = spread_svg(picked, chosen, metric)
            self.spread.value = self._spreads[key, metric]
            self.image.value = self._roc(picked)
            reason = not_estimable(picked, chosen, metric)
            # the selection's
            pooled = "; ".join(n for n in self.notes if n.arm in key[0] and n.seed in key[1])
            seeds = sorted({s for a in picked.arms.values() for s in a.seeds})
            self.caption.value = (
                f"<b>{METRIC_LABELS[metric]}</b>: {len(seeds)} seed(s), "
                f"{sum(len(a.seeds) for a in picked.arms.values())} runs"
                + (
                    f' — <span class="craft-not-estimable">{html.escape(reason)}</span>'
                    if reason
                    else ""
                )
                + (f" <small>({html.escape(pooled)})</small>" if pooled else "")
            )
            estimable = any(
                v is not None for arm in picked.arms.values() for v in arm.values[metric]
            )
            self.table.value = (
                render_html(picked, metric)
                if estimable
                else f"<p>No {METRIC_LABELS[metric]} to compare: {html.escape(reason)}.</p>"
            )

        _guarded(self.error, [], work)

    def _roc(self, picked: Summary) -> bytes:
        runs = tuple((arm, r["seed"]) for arm, r in _picked_runs(picked, self.records)[0].items())
        if runs not in self._rocs:
            self._rocs[runs] = roc_png(picked, self.records) if runs else b""
        return self._rocs[runs]


def save_uploads(files, folder: str | Path) -> list[Path]:
    """Write run records uploaded into a notebook (``ipywidgets.FileUpload.value``) into
    ``folder/records/``.

    Each file must be a record as ``compare`` writes it (``arm``, ``seed``, ``fingerprint``);
    anything else is refused with its name. Returns the paths written.
    """
    written = []
    for f in files:
        record = json.loads(bytes(f["content"]).decode())
        if not {"arm", "seed", "fingerprint", "scores"} <= set(record):
            raise ValueError(
                f"{f['name']} is not a run record (records/<arm>-s<seed>.json from compare)"
            )
        path = Path(folder) / "records" / f"{record['arm']}-s{record['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        written.append(path)
    return written


class RecordUpload:
    """A file picker for the instructor: drop the room's ``*.json`` run records; they land in
    ``folder``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.upload = W.FileUpload(accept=".json", multiple=True, description="records")
        self.message, self.error = W.HTML(), W.HTML()
        self.widget = W.VBox([self.upload, self.message, self.error])
        self.widget.add_class("craft-upload")
        self.upload.observe(self._save, names="value")

    def _save(self, _change=None) -> None:
        def work():
            written = save_uploads(self.upload.value, self.folder)
            self.message.value = (
                f"{len(written)} record(s) saved in {html.escape(str(self.folder))}: "
                "re-run the dashboard cell to pool them"
            )

        _guarded(self.error, [], work)
