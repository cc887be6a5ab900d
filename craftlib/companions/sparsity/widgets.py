"""Notebook 06's views: a filter's closest anti-partner, Top-K feature maps with the shape probe,
the study's figures.

Two widgets, each a thin shell over a plain ``*_state`` function (tested without a browser) and each
with a static ``*_view`` twin that draws the same picture as a ``Figure``:

- ``PairExplorer`` — pick a layer and a filter: the filter, its most opposite partner (CReLU's
  pair), the partner's negative (≈ the filter when the pair is real) and where this filter's pair
  cosine falls in the layer's histogram against random Gaussian filters of the same shape;
- ``TopKExplorer`` — slide K (the fraction of each map kept) and pick the stage: a face's feature
  maps before and after Top-K, and the shape-vs-texture probe re-run with Top-K at inference.

Figures follow ``viz``'s conventions (Okabe–Ito palette, 10 px text at ``viz.WIDGET_DPI``).
"""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from craftlib import redraw, viz
from craftlib.activity import model_scores
from craftlib.data import PairSet, to_input
from craftlib.models import FaceCNN, topk_at_inference
from craftlib.runtime import evaluating, to_numpy
from craftlib.study.results import SILENT_TAU, fmt

from .pairing import pair_cosines, pairing_summary, random_reference, second_moment
from .shapebias import GRID, SIGMA, StagedEmbeddings, low_pass, patch_shuffle, probe
from .study import COMPANION_ARMS, EXTRA_LABELS

RANDOM = viz.OKABE_ITO["orange"]
LAYER = viz.OKABE_ITO["blue"]
COMPANION_COLORS = {
    "none": viz.OKABE_ITO["black"],
    "contextual": viz.OKABE_ITO["blue"],
    "crelu": viz.OKABE_ITO["reddish purple"],
    "topk": viz.OKABE_ITO["orange"],
}


# ---------------------------------------------------------------------------------------------
# the anti-partner of a filter


def as_layer(source) -> np.ndarray:
    """A first-layer weight from a weight, a ``FaceCNN`` (``conv1``) or a stem ``Sequential`` (its
    conv)."""
    if isinstance(source, FaceCNN):
        source = source.conv1.weight
    elif isinstance(source, torch.nn.Sequential):
        source = source[0].weight
    elif isinstance(source, torch.nn.Conv2d):
        source = source.weight
    return viz.as_weight(source)


def pair_state(
    weight, index: int, reference: np.ndarray | None = None, summary: dict | None = None
) -> dict:
    """Everything the pair view shows for filter ``index``: its partner, their cosine, the layer's
    histogram. ``summary``: the layer's ``pairing_summary`` against ``reference``, when a caller
    keeps it (it is the same for every filter of the layer)."""
    w = as_layer(weight)
    if not 0 <= index < len(w):
        raise ValueError(f"filter index must be in [0, {len(w) - 1}], got {index}")
    reference = random_reference(w.shape) if reference is None else reference
    s = pairing_summary(w, reference=reference) if summary is None else summary
    cos, partner = np.asarray(s["cos"], dtype=float), np.asarray(s["partner"])
    j = int(partner[index])
    m = s["matched"]
    return {
        "weight": w,
        "index": index,
        "partner": j,
        "cos": float(cos[index]),
        "layer_cos": cos,
        "reference": reference,
        "threshold": s["threshold"],
        "paired": bool(cos[index] < s["threshold"]),
        "paired_fraction": s["paired_fraction"],
        "matched_threshold": m["threshold"],
        "paired_matched": bool(cos[index] < m["threshold"]),
        "matched_fraction": m["paired_fraction"],
        "mutual": partner[j] == index,
        "n": len(w),
    }


def pair_caption(state: dict) -> str:
    i, j = state["index"], state["partner"]
    if state["paired_matched"]:
        verdict = "a pair, even against random filters in the layer's own directions"
    elif state["paired"]:
        verdict = (
            "a pair against isotropic random filters, but not beyond what the layer's "
            "directions imply"
        )
    else:
        verdict = "no pair: within what random filters show"
    mutual = f"; {i} is also {j}'s closest anti-partner" if state["mutual"] else ""
    return (
        f"filter {i} → anti-partner {j}, cosine {state['cos']:+.2f} ({verdict}{mutual}). "
        f"Layer: {state['paired_fraction']:.0%} of its {state['n']} filters paired against "
        f"isotropic random "
        f"filters, {state['matched_fraction']:.0%} against the matched reference (by chance: ~1% "
        f"each)."
    )


