"""craftlib: CRAFT (Contextual Re-Activation of Filters) for face-recognition training.

The core, in reading order (one concept per module): ``data`` (LFW in the model's format, the fixed
probe batch), ``models`` and ``losses`` (the face CNN, its margin heads), ``training`` (the loop and
its history), ``runs`` (``train_or_load``: the notebooks' runs, trained once), ``activity`` (which
filters are inactive; ``SILENT_TAU``), ``reactivation`` (bringing them back: ``CraftSpec``,
``ReactivationCallback``), ``recipes`` (named configurations), ``verification`` (the LFW protocol),
``viz`` and ``widgets``. Around it: ``craftlib.study`` (many seeds, honest statistics),
``craftlib.companions`` (notebooks 06-08), ``craftlib.scale`` (GPUs, DDP) and ``craftlib.workshop``
(install, checks, the command line); the picture is docs/ARCHITECTURE.md.

The names a newcomer needs are importable from here (``from craftlib import Trainer, CraftSpec``);
they load on first use, so ``import craftlib`` alone needs no torch (``python -m
craftlib.workshop.install`` installs it).
"""

__version__ = "0.2.0"

_EXPORTS = {
    "LFW": "data",
    "FaceCNN": "models",
    "ModelConfig": "models",
    "MarginHead": "losses",
    "Trainer": "training",
    "TrainConfig": "training",
    "train_or_load": "runs",
    "SILENT_TAU": "activity",
    "model_scores": "activity",
    "CraftSpec": "reactivation",
    "PAPER_READING": "reactivation",
    "ReactivationCallback": "reactivation",
    "reactivate_model": "reactivation",
    "RECIPES": "recipes",
    "evaluate": "verification",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Load an exported name's module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'craftlib' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"craftlib.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
