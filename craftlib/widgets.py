"""Interactive views: the decay race, the threshold explorer, the re-activation lab and the
comparison dashboard.

Each widget is a thin shell around plain functions (``race_update``, ``threshold_update``,
``lab_reactivate``, ``lab_train``, ``lab_state``, ``pool``/``select``) that do the work and are
tested without a browser, and each has a static ``*_view`` twin that draws the same picture as a
``Figure`` (for PDFs, static HTML, or a kernel where widgets do not render). Figures are rendered to
PNG into an ``ipywidgets.Image`` at ``viz.WIDGET_DPI`` (10 pt text = 10 px); every widget fits a
1366×768 screen.

**One state, every view.** After any control change a widget recomputes one state and redraws every
part from it — figure, caption, status line — so no two numbers on screen can disagree (the
browser test reads them all after each change).
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass
from typing import Callable

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from . import decay, redraw, viz
from .activity import (
    SCORE_LABELS,
    WEIGHT_SCORES,
    filter_scores,
    inactive_mask,
    model_scores,
    snapshot_scores,
)
from .data import to_input
from .reactivation import (
    PAPER_READING,
    STRATEGIES,
    STRATEGY_LABELS,
    CraftSpec,
    check_strategy,
    event_record,
    reactivate_model,
)
from .runtime import to_numpy
from .training import Trainer

MAX_LAB_STEPS = 5000
FIGURE_WIDTH = 13.4  # inches at 72 dpi: 965 px, inside JupyterLab's notebook on a 1366-px screen
LAB_SCORES = ("silent", "max")  # what the network hears / the paper's small-weight reading
LAB_GRID = 5.2  # inches: a 374-px grid (28-px tiles) beside the curves above the last renewal, ...
LAB_CURVES, LAB_RENEWAL = (
    2.6,
    2.4,
)  # ... so that the whole lab, its result included, is under 640 px
FAST_LAB_CAVEAT = (
    "FAST mode: a few dozen steps silence almost nothing, so Re-activate renews few filters, "
    "counts "
    "may rise and maps stay dark; the text describes full mode"
)


def error_html(err: BaseException) -> str:
    """An error as a box in the widget: what a learner sees instead of a traceback."""
    return (
        f'<div class="craft-error" style="border:1px solid '
        f"{viz.INACTIVE};background:#fdf1e8;color:#6b2d00;"
        f'padding:6px 10px;border-radius:4px"><b>{type(err).__name__}</b>: '
        f"{html.escape(str(err))}</div>"
    )


def png_image(cls: str | None = None) -> W.Image:
    """An image widget shown at the PNG's own size (a flex column would otherwise stretch and blur
    it)."""
    image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
    if cls:
        image.add_class(cls)
    return image


def render(fig: Figure) -> bytes:
    """A widget figure as PNG at ``viz.WIDGET_DPI``."""
    return viz.figure_png(fig, dpi=viz.WIDGET_DPI)


def _guarded(error_box: W.HTML, buttons: list[W.Button], work: Callable[[], None]) -> None:
    """Run ``work`` with ``buttons`` disabled; an exception lands in ``error_box``, never as a
    traceback."""
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


def _html_count(cls: str, text: str) -> str:
    return f'<span class="{cls}">{html.escape(text)}</span>'


# =============================================================================================
# 0. the decay race (notebook 02, before any training)


def race_update(
    lr: float, wd: float, momentum: float, grad: float, steps: int = 1000, tau: float = 0.1
) -> dict:
    """The race's state for one setting of the sliders: the simulation and its one-sentence
    verdict."""
    race = decay.simulate(lr, wd, momentum, grad, int(steps), tau)
    return {
        "race": race,
        "verdict": race.verdict(),
        "silent_step": race.silent_step,
        "half_life": decay.half_life(lr, wd, momentum),
    }


def decay_view(
    lr: float = 0.1,
    wd: float = 1e-2,
    momentum: float = 0.9,
    grad: float = 1e-3,
    steps: int = 1000,
    tau: float = 0.1,
) -> Figure:
    """Static twin of the decay race: the same two panels for one setting."""
    return viz.decay_race(race_update(lr, wd, momentum, grad, steps, tau)["race"])


class DecayRace:
    """Sliders for learning rate, weight decay, momentum and the task gradient: γ(t) and ‖w‖(t)
    follow.

    Predict first (does γ stay above τ? when does it cross?), then move a slider.
    """

    def __init__(
        self,
        lr: float = 0.1,
        wd: float = 1e-2,
        momentum: float = 0.9,
        grad: float = 1e-3,
        steps: int = 1000,
        tau: float = 0.1,
    ):
        style = {"description_width": "110px"}
        wide = W.Layout(width="460px")
        self.lr = W.FloatLogSlider(
            value=lr,
            base=10,
            min=-3,
            max=0,
            step=0.05,
            description="learning rate",
            readout_format=".3g",
            continuous_update=False,
            style=style,
            layout=wide,
        )
        self.wd = W.FloatLogSlider(
            value=wd,
            base=10,
            min=-5,
            max=-1,
            step=0.05,
            description="weight decay",
            readout_format=".2g",
            continuous_update=False,
            style=style,
            layout=wide,
        )
        self.momentum = W.FloatSlider(
            value=momentum,
            min=0.0,
            max=0.99,
            step=0.01,
            description="momentum",
            continuous_update=False,
            style=style,
            layout=wide,
        )
        self.grad = W.FloatSlider(
            value=grad,
            min=0.0,
            max=0.02,
            step=0.0001,
            description="task gradient",
            readout_format=".4f",
            continuous_update=False,
            style=style,
            layout=wide,
        )
        self.steps = W.IntSlider(
            value=steps,
            min=100,
            max=3000,
            step=100,
            description="steps",
            continuous_update=False,
            style=style,
            layout=wide,
        )
        self.verdict, self.error = W.HTML(), W.HTML()
        self.verdict.add_class("craft-race-verdict")
        self.tau = tau
        self.image = png_image("craft-figure")
        self.figure = viz.new_figure((FIGURE_WIDTH, 3.9))
        self.axes = self.figure.subplots(1, 2)
        controls = W.HBox(
            [W.VBox([self.lr, self.wd, self.momentum]), W.VBox([self.grad, self.steps])]
        )
        self.widget = W.VBox([controls, self.verdict, self.error, self.image])
        self.widget.add_class("craft-race")
        for control in (self.lr, self.wd, self.momentum, self.grad, self.steps):
            control.observe(self.refresh, names="value")
        self.refresh()

    def refresh(self, _change=None) -> None:
        def work():
            self.state = race_update(
                self.lr.value,
                self.wd.value,
                self.momentum.value,
                self.grad.value,
                self.steps.value,
                self.tau,
            )
            for ax in self.axes:
                ax.clear()
            viz.draw_decay_race(self.axes, self.state["race"])
            self.image.value = render(self.figure)
            half = self.state["half_life"]
            self.verdict.value = (
                f"<b>{html.escape(self.state['verdict'])}</b><br>a weight with no gradient halves "
                f"every {half:.0f} steps at these settings"
                if np.isfinite(half)
                else f"<b>{html.escape(self.state['verdict'])}</b>"
            )

        _guarded(self.error, [], work)


# =============================================================================================
# 1. threshold explorer


@dataclass
class ScoreSource:
    """A first layer's weights and every score kind, computed once: moving τ then costs one
    comparison."""

    weight: np.ndarray
    scores: dict[str, np.ndarray]


def split_layer(layer) -> tuple[nn.Conv2d, nn.Module | None, Callable | None, nn.Module | None]:
    """(conv, bn, stem, owner) of a FaceCNN, a ``Sequential`` stem (MobileFaceNet), ``(conv, bn)``
    or a conv."""
    if hasattr(layer, "conv1"):
        return layer.conv1, getattr(layer, "bn1", None), layer.stem, layer
    if isinstance(layer, nn.Sequential) and isinstance(layer[0], nn.Conv2d):
        return layer[0], layer[1] if len(layer) > 1 else None, layer, layer
    if isinstance(layer, (tuple, list)) and isinstance(layer[0], nn.Conv2d):
        return layer[0], layer[1] if len(layer) > 1 else None, None, None
    if isinstance(layer, nn.Conv2d):
        return layer, None, None, None
    raise TypeError(
        f"expected a FaceCNN, a Sequential stem, (conv, bn) or a Conv2d, got {type(layer).__name__}"
    )


def as_probe(probe) -> torch.Tensor | None:
    """A probe batch as the network's input: uint8 NHWC faces are normalised, float NCHW kept."""
    if probe is None:
        return None
    probe = torch.as_tensor(np.asarray(probe)) if not isinstance(probe, torch.Tensor) else probe
    return to_input(probe) if probe.dtype == torch.uint8 else probe.float()


