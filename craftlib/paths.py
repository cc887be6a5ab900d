"""Where craftlib looks for data, models and its cache, and how it writes files safely."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

ENV_HOME = "CRAFTLIB_HOME"
PACKAGE_DIR = Path(__file__).resolve().parent


def _root() -> Path:
    """The checkout this package lives in; for a plain install (Colab, a room kit's wheel) a work
    folder.

    An editable checkout has ``pyproject.toml`` beside ``craftlib/``; an installed wheel sits in
    site-packages, where ``data/`` and ``runs/`` must not go: then ``$CRAFTLIB_HOME`` or
    ``~/craftlib``.
    """
    if (PACKAGE_DIR.parent / "pyproject.toml").is_file():
        return PACKAGE_DIR.parent
    return Path(os.environ.get(ENV_HOME) or Path.home() / "craftlib")


REPO_ROOT = _root()
"""The checkout this package lives in (``data/`` and ``runs/`` sit beside ``craftlib/``), or for a
plain install ``$CRAFTLIB_HOME`` (default ``~/craftlib``)."""
IS_CHECKOUT = REPO_ROOT == PACKAGE_DIR.parent

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
    """Folder for training runs the notebooks keep and reuse: ``$CRAFTLIB_RUNS`` or ``runs/`` in the
    repo."""
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


def write_json(path: str | os.PathLike, obj) -> Path:
    """``obj`` as indented JSON at ``path``, written atomically: the one JSON writer of the command
    lines."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed ``atomic_write`` left in ``folder`` (``.NAME.XXXX.tmp``).

    Call it only as the folder's one writer (``folder_lock``): another writer's file in flight looks
    the same.
    """
    orphans = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans


LOCK_NAME = ".craftlib-lock"  # kept after release (removing a lock file races); .gitignore lists it
OWNER_NAME = ".craftlib-lock.owner"  # who holds it, while they do


class FolderInUseError(ValueError):
    """Another process is writing into this folder (a ``ValueError``: the command line reports it
    with exit 2)."""


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Be the only writer of ``folder`` while the block runs, or fail at once with
    ``FolderInUseError``.

    Two comparisons writing one results folder would overwrite each other's records; the lock
    (``filelock``: an OS lock the kernel drops when its holder dies, so a crash never leaves the
    folder stuck) makes the second one stop before it writes anything, with the first one's PID in
    the message.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = folder / OWNER_NAME
        holder = owner.read_text().strip() if owner.is_file() else "another process"
        raise FolderInUseError(
            f"{folder} is in use by {holder}: one writer per folder. Wait for it to finish, "
            "or write somewhere else"
        ) from None
    try:
        (folder / OWNER_NAME).write_text(f"PID {os.getpid()} on {socket.gethostname()}\n")
        yield folder
    finally:
        (folder / OWNER_NAME).unlink(missing_ok=True)
        lock.release()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (downloads and packaged tensors are checked with
    it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def search_order(path: str | os.PathLike | None, env: str, in_repo: Path) -> list[tuple[str, Path]]:
    """Where a data folder is looked for, first hit wins: an explicit argument, ``$env``, then
    ``in_repo``.

    Each place comes with a label saying where it came from, for error messages.
    """
    found = [("argument", Path(path))] if path is not None else []
    if os.environ.get(env):
        found.append((f"${env}", Path(os.environ[env])))
    return found + [(f"repo {in_repo.parent.name}/{in_repo.name}", in_repo)]
