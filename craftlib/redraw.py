"""Fast redraws of a widget's figure: what a control cannot change is kept as pixels, the rest is
drawn over it (matplotlib's blitting, off screen), and artists that change together are pasted as
pixels once drawn. Every path gives the pixels a full redraw gives (the widget tests compare them).

Why a module of its own: a slider that only re-reads data has about 40 ms of kernel time before the
page has answered a learner's hand (docs/PERFORMANCE.md), and a full matplotlib draw of a widget's
figure takes 200-300 ms on a laptop core.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox

from .viz import WIDGET_DPI, pixels_png, render_scale


class Redrawer:
    """Re-renders a widget's figure fast when a control changes only some of its artists.

    Why: drawing a whole figure (64 filter tiles with their labels, 64 bars, axes, text) costs
    200-300 ms on a laptop core, most of a slider's response time. The parts a control cannot change
    are drawn once and kept as pixels; an update puts those pixels back and draws only the
    ``dynamic()`` artists on top (matplotlib's blitting, off screen). ``png(full=True)`` redraws
    everything, for changes of layout, limits or data; so does the first call.

    ``groups()`` (optional) lists artists that change together, e.g. one filter's frame and "✕ n"
    label, or a bar chart's bars: when their boxes on the canvas do not touch, each look of a group
    (which artists show, in which colours) is drawn once and then pasted as pixels (text is the
    slowest thing matplotlib draws, 64 bars the next). Both paths give the same pixels.
    """

    def __init__(
        self,
        fig: Figure,
        dynamic: Callable[[], list],
        dpi: int = WIDGET_DPI,
        groups: Callable[[], list[list]] | None = None,
    ):
        self.fig, self.dynamic, self.dpi = fig, dynamic, dpi
        self.groups = groups or (lambda: [])
        # the figure's own canvas: several redrawers of one figure (one per score) share it
        agg = isinstance(fig.canvas, FigureCanvasAgg)
        self.canvas = fig.canvas if agg else FigureCanvasAgg(fig)
        self.background = None
        self.boxes: list | None = None  # each group's GroupBox, while they do not touch
        self.pending = False  # boxes to find after a full redraw

    def png(self, full: bool = False) -> bytes:
        artists = [a for a in self.dynamic() if a.get_visible()]
        groups = self.groups()
        dpi = self.dpi * render_scale()
        if full or self.background is None or self.fig.dpi != dpi:
            self.fig.set_dpi(dpi)
            with _left_out(artists):
                self.canvas.draw()  # everything but the dynamic artists
            # laid out once: a later draw must not move the axes under the kept pixels
            self.fig.set_layout_engine("none")
            self.background = self.canvas.copy_from_bbox(self.fig.bbox)
            # found on the first fast redraw: a full one (a new model, a new score) does not wait
            self.boxes, self.pending = None, bool(groups)
        else:
            self.canvas.restore_region(self.background)
            if self.pending:
                self.boxes, self.pending = separate_boxes(self.canvas, groups), False
        pasted = set()
        for group, box in zip(groups, self.boxes or []):
            box.paste(self.canvas, group)
            pasted.update(map(id, group))
        for a in artists:
            if id(a) not in pasted:
                self.fig.draw_artist(a)
        return pixels_png(self.canvas)

    def start_from(self, other: "Redrawer", axes) -> bool:
        """Take ``other``'s kept pixels (same figure) with only ``axes`` drawn anew, instead of a
        full redraw: what changed is inside ``axes`` (e.g. the explorer's bars for a new score).

        Returns False, keeping nothing, where ``axes`` reaches into another axes' box (a full
        redraw must then decide); the result is what a full redraw gives (tests compare them).
        """
        renderer, fig = self.canvas.get_renderer(), self.fig
        if other.background is None or other.fig is not fig or fig.dpi != self.dpi * render_scale():
            return False
        box = axes.get_tightbbox(renderer).padded(2)
        # the other axes' frames and titles (what the explorer's grid draws; cheaper than their
        # tight boxes, which lay out every tick)
        others = [
            Bbox.union([ax.get_window_extent(renderer), ax.title.get_window_extent(renderer)])
            for ax in fig.axes
            if ax is not axes
        ]
        if any(box.overlaps(b) for b in others) or any(a.axison for a in fig.axes if a is not axes):
            return False
        box = _whole(box)
        fig.patch.draw(renderer)  # the figure's own face, where the axes will be drawn
        blank = self.canvas.copy_from_bbox(box)
        self.canvas.restore_region(other.background)
        self.canvas.restore_region(blank)
        with _left_out([a for a in self.dynamic() if a.get_visible()]):
            fig.draw_artist(axes)  # its lasting parts only
        self.background = self.canvas.copy_from_bbox(fig.bbox)
        self.boxes, self.pending = None, bool(self.groups())
        return True


@contextmanager
def _left_out(artists: list):
    """Draw without ``artists``: animated ones are skipped by matplotlib, except images, which an
    axes draws anyway (their edges would then blend with the next image's), so those are hidden.
    The figure is an ordinary one again afterwards, for savefig and tests."""
    images = [a for a in artists if isinstance(a, matplotlib.image.AxesImage)]
    for a in artists:
        a.set_animated(True)
    for a in images:
        a.set_visible(False)
    try:
        yield
    finally:
        for a in artists:
            a.set_animated(False)
        for a in images:
            a.set_visible(True)


def _look(artist) -> tuple:
    """What a control may change in a grouped artist without a full redraw: whether it shows, its
    colours and its text (geometry and fonts change only with ``png(full=True)``)."""
    colours = (artist.get_facecolor(), artist.get_edgecolor()) if isinstance(artist, Patch) else ()
    text = (
        (artist.get_text(), artist.get_color()) if isinstance(artist, matplotlib.text.Text) else ()
    )
    return (artist.get_visible(), *map(tuple, colours), *text)


class GroupBox:
    """Where a group of artists draws on a canvas (whole pixels), the background it was found on,
    and each look of the group seen so far as pixels."""

    def __init__(self, extents: tuple, base: np.ndarray, box: Bbox):
        self.extents, self.base, self.box, self.sprites = extents, base, box, {}

    def paste(self, canvas: FigureCanvasAgg, group: list) -> None:
        """The group as it looks now: its kept pixels, or drawn and kept on first sight."""
        look = tuple(map(_look, group))
        if not any(shown for shown, *_ in look):
            return
        if look not in self.sprites:
            for a in group:
                if a.get_visible():
                    canvas.figure.draw_artist(a)
            self.sprites[look] = canvas.copy_from_bbox(self.box)
        else:
            canvas.restore_region(self.sprites[look])


def separate_boxes(canvas: FigureCanvasAgg, groups: list[list], margin: int = 8) -> list | None:
    """Each group's ``GroupBox`` on a canvas that holds only the background: its extents and the
    pixels drawing it changes (looked for up to ``margin`` px around them). None if two boxes share
    a pixel: pasting one group's pixels must never overwrite another's.

    A group found before on the same figure, at the same extents over the same background pixels
    (e.g. the filter grid's marks when only the score bars changed), is not drawn again: its box
    and kept looks are reused."""
    if not groups:
        return None
    renderer, fig = canvas.get_renderer(), canvas.figure
    width, height = canvas.get_width_height()
    known = fig.__dict__.setdefault("_craft_group_boxes", {})
    before, boxes = canvas.copy_from_bbox(fig.bbox), []
    for group in groups:
        shown = [a.get_visible() for a in group]
        for a in group:
            a.set_visible(True)  # the box holds every look of the group
        extents = [a.get_window_extent(renderer) for a in group]
        key = tuple(map(id, group))
        bounds = tuple(tuple(np.round(e.bounds, 3)) for e in extents)
        drawn = Bbox.union(extents)
        # the window searched, as array rows (down) and columns
        c0, c1 = max(0, math.floor(drawn.x0) - margin), min(width, math.ceil(drawn.x1) + margin)
        r0 = max(0, height - math.ceil(drawn.y1) - margin)
        r1 = min(height, height - math.floor(drawn.y0) + margin)
        base = np.array(np.asarray(canvas.buffer_rgba())[r0:r1, c0:c1])
        old = known.get(key)
        if old is not None and old.extents == bounds and np.array_equal(old.base, base):
            boxes.append(old)
        else:
            boxes.append(_found(canvas, group, extents, bounds, base, (r0, c0)))
            known[key] = boxes[-1]
            canvas.restore_region(before)
        for a, was in zip(group, shown):
            a.set_visible(was)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a.box.x0 < b.box.x1 and b.box.x0 < a.box.x1:
                if a.box.y0 < b.box.y1 and b.box.y0 < a.box.y1:
                    return None
    return boxes


def _found(canvas, group: list, extents: list, bounds: tuple, base: np.ndarray, at) -> GroupBox:
    """Draw ``group`` (every artist shown) over ``base``, the background's window at row/column
    ``at``: its box is its extents and every pixel it changed; its first look is kept."""
    renderer, height = canvas.get_renderer(), canvas.get_width_height()[1]
    (r0, c0), extents = at, list(extents)
    for a in group:
        canvas.figure.draw_artist(a)
        if isinstance(a, matplotlib.text.Text) and a.get_bbox_patch() is not None:
            extents.append(a.get_bbox_patch().get_window_extent(renderer))
    after = np.asarray(canvas.buffer_rgba())[r0 : r0 + base.shape[0], c0 : c0 + base.shape[1]]
    rows, cols = np.nonzero((after != base).any(axis=2))
    if rows.size:  # the changed pixels, as display coordinates (y up)
        extents.append(
            Bbox.from_extents(
                c0 + cols.min(),
                height - r0 - rows.max() - 1,
                c0 + cols.max() + 1,
                height - r0 - rows.min(),
            )
        )
    box = _whole(Bbox.union(extents))
    found = GroupBox(bounds, base, box)
    found.sprites[tuple(map(_look, group))] = canvas.copy_from_bbox(box)
    return found


def _whole(box: Bbox) -> Bbox:
    """``box`` grown to whole pixels: what ``copy_from_bbox`` keeps exactly."""
    return Bbox.from_extents(
        math.floor(box.x0), math.floor(box.y0), math.ceil(box.x1), math.ceil(box.y1)
    )