def score_source(layer, probe=None) -> ScoreSource:
    """Precompute max / L1 / L2, BN γ and effective scores (with a BN), silent and activation (with
    a probe)."""
    conv, bn, stem, owner = split_layer(layer)
    kinds = list(WEIGHT_SCORES)
    if isinstance(bn, nn.BatchNorm2d):
        kinds += ["gamma", "effective"]
    probe = as_probe(probe)
    if probe is not None and stem is not None:
        kinds += ["silent", "activation"]
    scores = {k: filter_scores(conv, k, bn=bn, stem=stem, probe=probe, owner=owner) for k in kinds}
    return ScoreSource(viz.as_weight(conv.weight), scores)


def threshold_state(scores: np.ndarray, tau: float) -> dict:
    """Everything the explorer shows for one τ: the mask, its count and share, and the sort
    order."""
    mask = inactive_mask(scores, tau)
    return {
        "count": int(mask.sum()),
        "total": len(mask),
        "fraction": float(mask.mean()),
        "mask": mask,
        "order": np.argsort(scores, kind="stable"),
        "text": viz.count_text(mask),
    }


def threshold_update(source: ScoreSource, score: str, tau: float) -> dict:
    """The explorer's callback: the state for ``score`` at ``tau`` (a lookup and a comparison, well
    under 50 ms)."""
    if score not in source.scores:
        raise ValueError(
            f"score {score!r} is not available here; choose one of {list(source.scores)}"
        )
    state = threshold_state(source.scores[score], tau)
    state.update(score=score, tau=float(tau), scores=source.scores[score])
    return state


