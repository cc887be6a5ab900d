"""Interactive views: the threshold explorer, the re-activation lab and the comparison dashboard.

Each widget is a thin shell around plain functions (``threshold_update``, ``lab_reactivate``,
``lab_train``, ``comparison_table``) that do the work and are tested without a browser, and each has a
static ``*_view`` twin that draws the same picture as a ``Figure`` (for PDFs, static HTML, or a kernel
where widgets do not render). Figures are rendered to PNG into an ``ipywidgets.Image``; the explorer
keeps one figure and only changes its artists.
"""
from __future__ import annotations

import copy
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from . import viz
from .activity import (SCORE_LABELS, WEIGHT_SCORES, filter_scores, inactive_fraction, inactive_mask, model_scores,
                       snapshot_scores)
from .experiments import METRICS, summarize
from .reactivation import STRATEGIES, STRATEGY_LABELS, reactivate_model
from .training import Trainer, to_input

MAX_LAB_STEPS = 5000
CELL = ' style="padding:2px 12px;border-bottom:1px solid #ddd;text-align:left"'


def error_html(err: BaseException) -> str:
    """An error as a red box: what a learner sees instead of a traceback."""
    return (f'<div class="craft-error" style="border:1px solid {viz.INACTIVE};background:#fdecea;color:#7a0000;'
            f'padding:6px 10px;border-radius:4px"><b>{type(err).__name__}</b>: {html.escape(str(err))}</div>')


def png_image() -> W.Image:
    """An image widget shown at the PNG's own size (a flex column would otherwise stretch and blur it)."""
    return W.Image(format="png", layout=W.Layout(align_self="flex-start"))


def _guarded(error_box: W.HTML, buttons: list[W.Button], work: Callable[[], None]) -> None:
    """Run ``work`` with ``buttons`` disabled; an exception lands in ``error_box``, never as a traceback."""
    error_box.value = ""
    for b in buttons:
        b.disabled = True
    try:
        work()
    except Exception as err:  # noqa: BLE001 - the widget must survive anything a learner can trigger
        error_box.value = error_html(err)
    finally:
        for b in buttons:
            b.disabled = False


# =============================================================================================
# 1. threshold explorer


@dataclass
class ScoreSource:
    """A first layer's weights and every score kind, computed once: moving τ then costs one comparison."""

    weight: np.ndarray
    scores: dict[str, np.ndarray]


def split_layer(layer) -> tuple[nn.Conv2d, nn.Module | None, Callable | None, nn.Module | None]:
    """(conv, bn, stem, owner) of a FaceCNN, a ``Sequential`` stem (MobileFaceNet), ``(conv, bn)`` or a conv."""
    if hasattr(layer, "conv1"):
        return layer.conv1, getattr(layer, "bn1", None), layer.stem, layer
    if isinstance(layer, nn.Sequential) and isinstance(layer[0], nn.Conv2d):
        return layer[0], layer[1] if len(layer) > 1 else None, layer, layer
    if isinstance(layer, (tuple, list)) and isinstance(layer[0], nn.Conv2d):
        return layer[0], layer[1] if len(layer) > 1 else None, None, None
    if isinstance(layer, nn.Conv2d):
        return layer, None, None, None
    raise TypeError(f"expected a FaceCNN, a Sequential stem, (conv, bn) or a Conv2d, got {type(layer).__name__}")


def as_probe(probe) -> torch.Tensor | None:
    """A probe batch as the network's input: uint8 NHWC faces are normalised, float NCHW kept."""
    if probe is None:
        return None
    probe = torch.as_tensor(np.asarray(probe)) if not isinstance(probe, torch.Tensor) else probe
    return to_input(probe) if probe.dtype == torch.uint8 else probe.float()