def pair_figure(state: dict, title: str = "") -> Figure:
    """Filter, anti-partner and −partner on one weight scale; the layer's μ histogram against random
    filters."""
    fig = pair_canvas(state, title)
    show_pair(fig, state)
    return fig


def pair_canvas(state: dict, title: str = "") -> Figure:
    """What no filter of the layer changes: the histograms, their thresholds and the legend; the
    three tiles, the filter's μ line and its title are set by ``show_pair``."""
    fig = viz.new_figure((13.4, 3.4))
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 1, 0.15, 3.2])
    blank = np.ones_like(viz.filter_tile(state["weight"][0], 1.0, channels=False))
    for k in range(3):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(blank, interpolation="nearest")
        ax.set_title(" ", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[0, 4])
    bins = np.linspace(-1, 0.2, 37)
    ax.hist(
        state["reference"],
        bins=bins,
        density=True,
        color=RANDOM,
        alpha=0.55,
        label="random Gaussian filters",
    )
    ax.hist(
        state["layer_cos"],
        bins=bins,
        density=True,
        histtype="step",
        lw=2,
        color=LAYER,
        label="this layer",
    )
    ax.axvline(
        state["threshold"],
        color=viz.OKABE_ITO["black"],
        ls=":",
        lw=1,
        label="isotropic 1st percentile",
    )
    ax.axvline(
        state["matched_threshold"],
        color=viz.OKABE_ITO["reddish purple"],
        ls="--",
        lw=1,
        label="matched 1st percentile",
    )
    ax.axvline(state["cos"], color=viz.INACTIVE, lw=2, gid="filter", label="the chosen filter")
    ax.set_xlabel("most negative cosine with another filter (μ)")
    ax.set_ylabel("density")
    # beside the axes: the filter's line moves inside them, never under the legend
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(" ", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def show_pair(fig: Figure, state: dict) -> None:
    """Set ``pair_canvas``'s figure to one filter of its layer (in place)."""
    w, i, j = state["weight"], state["index"], state["partner"]
    vmax = float(np.abs(w[[i, j]]).max()) or 1.0
    tiles = ((w[i], f"filter {i}"), (w[j], f"anti-partner {j}"), (-w[j], f"−(filter {j})"))
    for ax, (w_k, label) in zip(fig.axes[:3], tiles):
        ax.images[0].set_data(viz.filter_tile(w_k, vmax, channels=False))
        ax.set_title(label, fontsize=11)
    ax = fig.axes[3]
    next(line for line in ax.lines if line.get_gid() == "filter").set_xdata([state["cos"]] * 2)
    ax.set_title(f"filter {i}: μ = {state['cos']:+.2f}", fontsize=11, color=viz.INACTIVE)


def pair_artists(fig: Figure) -> list:
    """What ``show_pair`` changes: a new filter's fast redraw."""
    tiles, ax = fig.axes[:3], fig.axes[3]
    return [
        *(a.images[0] for a in tiles),
        *(a.title for a in tiles),
        next(line for line in ax.lines if line.get_gid() == "filter"),
        ax.title,
    ]


def pair_view(weight, index: int = 0, title: str = "") -> Figure:
    """Static twin of ``PairExplorer``."""
    return pair_figure(pair_state(weight, index), title)


class PairExplorer:
    """Pick a layer and a filter; see its anti-partner and where its pair cosine falls against
    random filters."""

    def __init__(self, layers: dict, index: int = 0):
        if not layers:
            raise ValueError(
                "give at least one layer, e.g. {'MobileFaceNet': pretrained.mobilefacenet_stem()}"
            )
        self.layers = {name: as_layer(src) for name, src in layers.items()}
        self.references = {}
        self._shown: dict[tuple[str, int], tuple] = {}  # (layer, filter) -> state, PNG, caption
        self._figures: dict[str, tuple] = {}  # layer -> its figure and Redrawer
        first = next(iter(self.layers.values()))
        self.layer = W.Dropdown(options=list(self.layers), description="layer")
        self.filter = W.IntSlider(
            value=min(index, len(first) - 1),
            min=0,
            max=len(first) - 1,
            description="filter",
            continuous_update=False,
        )
        self.image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
        self.caption = W.HTML()
        self.error = W.HTML()
        self.layer.observe(self._layer_changed, "value")
        self.filter.observe(lambda _: self.update(), "value")
        self.widget = W.VBox(
            [W.HBox([self.layer, self.filter]), self.image, self.caption, self.error]
        )
        self.widget.add_class("craft-pairs")
        self.update()

    def _reference(self, name: str) -> tuple[np.ndarray, dict]:
        """A layer's random reference and pairing summary, computed once per layer."""
        if name not in self.references:
            reference = random_reference(self.layers[name].shape)
            summary = pairing_summary(self.layers[name], reference=reference)
            self.references[name] = reference, summary
        return self.references[name]

    def _layer_changed(self, _) -> None:
        n = len(self.layers[self.layer.value])
        self.filter.max = n - 1
        self.filter.value = min(self.filter.value, n - 1)
        self.update()

    def update(self) -> dict:
        """Show the chosen filter's pair; a filter seen before comes back from the cache at once, a
        new one redraws only its tiles, μ line and legend over the layer's kept histogram."""
        self.error.value = ""
        try:
            key = (self.layer.value, self.filter.value)
            if key not in self._shown:
                state = pair_state(self.layers[key[0]], key[1], *self._reference(key[0]))
                full = key[0] not in self._figures  # a layer's figure is drawn once
                if full:
                    fig = pair_canvas(state, key[0])
                    self._figures[key[0]] = (fig, redraw.Redrawer(fig, lambda: pair_artists(fig)))
                fig, redrawer = self._figures[key[0]]
                show_pair(fig, state)
                caption = f'<span class="pair-caption">{html.escape(pair_caption(state))}</span>'
                self._shown[key] = (state, redrawer.png(full=full), caption)
            self.state, self.image.value, self.caption.value = self._shown[key]
            return self.state
        except Exception as err:  # noqa: BLE001 - a widget must survive anything a learner can trigger
            self.error.value = f"<b>{type(err).__name__}</b>: {html.escape(str(err))}"
            return {}


def pair_explorer(layers: dict, index: int = 0) -> W.VBox:
    return PairExplorer(layers, index).widget


# ---------------------------------------------------------------------------------------------
# Top-K: feature maps and the shape probe


@torch.no_grad()
def stage_maps(
    model: FaceCNN, face: np.ndarray, stage: int, fraction: float, channels: int = 6
) -> dict:
    """One face's maps after ``stage`` without and with Top-K (``fraction`` kept), strongest
    channels first."""
    x = to_input(torch.from_numpy(np.ascontiguousarray(face[None])))
    with evaluating(model), topk_at_inference(model, 1.0):
        dense = model.stage_outputs(x)[stage][0]
    with evaluating(model), topk_at_inference(model, fraction, (stage,)):
        sparse = model.stage_outputs(x)[stage][0]
    order = dense.flatten(1).abs().mean(1).argsort(descending=True)[:channels]
    return {
        "dense": to_numpy(dense[order]),
        "sparse": to_numpy(sparse[order]),
        "channels": to_numpy(order).tolist(),
        "kept": float((sparse != 0).float().mean()),
        "side": int(dense.shape[-1]),
    }


def topk_state(
    model: FaceCNN,
    face: np.ndarray,
    pairs: PairSet | None,
    fraction: float = 0.2,
    stage: int = 2,
    channels: int = 6,
) -> dict:
    """Feature maps and (with ``pairs``) the shape probe with Top-K at inference after ``stage``."""
    state = {
        "fraction": float(fraction),
        "stage": int(stage),
        "face": face,
        "maps": stage_maps(model, face, stage, fraction, channels),
    }
    if pairs is not None:
        with topk_at_inference(model, fraction, (stage,)):
            state["probe"] = probe(model, pairs)
    return state


def stage_name(stage: int) -> str:
    """One name per stage in the menu, the caption and the text: "stage 0 (stem)", "stage 1", ..."""
    return "stage 0 (stem)" if stage == 0 else f"stage {stage}"


def topk_caption(state: dict) -> str:
    m = state["maps"]
    after = stage_name(state["stage"])
    text = (
        f"K = {state['fraction']:.0%} of each {m['side']}×{m['side']} map after {after} "
        f"({max(1, int(state['fraction'] * m['side'] ** 2))} values per map; {m['kept']:.0%} of "
        f"the maps non-zero)."
    )
    if state.get("probe_pending"):
        text += " Probe: computing (a few seconds the first time; each K and stage is kept)."
    if "probe" in state:
        p = state["probe"]
        text += (
            f" Probe: clean {fmt('accuracy', p['clean'])}, blurred "
            f"{fmt('accuracy', p['low_pass'])}, "
            f"mosaic {fmt('accuracy', p['patch_shuffle'])}; shape-bias index "
            f"{'n/a' if p['index'] is None else format(p['index'], '.2f')}."
        )
    return text


def topk_figure(state: dict) -> Figure:
    """Top row: the face, blurred and as a mosaic; then the maps before and after Top-K; right: the
    probe."""
    m = state["maps"]
    n = len(m["channels"])
    fig = viz.new_figure((13.4, 4.6))
    grid = fig.add_gridspec(3, n + 2, width_ratios=[1] * n + [0.2, 3.0])
    face = state["face"]
    for k, (img, label) in enumerate(
        (
            (face, "face"),
            (low_pass(face[None], SIGMA)[0], "shape kept (blur)"),
            (patch_shuffle(face[None], GRID)[0], "texture kept (mosaic)"),
        )
    ):
        ax = fig.add_subplot(grid[0, 2 * k : 2 * k + 2])
        ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    vmax = float(np.abs(m["dense"]).max()) or 1.0
    for row, key, label in ((1, "dense", "dense"), (2, "sparse", f"Top-K {state['fraction']:.0%}")):
        for c in range(n):
            ax = fig.add_subplot(grid[row, c])
            ax.imshow(
                np.abs(m[key][c]), cmap=viz.MAP_CMAP, vmin=0, vmax=vmax, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
            if row == 1:
                ax.set_title(f"ch {m['channels'][c]}", fontsize=10)
    ax = fig.add_subplot(grid[:, n + 1])
    if "probe" in state:
        p = state["probe"]
        keys = ("clean", "low_pass", "edge_map", "patch_shuffle")
        labels = ("clean", "blur", "edges", "mosaic")
        colors = [viz.OKABE_ITO["black"], LAYER, viz.OKABE_ITO["sky blue"], RANDOM]
        ax.bar(labels, [100 * p[k] for k in keys], color=colors)
        ax.axhline(50, color=viz.OKABE_ITO["black"], ls=":", lw=1)
        ax.set_ylim(40, 100)
        ax.set_ylabel("DevTest accuracy (%)")
        index = "n/a" if p["index"] is None else f"{p['index']:.2f}"
        ax.set_title(f"shape-bias index {index}", fontsize=11)
    else:
        ax.axis("off")
        waiting = "computing the shape probe\nat this K and stage …"
        text = waiting if state.get("probe_pending") else "no pairs given:\nprobe not run"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    return fig


def topk_view(
    model: FaceCNN,
    face: np.ndarray,
    pairs: PairSet | None = None,
    fraction: float = 0.2,
    stage: int = 2,
) -> Figure:
    """Static twin of ``TopKExplorer``."""
    return topk_figure(topk_state(model, face, pairs, fraction, stage))


class TopKExplorer:
    """Slide K and pick the stage: the face's maps before/after Top-K and the shape probe with Top-K
    at inference.

    The maps answer at once (one face through the network); the probe embeds every DevTest pair five
    ways, seconds on a laptop the first time a stage is chosen, so it follows in a second redraw
    with "computing" shown meanwhile. The activations below the chosen stage's Top-K layer are then
    kept (``StagedEmbeddings``, up to ``MAX_KEPT`` bytes, one stage at a time), so moving K runs
    only the layers above it; each (K, stage) probe is kept too: going back costs nothing. The model
    is taken as fixed while the explorer lives.
    """

    MAX_KEPT = 256 * 2**20  # bytes of kept activations: stages 1-3 of the workshop model at 40 px

    def __init__(
        self,
        model: FaceCNN,
        face: np.ndarray,
        pairs: PairSet | None = None,
        fraction: float = 0.2,
        stage: int = 2,
    ):
        self.model, self.face, self.pairs = model, face, pairs
        self._shown: dict[tuple[float, int], tuple] = {}  # (K, stage) -> state, PNG, caption
        self._kept: StagedEmbeddings | None = None
        self.fraction = W.FloatSlider(
            value=fraction,
            min=0.05,
            max=1.0,
            step=0.05,
            description="K (kept)",
            continuous_update=False,
            readout_format=".0%",
        )
        self.stage = W.Dropdown(
            options=[(stage_name(k), k) for k in range(4)], value=stage, description="after"
        )
        self.image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
        self.caption = W.HTML()
        self.error = W.HTML()
        for control in (self.fraction, self.stage):
            control.observe(lambda _: self.update(), "value")
        self.widget = W.VBox(
            [W.HBox([self.fraction, self.stage]), self.image, self.caption, self.error]
        )
        self.widget.add_class("craft-topk")
        self.update()

    def update(self) -> dict:
        self.error.value = ""
        try:
            key = (round(self.fraction.value, 4), self.stage.value)
            if key in self._shown:  # a setting seen before: its figure and caption as they were
                self.state, self.image.value, self.caption.value = self._shown[key]
                return self.state
            state = topk_state(self.model, self.face, None, *key)
            if self.pairs is not None:
                self._show({**state, "probe_pending": True})  # the maps now, the probe next
                staged = self._staged(key[1])
                with topk_at_inference(self.model, key[0], (key[1],)):
                    state["probe"] = probe(self.model, self.pairs, embeddings=staged)
            self._show(state)
            self.state = state
            self._shown[key] = (state, self.image.value, self.caption.value)
            return state
        except Exception as err:  # noqa: BLE001
            self.error.value = f"<b>{type(err).__name__}</b>: {html.escape(str(err))}"
            return {}

    def _staged(self, stage: int) -> StagedEmbeddings | None:
        """The kept activations of ``stage``, or ``None`` where they would pass ``MAX_KEPT``."""
        if self._kept is None or self._kept.stage != stage:
            self._kept = None  # the old stage's go first
            if StagedEmbeddings.size(self.model, self.pairs, stage) <= self.MAX_KEPT:
                self._kept = StagedEmbeddings(self.model, self.pairs, stage)
        return self._kept

    def _show(self, state: dict) -> None:
        self.image.value = viz.figure_png(topk_figure(state), dpi=viz.WIDGET_DPI)
        self.caption.value = f'<span class="topk-caption">{html.escape(topk_caption(state))}</span>'


def topk_explorer(
    model: FaceCNN,
    face: np.ndarray,
    pairs: PairSet | None = None,
    fraction: float = 0.2,
    stage: int = 2,
) -> W.VBox:
    return TopKExplorer(model, face, pairs, fraction, stage).widget


# ---------------------------------------------------------------------------------------------
# pairing of trained models and the study's figures


def pairing_histograms(
    layers: dict[str, object], title: str = "pair cosines of conv1 against random filters"
) -> Figure:
    """One panel per layer: its μ histogram over the random reference of the same shape (μ pooled if
    a list)."""
    fig = viz.new_figure((4.2 * len(layers), 3.4))
    bins = np.linspace(-1, 0.2, 37)
    for k, (name, src) in enumerate(layers.items()):
        ax = fig.add_subplot(1, len(layers), k + 1)
        weights = src if isinstance(src, list) else [src]
        cos = np.concatenate([pair_cosines(as_layer(w))[0] for w in weights])
        ref = random_reference(as_layer(weights[0]).shape)
        matched = random_reference(
            as_layer(weights[0]).shape,
            moment=np.mean([second_moment(as_layer(w)) for w in weights], axis=0),
        )
        threshold, m_threshold = np.percentile(ref, 1.0), np.percentile(matched, 1.0)
        ax.hist(ref, bins=bins, density=True, color=RANDOM, alpha=0.55, label="random (isotropic)")
        ax.hist(
            matched,
            bins=bins,
            density=True,
            histtype="step",
            ls="--",
            lw=1.5,
            color=viz.OKABE_ITO["reddish purple"],
            label="random (matched)",
        )
        ax.hist(cos, bins=bins, density=True, histtype="step", lw=2, color=LAYER, label="trained")
        ax.axvline(threshold, color=viz.OKABE_ITO["black"], ls=":", lw=1)
        ax.set_title(
            f"{name}\npaired {np.mean(cos < threshold):.0%} (isotropic) / "
            f"{np.mean(cos < m_threshold):.0%} "
            f"(matched)",
            fontsize=10,
        )
        ax.set_xlabel("μ (most negative cosine)")
        if k == 0:
            ax.set_ylabel("density")
            ax.legend(fontsize=10)
    fig.suptitle(title, fontsize=11)
    return fig


def record_histograms(records: list[dict], extra: dict[str, np.ndarray] | None = None) -> Figure:
    """The study's pair cosines per arm, pooled over seeds, against random filters of each arm's
    shape."""
    by_arm: dict[str, list[float]] = {}
    filters: dict[str, int] = {}
    matched: dict[str, list[float]] = {}
    for r in records:
        cos = r["companion"]["pairing"]["cos"]
        label = COMPANION_ARMS.get(r["arm"], {}).get("label", r["arm"])
        by_arm.setdefault(label, []).extend(v for v in cos if v is not None)
        filters[label] = len(cos)
        if (r["companion"]["pairing"].get("matched") or {}).get("threshold") is not None:
            matched.setdefault(label, []).append(r["companion"]["pairing"]["matched"]["threshold"])
    panels = {label: np.asarray(v) for label, v in by_arm.items()}
    for label, cos in (extra or {}).items():
        panels[label], filters[label] = np.asarray(cos), len(cos)
    fig = viz.new_figure((3.6 * len(panels), 3.4))
    bins = np.linspace(-1, 0.2, 37)
    for k, (name, cos) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), k + 1)
        n = filters[name]
        ref = random_reference((n, 3, 3, 3))
        threshold = np.percentile(ref, 1.0)
        ax.hist(
            ref, bins=bins, density=True, color=RANDOM, alpha=0.55, label=f"random ({n} filters)"
        )
        ax.hist(cos, bins=bins, density=True, histtype="step", lw=2, color=LAYER, label="conv1")
        ax.axvline(threshold, color=viz.OKABE_ITO["black"], ls=":", lw=1)
        title = (
            f"{name}\n{np.mean(cos < threshold):.0%} paired (isotropic), mean μ {np.mean(cos):+.2f}"
        )
        if name in matched:
            ax.axvline(
                np.mean(matched[name]),
                color=viz.OKABE_ITO["reddish purple"],
                ls="--",
                lw=1,
                label="matched 1st pct.",
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("μ")
        ax.legend(fontsize=10, loc="upper right")
        if k == 0:
            ax.set_ylabel("density")
    return fig


def companion_seeds(summary: dict) -> Figure:
    """Per-seed values of four metrics per arm (dots), with the arm mean (bar)."""
    main, extra = summary["main"], summary["extra"]
    metrics = [
        ("accuracy", "DevTest accuracy (%)", True, None),
        ("silent_fraction", f"silent conv1 (τ={SILENT_TAU:g}, %)", True, None),
        ("pair_mean", EXTRA_LABELS["pair_mean"], False, "extra"),
        ("shape_bias", EXTRA_LABELS["shape_bias"], False, "extra"),
    ]
    fig = viz.new_figure((13.4, 3.4))
    names = list(main.arms)
    for k, (metric, label, percent, where) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for i, name in enumerate(names):
            vals = extra[name]["values"][metric] if where else main.arms[name].values[metric]
            vals = np.asarray([np.nan if v is None else v for v in vals], dtype=float) * (
                100 if percent else 1
            )
            color = COMPANION_COLORS.get(name, viz.OKABE_ITO["black"])
            ax.bar(i, np.nanmean(vals), color=color, alpha=0.25)
            ax.plot(
                np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)),
                vals,
                "o",
                color=color,
                ms=5,
            )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=10)
        ax.set_title(label, fontsize=10)
        finite = np.concatenate(
            [
                np.asarray(
                    [
                        np.nan if v is None else v
                        for v in (
                            extra[n]["values"][metric] if where else main.arms[n].values[metric]
                        )
                    ],
                    dtype=float,
                )
                for n in names
            ]
        ) * (100 if percent else 1)
        if np.isfinite(finite).any():
            lo, hi = np.nanmin(finite), np.nanmax(finite)
            pad = 0.15 * (hi - lo or 1)
            ax.set_ylim(lo - pad if metric != "silent_fraction" else 0, hi + pad)
    return fig


def save_figures(summary: dict, records: list[dict], out, mobilefacenet=None) -> list:
    """The study's figures as PNGs in ``out``: per-seed metrics and pair-cosine histograms."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = None
    if mobilefacenet is not None:
        extra = {"MobileFaceNet (released)": pair_cosines(as_layer(mobilefacenet))[0]}
    paths = []
    for name, fig in (
        ("seeds.png", companion_seeds(summary)),
        ("pairing.png", record_histograms(records, extra)),
    ):
        fig.savefig(out / name, dpi=100)
        paths.append(out / name)
    return paths


def live_fraction(model: FaceCNN, probe_faces: torch.Tensor) -> float:
    """Share of ``conv1`` filters not silent on a probe batch (the study's detector and
    threshold)."""
    return float(np.mean(model_scores(model, "silent", probe=probe_faces) >= SILENT_TAU))