def _axes(fig, label: str):
    return next(ax for ax in fig.axes if ax.get_label() == label)


def threshold_figure(source: ScoreSource, score: str = "max", tau: float = 0.1) -> Figure:
    """The explorer's figure: the filter grid (inactive framed) beside the sorted score bars."""
    state = threshold_update(source, score, tau)
    fig = viz.new_figure((FIGURE_WIDTH, 5.4))
    grid_ax, bars_ax = fig.subplots(1, 2, width_ratios=[1.45, 1])
    grid_ax.set_label("grid")
    bars_ax.set_label("bars")
    viz.draw_filter_grid(grid_ax, source.weight, state["mask"])
    grid_ax.set_title("conv1 filters (tile: RGB | σ R / G B); framed, ✕ = inactive", fontsize=10)
    viz.draw_score_bars(bars_ax, state["scores"], tau, SCORE_LABELS[score], log=True)
    return fig


def update_threshold_figure(fig: Figure, state: dict) -> None:
    """Apply a ``threshold_update`` state to the explorer's figure in place (frames, bars, τ line,
    titles)."""
    viz.mark_filters(_axes(fig, "grid"), state["mask"])
    viz.update_score_bars(
        _axes(fig, "bars"), state["scores"], state["tau"], SCORE_LABELS[state["score"]]
    )


def threshold_view(model, score: str = "max", tau: float = 0.1, probe=None) -> Figure:
    """Static twin of the explorer: the same figure for one score and τ."""
    return threshold_figure(score_source(model, probe), score, tau)


