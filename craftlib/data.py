"""LFW: finding it, reading its pair files, preprocessing faces, and identity-disjoint splits.

Discovery order (first hit wins): explicit path -> ``$CRAFTLIB_DATA`` -> ``data/lfw`` in the repo ->
scikit-learn's cache (``~/scikit_learn_data/lfw_home``) -> download of scikit-learn's LFW files
(figshare mirrors, SHA-256 checked, with a progress bar) when online.

Which LFW a folder holds (deep-funneled, funneled, original) is read from its *content*
(``detect_variant``: reference images compared by SHA-256 and by pixels), not only from the folder's
name; every run records it, and a variant other than ``DOCS_VARIANT`` is warned about.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .paths import (
    ENV_CACHE,
    ENV_DATA,
    REPO_ROOT,
    atomic_write,
    cache_dir,
    file_sha256,
    search_order,
)
from .validation import check

IMAGE_DIRS = ("lfw-deepfunneled", "lfw_funneled", "lfw")
VARIANTS = {"lfw-deepfunneled": "deepfunneled", "lfw_funneled": "funneled", "lfw": "original"}
DOCS_VARIANT = "deepfunneled"  # the variant every number in docs/ was measured on
PAIR_FILES = {"devtrain": "pairsDevTrain.txt", "devtest": "pairsDevTest.txt", "view2": "pairs.txt"}
VARIANT_LABELS = {
    "deepfunneled": "deep-funneled",
    "funneled": "funneled",
    "original": "original (unaligned)",
}
VARIANT_REFERENCES = Path(__file__).resolve().parent / "assets" / "lfw_variants.json"
PAIR_SHA256 = {  # the official files (the same checksums scikit-learn's LFW fetcher verifies)
    "pairs.txt": "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
    "pairsDevTrain.txt": "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa",
    "pairsDevTest.txt": "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c",
}
FIGSHARE = {  # what scikit-learn's fetch_lfw_pairs downloads (its own URLs and SHA-256)
    "lfw-funneled.tgz": (
        "https://ndownloader.figshare.com/files/5976015",
        "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
    ),
    "pairsDevTrain.txt": (
        "https://ndownloader.figshare.com/files/5976012",
        PAIR_SHA256["pairsDevTrain.txt"],
    ),
    "pairsDevTest.txt": (
        "https://ndownloader.figshare.com/files/5976009",
        PAIR_SHA256["pairsDevTest.txt"],
    ),
    "pairs.txt": ("https://ndownloader.figshare.com/files/5976006", PAIR_SHA256["pairs.txt"]),
}
DOWNLOAD_SIZE = (
    "about 230 MB"  # lfw-funneled.tgz plus the three pair files (scikit-learn's documented size)
)
DEFAULT_CROP = (69, 74, 181, 186)  # (left, top, right, bottom) on the 250x250 frame: the face
DEFAULT_SIZE = 48
CACHE_VERSION = 1

HOW_TO_GET_LFW = f"""\
How to get LFW:
  * online: craftlib downloads scikit-learn's copy on first use ({DOWNLOAD_SIZE}: 1-5 minutes on a
    good connection, then about a minute to unpack), or run
      python -c "import craftlib.data as d; d.download_lfw()"
    (files land in ~/scikit_learn_data/lfw_home/). That copy is the *funneled* variant; the numbers
    in docs/ come from the deep-funneled one (lfw-deepfunneled.tgz from the LFW site, or an
    instructor's copy);
  * offline: copy an LFW folder and point {ENV_DATA} at it, e.g.
      export {ENV_DATA}=/path/to/lfw
Expected layout of that folder:
  lfw/                      <- the folder {ENV_DATA} names
    lfw-deepfunneled/       (or lfw_funneled/ or lfw/)
      Aaron_Eckhart/Aaron_Eckhart_0001.jpg ...
    pairs.txt  pairsDevTrain.txt  pairsDevTest.txt"""


class LFWNotFoundError(FileNotFoundError):
    """No usable LFW folder was found and none could be downloaded."""


class VariantWarning(UserWarning):
    """The LFW found is not the variant the docs' numbers come from."""


class DataError(ValueError):
    """A corrupt image, a missing image or a malformed pair file, with the file (and line) named."""


class CacheWarning(UserWarning):
    """The face cache cannot be read or written; faces are decoded without it."""


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
    if folder.is_dir() and any(
        p.is_dir() and any(p.glob(f"{p.name}_*.jpg")) for p in _first(folder, 5)
    ):
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


def _fetch(url: str, sha256: str, target: Path, progress: bool = True) -> Path:
    """Download ``url`` to ``target`` with a progress bar; keep it only if its SHA-256 is
    ``sha256``."""
    import urllib.request

    from .progress import progress_bar

    if target.is_file() and file_sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress_bar(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=target.name,
            disable=not progress,
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    if digest.hexdigest() != sha256:
        part.unlink()
        raise OSError(
            f"{url}: SHA-256 {digest.hexdigest()} is not the expected {sha256}; nothing was kept"
        )
    os.replace(part, target)
    return target


def download_lfw(progress: bool = True) -> Path:
    """Download LFW as scikit-learn's ``fetch_lfw_pairs`` would (funneled images + the three pair
    files).

    The same files, URLs and SHA-256 checks, into the same folder (scikit-learn's ``lfw_home``), but
    with a progress bar: about 230 MB, then about a minute to unpack 13,233 images. This is the
    *funneled* variant, not the deep-funneled one the docs' numbers come from (``LFW.variant`` says
    so, and warns).
    """
    home = sklearn_lfw_home()
    if progress:
        print(f"Downloading LFW (funneled, about 230 MB) into {home} ...", flush=True)
    for name in ("pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt"):
        _fetch(*FIGSHARE[name], home / name, progress)
    if not (home / "lfw_funneled").is_dir():
        archive = _fetch(*FIGSHARE["lfw-funneled.tgz"], home / "lfw-funneled.tgz", progress)
        if progress:
            print(f"Unpacking {archive.name} ...", flush=True)
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(home, filter="data")
            else:  # Python < 3.10.12 has no extraction filters
                tar.extractall(home)
        archive.unlink()
    return home


def candidate_roots(path: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, each with a label saying where it came from."""
    return search_order(path, ENV_DATA, REPO_ROOT / "data" / "lfw") + [
        ("scikit-learn cache", sklearn_lfw_home())
    ]


def find_lfw(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the LFW root folder (the one holding the image folder and pair files).

    An explicit ``path`` or ``$CRAFTLIB_DATA`` that is set but unusable (or empty) is an error, not
    a reason to fall through silently to a download: the user asked for that folder.
    """
    if path is None and ENV_DATA in os.environ and not os.environ[ENV_DATA].strip():
        raise LFWNotFoundError(
            f"${ENV_DATA} is set but empty: point it at an LFW folder, or unset it to "
            f"let craftlib search.\n{HOW_TO_GET_LFW}"
        )
    for origin, root in candidate_roots(path):
        root = root.expanduser()
        if _image_dir(root) is not None:
            return root.resolve()
        if origin in ("argument", f"${ENV_DATA}"):
            raise LFWNotFoundError(
                f"{origin} points to {root}, which holds no LFW images.\n{HOW_TO_GET_LFW}"
            )
    if download:
        try:
            return download_lfw().resolve()
        except Exception as err:  # offline, mirror down, checksum mismatch: all end the same way
            raise LFWNotFoundError(
                f"LFW not found locally and the download failed ({err}).\n{HOW_TO_GET_LFW}"
            ) from err
    raise LFWNotFoundError(f"LFW not found (download disabled).\n{HOW_TO_GET_LFW}")


# --------------------------------------------------------------------------------------------
# which LFW: detected from the images themselves


@dataclass(frozen=True)
class Variant:
    """Which LFW images a folder holds, and the evidence for it."""

    name: str  # "deepfunneled", "funneled", "original" or "unknown"
    evidence: str

    def __str__(self) -> str:
        return self.name


def _thumb(path: Path, n: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((n, n), Image.Resampling.BOX), dtype=np.float32)


def variant_signature(image_root: str | os.PathLike, names: list[str]) -> dict:
    """The content signature (SHA-256 and 16x16 thumbnail) of ``names`` in ``image_root``.

    What ``craftlib/assets/lfw_variants.json`` records per variant: run it on a funneled or original
    copy to add that variant's entries.
    """
    refs = json.loads(VARIANT_REFERENCES.read_text())
    return {
        name: {
            "sha256": file_sha256(Path(image_root) / name),
            "thumb": _thumb(Path(image_root) / name, refs["thumb_size"])
            .round()
            .astype(int)
            .ravel()
            .tolist(),
        }
        for name in names
    }


def detect_variant(image_root: str | os.PathLike, tolerance: float = 2.0) -> Variant:
    """Which LFW variant ``image_root`` holds, read from a few reference images' content.

    The reference images (``assets/lfw_variants.json``) are all used by ``pairsDevTest.txt``, so
    every usable copy has them. A copy matches a variant when at least 3/4 of the references present
    are byte-identical (SHA-256) or pixel-identical (16x16 thumbnails within ``tolerance`` grey
    levels on average: survives re-encoding, not a shift or rotation of 3 px / 3°, which moves them
    by 7-12). A folder matching no recorded variant keeps the name its folder gives
    (funneled/original) with the evidence saying so, and a folder *named* deep-funneled whose images
    are not is ``unknown``.
    """
    root = Path(image_root)
    refs = json.loads(VARIANT_REFERENCES.read_text())
    by_name = VARIANTS.get(root.name)
    for variant, images in refs["variants"].items():
        present = [n for n in images if (root / n).is_file()]
        if not present:
            continue
        same_bytes = same_pixels = 0
        for name in present:
            if file_sha256(root / name) == images[name]["sha256"]:
                same_bytes += 1
                continue
            try:
                thumb = _thumb(root / name, refs["thumb_size"]).ravel()
            except (OSError, UnidentifiedImageError, ValueError):
                continue
            if (
                float(np.abs(thumb - np.asarray(images[name]["thumb"], dtype=np.float32)).mean())
                <= tolerance
            ):
                same_pixels += 1
        label = VARIANT_LABELS[variant]
        if 4 * (same_bytes + same_pixels) >= 3 * len(present):
            how = f"{same_bytes} byte-identical" + (
                f", {same_pixels} pixel-identical" if same_pixels else ""
            )
            return Variant(variant, f"content: {how} of {len(present)} {label} reference images")
        mismatch = (
            f"content: {len(present) - same_bytes - same_pixels} of {len(present)} "
            f"reference images differ from {label} LFW"
        )
        if by_name and by_name != variant:
            return Variant(
                by_name, f"{mismatch}; {VARIANT_LABELS[by_name]} by folder name ({root.name}/)"
            )
        return Variant("unknown", f"{mismatch}, although the folder is named {root.name}/")
    if by_name:
        return Variant(
            by_name, f"folder name only ({root.name}/): none of the reference images is in it"
        )
    return Variant(
        "unknown", f"folder {root.name}/ has neither a known name nor the reference images"
    )


def variant_note(variant: str | Variant) -> str:
    """What changes when the data are not ``DOCS_VARIANT`` (empty when they are)."""
    name = str(variant)
    if name == DOCS_VARIANT:
        return ""
    return (
        f"this LFW is {VARIANT_LABELS.get(name, name)}, not the {VARIANT_LABELS[DOCS_VARIANT]} "
        f"images every "
        "number in docs/ was measured on. Everything runs, but faces sit differently in the crop "
        "box, so "
        "accuracies and dead-filter counts will not match the docs; runs, cached trainings and "
        "comparison "
        "records carry the variant, so none made on the other variant is reused or pooled with "
        "these."
    )


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


def _person(name: str, path: Path, lineno: int) -> str:
    """A pair line's person must be one folder inside the data folder: no path separator, no
    ``..``."""
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(
            f"{path}:{lineno}: {name!r} is not a person's folder name; pair names must stay "
            "inside the data folder"
        )
    return name


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
        folds, per_class = (
            (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
        )
    except (ValueError, IndexError):
        raise DataError(f"{path}:1: header {lines[0]!r} is not 'N' or 'FOLDS<TAB>N'") from None
    body = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]
    expected = 2 * folds * per_class
    if len(body) != expected:
        raise DataError(f"{path}:1: header promises {expected} pairs, found {len(body)} lines")
    pairs = []
    for k, (lineno, line) in enumerate(body):
        parts = line.split()
        for name in parts[::2]:
            _person(name, path, lineno)
        if len(parts) == 3:
            left, right, same = (
                image_name(parts[0], _index(parts[1], path, lineno)),
                image_name(parts[0], _index(parts[2], path, lineno)),
                True,
            )
        elif len(parts) == 4:
            left, right, same = (
                image_name(parts[0], _index(parts[1], path, lineno)),
                image_name(parts[2], _index(parts[3], path, lineno)),
                False,
            )
        else:
            raise DataError(
                f"{path}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {line!r}"
            )
        block, pos = divmod(k, per_class)  # block = fold*2 + class
        should_be_same = block % 2 == 0
        if same != should_be_same:
            raise DataError(
                f"{path}:{lineno}: a {'same' if same else 'different'}-person pair where the "
                f"format "
                f"expects {'same' if should_be_same else 'different'}-person pairs"
            )
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


def load_face(
    path: Path, crop: tuple[int, int, int, int] = DEFAULT_CROP, size: int = DEFAULT_SIZE
) -> np.ndarray:
    """Decode one image, crop the face box and resize to ``size``x``size`` RGB uint8.

    Only a regular file is opened (a FIFO named ``*.jpg`` would block forever), and an image larger
    than Pillow's ``MAX_IMAGE_PIXELS`` is refused as a decompression bomb (LFW's are 250x250).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(
                f"{path}: not a regular file (a pipe, device or folder named like an image); "
                "remove it from the data folder"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im = im.convert("RGB")
            if im.size != (250, 250):  # other LFW variants: scale the box to the frame
                sx, sy = im.size[0] / 250, im.size[1] / 250
                box = (
                    round(crop[0] * sx),
                    round(crop[1] * sy),
                    round(crop[2] * sx),
                    round(crop[3] * sy),
                )
            else:
                box = crop
            face = im.crop(box).resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(face, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(
            f"{path}: refused as a possible decompression bomb ({err}); LFW images are 250x250 px, "
            "remove this file from the data folder"
        ) from None
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{path}: cannot decode image ({err}); re-copy this file from LFW"
        ) from None


def _cache_key(root: Path, names: list[str], crop, size: int) -> str:
    stats = []
    for name in names:
        try:
            st = (root / name).stat()
            stats.append(f"{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            stats.append("missing")
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "root": str(root),
            "names": names,
            "stats": stats,
            "crop": list(crop),
            "size": size,
            "resample": "bilinear",
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_faces(
    image_root: Path,
    names: list[str],
    crop=DEFAULT_CROP,
    size: int = DEFAULT_SIZE,
    cache: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Load many faces as an ``N x size x size x 3`` uint8 array, cached on disk.

    The cache key covers every pixel-changing parameter (crop, size, resampling, file list and each
    file's size and mtime), so changing any of them rebuilds the cache instead of serving stale
    faces.
    """
    image_root = Path(image_root)
    crop = tuple(int(c) for c in crop)
    if not (0 <= crop[0] < crop[2] and 0 <= crop[1] < crop[3]):
        raise ValueError(
            f"crop box {crop} must be (left, top, right, bottom) with left<right, top<bottom"
        )
    if size < 8:
        raise ValueError(f"size {size} is too small; use at least 8 px")
    key = _cache_key(image_root.resolve(), list(names), crop, size)
    target = _cache_file(f"faces-{size}px-{key}.npy") if cache else None
    if target is not None and target.is_file():
        try:
            arr = np.load(target, allow_pickle=False)
            if arr.shape == (len(names), size, size, 3):
                return arr
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt, never trusted
    from .progress import progress_bar

    arr = np.empty((len(names), size, size, 3), dtype=np.uint8)
    for i, name in enumerate(progress_bar(names, desc="faces", disable=not progress, leave=False)):
        arr[i] = load_face(image_root / name, crop, size)
    if target is not None:

        def save(tmp: Path) -> None:
            with open(
                tmp, "wb"
            ) as f:  # closed here: no ResourceWarning, no half-flushed file on rename
                np.save(f, arr, allow_pickle=False)

        try:
            atomic_write(target, save)
        except OSError as err:  # read-only or full: the faces are decoded, the run goes on
            warnings.warn(
                f"could not write the face cache {target} ({err}); going on without it "
                "(the faces are decoded again next time)",
                CacheWarning,
                stacklevel=2,
            )
    return arr


def _cache_file(name: str) -> Path | None:
    """``name`` in the cache folder, or ``None`` (with a warning) when that folder cannot be
    made."""
    try:
        return cache_dir() / name
    except OSError as err:
        warnings.warn(
            f"no face cache: {err}; going on without it (set {ENV_CACHE} to a writable folder to "
            f"keep "
            "decoded faces)",
            CacheWarning,
            stacklevel=3,
        )
        return None


# --------------------------------------------------------------------------------------------
# datasets and splits


def to_input(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC faces -> float NCHW in [-1, 1], the normalisation ``arcface_torch`` uses."""
    return batch_uint8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def probe_batch(images: np.ndarray, n: int = 256) -> torch.Tensor:
    """A fixed batch of ``n`` training faces spread evenly over the set: what "silent" is measured
    on.

    Fixed (not random) so that every epoch's measurement, and every arm's, hears the same faces.
    """
    index = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(np.int64))
    return to_input(torch.from_numpy(np.ascontiguousarray(images[index])))


@dataclass
class FaceSet:
    """Training faces: uint8 images, integer identity labels and the names behind them."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    files: list[str] = field(repr=False)
    variant: str = "unknown"  # which LFW images (``detect_variant``): part of every run's key

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

    def thinned(self, every: int = 4) -> "PairSet":
        """Every ``every``-th pair with only the images they use: both classes and all 10 folds,
        ``every`` times less to embed (a quicker DevTest for probes, federated rounds and tests)."""
        keep = np.arange(0, len(self), every)
        used = np.unique(np.concatenate([self.left[keep], self.right[keep]]))
        left, right = (
            np.searchsorted(used, self.left[keep]),
            np.searchsorted(used, self.right[keep]),
        )
        return PairSet(
            self.images[used],
            left,
            right,
            self.same[keep],
            self.folds[keep],
            [self.files[i] for i in used],
            self.name,
        )


class LFW:
    """An LFW folder: people, pair files, and identity-disjoint training/evaluation sets."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        download: bool = True,
        crop=DEFAULT_CROP,
        size: int = DEFAULT_SIZE,
    ):
        self.root = find_lfw(root, download=download)
        self.image_root = _image_dir(self.root)
        self.crop, self.size = tuple(crop), int(size)
        self.people = {
            p.name: sorted(f.name for f in p.glob("*.jpg"))
            for p in sorted(self.image_root.iterdir())
            if p.is_dir()
        }

    def __repr__(self) -> str:
        return f"LFW({self.image_root}, {len(self.people)} people, {self.size}px, {self.variant})"

    @property
    def variant_info(self) -> Variant:
        """The variant and the evidence for it (``detect_variant``; read once per ``LFW``)."""
        if getattr(self, "_variant", None) is None:
            self._variant = detect_variant(self.image_root)
        return self._variant

    @property
    def variant(self) -> str:
        """Which LFW images these are (``deepfunneled``, ``funneled``, ``original``, ``unknown``),
        from their content."""
        return self.variant_info.name

    def warn_variant(self) -> str:
        """Warn (once per ``LFW``) when these are not the docs' variant; return the note (empty if
        they are)."""
        note = variant_note(self.variant)
        if note and not getattr(self, "_warned", False):
            self._warned = True
            warnings.warn(
                f"{self.image_root}: {note} ({self.variant_info.evidence})",
                VariantWarning,
                stacklevel=3,
            )
        return note

    def overlap(self, classes: list[str], protocol: str) -> set[str]:
        """Training identities that also appear in a protocol's pairs: evaluating there would be
        leakage."""
        return set(classes) & self.pair_identities(protocol)

    def pair_file(self, protocol: str) -> Path:
        if protocol not in PAIR_FILES:
            raise ValueError(f"protocol must be one of {sorted(PAIR_FILES)}, got {protocol!r}")
        for folder in (self.root, self.image_root, self.image_root.parent):
            if (folder / PAIR_FILES[protocol]).is_file():
                return folder / PAIR_FILES[protocol]
        raise DataError(
            f"{PAIR_FILES[protocol]} not found beside {self.image_root}.\n{HOW_TO_GET_LFW}"
        )

    def pair_identities(self, protocol: str) -> set[str]:
        return {
            name.split("/")[0]
            for p in read_pairs(self.pair_file(protocol))
            for name in (p.left, p.right)
        }

    def training_set(
        self,
        exclude: str = "devtest",
        min_images: int = 2,
        max_identities: int | None = None,
        progress: bool = False,
        exclude_people: frozenset[str] = frozenset(),
    ) -> FaceSet:
        """Everyone with ``>= min_images`` images who does not appear in the ``exclude`` pairs.

        ``max_identities`` keeps the first N such identities in name order (a small, still disjoint,
        FAST set); ``exclude_people`` leaves out more names (e.g. one View 2 fold's people).
        """
        check("max_identities", max_identities, optional=True)
        banned = (self.pair_identities(exclude) if exclude else set()) | set(exclude_people)
        people = [
            (n, f) for n, f in self.people.items() if len(f) >= min_images and n not in banned
        ]
        if max_identities is not None:
            people = people[:max_identities]
        if not people:
            raise DataError(
                f"no training identities with >= {min_images} images outside {exclude!r}"
            )
        files = [f"{n}/{img}" for n, imgs in people for img in imgs]
        labels = np.array([i for i, (_, imgs) in enumerate(people) for _ in imgs], dtype=np.int64)
        images = load_faces(self.image_root, files, self.crop, self.size, progress=progress)
        self.warn_variant()
        return FaceSet(images, labels, [n for n, _ in people], files, variant=self.variant)

    def pairs(self, protocol: str = "devtest", progress: bool = False) -> PairSet:
        """The verification pairs of a protocol, each image decoded once."""
        path = self.pair_file(protocol)
        pairs = read_pairs(path)
        for p in pairs:
            for name in (p.left, p.right):
                if not (self.image_root / name).is_file():
                    raise DataError(
                        f"{path}:{p.line}: refers to {name}, which is not in {self.image_root}"
                    )
        files = sorted({n for p in pairs for n in (p.left, p.right)})
        index = {n: i for i, n in enumerate(files)}
        images = load_faces(self.image_root, files, self.crop, self.size, progress=progress)
        return PairSet(
            images,
            np.array([index[p.left] for p in pairs]),
            np.array([index[p.right] for p in pairs]),
            np.array([p.same for p in pairs]),
            np.array([p.fold for p in pairs]),
            files,
            protocol,
        )
