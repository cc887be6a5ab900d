"""insightface's verification ``.bin`` files (lfw, cfp_fp, agedb_30, calfw, cplfw), read safely into
a ``PairSet``.

A ``.bin`` is a pickle of ``(bins, issame_list)``: two encoded JPEG/PNG images per pair, one bool
per pair. Loading a pickle can run any code its author chose, so ``read_bin`` uses an unpickler that
refuses every global (no class or function can be named, hence none can be called): only bytes,
lists, tuples, bools and ints can come out, and their types are checked again afterwards. The pairs
form 10 consecutive folds, the field's convention (insightface's
``KFold`` without shuffling), so ``craftlib.verification.evaluate`` scores them with the usual
10-fold protocol.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from craftlib.data import DataError, PairSet
from craftlib.paths import atomic_write

from .facefolders import decode_face

BENCHMARKS = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")
FOLDS = 10


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a class or function: not plain data, refused before anything is called."""


class _PlainData(pickle.Unpickler):
    """An unpickler for which no global exists, so no object but bytes/str/numbers/containers can be
    built."""

    def find_class(self, module: str, name: str):
        raise UnsafePickleError(f"it names {module}.{name}")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"it holds a persistent id {pid!r}")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            return _PlainData(
                f, encoding="bytes"
            ).load()  # "bytes": Python 2 str (older .bin files) stays bytes
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnsafePickleError as err:
        raise DataError(
            f"{path}: refused: {err}, and a verification .bin holds only encoded images and bools"
        ) from None
    except (
        Exception
    ) as err:  # a truncated or garbled pickle fails in many ways; all mean the same to the user
        raise DataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None


def _validate(obj, path: Path) -> tuple[list[bytes], list[bool]]:
    """The pickle's content must be exactly ``(list of bytes, list of bools)`` with two images per
    pair."""
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{path}: expected a pair (bins, issame_list), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or any(type(b) is not bytes for b in bins):
        raise DataError(f"{path}: bins must be a list of encoded images (bytes)")
    if not isinstance(issame, (list, tuple)) or any(
        type(s) not in (bool, int) or s not in (0, 1) for s in issame
    ):
        raise DataError(f"{path}: issame_list must be a list of bools")
    if len(bins) != 2 * len(issame):
        raise DataError(
            f"{path}: {len(bins)} images for {len(issame)} pairs; expected two images per pair"
        )
    if len(issame) < FOLDS:
        raise DataError(f"{path}: {len(issame)} pairs; the 10-fold protocol needs at least {FOLDS}")
    return list(bins), [bool(s) for s in issame]


def consecutive_folds(n: int, folds: int = FOLDS) -> np.ndarray:
    """Fold of each of ``n`` pairs in order: the sizes scikit-learn's unshuffled ``KFold`` gives
    (first ones +1)."""
    return np.repeat(np.arange(folds), [n // folds + (k < n % folds) for k in range(folds)])


def read_bin(path: str | os.PathLike, size: int = 112, progress: bool = False) -> PairSet:
    """Load a verification ``.bin`` as a ``PairSet`` of ``size`` px faces (pair i is images 2i and
    2i+1)."""
    from craftlib.progress import progress_bar

    path = Path(path)
    bins, issame = _validate(_unpickle(path), path)
    images = np.empty((len(bins), size, size, 3), dtype=np.uint8)
    for i, blob in enumerate(progress_bar(bins, desc=path.name, disable=not progress, leave=False)):
        images[i] = decode_face(io.BytesIO(blob), size, f"{path}: image {i} (pair {i // 2})")
    left = np.arange(0, len(bins), 2)
    return PairSet(
        images,
        left,
        left + 1,
        np.array(issame, dtype=bool),
        consecutive_folds(len(issame)),
        [f"{path.name}[{i}]" for i in range(len(bins))],
        path.stem,
    )


def _encode(image: np.ndarray, image_format: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(
        buf, format=image_format, **({"quality": 95} if image_format == "JPEG" else {})
    )
    return buf.getvalue()


def write_bin(path: str | os.PathLike, pairs: PairSet, image_format: str = "PNG") -> Path:
    """Write ``pairs`` in the ``.bin`` format: for tests and for converting other pair lists (e.g.
    LFW's).

    Pairs are written fold by fold, so a ``PairSet`` with 10 equal folds reads back with the same
    folds. PNG is lossless (an exact round trip); JPEG (quality 95) is what insightface's own files
    hold.
    """
    image_format = image_format.upper()
    if image_format not in ("PNG", "JPEG"):
        raise ValueError(f"image_format must be 'PNG' or 'JPEG', got {image_format!r}")
    order = np.argsort(pairs.folds, kind="stable")
    bins = [
        _encode(pairs.images[side[i]], image_format)
        for i in order
        for side in (pairs.left, pairs.right)
    ]
    issame = [bool(pairs.same[i]) for i in order]
    return atomic_write(
        path,
        lambda tmp: tmp.write_bytes(pickle.dumps((bins, issame), protocol=pickle.HIGHEST_PROTOCOL)),
    )