class ThresholdExplorer:
    """τ slider (log-scaled, 0.001-1, as the lab's) + score menu over a first layer: the count, the
    framed grid and the bars (log-scaled: silent channels sit decades below the loudest) follow.

    ``layer`` is a FaceCNN, the MobileFaceNet stem (``conv = stem[0]``, ``bn = stem[1]``) or
    ``(conv, bn)``; with a ``probe`` batch of faces the silent and activation (ReDo) scores are
    offered too.
    """

    def __init__(self, layer, probe=None, score: str = "max", tau: float = 0.1):
        self.source = score_source(layer, probe)
        self.tau = W.FloatLogSlider(
            value=min(max(tau, 1e-3), 1.0),
            base=10,
            min=-3,
            max=0,
            step=0.05,
            description="τ",
            readout_format=".3g",
            continuous_update=False,
        )  # as the lab's
        self.score = W.Dropdown(
            options=[(SCORE_LABELS[k], k) for k in self.source.scores],
            value=score,
            description="score",
            layout=W.Layout(width="380px"),
        )
        self.count = W.HTML()
        self.image = png_image("craft-figure")
        self.figure = threshold_figure(self.source, score, self.tau.value)
        self.redrawers: dict[str, redraw.Redrawer] = {}  # per score: its bars' axes differ
        for w, cls in (
            (self.tau, "craft-tau"),
            (self.score, "craft-score"),
            (self.count, "craft-count"),
        ):
            w.add_class(cls)
        self.widget = W.VBox([W.HBox([self.tau, self.score, self.count]), self.image])
        self.widget.add_class("craft-explorer")
        self.tau.observe(self.refresh, names="value")
        self.score.observe(self.refresh, names="value")
        self.refresh()

    def refresh(self, _change=None) -> dict:
        """Recompute the state, update the figure's artists, re-render it, then the count (text
        last: when the count shows the new τ, the figure already does). A τ move redraws only the
        frames, labels, bars and τ line (``redraw.Redrawer``); a score's first visit redraws
        everything, a revisit what τ changes."""
        score = self.score.value
        self.state = threshold_update(self.source, score, self.tau.value)
        update_threshold_figure(self.figure, self.state)
        if score not in self.redrawers:
            new = redraw.Redrawer(self.figure, self._dynamic, groups=self._groups)
            if self.redrawers:  # the grid is the same for every score: only the bars drawn anew
                new.start_from(self.redrawer, _axes(self.figure, "bars"))
            self.redrawers[score] = new
        self.redrawer = self.redrawers[score]
        self.image.value = self.redrawer.png()
        # laid out once; later redraws only move artists
        self.figure.set_layout_engine("none")
        self.count.value = f"<b>{self.state['text']}</b> at τ = {viz.tau_text(self.state['tau'])}"
        return self.state

    def _dynamic(self) -> list:
        """The artists a τ move changes: the grid's frames and labels, the bars, τ line, title."""
        grid, bars = _axes(self.figure, "grid"), _axes(self.figure, "bars")
        return [*viz.marking_artists(grid), *bars.patches, *bars.lines, bars.title]

    def _groups(self) -> list[list]:
        """What changes together: each filter's marks; the bars (sorted, so their colours follow
        the count)."""
        grid, bars = _axes(self.figure, "grid"), _axes(self.figure, "bars")
        return [*viz.marking_groups(grid), list(bars.patches)]


def threshold_explorer(layer, probe=None, score: str = "max", tau: float = 0.1) -> W.VBox:
    """The explorer's widget, ready to display."""
    return ThresholdExplorer(layer, probe, score, tau).widget


# =============================================================================================
# 2. re-activation lab


def lab_scores(trainer: Trainer, score: str) -> np.ndarray:
    """``conv1`` scores of the trainer's model now (``silent`` listens on the trainer's fixed probe
    batch)."""
    return model_scores(trainer.model, score, probe=trainer.probe)


def lab_log(trainer: Trainer, tau: float | None = None, score: str = "max") -> list[dict]:
    """The lab's record from the trainer's per-epoch history: step, mean loss and every lab score
    per point.

    Scores (not fractions) are kept so that the curves can be redrawn at any τ; with ``tau`` each
    entry also gets its inactive fraction by ``score``.
    """
    log = []
    for h in trainer.history:
        entry = {"step": h["step"], "loss": h["loss"], "scores": {}}
        for s in LAB_SCORES:
            try:
                entry["scores"][s] = snapshot_scores(h["conv1"], s)
            except ValueError:  # an old history without the probe measurement
                pass
        log.append(entry)
    return _with_inactive(log, score, tau) if tau is not None else log


def _with_inactive(log: list[dict], score: str, tau: float) -> list[dict]:
    return [
        {
            **e,
            "inactive": float(np.mean(e["scores"][score] < tau))
            if score in e.get("scores", {})
            else None,
        }
        for e in log
    ]


