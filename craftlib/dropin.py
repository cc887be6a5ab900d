"""CRAFT in your own training loop: two calls, the study's defaults (``docs/DROPIN.md``).

``Craft`` holds a model, its optimizer and a ``CraftSpec`` (default: the spec the study ran), and
builds its callback with ``CraftSpec.callback`` — the one place craftlib builds one — so a plain
loop, the Lightning callback (``craftlib.lightning``) and craftlib's own ``Trainer`` run the same
CRAFT. Call ``after_step()`` after each optimizer step and ``after_epoch()`` after each epoch; each
re-activation is appended to ``events``.

The model must be FaceCNN-like: a first convolution ``conv1`` (with ``bn1`` and ``act1`` where it
has them, and ``stem()`` for the probe detectors), as ``craftlib.models.FaceCNN`` and
``craftlib.iresnet`` are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from .activity import PROBE_SCORES
from .reactivation import CraftSpec


@dataclass
class LoopState:
    """What a CRAFT callback reads from a loop: the attributes craftlib's ``Trainer`` has under the
    same names."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: SimpleNamespace  # ``epochs``: the run's length, which decides when re-activation stops
    probe: torch.Tensor | None = None
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    events: list[dict] = field(default_factory=list)


class Craft:
    """CRAFT for a plain PyTorch loop: ``after_step()`` after every optimizer step,
    ``after_epoch()`` after every epoch.

    ``probe``: a fixed batch of training images (e.g. 256, spread over the set) that the default
    ``silent`` detector listens to; a weight detector (``spec.but(score="max")``) needs none.
    ``cls`` is passed to ``CraftSpec.callback`` (``craftlib.scale.distributed.SyncedReactivation``
    under DDP).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        spec: CraftSpec = CraftSpec(),
        seed: int = 0,
        probe: torch.Tensor | None = None,
        cls: type | None = None,
    ):
        if not isinstance(getattr(model, "conv1", None), nn.Conv2d):
            raise ValueError(
                f"CRAFT renews the filters of model.conv1; {type(model).__name__} has no conv1 "
                "convolution (craftlib.iresnet and craftlib.models.FaceCNN have one)"
            )
        if spec.score in PROBE_SCORES and probe is None:
            raise ValueError(
                f"the {spec.score!r} detector listens to a fixed batch of training images: pass "
                f"probe= "
                "(e.g. 256 of them), or use a weight detector: spec.but(score='max')"
            )
        self.spec = spec
        self.state = LoopState(model, optimizer, SimpleNamespace(epochs=epochs), probe)
        self.callback = spec.callback(seed, epochs, cls)
        self.callback.on_train_start(self.state)

    @property
    def events(self) -> list[dict]:
        """One entry per re-activation: epoch, step, the renewed filters, the strategy."""
        return self.state.events

    def after_step(self) -> None:
        self.state.step += 1
        self.callback.on_step_end(self.state)

    def after_epoch(self) -> None:
        self.state.epoch += 1
        self.callback.on_epoch_end(self.state)
