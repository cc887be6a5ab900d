"""LFW: finding it, reading its pair files, preprocessing faces, and identity-disjoint splits.

Discovery order (first hit wins): explicit path -> ``$CRAFTLIB_DATA`` -> ``data/lfw`` in the repo ->
scikit-learn's cache (``~/scikit_learn_data/lfw_home``) -> download with scikit-learn's LFW
fetcher (figshare mirrors, SHA-256 checked) when online.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .paths import ENV_DATA, REPO_ROOT, atomic_write, cache_dir

IMAGE_DIRS = ("lfw-deepfunneled", "lfw_funneled", "lfw")
PAIR_FILES = {"devtrain": "pairsDevTrain.txt", "devtest": "pairsDevTest.txt", "view2": "pairs.txt"}
DEFAULT_CROP = (69, 74, 181, 186)  # (left, top, right, bottom) on the 250x250 frame: the face
DEFAULT_SIZE = 48
CACHE_VERSION = 1

HOW_TO_GET_LFW = f"""\
How to get LFW (about 200 MB):
  * online: craftlib downloads it with scikit-learn on first use, or run
      python -c "import craftlib.data as d; d.download_lfw()"
    (files land in ~/scikit_learn_data/lfw_home/);
  * offline: copy an LFW folder and point {ENV_DATA} at it, e.g.
      export {ENV_DATA}=/path/to/lfw
Expected layout of that folder:
  lfw/                      <- the folder {ENV_DATA} names
    lfw-deepfunneled/       (or lfw_funneled/ or lfw/)
      Aaron_Eckhart/Aaron_Eckhart_0001.jpg ...
    pairs.txt  pairsDevTrain.txt  pairsDevTest.txt"""


class LFWNotFoundError(FileNotFoundError):
    """No usable LFW folder was found and none could be downloaded."""


class DataError(ValueError):
    """A corrupt image, a missing image or a malformed pair file, with the file (and line) named."""


@dataclass(frozen=True)
class Pair:
    """One verification pair: relative image paths, the label, its fold and where it came from."""

    left: str
    right: str
    same: bool
    fold: int
    line: int


# --------------------------------------------------------------------------------------------
# discovery


def _image_dir(folder: Path) -> Path | None:
    """The image folder inside an LFW root, or the root itself when it already holds identities."""
    for name in IMAGE_DIRS:
        if (folder / name).is_dir():
            return folder / name
    if folder.is_dir() and any(p.is_dir() and any(p.glob(f"{p.name}_*.jpg")) for p in _first(folder, 5)):
        return folder
    return None


def _first(folder: Path, n: int) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            out.append(p)
            if len(out) == n:
                break
    return out


def sklearn_lfw_home() -> Path:
    """scikit-learn's LFW cache folder (honours ``$SCIKIT_LEARN_DATA``)."""
    from sklearn.datasets import get_data_home

    return Path(get_data_home()) / "lfw_home"


def download_lfw() -> Path:
    """Download LFW (funneled images + the three pair files) with scikit-learn's fetcher."""
    from sklearn.datasets._lfw import _check_fetch_lfw  # the machinery behind fetch_lfw_pairs

    lfw_home, _ = _check_fetch_lfw(funneled=True, download_if_missing=True)
    return Path(lfw_home)


