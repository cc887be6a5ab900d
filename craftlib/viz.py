"""Figures: filters, activity scores, death over time, activation maps, training curves, comparisons.

Every public function returns a ``matplotlib.figure.Figure`` built without pyplot: nothing is shown
twice in Jupyter, no global state is touched, and a figure nobody keeps is simply garbage-collected.
The ``draw_*`` / ``update_*`` helpers work on one axes; the widgets use them to change a figure in place.

Colour conventions used everywhere: red marks *inactive* filters, green marks *re-activation* events,
and one symmetric weight scale is shared by all filters of a figure, so a dead filter looks flat.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import PercentFormatter
from torch import nn

from .activity import filter_norms, inactive_mask, relative, timeline
from .training import to_input

INACTIVE = "#d62728"
ACTIVE = "#4c72b0"
EVENT = "#2ca02c"
WEIGHT_CMAP = "PuOr_r"  # signed weights: purple < 0 < orange; no red, which means "inactive"
MAP_CMAP = "inferno"  # activation maps: zero is black, as in the paper's teaser
METRIC_LABELS = {"accuracy": "verification accuracy", "inactive_fraction": "inactive conv1 filters",
                 "auc": "ROC AUC", "tar@far=0.01": "TAR @ FAR=1e-2", "tar@far=0.001": "TAR @ FAR=1e-3"}
PERCENT_METRICS = ("accuracy", "inactive_fraction", "tar@far=0.01", "tar@far=0.001")


# ---------------------------------------------------------------------------------------------
# small shared helpers


class CraftFigure(Figure):
    """A Figure that shows itself in Jupyter without pyplot: IPython calls ``_repr_png_``."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure with an Agg canvas (so it can be drawn and saved without a GUI)."""
    fig = CraftFigure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes, e.g. for an ``ipywidgets.Image``.

    One Agg draw, unlike ``savefig``, which draws a second time to lay the figure out: half the cost
    of every widget update.
    """
    fig.set_dpi(dpi)
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def as_weight(weight) -> np.ndarray:
    """A conv weight (tensor or array, ``out x 3 x kh x kw``) as a float64 NumPy array."""
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected a first-layer weight out x 3 x kh x kw, got shape {w.shape}")
    return w


def resolve_mask(weight: np.ndarray, scores=None, tau: float | None = None, mask=None) -> np.ndarray:
    """Inactive filters: ``mask`` if given, else ``scores < tau`` (scores default to relative max |w|)."""
    if mask is not None:
        return np.asarray(mask, dtype=bool)
    if tau is None:
        return np.zeros(len(weight), dtype=bool)
    if scores is None:
        scores = relative(filter_norms(torch.from_numpy(weight)))
    return inactive_mask(scores, tau)


def count_text(mask: np.ndarray) -> str:
    """"31 / 64 inactive (48%)": the sentence every view repeats."""
    k, n = int(np.sum(mask)), len(mask)
    return f"{k} / {n} inactive ({k / n:.0%})" if n else "no filters"


def _legend_once(ax, handles: list) -> None:
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)


# ---------------------------------------------------------------------------------------------
# filters


def filter_tile(w: np.ndarray, vmax: float, channels: bool = True) -> np.ndarray:
    """One 3-channel filter (``3 x k x k``) as an RGB image: composite, then σ R / G B panels.

    The composite maps weight 0 to grey, so a dead filter is a flat grey square. The four panels
    (σ = root mean square over R, G, B; then each channel) use ``WEIGHT_CMAP`` on the same scale.
    """
    k = w.shape[-1]
    vmax = vmax if vmax > 0 else 1.0
    composite = np.clip(0.5 + 0.5 * w.transpose(1, 2, 0) / vmax, 0, 1)
    if not channels:
        return composite
    cmap, norm = matplotlib.colormaps[WEIGHT_CMAP], Normalize(-vmax, vmax)
    sigma = np.sqrt((w ** 2).mean(0))
    panels = [cmap(norm(p))[..., :3] for p in (sigma, w[0], w[1], w[2])]
    side = 2 * k + 1
    tile = np.ones((side, 2 * side, 3))
    tile[:2 * k, :2 * k] = composite.repeat(2, 0).repeat(2, 1)
    for i, panel in enumerate(panels):  # 2 x 2 block right of the composite, 1 px apart
        r, c = divmod(i, 2)
        tile[r * (k + 1):r * (k + 1) + k, side + c * (k + 1):side + c * (k + 1) + k] = panel
    return tile


def _grid_layout(n: int, tile_h: int, tile_w: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Canvas shape and each tile's top-left corner: 8 tiles a row, a 1 px margin for the red frames."""
    cols, gap_x, gap_y = min(8, n), 2, 3
    rows = math.ceil(n / cols)
    origins = [(1 + (i % cols) * (tile_w + gap_x), (i // cols) * (tile_h + gap_y) + gap_y) for i in range(n)]
    return (rows * (tile_h + gap_y) + 1, cols * (tile_w + gap_x)), origins


def draw_filter_grid(ax, weight, mask: np.ndarray, channels: bool = True) -> float:
    """Draw every filter as a tile on one axes, frame the inactive ones; returns the shared scale."""
    w = as_weight(weight)
    vmax = float(np.abs(w).max())
    tiles = [filter_tile(f, vmax, channels) for f in w]
    h, tw = tiles[0].shape[:2]
    shape, origins = _grid_layout(len(w), h, tw)
    canvas = np.ones(shape + (3,))
    for (x, y), tile in zip(origins, tiles):
        canvas[y:y + h, x:x + tw] = tile
    ax.imshow(canvas, interpolation="nearest")
    for i, (x, y) in enumerate(origins):
        ax.add_patch(Rectangle((x - 1, y - 1), tw + 1, h + 1, fill=False, edgecolor=INACTIVE, linewidth=2,
                               gid=f"frame-{i}"))
        ax.text(x + tw / 2 - 0.5, y - 1.2, str(i), ha="center", va="bottom", fontsize=7, gid=f"label-{i}")
    ax.set_axis_off()
    mark_filters(ax, mask)
    return vmax


def mark_filters(ax, mask: np.ndarray) -> None:
    """Show the red frame and a red "✕ n" label on exactly the filters where ``mask`` is True (in place)."""
    for artist in list(ax.patches) + list(ax.texts):
        kind, _, idx = str(artist.get_gid()).partition("-")
        if kind == "frame":
            artist.set_visible(bool(mask[int(idx)]))
        elif kind == "label":
            dead = bool(mask[int(idx)])
            artist.set_text(f"✕ {idx}" if dead else idx)
            artist.set_color(INACTIVE if dead else "black")
            artist.set_fontweight("bold" if dead else "normal")


def marked_filters(ax) -> list[int]:
    """Indices of the filters currently framed as inactive (what a test or a reader can check)."""
    return [int(p.get_gid().split("-")[1]) for p in ax.patches
            if str(p.get_gid()).startswith("frame-") and p.get_visible()]


def _weight_colorbar(fig: Figure, ax, vmax: float) -> None:
    mappable = matplotlib.cm.ScalarMappable(Normalize(-vmax, vmax), WEIGHT_CMAP)
    fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.01, label="weight (σ panel: RMS over R, G, B)")


def filter_grid(weight, scores=None, tau: float | None = None, mask=None, channels: bool = True,
                title: str | None = None) -> Figure:
    """All first-layer filters, inactive ones framed in red.

    With ``channels`` each tile is the RGB composite followed by the paper's four 3x3 panels
    (σ, R over G, B). Pass ``mask`` directly, or ``tau`` (with ``scores``, default relative max |w|).
    """
    w = as_weight(weight)
    mask = resolve_mask(w, scores, tau, mask)
    fig = new_figure((11, 7.5) if channels else (6, 6.5))
    ax = fig.subplots()
    vmax = draw_filter_grid(ax, w, mask, channels)
    if channels:
        _weight_colorbar(fig, ax, vmax)
    tau_text = f" at τ = {tau:.2f}" if tau is not None else ""
    layout = "tile: RGB composite | σ R / G B" if channels else "RGB composites"
    ax.set_title(title or f"conv1 filters ({layout}, shared scale ±{vmax:.2g}): {count_text(mask)}{tau_text}",
                 fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# scores


def draw_score_bars(ax, scores: np.ndarray, tau: float, label: str = "max |w| / strongest") -> None:
    """Sorted bars (weakest first), τ as a dashed line, inactive bars red; ``update_score_bars`` changes it."""
    n = len(scores)
    ax.bar(np.arange(n), np.zeros(n), width=0.8)
    ax.axhline(tau, color="black", linestyle="--", linewidth=1, gid="tau")
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xticks([])  # 64 tick labels would cost more to draw than everything else; the grid shows numbers
    ax.set_xlabel("filters, sorted by score (weakest left)")
    ax.legend(handles=[Patch(color=INACTIVE, label="inactive (< τ)"), Patch(color=ACTIVE, label="active"),
                       Line2D([], [], color="black", linestyle="--", label="τ")], loc="upper left", fontsize=8)
    update_score_bars(ax, scores, tau, label)


def update_score_bars(ax, scores: np.ndarray, tau: float, label: str | None = None) -> None:
    """Re-sort the bars, recolour them, move the τ line and retitle: the explorer's in-place update."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(scores, kind="stable")
    mask = inactive_mask(scores, tau)
    for bar, i in zip(ax.patches, order):
        bar.set_height(scores[i])
        bar.set_color(INACTIVE if mask[i] else ACTIVE)
    tau_line = next(l for l in ax.lines if l.get_gid() == "tau")
    tau_line.set_ydata([tau, tau])
    ax.set_ylim(0, max(1.0, float(scores.max())) * 1.05)
    if label is not None:
        ax.set_ylabel(label)
    ax.set_title(f"{count_text(mask)} at τ = {tau:.2f}")


def score_bars(scores, tau: float, label: str = "max |w| / strongest") -> Figure:
    """Every filter's relative score as a bar, sorted, with the threshold τ."""
    fig = new_figure((10, 3.5))
    draw_score_bars(fig.subplots(), np.asarray(scores, dtype=float), tau, label)
    return fig


def score_histogram(scores, tau: float, log: bool = False, label: str = "relative score") -> Figure:
    """Histogram of scores, split at τ. ``log`` spreads the dead filters (0.1-1 %) apart from the live ones."""
    scores = np.asarray(scores, dtype=float)
    mask = inactive_mask(scores, tau)
    top = max(1.0, float(scores.max()))
    bins = np.geomspace(max(float(scores[scores > 0].min()), 1e-4) / 1.5, top, 40) if log else np.linspace(0, top, 41)
    fig = new_figure((6, 3.5))
    ax = fig.subplots()
    ax.hist([scores[~mask], scores[mask]], bins=bins, stacked=True, color=[ACTIVE, INACTIVE],
            label=["active", "inactive (< τ)"])
    ax.axvline(tau, color="black", linestyle="--", linewidth=1, label=f"τ = {tau:.2f}", gid="tau")
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=label, ylabel="filters", title=f"{count_text(mask)} at τ = {tau:.2f}")
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# death over time


def reactivations(events: list[dict] | None) -> list[dict]:
    """Events that changed filters: the ``none`` arm logs what it detects but re-initialises nothing."""
    return [e for e in events or [] if e.get("strategy") != "none"]


def _event_x(event: dict, xlabel: str) -> float:
    return event.get(xlabel, event["epoch"])


def death_times(matrix: np.ndarray, tau: float, events: list[dict] | None = None, x=None,
                xlabel: str = "epoch") -> np.ndarray:
    """Column where each filter's score first drops below τ (``inf``: never).

    With ``events``, a filter renewed at an event counts as dead from then on: it was below τ when it
    was detected, even if the snapshot after the event already shows its new weights.
    """
    below = np.asarray(matrix) < tau
    died = np.where(below.any(1), below.argmax(1), np.inf)
    x = np.arange(below.shape[1]) if x is None else np.asarray(x, dtype=float)
    for event in reactivations(events):
        column = int(np.argmin(np.abs(x - _event_x(event, xlabel))))
        for f in event.get("filters", []):
            died[f] = min(died[f], column)
    return died


def death_timeline(matrix, tau: float, events: list[dict] | None = None, x=None, xlabel: str = "epoch") -> Figure:
    """Filters x time heatmap of scores, rows ordered by time of death (first drop below τ or renewal).

    Red crosses mark each filter's first drop below τ seen in the data; green dashed lines mark
    re-activation events (``trainer.events``) with dots on the filters they renewed. ``x`` labels the
    columns (default 0..T-1).
    """
    m = np.asarray(matrix, dtype=float)
    x = np.arange(m.shape[1]) if x is None else np.asarray(x, dtype=float)
    order = np.lexsort((m[:, -1], death_times(m, tau, events, x, xlabel)))  # earliest first, then weakest
    dx = (x[-1] - x[0]) / max(len(x) - 1, 1) or 1.0
    fig = new_figure((8, 7))
    ax = fig.subplots()
    image = ax.imshow(m[order], aspect="auto", cmap="viridis", vmin=0, vmax=max(1.0, float(m.max())),
                      extent=(x[0] - dx / 2, x[-1] + dx / 2, len(m) - 0.5, -0.5), interpolation="nearest")
    fig.colorbar(image, ax=ax, label="relative score", pad=0.01)
    rows, seen = np.arange(len(m)), death_times(m, tau)[order]
    dead = np.isfinite(seen)
    ax.scatter(x[seen[dead].astype(int)], rows[dead], marker="x", color=INACTIVE, s=18, zorder=3,
               label=f"first score < τ = {tau:.2f} ({int(dead.sum())} filters)", gid="deaths")
    position = {f: r for r, f in enumerate(order)}
    for j, event in enumerate(reactivations(events)):
        ex = _event_x(event, xlabel)
        ax.axvline(ex, color=EVENT, linestyle="--", linewidth=1.2, label="re-activation" if j == 0 else None)
        renewed = [position[f] for f in event.get("filters", [])]
        ax.scatter([ex] * len(renewed), renewed, marker="o", color=EVENT, edgecolor="white", s=22, gid="renewed")
    ax.set_yticks(rows, [str(f) for f in order], fontsize=5)
    ax.set(xlabel=xlabel, ylabel="filter (ordered by time of death)",
           title=f"conv1 activity over training: {count_text(m[:, -1] < tau)} at the end")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return fig


# ---------------------------------------------------------------------------------------------
# activation maps


def _owner(stem: Callable) -> nn.Module | None:
    """The module whose mode matters: the stem itself, or the model a bound ``model.stem`` belongs to."""
    return stem if isinstance(stem, nn.Module) else getattr(stem, "__self__", None)


@torch.no_grad()
def stem_maps(stem: Callable, face: np.ndarray) -> np.ndarray:
    """Channel x H x W output of ``stem`` (conv -> BN -> activation) on one uint8 face, in eval mode."""
    owner = _owner(stem)
    was_training = owner.training if owner is not None else False
    device = next(owner.parameters()).device if owner is not None else torch.device("cpu")
    if owner is not None:
        owner.eval()
    try:
        out = stem(to_input(torch.as_tensor(np.array(face, copy=True))[None]).to(device))
    finally:
        if owner is not None:
            owner.train(was_training)
    return out[0].float().cpu().numpy()


def _draw_face(ax, face: np.ndarray, title: str = "face") -> None:
    ax.imshow(face)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def activation_maps(stem: Callable, face: np.ndarray, filters=None, scores=None, tau: float | None = None,
                    mask=None, title: str | None = None) -> Figure:
    """The face and the chosen filters' maps after the stem, on one colour scale where 0 is black.

    ``stem`` is ``model.stem`` (FaceCNN) or ``craftlib.pretrained.mobilefacenet_stem()``. Filters marked
    inactive (``mask``, or ``scores < tau``) get red titles; their maps are flat, usually black.
    """
    maps = stem_maps(stem, face)
    filters = list(range(len(maps))) if filters is None else [int(f) for f in filters]
    if mask is None and tau is not None and scores is not None:
        mask = inactive_mask(scores, tau)
    mask = np.zeros(len(maps), bool) if mask is None else np.asarray(mask, bool)
    cols = min(8, len(filters) + 1)
    rows = math.ceil((len(filters) + 1) / cols)
    fig = new_figure((1.5 * cols + 1, 1.6 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    _draw_face(axes[0], face)
    vmax = float(maps[filters].max()) or 1.0
    image = None
    for ax, f in zip(axes[1:], filters):
        image = ax.imshow(maps[f], cmap=MAP_CMAP, vmin=0, vmax=vmax)  # <= 0 is black: nothing passed on
        ax.set_title(f"✕ {f}" if mask[f] else f"#{f}", fontsize=8, color=INACTIVE if mask[f] else "black")
        ax.set_axis_off()
    for ax in axes[len(filters) + 1:]:
        ax.remove()
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(filters) + 1]), shrink=0.8, pad=0.01, label="activation (≤ 0 black)")
    fig.suptitle(title or f"activation maps ({count_text(mask[filters])} among those shown)", fontsize=10)
    return fig


def before_after(weight_before, weight_after, filters, stem_before: Callable | None = None,
                 stem_after: Callable | None = None, face: np.ndarray | None = None, fig=None) -> Figure:
    """The chosen filters (first 12) before and after re-activation, and their maps on ``face`` when stems are given.

    Both rows share one weight scale, so "grey before, colourful after" reads directly. ``fig`` may be
    a subfigure to draw into (the lab's static view composes this with ``step_curves``).
    """
    wb, wa = as_weight(weight_before), as_weight(weight_after)
    filters = [int(f) for f in filters][:12]
    with_maps = face is not None and stem_before is not None and stem_after is not None
    heights = [0.55, 0.55, 1, 1] if with_maps else [1, 1]  # a tile is twice as wide as tall; maps are square
    fig = fig if fig is not None else new_figure((max(3.0, 1.3 * len(filters) + 1.2), 1.4 * sum(heights) + 0.6))
    if not filters:
        fig.text(0.5, 0.5, "no filters were re-activated", ha="center", va="center")
        return fig
    axes = fig.subplots(len(heights), len(filters), squeeze=False, height_ratios=heights)
    vmax = float(max(np.abs(wb).max(), np.abs(wa).max()))
    for col, f in enumerate(filters):
        for row, w in enumerate((wb, wa)):
            axes[row, col].imshow(filter_tile(w[f], vmax), interpolation="nearest")
    if with_maps:
        maps = [stem_maps(stem_before, face), stem_maps(stem_after, face)]
        vmax_maps = max(float(m[filters].max()) for m in maps) or 1.0
        for col, f in enumerate(filters):
            for row, m in ((2, maps[0]), (3, maps[1])):
                axes[row, col].imshow(m[f], cmap=MAP_CMAP, vmin=0, vmax=vmax_maps)
    names = ["filter before", "filter after", "map before", "map after"]
    for (row, col), ax in np.ndenumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(f"#{filters[col]}", fontsize=8)
        if col == 0:
            ax.set_ylabel(names[row], fontsize=8)
    fig.suptitle(f"{len(filters)} re-activated filter(s): before / after (shared scale ±{vmax:.2g})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# training curves


def _mark_events(axes, events: list[dict] | None, key: str) -> None:
    for j, event in enumerate(reactivations(events)):
        n = len(event.get("filters", []))
        for ax in axes:
            ax.axvline(event[key], color=EVENT, linestyle="--", linewidth=1, gid="event",
                       label="re-activation" if j == 0 else None)
        axes[-1].annotate(f"+{n}", (event[key], 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                          color=EVENT, ha="left", va="top")


def training_curves(history: list[dict], events: list[dict] | None = None, tau: float = 0.1) -> Figure:
    """Loss, train accuracy and inactive fraction per epoch, re-activation events as green lines."""
    epochs = [h["epoch"] for h in history]
    inactive = (timeline(history) < tau).mean(0)
    fig = new_figure((11, 3.2))
    axes = fig.subplots(1, 3, sharex=True)
    axes[0].plot(epochs, [h["loss"] for h in history], "o-", label="loss")
    axes[1].plot(epochs, [h["train_acc"] for h in history], "o-", label="train accuracy")
    axes[2].plot(epochs, inactive, "o-", color=INACTIVE, label=f"inactive (< τ = {tau:.2f})")
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[2].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[2].set_ylim(0, 1)
    for ax, title in zip(axes, ("training loss", "training accuracy", "inactive conv1 filters")):
        ax.set(title=title, xlabel="epoch")
    _mark_events(axes, events, "epoch")
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def step_curves(log: list[dict], events: list[dict] | None = None, fig=None) -> Figure:
    """Loss and inactive fraction against optimisation step (the lab's record: ``step``/``loss``/``inactive``)."""
    fig = fig if fig is not None else new_figure((9, 3))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, color in ((axes[0], "loss", ACTIVE), (axes[1], "inactive", INACTIVE)):
        points = [(r["step"], r[key]) for r in log if r.get(key) is not None and np.isfinite(r[key])]
        if points:
            ax.plot(*zip(*points), ".-", color=color, label=key)
        else:
            ax.text(0.5, 0.5, "nothing recorded yet", transform=ax.transAxes, ha="center", color="grey")
        ax.set(xlabel="step", title={"loss": "training loss", "inactive": "inactive conv1 filters"}[key])
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[1].set_ylim(0, 1)
    _mark_events(axes, events, "step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# verification and comparisons


def draw_roc(ax, reports: dict[str, dict]) -> None:
    """ROC curves on a log FAR axis (the region face verification is judged on)."""
    lowest = 1.0
    for name, report in reports.items():
        fpr, tpr = np.asarray(report["roc"]["fpr"]), np.asarray(report["roc"]["tpr"])
        keep = fpr > 0  # log axis: FAR 0 cannot be drawn
        lowest = min(lowest, float(fpr[keep].min()) if keep.any() else 1.0)
        label = f"{name} (AUC {report['auc']:.3f})" if "auc" in report else name
        ax.plot(fpr[keep], tpr[keep], label=label)
    chance = np.geomspace(lowest, 1, 50)
    ax.plot(chance, chance, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set(xlim=(lowest, 1), ylim=(0, 1.01), xlabel="false accept rate (FAR, log)",
           ylabel="true accept rate (TAR)", title="ROC on the verification pairs")
    ax.legend(fontsize=8, loc="lower right")


def roc_curves(reports: dict[str, dict]) -> Figure:
    """One ROC per ``verification.evaluate`` report (or run dict with ``roc``), keyed by legend label."""
    fig = new_figure((6, 4.5))
    draw_roc(fig.subplots(), reports)
    return fig


def _p_text(p) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def draw_seed_comparison(ax, summary: dict, metric: str = "accuracy", arms: list[str] | None = None) -> None:
    """Box + points per arm, one point per seed, paired p-values against the baseline written above."""
    baseline = summary.get("baseline", "none")
    names = [a for a in summary["arms"] if arms is None or a in arms]
    labels = [summary["arms"][a]["label"] for a in names]
    xs = [summary["arms"][a]["label"] for a in names for _ in summary["arms"][a][metric]]
    ys = [v for a in names for v in summary["arms"][a][metric]]
    sns.stripplot(x=xs, y=ys, order=labels, ax=ax, color="black", size=6, jitter=0.08)
    ax.boxplot([summary["arms"][a][metric] for a in names], positions=range(len(names)), widths=0.5,
               showfliers=False, manage_ticks=False, medianprops={"color": ACTIVE})
    top = max(ys) if ys else 1.0
    for i, name in enumerate(names):
        vs = summary["arms"][name].get(f"vs_{baseline}", {}).get(metric, {})
        text = "baseline" if name == baseline else f"p = {_p_text(vs.get('t_pvalue'))} (t)\n{_p_text(vs.get('wilcoxon_pvalue'))} (W)"
        ax.annotate(text, (i, 1.0), xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=8,
                    gid="pvalue")
    span = (top - min(ys)) if ys else 1.0
    ax.set_ylim(top=top + 0.5 * (span or abs(top) * 0.1 or 0.1))
    if metric in PERCENT_METRICS:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    seeds = max((len(summary["arms"][a][metric]) for a in names), default=0)
    ax.set(ylabel=METRIC_LABELS.get(metric, metric), title=f"{METRIC_LABELS.get(metric, metric)}, {seeds} seed(s)")


def seed_comparison(summary: dict, metric: str = "accuracy", arms: list[str] | None = None) -> Figure:
    """Spread over seeds of one metric per arm (``experiments.summarize`` output), p-values annotated."""
    fig = new_figure((max(4.5, 1.8 * len(summary["arms"]) + 1), 4))
    draw_seed_comparison(fig.subplots(), summary, metric, arms)
    return fig


def first_runs(runs: list[dict]) -> dict[str, dict]:
    """Per arm, its run with the lowest seed (seed 0 when present): the one the per-run figures show."""
    chosen: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        chosen.setdefault(run["strategy"], run)
    return chosen


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def save_comparison_figures(out_dir: str | Path) -> list[Path]:
    """Write the comparison's PNGs beside ``summary.json`` (and ``runs.json`` when present); return their paths."""
    from .reactivation import STRATEGY_LABELS

    out = Path(out_dir)
    summary = json.loads((out / "summary.json").read_text())
    runs = json.loads((out / "runs.json").read_text()) if (out / "runs.json").is_file() else []
    tau = summary.get("tau", 0.1)
    paths = [_save(seed_comparison(summary, m), out / f"seeds_{m}.png") for m in ("accuracy", "inactive_fraction")]
    chosen = first_runs(runs)
    if chosen:
        reports = {f"{STRATEGY_LABELS.get(s, s)} (seed {r['seed']})": r for s, r in chosen.items()}
        paths.append(_save(roc_curves(reports), out / "roc.png"))
    for strategy, run in chosen.items():
        paths.append(_save(training_curves(run["history"], run["events"], tau), out / f"curves_{strategy}.png"))
        paths.append(_save(death_timeline(timeline(run["history"]), tau, run["events"]), out / f"timeline_{strategy}.png"))
    return paths


# ---------------------------------------------------------------------------------------------
# the notebooks' extra figures: faces and pairs, margins, score distributions, context, live curves


def face_grid(images, titles=None, cols: int = 8, title: str | None = None) -> Figure:
    """uint8 faces (``N x H x W x 3``) in a grid, with optional titles (e.g. names)."""
    images = np.asarray(images)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = new_figure((1.3 * cols, 1.45 * rows + (0.3 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i])[:18], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def crop_preview(path, crop=None, size: int = 40) -> Figure:
    """One LFW photo (250 x 250) with the face box craftlib crops, and the resulting ``size`` px input."""
    from PIL import Image

    from .data import DEFAULT_CROP, load_face

    crop = tuple(crop or DEFAULT_CROP)
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB"))
    fig = new_figure((7, 3.4))
    left, right = fig.subplots(1, 2)
    left.imshow(full)
    left.add_patch(Rectangle((crop[0], crop[1]), crop[2] - crop[0], crop[3] - crop[1], fill=False,
                             edgecolor=EVENT, linewidth=2))
    left.set_title(f"{Path(path).name}: {full.shape[1]}x{full.shape[0]}, box {crop}", fontsize=8)
    right.imshow(load_face(Path(path), crop, size), interpolation="nearest")
    right.set_title(f"network input: {size}x{size}", fontsize=8)
    for ax in (left, right):
        ax.set_axis_off()
    return fig


def pair_grid(pairs, n: int = 4, seed: int = 0) -> Figure:
    """``n`` same-person and ``n`` different-person pairs of a ``PairSet``, one pair per column."""
    rng = np.random.default_rng(seed)
    same = rng.choice(np.flatnonzero(pairs.same), n, replace=False)
    diff = rng.choice(np.flatnonzero(~pairs.same), n, replace=False)
    chosen = list(same) + list(diff)
    fig = new_figure((1.25 * len(chosen), 3.2))
    axes = fig.subplots(2, len(chosen), squeeze=False)
    for col, k in enumerate(chosen):
        for row, idx in enumerate((pairs.left[k], pairs.right[k])):
            ax = axes[row, col]
            ax.imshow(pairs.images[idx], interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(pairs.files[idx].split("/")[0].replace("_", " ")[:16], fontsize=6)
        axes[0, col].text(0.5, 1.35, "same" if pairs.same[k] else "different", transform=axes[0, col].transAxes,
                          ha="center", fontsize=9, fontweight="bold", color=EVENT if pairs.same[k] else INACTIVE)
    fig.suptitle(f"{pairs.name or 'pairs'}: {n} same-person and {n} different-person pairs", fontsize=10)
    return fig


def margin_curves(scale: float = 30.0, kinds=("cosface", "arcface")) -> Figure:
    """The target-class logit against the angle θ to its class centre: plain softmax vs margin heads.

    Computed by ``losses.MarginHead`` itself (an embedding at angle θ to a single class centre).
    """
    from .losses import MarginHead

    theta = torch.linspace(0, math.pi, 181, dtype=torch.float32)
    emb = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    labels = torch.zeros(len(theta), dtype=torch.long)
    fig = new_figure((6, 3.6))
    ax = fig.subplots()
    ax.plot(np.degrees(theta), scale * np.cos(theta.numpy()), color="grey", linestyle="--", label="softmax: s·cos θ")
    for kind in kinds:
        head = MarginHead(2, 1, kind, scale)
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[1.0, 0.0]]))
            logit = head(emb, labels)[:, 0].numpy()
        ax.plot(np.degrees(theta), logit, label=f"{kind} (m1, m2, m3) = ({head.m1:g}, {head.m2:g}, {head.m3:g})")
    ax.set(xlabel="angle θ between embedding and its class centre (degrees)", ylabel="target logit",
           title=f"margin heads make the true class harder (s = {scale:g})")
    ax.legend(fontsize=8)
    return fig


def pair_score_histogram(scores, same, threshold: float | None = None) -> Figure:
    """Cosine scores of same- and different-person pairs, with a decision threshold."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    fig = new_figure((6.5, 3.5))
    ax = fig.subplots()
    bins = np.linspace(scores.min(), scores.max(), 41)
    ax.hist(scores[same], bins=bins, alpha=0.6, color=EVENT, label=f"same person ({same.sum()})")
    ax.hist(scores[~same], bins=bins, alpha=0.6, color=INACTIVE, label=f"different people ({(~same).sum()})")
    if threshold is not None:
        acc = float(np.mean((scores > threshold) == same))
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}: {acc:.1%} of these pairs right")
    ax.set(xlabel="cosine similarity of the two embeddings", ylabel="pairs", title="verification scores")
    ax.legend(fontsize=8)
    return fig


def context_figure(strong, mean, cov) -> Figure:
    """CRAFT's context: the strong filters, their mean filter, and the 27 x 27 covariance of their weights."""
    strong = np.asarray(strong.detach().cpu() if torch.is_tensor(strong) else strong, dtype=float)
    mean = np.asarray(mean.detach().cpu() if torch.is_tensor(mean) else mean, dtype=float)
    cov = np.asarray(cov.detach().cpu() if torch.is_tensor(cov) else cov, dtype=float)
    k = int(round(math.sqrt(len(mean) / 3)))
    fig = new_figure((12, 4))
    ax_mean, ax_std, ax_cov = fig.subplots(1, 3, width_ratios=[1, 1, 1.4])
    vmax = float(np.abs(strong).max()) if strong.size else 1.0
    ax_mean.imshow(filter_tile(mean.reshape(3, k, k), vmax), interpolation="nearest")
    ax_mean.set_title(f"mean of {len(strong)} strong filters\n(RGB | σ R / G B, scale ±{vmax:.2g})", fontsize=9)
    std = np.sqrt(np.diag(cov)).reshape(3, k, k)
    image = ax_std.imshow(np.concatenate(list(std), axis=1), cmap="viridis", vmin=0)
    ax_std.set_title("std per weight (R | G | B)", fontsize=9)
    fig.colorbar(image, ax=ax_std, shrink=0.6)
    lim = float(np.abs(cov).max()) or 1.0
    image = ax_cov.imshow(cov, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for edge in (k * k - 0.5, 2 * k * k - 0.5):
        ax_cov.axhline(edge, color="black", linewidth=0.8)
        ax_cov.axvline(edge, color="black", linewidth=0.8)
    ticks = [k * k * c + (k * k - 1) / 2 for c in range(3)]
    ax_cov.set_xticks(ticks, ["R", "G", "B"])
    ax_cov.set_yticks(ticks, ["R", "G", "B"])
    ax_cov.set_title("covariance of the 27 weights (shrunk)", fontsize=9)
    fig.colorbar(image, ax=ax_cov, shrink=0.8)
    for ax in (ax_mean, ax_std):
        ax.set_axis_off()
    return fig


def score_traces(traces: dict, tau: float, filters=None, title: str = "re-activated filters after the event",
                 ylabel: str = "relative score") -> Figure:
    """Median (line) and range (band) of some filters' scores over steps, one colour per condition.

    ``traces`` maps a label to ``(steps, matrix)`` with ``matrix`` = filters x steps (as returned by
    ``activity.track``); ``filters`` picks the rows to show (default: all).
    """
    fig = new_figure((7, 3.6))
    ax = fig.subplots()
    for label, (steps, matrix) in traces.items():
        m = np.asarray(matrix, float)
        if filters is not None:
            m = m[np.asarray(filters, dtype=int)]
        if m.size == 0:
            continue
        line, = ax.plot(steps, np.median(m, 0), ".-", label=label)
        ax.fill_between(steps, m.min(0), m.max(0), color=line.get_color(), alpha=0.15)
    ax.axhline(tau, color="black", linestyle="--", linewidth=1, label=f"τ = {tau:.2f}")
    ax.set(xlabel="step", ylabel=ylabel, title=title, ylim=(0, None))
    ax.legend(fontsize=8)
    return fig


def inactive_curves(histories: dict, tau: float, events: dict | None = None) -> Figure:
    """Inactive conv1 fraction per epoch for several runs (``{label: trainer.history}``), events marked."""
    fig = new_figure((7, 3.6))
    ax = fig.subplots()
    for label, history in histories.items():
        fraction = (timeline(history) < tau).mean(0)
        line, = ax.plot([h["epoch"] for h in history], fraction, "o-", label=label)
        for j, event in enumerate((events or {}).get(label, [])):
            ax.axvline(event["epoch"], color=line.get_color(), linestyle=":", linewidth=1,
                       label=f"{label}: re-activation" if j == 0 else None)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="epoch", ylabel=f"conv1 filters with score < τ = {tau:.2f}", ylim=(0, 1),
           title="inactive first-layer filters over training")
    ax.legend(fontsize=8)
    return fig


class LiveCurves:
    """``after_epoch`` hook (``training.train_cached``): one notebook output that redraws ``training_curves``.

    Outside IPython it does nothing; the final figure stays in the notebook once training ends.
    """

    def __init__(self, tau: float = 0.1):
        self.tau, self.handle = tau, None

    def __call__(self, trainer) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        fig = training_curves(trainer.history, trainer.events, self.tau)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
