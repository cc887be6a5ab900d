"""Where craftlib looks for data, models and its cache, and how it writes files safely."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this package lives in (``data/`` and ``runs/`` sit beside ``craftlib/``)."""

ENV_DATA = "CRAFTLIB_DATA"
ENV_MODELS = "CRAFTLIB_MODELS"
ENV_CACHE = "CRAFTLIB_CACHE"
ENV_RUNS = "CRAFTLIB_RUNS"
ENV_FAST = "CRAFT_FAST"


def cache_dir() -> Path:
    """Folder for preprocessed faces: ``$CRAFTLIB_CACHE`` or ``data/cache`` in the repo."""
    path = Path(os.environ.get(ENV_CACHE) or REPO_ROOT / "data" / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Folder for training runs the notebooks keep and reuse: ``$CRAFTLIB_RUNS`` or ``runs/`` in the repo."""
    path = Path(os.environ.get(ENV_RUNS) or REPO_ROOT / "runs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def fast_mode(default: bool = False) -> bool:
    """True when ``CRAFT_FAST`` asks for the small CI budget (``1``, ``true``, ``yes``)."""
    value = os.environ.get(ENV_FAST)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash half-way leaves the old file intact instead of a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def environment_report() -> dict[str, str]:
    """What a learner (or an instructor checking a room of laptops) needs to know before starting.

    Versions, the device and threads torch will use, FAST mode, and where LFW and the released
    MobileFaceNet weights were found (nothing is downloaded here).
    """
    import platform
    import sys

    import matplotlib
    import numpy
    import torch

    from . import __version__

    def version(module: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:
            return "not installed"

    from .training import pick_device

    report = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "craftlib": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "ipywidgets": version("ipywidgets"),
        "jupyterlab_widgets": version("jupyterlab_widgets"),
        "device": str(pick_device()),
        "torch threads": str(torch.get_num_threads()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "CPU cores": str(os.cpu_count()),
        "FAST mode": str(fast_mode()),
    }
    from .data import LFWNotFoundError, find_lfw

    try:
        report["LFW"] = str(find_lfw(download=False))
    except LFWNotFoundError:
        report["LFW"] = f"NOT FOUND (set ${ENV_DATA}; see craftlib.data.HOW_TO_GET_LFW)"
    from .pretrained import ModelNotFoundError, find_mobilefacenet

    try:
        report["MobileFaceNet"] = str(find_mobilefacenet(download=False))
    except ModelNotFoundError:
        report["MobileFaceNet"] = f"NOT FOUND (set ${ENV_MODELS}; notebook 02 downloads it when online)"
    report["face cache"] = str(cache_dir())
    return report