def candidate_roots(path: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, each with a label saying where it came from."""
    found = []
    if path is not None:
        found.append(("argument", Path(path)))
    if os.environ.get(ENV_DATA):
        found.append((f"${ENV_DATA}", Path(os.environ[ENV_DATA])))
    found.append(("repo data/lfw", REPO_ROOT / "data" / "lfw"))
    found.append(("scikit-learn cache", sklearn_lfw_home()))
    return found


def find_lfw(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the LFW root folder (the one holding the image folder and pair files).

    An explicit ``path`` or ``$CRAFTLIB_DATA`` that is set but unusable is an error, not a reason
    to fall through silently: the user asked for that folder.
    """
    for origin, root in candidate_roots(path):
        root = root.expanduser()
        if _image_dir(root) is not None:
            return root.resolve()
        if origin in ("argument", f"${ENV_DATA}"):
            raise LFWNotFoundError(f"{origin} points to {root}, which holds no LFW images.\n{HOW_TO_GET_LFW}")
    if download:
        try:
            return download_lfw().resolve()
        except Exception as err:  # offline, mirror down, checksum mismatch: all end the same way
            raise LFWNotFoundError(f"LFW not found locally and the download failed ({err}).\n{HOW_TO_GET_LFW}") from err
    raise LFWNotFoundError(f"LFW not found (download disabled).\n{HOW_TO_GET_LFW}")


# --------------------------------------------------------------------------------------------
# pair files


def _index(field_: str, path: Path, lineno: int) -> int:
    try:
        value = int(field_)
    except ValueError:
        raise DataError(f"{path}:{lineno}: image number {field_!r} is not an integer") from None
    if value < 1:
        raise DataError(f"{path}:{lineno}: image numbers are 1-based, got {value}")
    return value


def image_name(person: str, number: int) -> str:
    """Relative path of image ``number`` (1-based) of ``person``."""
    return f"{person}/{person}_{number:04d}.jpg"


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Parse an official LFW pair file (View 1 ``N`` header or View 2 ``folds<TAB>N`` header).

    View 2 keeps its 10 official folds. View 1 has none, so each class is cut into 10 contiguous
    blocks and block k of both classes forms fold k, mirroring View 2's structure.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pair file {path} does not exist")
    lines = path.read_text().splitlines()
    if not lines:
        raise DataError(f"{path}:1: empty pair file")
    header = lines[0].split()
    try:
        folds, per_class = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    except (ValueError, IndexError):
        raise DataError(f"{path}:1: header {lines[0]!r} is not 'N' or 'FOLDS<TAB>N'") from None
    body = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]
    expected = 2 * folds * per_class
    if len(body) != expected:
        raise DataError(f"{path}:1: header promises {expected} pairs, found {len(body)} lines")
    pairs = []
    for k, (lineno, line) in enumerate(body):
        parts = line.split()
        if len(parts) == 3:
            left, right, same = image_name(parts[0], _index(parts[1], path, lineno)), image_name(parts[0], _index(parts[2], path, lineno)), True
        elif len(parts) == 4:
            left, right, same = image_name(parts[0], _index(parts[1], path, lineno)), image_name(parts[2], _index(parts[3], path, lineno)), False
        else:
            raise DataError(f"{path}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {line!r}")
        block, pos = divmod(k, per_class)  # block = fold*2 + class
        should_be_same = block % 2 == 0
        if same != should_be_same:
            raise DataError(f"{path}:{lineno}: a {'same' if same else 'different'}-person pair where the format "
                            f"expects {'same' if should_be_same else 'different'}-person pairs")
        fold = block // 2 if folds > 1 else pos * 10 // per_class
        pairs.append(Pair(left, right, same, fold, lineno))
    return pairs


def identities_by_fold(pairs: list[Pair]) -> dict[int, set[str]]:
    """The people appearing in each fold of a pair list: View 2's folds must not share anyone."""
    folds: dict[int, set[str]] = {}
    for p in pairs:
        folds.setdefault(p.fold, set()).update(name.split("/")[0] for name in (p.left, p.right))
    return dict(sorted(folds.items()))


# --------------------------------------------------------------------------------------------
# preprocessing with an on-disk cache