def lab_spec(spec: CraftSpec | None, strategy: str, tau: float, score: str) -> CraftSpec:
    """The spec a lab action uses: the recipe's (strong-filter quantile, downstream, resets) with
    the lab's strategy, τ and detector."""
    return (spec or PAPER_READING).but(
        strategy=check_strategy(strategy), tau=float(tau), score=score
    )


def lab_reactivate(
    trainer: Trainer, strategy: str, tau: float, score: str = "max", spec: CraftSpec | None = None
) -> dict:
    """Re-activate ``conv1`` filters whose ``score`` is below ``tau`` now, log the event, return
    what changed.

    ``spec`` (e.g. ``recipe.craft``) supplies the context quantile, downstream and optimizer resets;
    without it the lab uses the first release's choices. The generator is seeded from the run's seed
    and the step, so a repeated click renews differently.
    """
    use = lab_spec(spec, strategy, tau, score)
    before_model = copy.deepcopy(trainer.model)
    before = lab_scores(trainer, score)
    generator = torch.Generator().manual_seed(
        trainer.config.seed * 100_003 + trainer.step + len(trainer.events)
    )
    result = reactivate_model(trainer.model, use, trainer.optimizer, trainer.probe, generator)
    event = event_record(trainer, result, source="lab", score=score)
    after = lab_scores(trainer, score)
    n, total = len(result.filters), result.total
    verb = "detected (left unchanged)" if strategy == "none" else "re-activated"
    return {
        "event": event,
        "filters": result.filters,
        "count": n,
        "score": score,
        "tau": float(tau),
        "before": to_numpy(before_model.conv1.weight),
        "after": to_numpy(trainer.model.conv1.weight).copy(),
        "stem_before": before_model.stem,
        "scores_before": before,
        "scores_after": after,
        "inactive_before": float(np.mean(before < tau)),
        "inactive_after": float(np.mean(after < tau)),
        "text": f"{STRATEGY_LABELS[strategy]}: {n} / {total} filters below τ = {viz.tau_text(tau)} "
        f"{verb} at step "
        f"{trainer.step}; inactive {np.mean(before < tau):.0%} → {np.mean(after < tau):.0%}",
    }


def lab_train(
    trainer: Trainer,
    steps: int,
    tau: float = 0.1,
    on_progress: Callable[[int, int], None] | None = None,
    chunk: int = 5,
    score: str = "max",
) -> dict:
    """Train ``steps`` more steps in chunks (reporting progress after each) and return losses and
    activity."""
    steps = int(steps)
    if not 1 <= steps <= MAX_LAB_STEPS:
        raise ValueError(f"number of steps must be between 1 and {MAX_LAB_STEPS}, got {steps}")
    first, losses = trainer.step, []
    while len(losses) < steps:
        losses += trainer.train_steps(min(chunk, steps - len(losses)))
        if on_progress is not None:
            on_progress(len(losses), steps)
    scores = {s: lab_scores(trainer, s) for s in LAB_SCORES}
    fraction = float(np.mean(scores[score] < tau))
    return {
        "steps": list(range(first + 1, trainer.step + 1)),
        "losses": losses,
        "inactive_fraction": fraction,
        "scores": scores,
        "text": f"trained {steps} steps (now step {trainer.step}, epoch {trainer.epoch}): last "
        f"loss "
        f"{losses[-1]:.3f}, inactive {fraction:.0%} at τ = {viz.tau_text(tau)}",
    }


def lab_state(
    trainer: Trainer, score: str, tau: float, log: list[dict], scores: np.ndarray | None = None
) -> dict:
    """What every part of the lab shows for the current model, score and τ: one mask, one count.

    ``scores``: the model's ``score`` scores when the caller already has them (a τ move changes no
    weight, so the lab computes them once per model state)."""
    scores = lab_scores(trainer, score) if scores is None else scores
    mask = scores < tau
    return {
        "score": score,
        "tau": float(tau),
        "mask": mask,
        "count": int(mask.sum()),
        "total": len(mask),
        "text": viz.count_text(mask),
        "step": trainer.step,
        "log": _with_inactive(log, score, tau),
    }


