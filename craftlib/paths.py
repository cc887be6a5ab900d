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
ENV_FAST = "CRAFT_FAST"


def cache_dir() -> Path:
    """Folder for preprocessed faces: ``$CRAFTLIB_CACHE`` or ``data/cache`` in the repo."""
    path = Path(os.environ.get(ENV_CACHE) or REPO_ROOT / "data" / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def fast_mode(default: bool = False) -> bool:
    """True when ``CRAFT_FAST`` asks for the small CI budget (``1``, ``true``, ``yes``)."""
    value = os.environ.get(ENV_FAST)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
