"""The hook points of the training loop, on the ground floor so that measuring code need not import
the loop."""

from __future__ import annotations

from typing import Any


class Callback:
    """Hook points of the loop; a callback may change the model and the optimizer state in place.

    ``trainer`` is a ``craftlib.training.Trainer`` (typed loosely here to keep this module
    dependency-free).
    """

    def on_train_start(self, trainer: Any) -> None: ...
    def on_step_end(self, trainer: Any) -> None: ...
    def on_epoch_end(self, trainer: Any) -> None: ...

    def state_dict(self) -> dict:
        """What a checkpoint must keep for a resumed run to continue as the uninterrupted one (e.g.
        a generator)."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...