def _lab_grid(weight, mask, state_text: str) -> Figure:
    fig = viz.new_figure((LAB_GRID, LAB_GRID))
    ax = fig.subplots()
    ax.set_label("grid")
    viz.draw_filter_grid(ax, weight, mask, channels=False)
    ax.set_title(state_text, fontsize=10)
    return fig


def _lab_curves(log: list[dict], events: list[dict], score: str, tau: float) -> Figure:
    fig = viz.new_figure((FIGURE_WIDTH - LAB_GRID - 0.1, LAB_CURVES))
    viz.step_curves(log, events, fig=fig)
    fig.axes[1].set_title(_curves_title(score, tau), fontsize=10)
    return fig


def _curves_title(score: str, tau: float) -> str:
    return f"inactive: {viz.SHORT_SCORE[score]} < τ = {viz.tau_text(tau)}"


def _lab_before_after(result: dict | None, trainer: Trainer, face) -> Figure:
    """The last renewal's filters (and maps on ``face``) before and after; a placeholder until there
    is one."""
    fig = viz.new_figure((FIGURE_WIDTH - LAB_GRID - 0.1, LAB_RENEWAL if face is not None else 1.7))
    if result is None:
        fig.text(
            0.5,
            0.5,
            "nothing re-activated yet: press Re-activate\n(the renewed filters will show here, "
            "before and after)",
            ha="center",
            va="center",
            fontsize=10,
            color="dimgrey",
        )
        return fig
    viz.before_after(
        result["before"],
        result["after"],
        result["filters"],
        result["stem_before"],
        trainer.model.stem if result.get("stem_after") is None else result["stem_after"],
        face,
        fig=fig,
        limit=8,
    )
    return fig


def reactivation_view(
    trainer: Trainer,
    strategy: str = "contextual",
    tau: float = 0.1,
    face=None,
    score: str = "max",
    spec: CraftSpec | None = None,
) -> Figure:
    """Static twin of the lab: what ``Re-activate`` would do, previewed on a *copy* (the trainer is
    untouched).

    Top: the filters that would be renewed, before and after (with maps on ``face``); bottom: the
    curves. To really apply it, call ``lab_reactivate(trainer, strategy, tau)``.
    """
    preview = copy.copy(trainer)
    preview.model, preview.optimizer, preview.events = (
        copy.deepcopy(trainer.model),
        None,
        list(trainer.events),
    )
    result = lab_reactivate(preview, strategy, tau, score, spec)
    fig = viz.new_figure((11, 9))
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, 1])
    viz.before_after(
        result["before"],
        result["after"],
        result["filters"],
        result["stem_before"],
        preview.model.stem,
        face,
        fig=top,
    )
    viz.step_curves(_with_inactive(lab_log(trainer), score, tau), trainer.events, fig=bottom)
    fig.suptitle(f"preview — {result['text']}", fontsize=10)
    return fig