def score_source(layer, probe=None) -> ScoreSource:
    """Precompute max / L1 / L2, BN γ and effective scores (with a BN) and activation (with a probe)."""
    conv, bn, stem, owner = split_layer(layer)
    kinds = list(WEIGHT_SCORES)
    if isinstance(bn, nn.BatchNorm2d):
        kinds += ["gamma", "effective"]
    probe = as_probe(probe)
    if probe is not None and stem is not None:
        kinds.append("activation")
    scores = {k: filter_scores(conv, k, bn=bn, stem=stem, probe=probe, owner=owner) for k in kinds}
    return ScoreSource(viz.as_weight(conv.weight), scores)


def threshold_state(scores: np.ndarray, tau: float) -> dict:
    """Everything the explorer shows for one τ: the mask, its count and share, and the sort order."""
    mask = inactive_mask(scores, tau)
    return {"count": int(mask.sum()), "total": len(mask), "fraction": float(mask.mean()), "mask": mask,
            "order": np.argsort(scores, kind="stable"), "text": viz.count_text(mask)}


def threshold_update(source: ScoreSource, score: str, tau: float) -> dict:
    """The explorer's callback: the state for ``score`` at ``tau`` (a lookup and a comparison, well under 50 ms)."""
    if score not in source.scores:
        raise ValueError(f"score {score!r} is not available here; choose one of {list(source.scores)}")
    state = threshold_state(source.scores[score], tau)
    state.update(score=score, tau=float(tau), scores=source.scores[score])
    return state


def _axes(fig, label: str):
    return next(ax for ax in fig.axes if ax.get_label() == label)


def threshold_figure(source: ScoreSource, score: str = "max", tau: float = 0.1) -> Figure:
    """The explorer's figure: the filter grid (inactive framed) above the sorted score bars."""
    state = threshold_update(source, score, tau)
    fig = viz.new_figure((10, 9.5))
    grid_ax, bars_ax = fig.subplots(2, 1, height_ratios=[3, 1])
    grid_ax.set_label("grid")
    bars_ax.set_label("bars")
    viz.draw_filter_grid(grid_ax, source.weight, state["mask"])
    grid_ax.set_title("conv1 filters (tile: RGB composite | σ R / G B); red frame = inactive", fontsize=10)
    viz.draw_score_bars(bars_ax, state["scores"], tau, SCORE_LABELS[score])
    return fig


def update_threshold_figure(fig: Figure, state: dict) -> None:
    """Apply a ``threshold_update`` state to the explorer's figure in place (frames, bars, τ line, titles)."""
    viz.mark_filters(_axes(fig, "grid"), state["mask"])
    viz.update_score_bars(_axes(fig, "bars"), state["scores"], state["tau"], SCORE_LABELS[state["score"]])


def threshold_view(model, score: str = "max", tau: float = 0.1, probe=None) -> Figure:
    """Static twin of the explorer: the same figure for one score and τ."""
    return threshold_figure(score_source(model, probe), score, tau)


class ThresholdExplorer:
    """τ slider + score menu over a first layer: the count, the framed grid and the bars follow.

    ``layer`` is a FaceCNN, the MobileFaceNet stem (``conv = stem[0]``, ``bn = stem[1]``) or ``(conv, bn)``;
    with a ``probe`` batch of faces the activation (ReDo) score is offered too.
    """

    def __init__(self, layer, probe=None, score: str = "max", tau: float = 0.1):
        self.source = score_source(layer, probe)
        self.tau = W.FloatSlider(value=tau, min=0.0, max=1.0, step=0.01, description="τ", readout_format=".2f",
                                 continuous_update=False)
        self.score = W.Dropdown(options=[(SCORE_LABELS[k], k) for k in self.source.scores], value=score,
                                description="score")
        self.count = W.HTML()
        self.image = png_image()
        self.figure = threshold_figure(self.source, score, tau)
        for w, cls in ((self.tau, "craft-tau"), (self.count, "craft-count"), (self.image, "craft-figure")):
            w.add_class(cls)
        self.widget = W.VBox([W.HBox([self.tau, self.score, self.count]), self.image])
        self.widget.add_class("craft-explorer")
        self.tau.observe(self.refresh, names="value")
        self.score.observe(self.refresh, names="value")
        self.refresh()

    def refresh(self, _change=None) -> dict:
        """Recompute the state, update the figure's artists, re-render it, then the count (text last:
        when the count shows the new τ, the figure already does)."""
        self.state = threshold_update(self.source, self.score.value, self.tau.value)
        update_threshold_figure(self.figure, self.state)
        self.image.value = viz.figure_png(self.figure, dpi=72)
        self.figure.set_layout_engine("none")  # laid out once; later redraws only move artists (3x faster)
        self.count.value = f"<b>{self.state['text']}</b> at τ = {self.state['tau']:.2f}"
        return self.state


