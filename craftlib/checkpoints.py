"""Checkpoints written atomically and read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values; ``format`` lets a future version refuse
(instead of misreading) an old file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .iresnet import backbone_for, backbone_name, iresnet_from_state_dict
from .models import ModelConfig
from .paths import atomic_write

FORMAT = "craftlib-checkpoint-1"


class CheckpointError(ValueError):
    """The file is not a craftlib checkpoint, is damaged, or does not fit the model asked for."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus the format tag) to ``path`` via a temporary file and a rename."""
    payload = {"format": FORMAT, **payload}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(
    path: str | Path,
    expect_model: ModelConfig | None = None,
    expect_classes: int | None = None,
    expect_names: list[str] | None = None,
    expect_variant: str | None = None,
) -> dict:
    """Load safely and check it fits: a clear ``CheckpointError`` instead of a shape traceback.

    ``expect_names`` and ``expect_variant`` refuse a checkpoint trained on other identities or on
    another LFW variant (a checkpoint that does not record them is not checked).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a {FORMAT} file "
            f"(format={ckpt.get('format') if isinstance(ckpt, dict) else None!r})"
        )
    saved = ModelConfig.from_dict(ckpt["config"]["model"])
    if expect_model is not None and saved != expect_model:
        diff = {
            k: (v, getattr(expect_model, k))
            for k, v in saved.__dict__.items()
            if getattr(expect_model, k) != v
        }
        raise CheckpointError(f"{path}: model does not match (saved vs expected: {diff})")
    if expect_classes is not None and ckpt.get("num_classes") != expect_classes:
        raise CheckpointError(
            f"{path}: trained on {ckpt.get('num_classes')} identities, this run has "
            f"{expect_classes}"
        )
    saved_names = ckpt.get("classes")
    if (
        expect_names is not None
        and saved_names is not None
        and list(saved_names) != list(expect_names)
    ):
        differ = [(a, b) for a, b in zip(saved_names, expect_names) if a != b]
        raise CheckpointError(
            f"{path}: trained on other identities ({len(differ)} of {len(expect_names)} differ, "
            f"e.g. {differ[0][0]!r} saved, {differ[0][1]!r} here); resume it on the data it was "
            "trained on (same LFW folder and --max-identities)"
        )
    saved_variant = ckpt.get("data_variant")
    if expect_variant is not None and saved_variant is not None and saved_variant != expect_variant:
        raise CheckpointError(
            f"{path}: trained on {saved_variant} LFW, this data is {expect_variant}"
        )
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the embedding network (the FaceCNN or the iResNet it holds) from a checkpoint."""
    ckpt = load_checkpoint(path)
    config = ModelConfig.from_dict(ckpt["config"]["model"])
    model = backbone_for(backbone_name(ckpt["model"]), config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the saved architecture ({err})"
        ) from None
    return model.to(device).eval(), ckpt


def load_embedding_model(path: str | Path) -> nn.Module:
    """A trained backbone from a craftlib checkpoint (any backbone) or an arcface_torch ``model.pt``
    state_dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return load_model(path)[0]
    if not isinstance(obj, dict) or "layer1.0.conv1.weight" not in obj:
        raise CheckpointError(
            f"{path}: neither a craftlib checkpoint nor an iResNet state_dict (arcface_torch "
            f"model.pt)"
        )
    try:
        return iresnet_from_state_dict(obj).eval()
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: weights do not fit an iResNet ({err})") from None