class ReactivationLab:
    """Pick a strategy, a detector and τ, press *Re-activate*, train N more steps, watch filters and
    curves.

    Every control change redraws every panel from one state (``lab_state``): the framed grid, its
    caption, the status line and the inactive curve always show the same count. ``spec`` (e.g.
    ``recipe.craft``) sets the detector and τ to start from, and the resets re-activation applies;
    ``caveat`` is a line shown above the controls (``FAST_LAB_CAVEAT`` where the lab cannot show
    what the text says).
    """

    def __init__(
        self,
        trainer: Trainer,
        face=None,
        strategy: str = "contextual",
        tau: float | None = None,
        steps: int = 20,
        score: str | None = None,
        spec: CraftSpec | None = None,
        caveat: str | None = None,
    ):
        self.trainer, self.face, self.spec = trainer, face, spec
        score = score or (spec.score if spec is not None and spec.score in LAB_SCORES else "max")
        tau = tau if tau is not None else (spec.tau if spec is not None else 0.1)
        self.log = lab_log(trainer)
        now = {
            s: lab_scores(trainer, s) for s in LAB_SCORES
        }  # the curves end where the model is now
        if self.log and self.log[-1]["step"] == trainer.step:
            self.log[-1]["scores"] = now
        else:
            self.log.append({"step": trainer.step, "loss": None, "scores": now})
        self.last: dict | None = (
            None  # the last lab_reactivate / lab_train result, for a closer look
        )
        self.last_reactivation: dict | None = None
        self.strategy = W.Dropdown(
            options=[(STRATEGY_LABELS[s], s) for s in STRATEGIES],
            value=strategy,
            description="strategy",
            layout=W.Layout(width="330px"),
        )
        self.score = W.Dropdown(
            options=[
                ("silent output (what the network hears)", "silent"),
                ("max |w| (the paper's small weights)", "max"),
            ],
            value=score,
            description="detector",
            layout=W.Layout(width="380px"),
        )
        self.tau = W.FloatLogSlider(
            value=max(tau, 1e-3),
            base=10,
            min=-3,
            max=0,
            step=0.05,
            description="τ",
            readout_format=".3g",
            continuous_update=False,
            layout=W.Layout(width="300px"),
        )
        self.reactivate_button = W.Button(
            description="Re-activate", button_style="warning", icon="refresh"
        )
        self.steps = W.IntText(value=steps, description="N", layout=W.Layout(width="140px"))
        self.train_button = W.Button(
            description="Train N more steps",
            button_style="primary",
            icon="play",
            layout=W.Layout(width="auto"),
        )
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress")
        self.status, self.error, self.grid_caption, self.last_caption = (
            W.HTML(),
            W.HTML(),
            W.HTML(),
            W.HTML(),
        )
        self.grid_image, self.curves_image = (
            png_image("craft-lab-grid"),
            png_image("craft-lab-curves"),
        )
        self.filters_image = png_image("craft-lab-filters")
        for w, cls in (
            (self.reactivate_button, "craft-reactivate"),
            (self.train_button, "craft-train"),
            (self.status, "craft-lab-status"),
            (self.error, "craft-error-box"),
            (self.tau, "craft-lab-tau"),
            (self.score, "craft-lab-score"),
            (self.grid_caption, "craft-lab-count"),
            (self.last_caption, "craft-lab-last"),
        ):
            w.add_class(cls)
        grid = W.VBox([self.grid_image, self.grid_caption])
        right = W.VBox([self.curves_image, self.filters_image, self.last_caption])
        self.caveat = W.HTML(
            f'<div style="background:#fff4d6;padding:2px 8px">{html.escape(caveat or "")}</div>'
        )
        self.caveat.add_class("craft-lab-caveat")
        self.widget = W.VBox(
            [self.caveat] * bool(caveat)
            + [
                W.HBox([self.strategy, self.score, self.tau]),
                W.HBox([self.reactivate_button, self.steps, self.train_button, self.progress]),
                self.status,
                self.error,
                W.HBox([grid, right], layout=W.Layout(flex_flow="row wrap")),
            ]
        )  # wraps when zoomed
        self.widget.add_class("craft-lab")
        self.reactivate_button.on_click(
            lambda _: self.run(self._reactivate, "re-activating the inactive filters …")
        )
        self.train_button.on_click(
            lambda _: self.run(self._train, f"training {self.steps.value} steps …")
        )
        self.tau.observe(lambda _: self.run(self._redraw_counts), names="value")
        self.score.observe(lambda _: self.run(self._redraw_counts), names="value")
        self.run(self._redraw_all)
        self._show_last()  # the placeholder: never an empty (broken) image

    @property
    def buttons(self) -> list[W.Button]:
        return [self.reactivate_button, self.train_button]

    def run(self, work: Callable[[], None], busy: str | None = None) -> None:
        """Run an action with the buttons disabled and errors shown in the widget; ``busy`` is
        shown in the status line at once (an action that computes for a second or more)."""
        if busy:
            self.status.value = f"<i>{html.escape(busy)}</i>"
        _guarded(self.error, self.buttons, work)

    # -- drawing: everything from one state ----------------------------------------------------
    def _redraw_all(self, message: str | None = None) -> None:
        """After the model changed: new figures, scores computed afresh, everything drawn."""
        self._scores: dict[str, np.ndarray] = {}
        self.grid_figure = _lab_grid(self.trainer.model.conv1.weight, np.zeros(64, bool), "")
        self.curves_figure = None
        self._redraw_counts(message, full=True)

    def _redraw_counts(self, message: str | None = None, full: bool = False) -> dict:
        """After τ or the score moved (or, ``full``, after the model changed): one state, every
        view. The weights did not change, so the scores come from the cache and only the marks,
        the inactive curve and the titles are redrawn (``redraw.Redrawer``)."""
        score = self.score.value
        if score not in self._scores:
            self._scores[score] = lab_scores(self.trainer, score)
        self.state = lab_state(self.trainer, score, self.tau.value, self.log, self._scores[score])
        grid_ax = _axes(self.grid_figure, "grid")
        viz.mark_filters(grid_ax, self.state["mask"])
        at = f"at τ = {viz.tau_text(self.state['tau'])} ({viz.SHORT_SCORE[self.state['score']]})"
        grid_ax.set_title(f"{self.state['text']} {at}", fontsize=10)
        if full:
            self.grid_redrawer = redraw.Redrawer(
                self.grid_figure,
                lambda: [*viz.marking_artists(grid_ax), grid_ax.title],
                groups=lambda: viz.marking_groups(grid_ax),
            )
        self.grid_image.value = self.grid_redrawer.png(full=full)
        self.curves_image.value = self._curves_png(full)
        self.grid_caption.value = _html_count(
            "craft-count-now", f"step {self.state['step']}: {self.state['text']}"
        )
        now = f"step {self.state['step']}: <b>{self.state['text']}</b> {html.escape(at)}"
        self.status.value = (
            f"{html.escape(message)}<br>{now}"
            if message
            else f"{now} — press <i>Re-activate</i> to renew them"
        )
        return self.state

    def _curves_png(self, full: bool) -> bytes:
        """The loss and inactive-fraction curves: drawn anew after training or a renewal; after a
        τ or score move only the inactive curve and its title change."""
        s = self.state
        if full or self.curves_figure is None:
            self.curves_figure = _lab_curves(s["log"], self.trainer.events, s["score"], s["tau"])
            ax = self.curves_figure.axes[1]
            self.curves_redrawer = redraw.Redrawer(
                self.curves_figure, lambda: [*ax.lines, ax.title]
            )
            return self.curves_redrawer.png(full=True)
        ax = self.curves_figure.axes[1]
        points = [
            (r["step"], r["inactive"])
            for r in s["log"]
            if r.get("inactive") is not None and np.isfinite(r["inactive"])
        ]
        line = next((l for l in ax.lines if l.get_label() == "inactive"), None)
        if line is not None and points:
            line.set_data(*zip(*points))
        ax.set_title(_curves_title(s["score"], s["tau"]), fontsize=10)
        return self.curves_redrawer.png()

    def _show_last(self) -> None:
        r = self.last_reactivation
        self.filters_image.value = render(_lab_before_after(r, self.trainer, self.face))
        if r is not None:
            self.last_caption.value = _html_count(
                "craft-count-last",
                f"last re-activation: {r['count']} filters at step {r['event']['step']} "
                f"({viz.SHORT_SCORE[r['score']]} < τ = {viz.tau_text(r['tau'])}, "
                f"{r['event']['strategy']})",
            )

    # -- actions ---------------------------------------------------------------------------------
    def _reactivate(self) -> None:
        result = lab_reactivate(
            self.trainer, self.strategy.value, self.tau.value, self.score.value, self.spec
        )
        self.last = self.last_reactivation = result
        self.log.append(
            {
                "step": self.trainer.step,
                "loss": None,
                "scores": {s: lab_scores(self.trainer, s) for s in LAB_SCORES},
            }
        )
        self._show_last()
        self._redraw_all(result["text"])

    def _progress(self, done: int, total: int) -> None:
        self.progress.max, self.progress.value = total, done

    def _train(self) -> None:
        self.progress.value = 0
        result = lab_train(
            self.trainer,
            self.steps.value,
            self.tau.value,
            on_progress=self._progress,
            score=self.score.value,
        )
        self.last = result
        self.log += [
            {"step": s, "loss": l, "scores": {}} for s, l in zip(result["steps"], result["losses"])
        ]
        self.log[-1]["scores"] = result["scores"]
        self._redraw_all(result["text"])


# =============================================================================================
# 3. comparison dashboard