def load_face(path: Path, crop: tuple[int, int, int, int] = DEFAULT_CROP, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Decode one image, crop the face box and resize to ``size``x``size`` RGB uint8."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (250, 250):  # other LFW variants: scale the box to the frame
                sx, sy = im.size[0] / 250, im.size[1] / 250
                box = (round(crop[0] * sx), round(crop[1] * sy), round(crop[2] * sx), round(crop[3] * sy))
            else:
                box = crop
            face = im.crop(box).resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(face, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot decode image ({err}); re-copy this file from LFW") from None


def _cache_key(root: Path, names: list[str], crop, size: int) -> str:
    stats = []
    for name in names:
        try:
            st = (root / name).stat()
            stats.append(f"{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            stats.append("missing")
    blob = json.dumps({"v": CACHE_VERSION, "root": str(root), "names": names, "stats": stats,
                       "crop": list(crop), "size": size, "resample": "bilinear"})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_faces(image_root: Path, names: list[str], crop=DEFAULT_CROP, size: int = DEFAULT_SIZE,
               cache: bool = True, progress: bool = False) -> np.ndarray:
    """Load many faces as an ``N x size x size x 3`` uint8 array, cached on disk.

    The cache key covers every pixel-changing parameter (crop, size, resampling, file list and each
    file's size and mtime), so changing any of them rebuilds the cache instead of serving stale faces.
    """
    image_root = Path(image_root)
    crop = tuple(int(c) for c in crop)
    if not (0 <= crop[0] < crop[2] and 0 <= crop[1] < crop[3]):
        raise ValueError(f"crop box {crop} must be (left, top, right, bottom) with left<right, top<bottom")
    if size < 8:
        raise ValueError(f"size {size} is too small; use at least 8 px")
    key = _cache_key(image_root.resolve(), list(names), crop, size)
    target = cache_dir() / f"faces-{size}px-{key}.npy"
    if cache and target.is_file():
        try:
            arr = np.load(target, allow_pickle=False)
            if arr.shape == (len(names), size, size, 3):
                return arr
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt, never trusted
    from tqdm.auto import tqdm

    arr = np.empty((len(names), size, size, 3), dtype=np.uint8)
    for i, name in enumerate(tqdm(names, desc="faces", disable=not progress, leave=False)):
        arr[i] = load_face(image_root / name, crop, size)
    if cache:
        atomic_write(target, lambda tmp: np.save(open(tmp, "wb"), arr, allow_pickle=False))
    return arr


# --------------------------------------------------------------------------------------------
# datasets and splits


@dataclass
class FaceSet:
    """Training faces: uint8 images, integer identity labels and the names behind them."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    files: list[str] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class PairSet:
    """Verification pairs over a deduplicated image array (``left``/``right`` index into it)."""

    images: np.ndarray
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    files: list[str] = field(repr=False)
    name: str = ""

    def __len__(self) -> int:
        return len(self.same)


class LFW:
    """An LFW folder: people, pair files, and identity-disjoint training/evaluation sets."""

    def __init__(self, root: str | os.PathLike | None = None, download: bool = True,
                 crop=DEFAULT_CROP, size: int = DEFAULT_SIZE):
        self.root = find_lfw(root, download=download)
        self.image_root = _image_dir(self.root)
        self.crop, self.size = tuple(crop), int(size)
        self.people = {p.name: sorted(f.name for f in p.glob("*.jpg"))
                       for p in sorted(self.image_root.iterdir()) if p.is_dir()}

    def __repr__(self) -> str:
        return f"LFW({self.image_root}, {len(self.people)} people, {self.size}px)"

    def pair_file(self, protocol: str) -> Path:
        if protocol not in PAIR_FILES:
            raise ValueError(f"protocol must be one of {sorted(PAIR_FILES)}, got {protocol!r}")
        for folder in (self.root, self.image_root, self.image_root.parent):
            if (folder / PAIR_FILES[protocol]).is_file():
                return folder / PAIR_FILES[protocol]
        raise DataError(f"{PAIR_FILES[protocol]} not found beside {self.image_root}.\n{HOW_TO_GET_LFW}")

    def pair_identities(self, protocol: str) -> set[str]:
        return {name.split("/")[0] for p in read_pairs(self.pair_file(protocol)) for name in (p.left, p.right)}

    def training_set(self, exclude: str = "devtest", min_images: int = 2, max_identities: int | None = None,
                     progress: bool = False) -> FaceSet:
        """Everyone with ``>= min_images`` images who does not appear in the ``exclude`` pairs.

        ``max_identities`` keeps the first N such identities in name order (a small, still disjoint, FAST set).
        """
        banned = self.pair_identities(exclude) if exclude else set()
        people = [(n, f) for n, f in self.people.items() if len(f) >= min_images and n not in banned]
        if max_identities is not None:
            people = people[:max_identities]
        if not people:
            raise DataError(f"no training identities with >= {min_images} images outside {exclude!r}")
        files = [f"{n}/{img}" for n, imgs in people for img in imgs]
        labels = np.array([i for i, (_, imgs) in enumerate(people) for _ in imgs], dtype=np.int64)
        images = load_faces(self.image_root, files, self.crop, self.size, progress=progress)
        return FaceSet(images, labels, [n for n, _ in people], files)

    def pairs(self, protocol: str = "devtest", progress: bool = False) -> PairSet:
        """The verification pairs of a protocol, each image decoded once."""
        path = self.pair_file(protocol)
        pairs = read_pairs(path)
        for p in pairs:
            for name in (p.left, p.right):
                if not (self.image_root / name).is_file():
                    raise DataError(f"{path}:{p.line}: refers to {name}, which is not in {self.image_root}")
        files = sorted({n for p in pairs for n in (p.left, p.right)})
        index = {n: i for i, n in enumerate(files)}
        images = load_faces(self.image_root, files, self.crop, self.size, progress=progress)
        return PairSet(images,
                       np.array([index[p.left] for p in pairs]), np.array([index[p.right] for p in pairs]),
                       np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]), files, protocol)
