"""CRAFT as a PyTorch Lightning callback (optional extra: ``pip install 'craftlib[lightning]'``;
``docs/DROPIN.md``).

``CraftCallback(spec)`` runs the same CRAFT as craftlib's own loop: it wraps ``dropin.Craft``, which
builds the callback with ``CraftSpec.callback``, and feeds it Lightning's steps and epochs. The
backbone with ``conv1`` is the LightningModule itself or its attribute named by ``backbone``; the
optimizer is the trainer's first. Without a ``probe``, the inputs of the first training batch (up to
256 images) are the fixed batch the ``silent`` detector listens to. Lightning comes from
``lightning.pytorch`` if that is already imported, else from
``pytorch_lightning`` (the extra's), else ``lightning.pytorch``.
"""

from __future__ import annotations

import sys

import torch

from .dropin import Craft
from .reactivation import CraftSpec

if "lightning.pytorch" in sys.modules:
    import lightning.pytorch as pl
else:
    try:
        import pytorch_lightning as pl
    except ImportError:
        import lightning.pytorch as pl

PROBE_SIZE = 256


class CraftCallback(pl.Callback):
    """Re-activate the backbone's inactive ``conv1`` filters on ``spec``'s schedule during
    ``Trainer.fit``.

    ``epochs`` defaults to the trainer's ``max_epochs`` (it decides when re-activation stops);
    ``events`` lists what was renewed, as craftlib's ``Trainer.events`` does.
    """

    def __init__(
        self,
        spec: CraftSpec = CraftSpec(),
        seed: int = 0,
        backbone: str | None = None,
        probe: torch.Tensor | None = None,
        epochs: int | None = None,
    ):
        self.spec, self.seed, self.backbone, self.probe, self.epochs = (
            spec,
            seed,
            backbone,
            probe,
            epochs,
        )
        self.craft: Craft | None = None

    @property
    def events(self) -> list[dict]:
        return self.craft.events if self.craft is not None else []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.craft is not None:
            return
        model = getattr(pl_module, self.backbone) if self.backbone else pl_module
        epochs = self.epochs or trainer.max_epochs
        if not epochs or epochs < 1:
            raise ValueError(
                "CraftCallback needs the run's length in epochs: set Trainer(max_epochs=...) or "
                "epochs="
            )
        probe = self.probe
        if probe is None:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            probe = inputs[:PROBE_SIZE].detach().clone()
        self.craft = Craft(
            model, trainer.optimizers[0], epochs, self.spec, self.seed, probe.to(pl_module.device)
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # an optimizer step was taken (not an accumulation batch)
        if trainer.global_step > self.craft.state.step:
            self.craft.after_step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.craft.after_epoch()