def threshold_explorer(layer, probe=None, score: str = "max", tau: float = 0.1) -> W.VBox:
    """The explorer's widget, ready to display."""
    return ThresholdExplorer(layer, probe, score, tau).widget


# =============================================================================================
# 2. re-activation lab


def lab_log(trainer: Trainer, tau: float) -> list[dict]:
    """The lab's curve data from the trainer's per-epoch history: step, mean loss, inactive fraction."""
    return [{"step": h["step"], "loss": h["loss"], "inactive": float((snapshot_scores(h["conv1"]) < tau).mean())}
            for h in trainer.history]


def lab_reactivate(trainer: Trainer, strategy: str, tau: float) -> dict:
    """Re-activate ``conv1`` filters below ``tau`` now, log the event in ``trainer.events``, return what changed.

    The generator is seeded from the run's seed and the step, so a repeated click renews differently.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    before_model = copy.deepcopy(trainer.model)
    before_fraction = inactive_fraction(model_scores(trainer.model), tau)
    generator = torch.Generator().manual_seed(trainer.config.seed * 100_003 + trainer.step + len(trainer.events))
    result = reactivate_model(trainer.model, tau, strategy, optimizer=trainer.optimizer, generator=generator)
    event = {"epoch": trainer.epoch, "step": trainer.step, "strategy": strategy, "filters": result.filters,
             "total": result.total, "notes": result.notes, "source": "lab"}
    trainer.events.append(event)
    after_fraction = inactive_fraction(model_scores(trainer.model), tau)
    verb = "detected (left unchanged)" if strategy == "none" else "re-activated"
    return {"event": event, "filters": result.filters, "count": len(result.filters),
            "before": before_model.conv1.weight.detach().cpu().numpy(),
            "after": trainer.model.conv1.weight.detach().cpu().numpy().copy(), "stem_before": before_model.stem,
            "inactive_before": before_fraction, "inactive_after": after_fraction,
            "text": f"{STRATEGY_LABELS[strategy]}: {len(result.filters)} / {result.total} filters below τ = {tau:.2f} "
                    f"{verb}; inactive {before_fraction:.0%} → {after_fraction:.0%}"}


def lab_train(trainer: Trainer, steps: int, tau: float = 0.1,
              on_progress: Callable[[int, int], None] | None = None, chunk: int = 5) -> dict:
    """Train ``steps`` more steps in chunks (reporting progress after each) and return losses and activity."""
    steps = int(steps)
    if not 1 <= steps <= MAX_LAB_STEPS:
        raise ValueError(f"number of steps must be between 1 and {MAX_LAB_STEPS}, got {steps}")
    first, losses = trainer.step, []
    while len(losses) < steps:
        losses += trainer.train_steps(min(chunk, steps - len(losses)))
        if on_progress is not None:
            on_progress(len(losses), steps)
    fraction = inactive_fraction(model_scores(trainer.model), tau)
    return {"steps": list(range(first + 1, trainer.step + 1)), "losses": losses, "inactive_fraction": fraction,
            "text": f"trained {steps} steps (now step {trainer.step}, epoch {trainer.epoch}): last loss "
                    f"{losses[-1]:.3f}, inactive {fraction:.0%} at τ = {tau:.2f}"}


def reactivation_view(trainer: Trainer, strategy: str = "contextual", tau: float = 0.1, face=None) -> Figure:
    """Static twin of the lab: what ``Re-activate`` would do, previewed on a *copy* (the trainer is untouched).

    Top: the filters that would be renewed, before and after (with maps on ``face``); bottom: the curves.
    To really apply it, call ``lab_reactivate(trainer, strategy, tau)``.
    """
    preview = copy.copy(trainer)
    preview.model, preview.optimizer, preview.events = copy.deepcopy(trainer.model), None, list(trainer.events)
    result = lab_reactivate(preview, strategy, tau)
    fig = viz.new_figure((11, 9))
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, 1])
    viz.before_after(result["before"], result["after"], result["filters"], result["stem_before"],
                     preview.model.stem, face, fig=top)
    viz.step_curves(lab_log(trainer, tau), trainer.events, fig=bottom)
    fig.suptitle(f"preview — {result['text']}", fontsize=10)
    return fig


class ReactivationLab:
    """Pick a strategy and τ, press *Re-activate*, train N more steps, and watch filters and curves change.

    Shows the current filters (inactive framed), the last re-activation (filters and maps on ``face``,
    before / after) and the loss and inactive fraction per step.
    """

    def __init__(self, trainer: Trainer, face=None, strategy: str = "contextual", tau: float = 0.1, steps: int = 20):
        self.trainer, self.face = trainer, face
        self.log = lab_log(trainer, tau)
        self.last: dict | None = None  # the last lab_reactivate / lab_train result, for a closer look
        self.strategy = W.Dropdown(options=[(STRATEGY_LABELS[s], s) for s in STRATEGIES], value=strategy,
                                   description="strategy")
        self.tau = W.FloatSlider(value=tau, min=0.0, max=1.0, step=0.01, description="τ", readout_format=".2f",
                                 continuous_update=False)
        self.reactivate_button = W.Button(description="Re-activate", button_style="warning", icon="refresh")
        self.steps = W.IntText(value=steps, description="N", layout=W.Layout(width="140px"))
        self.train_button = W.Button(description="Train N more steps", button_style="primary", icon="play",
                                     layout=W.Layout(width="auto"))
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress")
        self.status, self.error = W.HTML(), W.HTML()
        self.grid_image, self.filters_image, self.curves_image = png_image(), png_image(), png_image()
        for w, cls in ((self.reactivate_button, "craft-reactivate"), (self.train_button, "craft-train"),
                       (self.status, "craft-lab-status"), (self.error, "craft-error-box"),
                       (self.grid_image, "craft-lab-grid"), (self.filters_image, "craft-lab-filters"),
                       (self.curves_image, "craft-lab-curves")):
            w.add_class(cls)
        figures = W.HBox([self.grid_image, self.filters_image], layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([W.HBox([self.strategy, self.tau]),
                              W.HBox([self.reactivate_button, self.steps, self.train_button, self.progress]),
                              self.status, self.error, figures, self.curves_image])
        self.widget.add_class("craft-lab")
        self.reactivate_button.on_click(lambda _: self.run(self._reactivate))
        self.train_button.on_click(lambda _: self.run(self._train))
        self.tau.observe(lambda _: self.run(self._show_count), names="value")
        self.run(self._show_grid)

    @property
    def buttons(self) -> list[W.Button]:
        return [self.reactivate_button, self.train_button]

    def run(self, work: Callable[[], None]) -> None:
        """Run an action with the buttons disabled and errors shown in the widget."""
        _guarded(self.error, self.buttons, work)

    def _show_count(self) -> np.ndarray:
        mask = inactive_mask(model_scores(self.trainer.model), self.tau.value)
        self.status.value = (f"step {self.trainer.step}: <b>{viz.count_text(mask)}</b> at τ = {self.tau.value:.2f}"
                             " — press <i>Re-activate</i> to renew them")
        return mask

    def _show_grid(self) -> None:
        mask = inactive_mask(model_scores(self.trainer.model), self.tau.value)
        self.grid_image.value = viz.figure_png(viz.filter_grid(self.trainer.model.conv1.weight, mask=mask,
                                                               channels=False), dpi=56)
        self._show_curves()
        self._show_count()

    def _show_curves(self) -> None:
        self.curves_image.value = viz.figure_png(viz.step_curves(self.log, self.trainer.events), dpi=72)

    def _reactivate(self) -> None:
        result = lab_reactivate(self.trainer, self.strategy.value, self.tau.value)
        self.last = result
        self.log.append({"step": self.trainer.step, "loss": None, "inactive": result["inactive_after"]})
        fig = viz.before_after(result["before"], result["after"], result["filters"], result["stem_before"],
                               self.trainer.model.stem, self.face)
        self.filters_image.value = viz.figure_png(fig, dpi=64)
        self._show_grid()
        self.status.value = html.escape(result["text"])  # last: the figures above are already updated

    def _progress(self, done: int, total: int) -> None:
        self.progress.max, self.progress.value = total, done

    def _train(self) -> None:
        self.progress.value = 0
        result = lab_train(self.trainer, self.steps.value, self.tau.value, on_progress=self._progress)
        self.last = result
        self.log += [{"step": s, "loss": l} for s, l in zip(result["steps"], result["losses"])]
        self.log[-1]["inactive"] = result["inactive_fraction"]
        self._show_grid()
        self.status.value = html.escape(result["text"])


# =============================================================================================
# 3. comparison dashboard


def load_results(results) -> tuple[dict, list[dict]]:
    """(summary, runs) from a summary dict or a folder with ``summary.json`` (and ``runs.json``)."""
    if isinstance(results, dict):
        return results, []
    folder = Path(results)
    if not (folder / "summary.json").is_file():
        raise FileNotFoundError(f"{folder / 'summary.json'} not found: run `python -m craftlib compare --out {folder}`")
    runs_file = folder / "runs.json"
    return json.loads((folder / "summary.json").read_text()), json.loads(runs_file.read_text()) if runs_file.is_file() else []


def runs_from_summary(summary: dict) -> list[dict]:
    """Per-seed rows rebuilt from a summary's per-arm lists (enough to re-summarise a subset of seeds)."""
    return [{"strategy": name, "seed": seed, **{m: arm[m][i] for m in METRICS}}
            for name, arm in summary["arms"].items() for i, seed in enumerate(arm["seeds"])]


