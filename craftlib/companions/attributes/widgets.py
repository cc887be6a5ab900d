"""The attribute probes on screen: an attribute × depth heat map whose cells open the faces a probe
gets most wrong.

``ProbeExplorer(results).widget`` is a grid of buttons, one per (attribute, stage), coloured by
balanced accuracy; clicking one shows that probe's most confidently wrong test faces and its
numbers (an HTML gallery: the browser lays out its text at once, where matplotlib took most of a
click's time). Its static twin ``probe_view(results, attribute, stage)`` draws the same heat map
and the same faces as one figure. The work is done by plain functions (``cell_text``,
``heatmap_figure``, ``worst_faces_figure``, ``faces_html``, ``depth_curves_figure``) that are tested
without a browser.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure

from craftlib import viz
from craftlib.study.results import fmt

from .linear_probes import STAGE_LABELS, ProbeResults
from .study import ARM_NAMES, REFERENCE_ARM

HEAT_CMAP = "cividis"  # perceptually uniform, colour-blind safe
LOW, HIGH = 0.5, 1.0  # balanced accuracy: chance .. perfect


def _norm() -> Normalize:
    return Normalize(LOW, HIGH, clip=True)


def cell_colour(value: float) -> str:
    """The heat map's colour for a balanced accuracy (grey where no probe could be fitted)."""
    if value is None or not np.isfinite(value):
        return "#dddddd"
    return to_hex(colormaps[HEAT_CMAP](_norm()(value)))


def text_colour(value: float) -> str:
    """Black on the light end of the colour map, white on the dark end."""
    return (
        "#000000"
        if value is not None and np.isfinite(value) and _norm()(value) > 0.55
        else "#ffffff"
    )


def cell_text(results: ProbeResults, attribute: str, stage: str) -> str:
    """One line about one probe: balanced accuracy, interval, C, and how many test faces it was
    scored on."""
    i, j = results.attributes.index(attribute), results.stages.index(stage)
    probe = results.probes.get((attribute, stage))
    if probe is None:
        return f"{attribute} at {stage}: no probe (a side of the split lacks one of the classes)"
    return (
        f"{attribute} at {STAGE_LABELS.get(stage, stage)}: balanced accuracy "
        f"{fmt('accuracy', probe.balanced_accuracy)} "
        f"(95% interval over people "
        f"{fmt('accuracy', results.ci_low[i, j])}–{fmt('accuracy', results.ci_high[i, j])}), "
        f"C = {probe.C:g}, {probe.n_test} test faces of people the probe never saw"
    )


def draw_heatmap(
    ax, table: np.ndarray, attributes: list[str], stages: list[str], selected=None
) -> None:
    """Balanced accuracy per attribute (rows) and stage (columns), each cell labelled; ``selected``
    framed."""
    ax.imshow(
        np.where(np.isfinite(table), table, np.nan), cmap=HEAT_CMAP, norm=_norm(), aspect="auto"
    )
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            v = table[i, j]
            ax.text(
                j,
                i,
                "–" if not np.isfinite(v) else f"{100 * v:.0f}",
                ha="center",
                va="center",
                fontsize=10,
                color=text_colour(v),
            )
    ax.set_xticks(
        range(len(stages)),
        [STAGE_LABELS.get(s, s).replace(" (conv1)", "") for s in stages],
        fontsize=10,
    )
    ax.set_yticks(range(len(attributes)), attributes, fontsize=10)
    ax.tick_params(length=0)
    if selected is not None:
        from matplotlib.patches import Rectangle

        i, j = attributes.index(selected[0]), stages.index(selected[1])
        ax.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec=viz.OKABE_ITO["vermillion"])
        )


