"""Figures: filters, activity scores, death over time, activation maps, training curves,
comparisons.

Every public function returns a ``matplotlib.figure.Figure`` built without pyplot: nothing is shown
twice in Jupyter, no global state is touched (the projector mode aside), and a figure nobody keeps
is simply garbage-collected. The ``draw_*`` / ``update_*`` helpers work on one axes; the widgets use
them to change a figure in place.

Colour conventions used everywhere, from the colour-blind-safe Okabe–Ito palette (no red/green
pair): vermillion marks *inactive* filters, blue *active* ones, sky blue *re-activation* events;
every line plot cycles through the same palette, and one symmetric weight scale is shared by all
filters of a figure, so a dead filter looks flat. Text is never smaller than 10 px where a figure is
shown (``small_text`` checks it): 10 pt in figures the widgets render at 72 dpi. For a projector,
``presentation(True)`` draws everything 1.5 times larger (text, filter tiles, lines).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
from torch import nn

from .activity import (
    SCORE_LABELS,
    death_times,
    event_x,
    filter_norms,
    inactive_mask,
    inactive_over_time,
    relative,
    renewals,
)
from .data import to_input
from .runtime import evaluating, to_numpy

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
"""Okabe & Ito (2008), *Color Universal Design*: eight colours told apart with every common colour
deficiency."""
INACTIVE = OKABE_ITO["vermillion"]
ACTIVE = OKABE_ITO["blue"]
EVENT = OKABE_ITO["sky blue"]
PALETTE = [
    OKABE_ITO[c] for c in ("blue", "orange", "black", "reddish purple", "sky blue", "vermillion")
]
"""The line colours, in order (no bluish green: it would pair with vermillion for red/green
readers)."""
ARM_COLORS = {
    "none": OKABE_ITO["black"],
    "contextual": OKABE_ITO["blue"],
    "random_matched": OKABE_ITO["orange"],
    "random": OKABE_ITO["reddish purple"],
    "perturbed": OKABE_ITO["sky blue"],
    "orthogonal": OKABE_ITO["yellow"],
    "contextual_weight": OKABE_ITO["vermillion"],
}
WEIGHT_CMAP = "PuOr_r"  # signed weights: purple < 0 < orange; no red, which means "inactive"
MAP_CMAP = "inferno"  # activation maps: zero is black, as in the paper's teaser
SCORE_CMAP = "cividis"  # scores over time: perceptually uniform and colour-blind safe
MIN_TEXT_PX = 10
TAU_MIN = 1e-3  # the τ sliders' lower end (log scale, 1e-3..1)
WIDGET_DPI = 72  # widgets show PNGs at their own size: 1 pt = 1 px, so 10 pt text is 10 px
PRESENTATION_SCALE = 1.5  # projector mode: 10 pt text becomes 15 px, a 28-px filter tile 42 px
ENV_PRESENTATION = "CRAFT_PRESENTATION"


def _scale_from_env() -> float:
    value = os.environ.get(ENV_PRESENTATION, "").strip()
    if value in ("", "0"):
        return 1.0
    scale = PRESENTATION_SCALE if value == "1" else float(value)
    if not 1.0 <= scale <= 4.0:
        raise ValueError(
            f"${ENV_PRESENTATION} must be 0, 1 or a scale between 1 and 4, got {value!r}"
        )
    return scale


_render = {"scale": _scale_from_env()}


def presentation(on: bool = True, scale: float = PRESENTATION_SCALE) -> float:
    """Projector mode: every figure and widget drawn from now on has its text, tiles and lines
    ``scale`` times larger in pixels (10 px text is readable on a laptop, not from the back of a
    room). Re-run a widget's cell to redraw it at the new size; ``$CRAFT_PRESENTATION=1`` turns it
    on for a whole session. Returns the scale."""
    if not 1.0 <= scale <= 4.0:
        raise ValueError(f"scale must be between 1 and 4, got {scale}")
    _render["scale"] = float(scale) if on else 1.0
    return _render["scale"]


def render_scale() -> float:
    """Pixels per point relative to the normal rendering: 1, or the projector mode's scale."""
    return _render["scale"]


# ---------------------------------------------------------------------------------------------
# small shared helpers


class CraftFigure(Figure):
    """A Figure that shows itself in Jupyter without pyplot (IPython calls ``_repr_png_``), in the
    palette."""

    def add_subplot(self, *args, **kwargs):
        ax = super().add_subplot(*args, **kwargs)
        ax.set_prop_cycle(color=PALETTE)
        return ax

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100 * render_scale())
        return buf.getvalue()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure with an Agg canvas (so it can be drawn and saved without a GUI)."""
    fig = CraftFigure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes, e.g. for an ``ipywidgets.Image``.

    One Agg draw, unlike ``savefig``, which draws a second time to lay the figure out: half the cost
    of every widget update. In projector mode (``presentation``) the dpi is scaled.
    """
    fig.set_dpi(dpi * render_scale())
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return pixels_png(canvas)