def select(summary: dict, runs: list[dict], arms=None, seeds=None) -> dict:
    """The summary restricted to some arms and seeds, with paired tests recomputed on what is left."""
    rows = runs or runs_from_summary(summary)
    rows = [r for r in rows if (arms is None or r["strategy"] in arms) and (seeds is None or r["seed"] in seeds)]
    if not rows:
        raise ValueError("nothing selected: pick at least one arm and one seed")
    picked = summarize(rows, summary.get("baseline", "none"))
    picked["tau"] = summary.get("tau", 0.1)
    return picked


def _fmt(metric: str, value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2%}" if metric in viz.PERCENT_METRICS else f"{value:.3f}"


def comparison_table(summary: dict, arms=None, metric: str = "accuracy") -> str:
    """An HTML table, one row per arm: seeds, mean ± std, per-seed values, difference and p-values vs baseline."""
    baseline = summary.get("baseline", "none")
    base_label = summary["arms"].get(baseline, {}).get("label", baseline)
    head = ["arm", "seeds", "mean ± std", "per seed", f"Δ vs {base_label}", "p (paired t)", "p (Wilcoxon)"]
    rows = []
    for name, arm in summary["arms"].items():
        if arms is not None and name not in arms:
            continue
        vs = arm.get(f"vs_{baseline}", {}).get(metric, {})
        cells = [arm["label"], str(len(arm[metric])),
                 f"{_fmt(metric, arm[f'{metric}_mean'])} ± {_fmt(metric, arm[f'{metric}_std'])}",
                 ", ".join(_fmt(metric, v) for v in arm[metric]),
                 "—" if name == baseline else _fmt(metric, vs.get("mean_difference")),
                 "—" if name == baseline else _fmt("p", vs.get("t_pvalue")),
                 "—" if name == baseline else _fmt("p", vs.get("wilcoxon_pvalue"))]
        rows.append("<tr>" + "".join(f"<td{CELL}>{html.escape(c)}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th{CELL}>{html.escape(h)}</th>" for h in head) + "</tr>"
    caption = html.escape(viz.METRIC_LABELS.get(metric, metric))
    return (f'<table class="craft-table" style="border-collapse:collapse"><caption>{caption}</caption>'
            f"<thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>")


def _comparison_figure(picked: dict, runs: list[dict], metric: str, seeds=None) -> Figure:
    chosen = viz.first_runs([r for r in runs if r["strategy"] in picked["arms"] and (seeds is None or r["seed"] in seeds)])
    fig = viz.new_figure((11 if chosen else 5.5, 4.2))
    axes = fig.subplots(1, 2 if chosen else 1, squeeze=False)[0]
    viz.draw_seed_comparison(axes[0], picked, metric)
    if chosen:
        viz.draw_roc(axes[1], {f"{STRATEGY_LABELS.get(s, s)} (seed {r['seed']})": r for s, r in chosen.items()})
    return fig


def comparison_view(results, metric: str = "accuracy", arms=None, seeds=None) -> Figure:
    """Static twin of the dashboard: seed spread with p-values, plus ROC per arm when runs are available."""
    summary, runs = load_results(results)
    return _comparison_figure(select(summary, runs, arms, seeds), runs, metric, seeds)


class ComparisonDashboard:
    """Choose arms, seeds and a metric: the table and the plots follow (p-values recomputed on the subset)."""

    def __init__(self, results, metric: str = "accuracy"):
        self.summary, self.runs = load_results(results)
        all_seeds = sorted({r["seed"] for r in (self.runs or runs_from_summary(self.summary))})
        self.arms = W.SelectMultiple(options=[(a["label"], n) for n, a in self.summary["arms"].items()],
                                     value=tuple(self.summary["arms"]), description="arms", rows=4)
        self.seeds = W.SelectMultiple(options=all_seeds, value=tuple(all_seeds), description="seeds", rows=4)
        self.metric = W.Dropdown(options=[(viz.METRIC_LABELS[m], m) for m in METRICS], value=metric,
                                 description="metric")
        self.table, self.error, self.image = W.HTML(), W.HTML(), png_image()
        self.table.add_class("craft-comparison-table")
        self.image.add_class("craft-figure")
        self.widget = W.VBox([W.HBox([self.arms, self.seeds, self.metric]), self.error, self.table, self.image])
        self.widget.add_class("craft-dashboard")
        for control in (self.arms, self.seeds, self.metric):
            control.observe(self.refresh, names="value")
        self.refresh()

    def refresh(self, _change=None) -> None:
        """Re-select, re-tabulate and redraw; an empty selection shows a message instead of failing."""
        def work():
            arms, seeds = list(self.arms.value), list(self.seeds.value)
            picked = select(self.summary, self.runs, arms, seeds)
            fig = _comparison_figure(picked, self.runs, self.metric.value, seeds)
            self.image.value = viz.figure_png(fig, dpi=72)
            self.table.value = comparison_table(picked, arms, self.metric.value)  # last, as in the explorer

        _guarded(self.error, [], work)