def heatmap_figure(results: ProbeResults, selected=None, title: str | None = None) -> Figure:
    """The attribute × depth heat map of one model's probes (numbers: balanced accuracy in %)."""
    fig = viz.new_figure((7.5, 0.42 * len(results.attributes) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    draw_heatmap(ax, results.balanced_accuracy, results.attributes, results.stages, selected)
    ax.set_title(
        title or "balanced accuracy (%) of a linear probe, unseen people; 50 = chance", fontsize=10
    )
    fig.colorbar(ax.images[0], ax=ax, fraction=0.04)
    return fig


LABEL_COLUMN_PX = (
    240  # "eyeglasses (colour/texture)" on one line at 13 px; wrapped, it ran into the next row
)


def short_name(name: str, width: int = 13) -> str:
    """A person's name that fits under a 94-px face at 10 px (longer ones overlapped their
    neighbours)."""
    return name if len(name) <= width else name[: width - 1] + "…"


def worst_faces_figure(results: ProbeResults, attribute: str, stage: str, k: int = 8) -> Figure:
    """The ``k`` test faces the probe at ``stage`` is most confidently wrong about, with label and
    margin."""
    fig = faces_canvas(results, k)
    show_faces(fig, results, attribute, stage)
    return fig


def faces_canvas(results: ProbeResults, k: int = 8) -> Figure:
    """``k`` face panels (titles and names set by ``show_faces``) and a line for when there is
    nothing to show."""
    fig = viz.new_figure((1.3 * max(k, 4), 1.9))
    blank = np.ones_like(results.probe_set.images[0])
    for n in range(k):
        ax = fig.add_subplot(1, k, n + 1)
        ax.imshow(blank)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("label: yes\nmargin 0.0", fontsize=10)  # two lines: the layout's room
        # the person's name below the face
        ax.text(
            0.5,
            -0.04,
            "name",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=10,
            gid="name",
        )
    fig.text(0.5, 0.5, "", ha="center", va="center", fontsize=10, gid="nothing")
    fig.suptitle(" ", fontsize=10)
    return fig


def show_faces(fig: Figure, results: ProbeResults, attribute: str, stage: str) -> None:
    """Set ``faces_canvas``'s figure to one cell's most-wrong faces (in place)."""
    probed = (attribute, stage) in results.probes
    wrong = results.most_wrong(attribute, stage, len(fig.axes)) if probed else []
    for n, ax in enumerate(fig.axes):
        ax.set_visible(n < len(wrong))
        if n < len(wrong):
            w = wrong[n]
            ax.images[0].set_data(results.probe_set.images[w["index"]])
            truth = "yes" if w["label"] else "no"
            ax.set_title(f"label: {truth}\nmargin {abs(w['decision']):.1f}", fontsize=10)
            ax.texts[0].set_text(short_name(w["file"].split("/")[0].replace("_", " ")))
    nothing = next(t for t in fig.texts if t.get_gid() == "nothing")
    nothing.set_text("" if wrong else "no wrong test face" if probed else "no probe here")
    title = f"{attribute} at {STAGE_LABELS.get(stage, stage)}: the faces the probe gets most wrong"
    fig.suptitle(title if wrong else "", fontsize=10)


FACE_PX = 88  # a face's width in the gallery: eight and their names fit the notebook


def face_url(image: np.ndarray) -> str:
    """A face (uint8 HWC) as a PNG data URL for an ``<img>``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def faces_html(results: ProbeResults, attribute: str, stage: str, k: int, url=None) -> str:
    """One cell's most-wrong faces as HTML: each face with its label and margin above and the
    person's name below (``worst_faces_figure``'s panels); ``url(index)`` may cache the pictures."""
    url = url or (lambda index: face_url(results.probe_set.images[index]))
    probed = (attribute, stage) in results.probes
    wrong = results.most_wrong(attribute, stage, k) if probed else []
    if not wrong:
        return f"<p>{'no wrong test face' if probed else 'no probe here'}</p>"
    title = f"{attribute} at {STAGE_LABELS.get(stage, stage)}: the faces the probe gets most wrong"
    tiles = "".join(
        f"<figure style='margin:0;width:{FACE_PX}px;text-align:center;font-size:12px'>"
        f"label: {'yes' if w['label'] else 'no'}<br>margin {abs(w['decision']):.1f}"
        f"<img src='{url(w['index'])}' width='{FACE_PX}' style='display:block;"
        "image-rendering:pixelated'>"
        f"<figcaption>{html.escape(short_name(w['file'].split('/')[0].replace('_', ' ')))}"
        "</figcaption></figure>"
        for w in wrong
    )
    return (
        f"<div style='font-size:12px'>{html.escape(title)}</div>"
        f"<div style='display:flex;gap:6px'>{tiles}</div>"
    )


def default_cell(results: ProbeResults) -> tuple[str, str]:
    """The first attribute at its best stage (by the probe's inner cross-validation)."""
    attr = results.attributes[0]
    return attr, results.best_stage(attr)


def probe_view(
    results: ProbeResults, attribute: str | None = None, stage: str | None = None, k: int = 8
) -> Figure:
    """Static twin of ``ProbeExplorer``: the heat map with one cell framed, and that cell's worst
    faces."""
    attribute, stage = (attribute, stage) if attribute and stage else default_cell(results)
    fig = viz.new_figure((10.5, 0.42 * len(results.attributes) + 3.6))
    top, bottom = fig.subfigures(2, 1, height_ratios=[0.42 * len(results.attributes) + 1.3, 2.3])
    ax = top.add_subplot(1, 1, 1)
    draw_heatmap(
        ax, results.balanced_accuracy, results.attributes, results.stages, (attribute, stage)
    )
    ax.set_title("balanced accuracy (%) on unseen people — framed: the cell below", fontsize=10)
    wrong = results.most_wrong(attribute, stage, k) if (attribute, stage) in results.probes else []
    for n, w in enumerate(wrong):
        a = bottom.add_subplot(1, k, n + 1)
        a.imshow(results.probe_set.images[w["index"]])
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"label: {'yes' if w['label'] else 'no'}", fontsize=10)
    bottom.suptitle(cell_text(results, attribute, stage), fontsize=10)
    return fig


class ProbeExplorer:
    """Heat map of buttons (attribute × stage); a click shows that probe's most-wrong faces and its
    numbers."""

    def __init__(self, results: ProbeResults, k: int = 8):
        import ipywidgets as W

        self.results, self.k = results, k
        self.selected = default_cell(results)
        stages = results.stages
        cells = [W.HTML("<b>attribute</b>")] + [
            W.HTML(f"<b>{html.escape(STAGE_LABELS.get(s, s).replace(' (conv1)', ''))}</b>")
            for s in stages
        ]
        self.buttons: dict[tuple[str, str], W.Button] = {}
        for i, attr in enumerate(results.attributes):
            cells.append(
                W.HTML(
                    f"<span style='white-space:nowrap'>{html.escape(attr)} <span "
                    f"style='color:#555'>"
                    f"({html.escape(results.kinds[i])})</span></span>"
                )
            )  # one line: a row is 28 px
            for j, stage in enumerate(stages):
                v = results.balanced_accuracy[i, j]
                b = W.Button(
                    description="–" if not np.isfinite(v) else f"{100 * v:.0f}",
                    tooltip=f"{attr} at {stage}",
                    layout=W.Layout(width="auto", height="28px"),
                )
                b.style.button_color = cell_colour(v)
                b.style.text_color = text_colour(v)
                b.on_click(lambda _b, a=attr, s=stage: self.select(a, s))
                self.buttons[(attr, stage)] = b
                cells.append(b)
        self.grid = W.GridBox(
            cells,
            layout=W.Layout(
                grid_template_columns=f"{LABEL_COLUMN_PX}px " + " ".join(["64px"] * len(stages)),
                grid_gap="2px",
            ),
        )
        self.caption = W.HTML()
        self.faces = W.HTML()
        self.faces.add_class("craft-probe-faces")
        self._urls: dict[int, str] = {}  # probe-set index -> the face as a data URL
        self.widget = W.VBox(
            [
                W.HTML(
                    "<b>Balanced accuracy (%) of a linear probe on unseen people</b> — "
                    "click a cell to see the faces that probe gets most wrong"
                ),
                self.grid,
                self.caption,
                self.faces,
            ]
        )
        self.widget.add_class("craft-probe")
        self.select(*self.selected)

    def select(self, attribute: str, stage: str) -> None:
        """Show one cell: its most-wrong faces, its numbers, a frame on its button (faces first:
        each change is a message to the page, and they are what the click asked for)."""
        self.faces.value = faces_html(self.results, attribute, stage, self.k, self._url)
        self.caption.value = html.escape(cell_text(self.results, attribute, stage))
        self.buttons[self.selected].layout.border = None
        self.selected = (attribute, stage)
        self.buttons[self.selected].layout.border = f"3px solid {viz.OKABE_ITO['vermillion']}"

    def _url(self, index: int) -> str:
        if index not in self._urls:
            self._urls[index] = face_url(self.results.probe_set.images[index])
        return self._urls[index]


def depth_curves_figure(curves: dict, arms=("none", "contextual", REFERENCE_ARM)) -> Figure:
    """One panel per attribute: balanced accuracy by stage, mean ± sd over seeds, one line per
    arm."""
    arms = [a for a in arms if a in curves]
    first = curves[arms[0]]
    n = len(first["attributes"])
    cols = 3
    rows = int(np.ceil(n / cols))
    fig = viz.new_figure((11, 2.4 * rows + 0.6))
    colours = {
        "none": viz.ARM_COLORS["none"],
        "contextual": viz.ARM_COLORS["contextual"],
        REFERENCE_ARM: viz.OKABE_ITO["orange"],
    }
    x = np.arange(len(first["stages"]))
    for i, attr in enumerate(first["attributes"]):
        ax = fig.add_subplot(rows, cols, i + 1)
        for arm in arms:
            c = curves[arm]
            m, s = c["mean"][i], c["sd"][i]
            ax.plot(
                x,
                100 * m,
                marker="o",
                ms=3,
                color=colours.get(arm),
                label=f"{ARM_NAMES.get(arm, arm)} (n={len(c['seeds'])})",
            )
            if np.isfinite(s).any():
                ax.fill_between(
                    x, 100 * (m - s), 100 * (m + s), color=colours.get(arm), alpha=0.15, lw=0
                )
        ax.set_title(f"{attr} ({first['kinds'][i]})", fontsize=10)
        ax.set_xticks(
            x,
            [s.replace("block", "b").replace("embedding", "emb") for s in first["stages"]],
            fontsize=10,
        )
        ax.tick_params(labelsize=10)
        ax.axhline(50, color="#999999", lw=0.8, ls=":")
        if i % cols == 0:
            ax.set_ylabel("balanced acc. (%)", fontsize=10)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncol=len(arms), fontsize=10, frameon=False
    )
    return fig