def pixels_png(canvas: FigureCanvasAgg) -> bytes:
    """A drawn canvas as PNG, compressed for speed (zlib level 1: a tenth of the encode time of
    matplotlib's default for a few more kB over a local connection)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def small_text(fig: Figure, dpi: float, min_px: float = MIN_TEXT_PX) -> list[str]:
    """Visible, non-empty texts of ``fig`` (titles, labels, ticks, legends) smaller than ``min_px``
    at ``dpi``."""
    fig.canvas.draw()  # lay out first: tick labels exist only once drawn
    return [
        f"{t.get_text()!r}: {t.get_fontsize() * dpi / 72:.1f} px"
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() * dpi / 72 < min_px - 1e-6
    ]


def as_weight(weight) -> np.ndarray:
    """A conv weight (tensor or array, ``out x 3 x kh x kw``) as a float64 NumPy array."""
    w = to_numpy(weight).astype(np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected a first-layer weight out x 3 x kh x kw, got shape {w.shape}")
    return w


def resolve_mask(
    weight: np.ndarray, scores=None, tau: float | None = None, mask=None
) -> np.ndarray:
    """Inactive filters: ``mask`` if given, else ``scores < tau`` (scores default to relative max
    |w|)."""
    if mask is not None:
        return np.asarray(mask, dtype=bool)
    if tau is None:
        return np.zeros(len(weight), dtype=bool)
    if scores is None:
        scores = relative(filter_norms(torch.from_numpy(weight)))
    return inactive_mask(scores, tau)


def count_text(mask: np.ndarray) -> str:
    """ "31 / 64 inactive (48%)": the sentence every view repeats."""
    k, n = int(np.sum(mask)), len(mask)
    return f"{k} / {n} inactive ({k / n:.0%})" if n else "no filters"


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
    sigma = np.sqrt((w**2).mean(0))
    panels = [cmap(norm(p))[..., :3] for p in (sigma, w[0], w[1], w[2])]
    side = 2 * k + 1
    tile = np.ones((side, 2 * side, 3))
    tile[: 2 * k, : 2 * k] = composite.repeat(2, 0).repeat(2, 1)
    for i, panel in enumerate(panels):  # 2 x 2 block right of the composite, 1 px apart
        r, c = divmod(i, 2)
        tile[r * (k + 1) : r * (k + 1) + k, side + c * (k + 1) : side + c * (k + 1) + k] = panel
    return tile


def _grid_layout(n: int, tile_h: int, tile_w: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Canvas shape and each tile's top-left corner: 8 tiles a row, a 1 px margin for the frames,
    room for labels."""
    cols, gap_x, gap_y = min(8, n), 2, max(3, tile_h // 2 + 1)
    rows = math.ceil(n / cols)
    origins = [
        (1 + (i % cols) * (tile_w + gap_x), (i // cols) * (tile_h + gap_y) + gap_y)
        for i in range(n)
    ]
    return (rows * (tile_h + gap_y) + 1, cols * (tile_w + gap_x)), origins


def draw_filter_grid(
    ax, weight, mask: np.ndarray, channels: bool = True, fontsize: float = 10
) -> float:
    """Draw every filter as a tile on one axes, frame the inactive ones; returns the shared
    scale."""
    w = as_weight(weight)
    vmax = float(np.abs(w).max())
    tiles = [filter_tile(f, vmax, channels) for f in w]
    h, tw = tiles[0].shape[:2]
    shape, origins = _grid_layout(len(w), h, tw)
    canvas = np.ones(shape + (3,))
    for (x, y), tile in zip(origins, tiles):
        canvas[y : y + h, x : x + tw] = tile
    ax.imshow(canvas, interpolation="nearest")
    for i, (x, y) in enumerate(origins):
        ax.add_patch(
            Rectangle(
                (x - 1, y - 1),
                tw + 1,
                h + 1,
                fill=False,
                edgecolor=INACTIVE,
                linewidth=2,
                gid=f"frame-{i}",
            )
        )
        at = dict(x=x + tw / 2 - 0.5, y=y - 0.6, ha="center", va="bottom", fontsize=fontsize)
        ax.text(s=str(i), gid=f"label-{i}", **at)
        # an inactive filter's label covers the plain one: marking draws only these (fast redraws)
        ax.text(
            s=f"✕\u2009{i}",
            gid=f"dead-{i}",
            color=INACTIVE,
            fontweight="bold",
            **at,
            bbox=dict(boxstyle="square,pad=0.05", facecolor="white", edgecolor="none"),
        )
    ax.set_axis_off()
    mark_filters(ax, mask)
    return vmax


def mark_filters(ax, mask: np.ndarray) -> None:
    """Show the frame and a "✕ n" label (vermillion) on exactly the filters where ``mask`` is True
    (in place)."""
    for artist in list(ax.patches) + list(ax.texts):
        kind, _, idx = str(artist.get_gid()).partition("-")
        if kind in ("frame", "dead"):
            artist.set_visible(bool(mask[int(idx)]))


def marking_artists(ax) -> list:
    """The artists ``mark_filters`` changes: what a fast redraw of a filter grid must draw."""
    return [a for a in [*ax.patches, *ax.texts] if str(a.get_gid()).startswith(("frame-", "dead-"))]


def marking_groups(ax) -> list[list]:
    """Each filter's frame and "✕ n" label: what changes together when a filter is (un)marked."""
    by_filter: dict[str, list] = {}
    for a in marking_artists(ax):
        by_filter.setdefault(str(a.get_gid()).split("-")[1], []).append(a)
    return list(by_filter.values())


def marked_filters(ax) -> list[int]:
    """Indices of the filters currently framed as inactive (what a test or a reader can check)."""
    return [
        int(p.get_gid().split("-")[1])
        for p in ax.patches
        if str(p.get_gid()).startswith("frame-") and p.get_visible()
    ]


def _weight_colorbar(fig: Figure, ax, vmax: float) -> None:
    mappable = matplotlib.cm.ScalarMappable(Normalize(-vmax, vmax), WEIGHT_CMAP)
    fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.01, label="weight (σ panel: RMS over R, G, B)")


def filter_grid(
    weight,
    scores=None,
    tau: float | None = None,
    mask=None,
    channels: bool = True,
    title: str | None = None,
) -> Figure:
    """All first-layer filters, inactive ones framed (vermillion).

    With ``channels`` each tile is the RGB composite followed by the paper's four 3x3 panels
    (σ, R over G, B). Pass ``mask`` directly, or ``tau`` (with ``scores``, default relative max
    |w|).
    """
    w = as_weight(weight)
    mask = resolve_mask(w, scores, tau, mask)
    fig = new_figure((11, 7.5) if channels else (6.5, 6.5))
    ax = fig.subplots()
    vmax = draw_filter_grid(ax, w, mask, channels)
    if channels:
        _weight_colorbar(fig, ax, vmax)
    at_tau = f" at τ = {tau_text(tau)}" if tau is not None else ""
    layout = "tile: RGB composite | σ R / G B" if channels else "RGB composites"
    ax.set_title(
        title or f"conv1 filters ({layout}, shared scale ±{vmax:.2g}): {count_text(mask)}{at_tau}",
        fontsize=10,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# scores


def draw_score_bars(
    ax, scores: np.ndarray, tau: float, label: str = "max |w| / strongest", log: bool = False
) -> None:
    """Sorted bars (weakest first), τ as a dashed line, inactive bars red; ``update_score_bars``
    changes it.

    ``log`` draws the scores on a log axis: silent channels at 0.1 % of the loudest are bars there,
    not the 0-2 px they are on a linear one.
    """
    n = len(scores)
    if log:
        ax.set_yscale("log")
    ax.bar(np.arange(n), np.ones(n), width=0.8)  # heights set below
    ax.axhline(tau, color="black", linestyle="--", linewidth=1, gid="tau")
    ax.set_xlim(-0.7, n - 0.3)
    # 64 tick labels would cost more to draw than everything else; the grid shows numbers
    ax.set_xticks([])
    ax.set_xlabel("filters, sorted by score (weakest left)")
    handles = [
        Patch(color=INACTIVE, label="inactive (< τ)"),
        Patch(color=ACTIVE, label="active"),
        Line2D([], [], color="black", linestyle="--", label="τ"),
    ]
    if log and np.any(np.asarray(scores) <= 0):
        handles.append(
            Patch(facecolor=INACTIVE, edgecolor="white", hatch="////", label="exactly 0")
        )
    ax.legend(handles=handles, loc="upper left", fontsize=10, ncols=len(handles) if log else 1)
    update_score_bars(ax, scores, tau, label)


def update_score_bars(ax, scores: np.ndarray, tau: float, label: str | None = None) -> None:
    """Re-sort the bars, recolour them, move the τ line and retitle: the explorer's in-place
    update."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(scores, kind="stable")
    mask = inactive_mask(scores, tau)
    top, log = max(1.0, float(scores.max())), ax.get_yscale() == "log"
    positive = scores[scores > 0]
    # the floor holds still while τ moves inside the sliders' range (1e-3..1): only bars recolour
    lowest = min(float(positive.min()) if positive.size else 1.0, TAU_MIN)
    floor = max(min(lowest, tau if tau > 0 else 1.0) / 2, 1e-6)
    # on a log axis a score of exactly 0 is a hatched stub at the floor
    for bar, i in zip(ax.patches, order):
        bar.set_height(scores[i] if scores[i] > 0 or not log else floor)
        bar.set_color(INACTIVE if mask[i] else ACTIVE)
        bar.set_hatch("////" if log and scores[i] <= 0 else None)
        bar.set_edgecolor("white")
    tau_line = next(l for l in ax.lines if l.get_gid() == "tau")
    tau_line.set_ydata([tau, tau])
    # log: room above for the legend
    ax.set_ylim(*((floor / 10, top * 4) if log else (0, top * 1.05)))
    if label is not None:
        ax.set_ylabel(label + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.set_title(f"{count_text(mask)} at τ = {tau_text(tau)}")


def tau_text(tau: float) -> str:
    """τ as every view writes it: two decimals, or two significant digits below 0.1 (0.01,
    0.005)."""
    return f"{tau:.2f}" if tau >= 0.095 or tau == 0 else f"{tau:.2g}"


def score_bars(scores, tau: float, label: str = "max |w| / strongest") -> Figure:
    """Every filter's relative score as a bar, sorted, with the threshold τ."""
    fig = new_figure((10, 3.5))
    draw_score_bars(fig.subplots(), np.asarray(scores, dtype=float), tau, label)
    return fig


def score_histogram(scores, tau: float, log: bool = False, label: str = "relative score") -> Figure:
    """Histogram of scores, split at τ. ``log`` spreads the dead filters (0.1-1 %) apart from the
    live ones."""
    scores = np.asarray(scores, dtype=float)
    mask = inactive_mask(scores, tau)
    top = max(1.0, float(scores.max()))
    bins = (
        np.geomspace(max(float(scores[scores > 0].min()), 1e-4) / 1.5, top, 40)
        if log
        else np.linspace(0, top, 41)
    )
    fig = new_figure((6, 3.5))
    ax = fig.subplots()
    ax.hist(
        [scores[~mask], scores[mask]],
        bins=bins,
        stacked=True,
        color=[ACTIVE, INACTIVE],
        label=["active", "inactive (< τ)"],
    )
    ax.axvline(
        tau, color="black", linestyle="--", linewidth=1, label=f"τ = {tau_text(tau)}", gid="tau"
    )
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=label, ylabel="filters", title=f"{count_text(mask)} at τ = {tau_text(tau)}")
    ax.legend(fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# death over time


def death_timeline(
    matrix,
    tau: float,
    events: list[dict] | None = None,
    x=None,
    xlabel: str = "epoch",
    log: bool = False,
    label: str = "relative score",
) -> Figure:
    """Filters x time heatmap of scores, rows ordered by time of death (first drop below τ or
    renewal).

    Vermillion crosses mark each filter's first drop below τ seen in the data; sky-blue dashed lines
    mark re-activation events (``trainer.events``) with dots on the filters they renewed. ``x``
    labels the columns (default 0..T-1). ``log`` colours on a log scale from 0.001 (for the silent
    score, whose τ is a hundredth of the loudest channel).
    """
    m = np.asarray(matrix, dtype=float)
    x = np.arange(m.shape[1]) if x is None else np.asarray(x, dtype=float)
    # earliest first, then weakest
    order = np.lexsort((m[:, -1], death_times(m, tau, events, x, xlabel)))
    dx = (x[-1] - x[0]) / max(len(x) - 1, 1) or 1.0
    fig = new_figure((8, 9.5))
    ax = fig.subplots()
    top = max(1.0, float(m.max()))
    norm = LogNorm(1e-3, top, clip=True) if log else Normalize(0, top)
    image = ax.imshow(
        np.maximum(m[order], 1e-3) if log else m[order],
        aspect="auto",
        cmap=SCORE_CMAP,
        norm=norm,
        extent=(x[0] - dx / 2, x[-1] + dx / 2, len(m) - 0.5, -0.5),
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label=label + (" (log)" if log else ""), pad=0.01)
    rows, seen = np.arange(len(m)), death_times(m, tau)[order]
    dead = np.isfinite(seen)
    ax.scatter(
        x[seen[dead].astype(int)],
        rows[dead],
        marker="x",
        color=INACTIVE,
        s=18,
        zorder=3,
        label=f"first score < τ = {tau_text(tau)} ({int(dead.sum())} filters)",
        gid="deaths",
    )
    position = {f: r for r, f in enumerate(order)}
    for j, event in enumerate(renewals(events)):
        ex = event_x(event, xlabel)
        ax.axvline(
            ex,
            color=EVENT,
            linestyle="--",
            linewidth=1.2,
            label="re-activation" if j == 0 else None,
        )
        renewed = [position[f] for f in event.get("filters", [])]
        ax.scatter(
            [ex] * len(renewed),
            renewed,
            marker="o",
            color=EVENT,
            edgecolor="black",
            s=24,
            gid="renewed",
        )
    ax.set_yticks(rows, [str(f) for f in order], fontsize=7.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(
        xlabel=xlabel,
        ylabel="filter (ordered by time of death)",
        title=f"conv1 activity over training: {count_text(m[:, -1] < tau)} at the end",
    )
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    return fig


# ---------------------------------------------------------------------------------------------
# activation maps


def _owner(stem: Callable) -> nn.Module | None:
    """The module whose mode matters: the stem itself, or the model a bound ``model.stem`` belongs
    to."""
    return stem if isinstance(stem, nn.Module) else getattr(stem, "__self__", None)


@torch.no_grad()
def stem_maps(stem: Callable, face: np.ndarray) -> np.ndarray:
    """Channel x H x W output of ``stem`` (conv -> BN -> activation) on one uint8 face, in eval
    mode."""
    owner = _owner(stem)
    owner = nn.Identity() if owner is None else owner
    device = next(owner.parameters(), torch.empty(0)).device
    with evaluating(owner):
        out = stem(to_input(torch.as_tensor(np.array(face, copy=True))[None]).to(device))
    return to_numpy(out[0].float())


def _draw_face(ax, face: np.ndarray, title: str = "face") -> None:
    ax.imshow(face)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def activation_maps(
    stem: Callable,
    face: np.ndarray,
    filters=None,
    scores=None,
    tau: float | None = None,
    mask=None,
    title: str | None = None,
) -> Figure:
    """The face and the chosen filters' maps after the stem, on one colour scale where 0 is black.

    ``stem`` is ``model.stem`` (FaceCNN) or ``craftlib.pretrained.mobilefacenet_stem()``. Filters
    marked inactive (``mask``, or ``scores < tau``) get red titles; their maps are flat, usually
    black.
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
        # <= 0 is black: nothing passed on
        image = ax.imshow(maps[f], cmap=MAP_CMAP, vmin=0, vmax=vmax)
        ax.set_title(
            f"✕ {f}" if mask[f] else f"#{f}", fontsize=10, color=INACTIVE if mask[f] else "black"
        )
        ax.set_axis_off()
    for ax in axes[len(filters) + 1 :]:
        ax.remove()
    if image is not None:
        fig.colorbar(
            image,
            ax=list(axes[: len(filters) + 1]),
            shrink=0.8,
            pad=0.01,
            label="activation (≤ 0 black)",
        )
    fig.suptitle(
        title or f"activation maps ({count_text(mask[filters])} among those shown)", fontsize=10
    )
    return fig


def before_after(
    weight_before,
    weight_after,
    filters,
    stem_before: Callable | None = None,
    stem_after: Callable | None = None,
    face: np.ndarray | None = None,
    fig=None,
    limit: int = 12,
) -> Figure:
    """The chosen filters (the first ``limit``) before and after re-activation, and their maps on
    ``face``.

    Both rows share one weight scale, so "grey before, colourful after" reads directly. The title
    says how many filters there are and how many are shown. ``fig`` may be a subfigure to draw into
    (the lab composes this with its other panels).
    """
    wb, wa = as_weight(weight_before), as_weight(weight_after)
    total = len(list(filters))
    filters = [int(f) for f in filters][:limit]
    with_maps = face is not None and stem_before is not None and stem_after is not None
    # a tile is twice as wide as tall; maps are square
    heights = [0.55, 0.55, 1, 1] if with_maps else [1, 1]
    fig = (
        fig
        if fig is not None
        else new_figure((max(3.0, 1.3 * len(filters) + 1.2), 1.4 * sum(heights) + 0.6))
    )
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
    names = ["filter, before", "filter, after", "map, before", "map, after"]
    for (row, col), ax in np.ndenumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(f"#{filters[col]}", fontsize=10)
        if col == 0:
            ax.set_ylabel(names[row], fontsize=10, rotation=0, ha="right", va="center")
    shown = f"{total} re-activated filter(s)" + (
        f", the first {len(filters)} shown" if total > len(filters) else ""
    )
    fig.suptitle(f"{shown}: before / after (shared scale ±{vmax:.2g})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# training curves


def _mark_events(axes, events: list[dict] | None, key: str) -> None:
    for j, event in enumerate(renewals(events)):
        n = len(event.get("filters", []))
        for ax in axes:
            ax.axvline(
                event[key],
                color=EVENT,
                linestyle="--",
                linewidth=1.6,
                gid="event",
                label="re-activation" if j == 0 else None,
            )
        axes[-1].annotate(
            f"+{n}",
            (event[key], 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=10,
            color="black",
            fontweight="bold",
            ha="left",
            va="top",
        )  # sky blue text is too faint


SHORT_SCORE = {
    "silent": "silent",
    "max": "small max|w|",
    "gamma": "small γ",
    "effective": "small w·γ/σ",
    "l1": "small L1",
    "l2": "small L2",
    "activation": "quiet (ReDo)",
}


def training_curves(
    history: list[dict],
    events: list[dict] | None = None,
    tau: float = 0.1,
    score: str = "max",
    second: tuple[str, float] | None = None,
) -> Figure:
    """Loss, train accuracy and inactive fraction per epoch, re-activation events marked.

    The third panel counts filters whose ``score`` is below ``tau``; ``second=(score, tau)`` adds a
    second reading (e.g. silent outputs *and* small weights: they need not agree).
    """
    epochs = [h["epoch"] for h in history]
    fig = new_figure((11, 3.2))
    axes = fig.subplots(1, 3, sharex=True)
    axes[0].plot(epochs, [h["loss"] for h in history], "o-", label="loss")
    axes[1].plot(epochs, [h["train_acc"] for h in history], "o-", label="train accuracy")
    for (name, t), style in zip([(score, tau)] + ([second] if second else []), ("o-", "s--")):
        axes[2].plot(
            epochs,
            inactive_over_time(history, t, name),
            style,
            color=INACTIVE if name == score else "black",
            label=f"{SHORT_SCORE.get(name, name)} (< τ = {tau_text(t)})",
        )
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[2].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[2].set_ylim(0, 1)
    for ax, title in zip(axes, ("training loss", "training accuracy", "inactive conv1 filters")):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _mark_events(axes, events, "epoch")
    for ax in axes:
        ax.legend(fontsize=10)
    return fig


def step_curves(log: list[dict], events: list[dict] | None = None, fig=None) -> Figure:
    """Loss and inactive fraction against optimisation step (the lab's record:
    ``step``/``loss``/``inactive``)."""
    fig = fig if fig is not None else new_figure((9, 3))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, color in ((axes[0], "loss", ACTIVE), (axes[1], "inactive", INACTIVE)):
        points = [
            (r["step"], r[key]) for r in log if r.get(key) is not None and np.isfinite(r[key])
        ]
        if points:
            ax.plot(*zip(*points), ".-", color=color, label=key)
        else:
            ax.text(
                0.5, 0.5, "nothing recorded yet", transform=ax.transAxes, ha="center", color="grey"
            )
        ax.set(
            xlabel="step",
            title={"loss": "training loss", "inactive": "inactive conv1 filters"}[key],
        )
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[1].set_ylim(0, 1)
    _mark_events(axes, events, "step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=10)
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
    ax.set(
        xlim=(lowest, 1),
        ylim=(0, 1.01),
        xlabel="false accept rate (FAR, log)",
        ylabel="true accept rate (TAR)",
        title="ROC on the verification pairs",
    )
    ax.legend(fontsize=10, loc="lower right")


def roc_curves(reports: dict[str, dict]) -> Figure:
    """One ROC per ``verification.evaluate`` report (or run dict with ``roc``), keyed by legend
    label."""
    fig = new_figure((6, 4.5))
    draw_roc(fig.subplots(), reports)
    return fig


# ---------------------------------------------------------------------------------------------
# the decay race (notebook 02's intuition, ``craftlib.decay``)


def draw_decay_race(axes, race) -> None:
    """γ(t) and ‖w‖(t) of a ``decay.Race`` on two log axes, against the gradient-free decay curves.

    A log axis cannot draw a negative value, and heavy momentum swings γ (and a gradient-free
    weight) through 0: sizes are drawn, and the stretches where γ < 0 are overdrawn in orange and
    say so.
    """
    ax_g, ax_w = axes
    floor = 1e-4
    swings = np.any(race.decay_momentum < -1e-12)
    for ax, values, name in ((ax_g, race.gamma, "BatchNorm |γ|"), (ax_w, race.norm, "filter ‖w‖")):
        ax.plot(
            race.steps,
            np.maximum(np.abs(values), floor),
            color=ACTIVE,
            linewidth=2,
            label=name,
            gid="simulated",
        )
        ax.plot(
            race.steps,
            np.maximum(race.decay, floor),
            color="grey",
            linestyle="--",
            label=f"(1 − lr·wd)ⁿ = {1 - race.lr * race.wd:.4g}ⁿ",
            gid="decay",
        )
        ax.plot(
            race.steps,
            np.maximum(np.abs(race.decay_momentum), floor),
            color="black",
            linestyle=":",
            label=f"no gradient, momentum {race.momentum:g}"
            + (" (size; swings through 0)" if swings else ""),
            gid="decay-momentum",
        )
        ax.set_yscale("log")
        ax.set_ylim(floor, max(2.0, float(np.max(np.abs(values))) * 1.5))
        ax.set_xlim(0, race.steps[-1])
        ax.set(xlabel="step", title=f"{name} (both start at 1)")
    if np.any(race.gamma < 0):
        negative = np.where(race.gamma < 0, np.maximum(-race.gamma, floor), np.nan)
        ax_g.plot(
            race.steps,
            negative,
            color=OKABE_ITO["orange"],
            linewidth=3,
            label="γ < 0 (sign flipped)",
            gid="gamma-negative",
        )
    ax_g.axhline(
        race.tau, color=INACTIVE, linewidth=1, label=f"τ = {tau_text(race.tau)}", gid="tau"
    )
    if race.silent_step is not None:
        ax_g.axvline(
            race.silent_step,
            color=INACTIVE,
            linestyle="-.",
            linewidth=1,
            label=f"|γ| < τ for good from step {race.silent_step}",
            gid="silent",
        )
    ax_g.legend(fontsize=10, loc="lower left")
    ax_w.legend(fontsize=10, loc="lower left", handles=ax_w.get_legend_handles_labels()[0][:3])


def decay_race(race) -> Figure:
    """The decay race as a figure (the static twin of ``widgets.DecayRace``)."""
    fig = new_figure((12.5, 3.9))
    draw_decay_race(fig.subplots(1, 2), race)
    fig.suptitle(
        f"lr {race.lr:g}, wd {race.wd:g}, momentum {race.momentum:g}, task gradient {race.grad:g}: "
        + race.verdict().split(";")[0],
        fontsize=10,
    )
    return fig


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
                ax.set_title(str(titles[i])[:18], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def crop_preview(path, crop=None, size: int = 40) -> Figure:
    """One LFW photo (250 x 250) with the face box craftlib crops, and the resulting ``size`` px
    input."""
    from PIL import Image

    from .data import DEFAULT_CROP, load_face

    crop = tuple(crop or DEFAULT_CROP)
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB"))
    fig = new_figure((7, 3.4))
    left, right = fig.subplots(1, 2)
    left.imshow(full)
    left.add_patch(
        Rectangle(
            (crop[0], crop[1]),
            crop[2] - crop[0],
            crop[3] - crop[1],
            fill=False,
            edgecolor=ACTIVE,
            linewidth=2,
        )
    )
    left.set_title(f"{Path(path).name}: {full.shape[1]}x{full.shape[0]}, box {crop}", fontsize=9)
    right.imshow(load_face(Path(path), crop, size), interpolation="nearest")
    right.set_title(f"network input: {size}x{size}", fontsize=9)
    for ax in (left, right):
        ax.set_axis_off()
    return fig


def pair_grid(pairs, n: int = 4, seed: int = 0) -> Figure:
    """``n`` same-person and ``n`` different-person pairs of a ``PairSet``, one pair per column."""
    rng = np.random.default_rng(seed)
    same = rng.choice(np.flatnonzero(pairs.same), n, replace=False)
    diff = rng.choice(np.flatnonzero(~pairs.same), n, replace=False)
    chosen = list(same) + list(diff)
    fig = new_figure((1.35 * len(chosen), 3.4))
    axes = fig.subplots(2, len(chosen), squeeze=False)
    for col, k in enumerate(chosen):
        for row, idx in enumerate((pairs.left[k], pairs.right[k])):
            ax = axes[row, col]
            ax.imshow(pairs.images[idx], interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(pairs.files[idx].split("/")[0].replace("_", " ")[:14], fontsize=8)
        axes[0, col].text(
            0.5,
            1.35,
            "same" if pairs.same[k] else "different",
            transform=axes[0, col].transAxes,
            ha="center",
            fontsize=9,
            fontweight="bold",
            color=ACTIVE if pairs.same[k] else OKABE_ITO["orange"],
        )
    fig.suptitle(
        f"{pairs.name or 'pairs'}: {n} same-person and {n} different-person pairs", fontsize=10
    )
    return fig


def margin_curves(scale: float = 30.0, kinds=("cosface", "arcface")) -> Figure:
    """The target-class logit against the angle θ to its class centre: plain softmax vs margin
    heads.

    Computed by ``losses.MarginHead`` itself (an embedding at angle θ to a single class centre).
    """
    from .losses import MarginHead

    theta = torch.linspace(0, math.pi, 181, dtype=torch.float32)
    emb = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    labels = torch.zeros(len(theta), dtype=torch.long)
    fig = new_figure((6, 3.6))
    ax = fig.subplots()
    ax.plot(
        np.degrees(theta),
        scale * np.cos(theta.numpy()),
        color="grey",
        linestyle="--",
        label="softmax: s·cos θ",
    )
    for kind in kinds:
        head = MarginHead(2, 1, kind, scale)
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[1.0, 0.0]]))
            logit = head(emb, labels)[:, 0].numpy()
        ax.plot(
            np.degrees(theta),
            logit,
            label=f"{kind} (m1, m2, m3) = ({head.m1:g}, {head.m2:g}, {head.m3:g})",
        )
    ax.set(
        xlabel="angle θ between embedding and its class centre (degrees)",
        ylabel="target logit",
        title=f"margin heads make the true class harder (s = {scale:g})",
    )
    ax.legend(fontsize=10)
    return fig


def pair_score_histogram(scores, same, threshold: float | None = None) -> Figure:
    """Cosine scores of same- and different-person pairs, with a decision threshold."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    fig = new_figure((6.5, 3.5))
    ax = fig.subplots()
    bins = np.linspace(scores.min(), scores.max(), 41)
    ax.hist(scores[same], bins=bins, alpha=0.6, color=ACTIVE, label=f"same person ({same.sum()})")
    ax.hist(
        scores[~same],
        bins=bins,
        alpha=0.6,
        color=OKABE_ITO["orange"],
        label=f"different people ({(~same).sum()})",
    )
    if threshold is not None:
        acc = float(np.mean((scores > threshold) == same))
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold {threshold:.3f}: {acc:.1%} of these pairs right",
        )
    ax.set(
        xlabel="cosine similarity of the two embeddings",
        ylabel="pairs",
        title="verification scores",
    )
    ax.legend(fontsize=10)
    return fig


def context_figure(strong, mean, cov) -> Figure:
    """CRAFT's context: the strong filters, their mean filter, and the 27 x 27 covariance of their
    weights."""
    strong, mean, cov = (to_numpy(a).astype(float) for a in (strong, mean, cov))
    k = int(round(math.sqrt(len(mean) / 3)))
    fig = new_figure((12, 4))
    ax_mean, ax_std, ax_cov = fig.subplots(1, 3, width_ratios=[1, 1, 1.4])
    vmax = float(np.abs(strong).max()) if strong.size else 1.0
    ax_mean.imshow(filter_tile(mean.reshape(3, k, k), vmax), interpolation="nearest")
    ax_mean.set_title(
        f"mean of {len(strong)} strong filters\n(RGB | σ R / G B, scale ±{vmax:.2g})", fontsize=9
    )
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


def score_traces(
    traces: dict,
    tau: float,
    filters=None,
    title: str = "re-activated filters after the event",
    ylabel: str = "relative score",
) -> Figure:
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
        (line,) = ax.plot(steps, np.median(m, 0), ".-", label=label)
        ax.fill_between(steps, m.min(0), m.max(0), color=line.get_color(), alpha=0.15)
    ax.axhline(tau, color="black", linestyle="--", linewidth=1, label=f"τ = {tau_text(tau)}")
    ax.set(xlabel="step", ylabel=ylabel, title=title, ylim=(0, None))
    ax.legend(fontsize=10)
    return fig


def inactive_curves(
    histories: dict,
    tau: float,
    events: dict | None = None,
    score: str = "max",
    second: tuple[str, float] | None = None,
) -> Figure:
    """Inactive conv1 fraction per epoch for several runs (``{label: trainer.history}``), renewals
    marked.

    One panel per reading: ``score`` below ``tau``, and with ``second=(score, tau)`` a second one
    beside it (silent outputs and small weights need not agree).
    """
    readings = [(score, tau)] + ([second] if second else [])
    fig = new_figure((7 * len(readings), 3.8))
    axes = fig.subplots(1, len(readings), squeeze=False)[0]
    for ax, (name, t) in zip(axes, readings):
        for label, history in histories.items():
            fraction = inactive_over_time(history, t, name)
            (line,) = ax.plot([h["epoch"] for h in history], fraction, "o-", label=label)
            for j, event in enumerate(renewals((events or {}).get(label, []))):
                ax.axvline(
                    event["epoch"],
                    color=line.get_color(),
                    linestyle=":",
                    linewidth=1.2,
                    label=f"{label}: re-activation" if j == 0 else None,
                )
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(
            xlabel="epoch",
            ylabel="share of conv1 filters",
            ylim=(0, 1),
            title=f"{SHORT_SCORE.get(name, name)}: {SCORE_LABELS.get(name, name)} < τ = "
            f"{tau_text(t)}",
        )
        ax.title.set_fontsize(10)
        ax.legend(fontsize=10)
    return fig


def renewed_vs_decay(
    rows: list[dict], title: str = "renewed filters against the pure-decay curve"
) -> Figure:
    """Each renewed filter's ‖w‖ ratio to a gradient-free weight (``survival.survival`` rows), per
    epoch since its renewal: 1 = coasting on the schedule's decay, above 1 = held up by the task,
    below 1 = pushed down."""
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    horizon = max((len(r["ratio"]) for r in rows), default=0)
    for r in rows:
        ax.plot(range(len(r["ratio"])), r["ratio"], color=ACTIVE, alpha=0.15, linewidth=1)
    if rows:
        median = [
            np.median([r["ratio"][k] for r in rows if len(r["ratio"]) > k]) for k in range(horizon)
        ]
        ax.plot(
            range(horizon),
            median,
            "o-",
            color="black",
            linewidth=2,
            label=f"median of {len(rows)} renewals",
        )
    ax.axhline(1.0, color=INACTIVE, linestyle="--", label="pure weight decay (no task gradient)")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 1.05, not 1.05×10⁰, on a short log range
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epochs since re-activation", ylabel="‖w‖ / (‖w‖ at renewal × decay factor)")
    ax.set_title(title, wrap=True)
    ax.legend(fontsize=10)
    return fig


class LiveCurves:
    """``after_epoch`` hook (``runs.train_cached``): one notebook output that redraws
    ``training_curves``.

    Outside IPython it does nothing; the final figure stays in the notebook once training ends.
    ``score``/``tau`` are the inactive panel's reading, ``second`` an optional second one.
    """

    def __init__(
        self, tau: float = 0.1, score: str = "max", second: tuple[str, float] | None = None
    ):
        self.tau, self.score, self.second, self.handle = tau, score, second, None

    def __call__(self, trainer) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        fig = training_curves(trainer.history, trainer.events, self.tau, self.score, self.second)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
