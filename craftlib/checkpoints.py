"""Checkpoints written atomically and read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values; ``format`` lets a future version refuse
(instead of misreading) an old file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .models import FaceCNN, ModelConfig
from .paths import atomic_write

FORMAT = "craftlib-checkpoint-1"


class CheckpointError(ValueError):
    """The file is not a craftlib checkpoint, is damaged, or does not fit the model asked for."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus the format tag) to ``path`` via a temporary file and a rename."""
    payload = {"format": FORMAT, **payload}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, expect_model: ModelConfig | None = None,
                    expect_classes: int | None = None) -> dict:
    """Load safely and check it fits: a clear ``CheckpointError`` instead of a shape traceback."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (format={ckpt.get('format') if isinstance(ckpt, dict) else None!r})")
    saved = ModelConfig.from_dict(ckpt["config"]["model"])
    if expect_model is not None and saved != expect_model:
        diff = {k: (v, getattr(expect_model, k)) for k, v in saved.__dict__.items() if getattr(expect_model, k) != v}
        raise CheckpointError(f"{path}: model does not match (saved vs expected: {diff})")
    if expect_classes is not None and ckpt.get("num_classes") != expect_classes:
        raise CheckpointError(f"{path}: trained on {ckpt.get('num_classes')} identities, this run has {expect_classes}")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[FaceCNN, dict]:
    """Rebuild the embedding network from a checkpoint (for evaluation or inspection)."""
    ckpt = load_checkpoint(path)
    model = FaceCNN(ModelConfig.from_dict(ckpt["config"]["model"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the saved architecture ({err})") from None
    return model.to(device).eval(), ckpt
