"""LFW's face-attribute and gender labels: finding them, parsing them, coverage, identity-disjoint
probe splits.

The labels (see ``PROVENANCE.md`` in the labels folder) come in three public files, all optional but
the first:

* ``lfw_att_73_7.1.mat`` — Kumar et al.'s 73 binary attributes, one row per image (13,143 rows).
  Each value is Kumar's attribute *classifier* output thresholded at 0, not a human annotation.
  Kumar's original text file ``lfw_attributes.txt`` (continuous scores) is read instead when it is
  there;
* ``male_names.txt`` / ``female_names.txt`` — Afifi & Abdelhamed's manually verified gender lists;
* ``lfw_with_smile_label.txt`` — a smiling / neutral label for a 3,780-image subset.

Discovery order (first hit wins), as for LFW: explicit path -> ``$CRAFTLIB_LABELS`` ->
``data/lfw_labels`` in the repo -> ``lfw_labels`` beside or inside the LFW folder -> download (only
the MIT-licensed Kumar matrix: the gender lists' source states no licence, so they are never fetched
automatically; without them gender falls back to Kumar's ``Male`` classifier output, and says so).
Nothing here is ever committed.

A bad row is a ``LabelError`` that names the file and the line (or the row of a ``.mat`` matrix).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from craftlib.data import LFW, DataError, FaceSet, load_faces
from craftlib.paths import ENV_DATA, REPO_ROOT, atomic_write, file_sha256, search_order

ENV_LABELS = "CRAFTLIB_LABELS"
KUMAR_MAT = "lfw_att_73_7.1.mat"
KUMAR_TXT = "lfw_attributes.txt"
MALE_LIST, FEMALE_LIST = "male_names.txt", "female_names.txt"
SMILE_FILE = "lfw_with_smile_label.txt"
UNKNOWN = -1  # a missing label in every int8 label matrix

KUMAR_NAMES = (
    "Male Asian White Black Baby Child Youth Middle_Aged Senior Black_Hair Blond_Hair Brown_Hair "
    "Bald No_Eyewear "
    "Eyeglasses Sunglasses Mustache Smiling Frowning Chubby Blurry Harsh_Lighting Flash "
    "Soft_Lighting Outdoor "
    "Curly_Hair Wavy_Hair Straight_Hair Receding_Hairline Bangs Sideburns Fully_Visible_Forehead "
    "Partially_Visible_Forehead Obstructed_Forehead Bushy_Eyebrows Arched_Eyebrows Narrow_Eyes "
    "Eyes_Open Big_Nose "
    "Pointy_Nose Big_Lips Mouth_Closed Mouth_Slightly_Open Mouth_Wide_Open Teeth_Not_Visible "
    "No_Beard Goatee "
    "Round_Jaw Double_Chin Wearing_Hat Oval_Face Square_Face Round_Face Color_Photo Posed_Photo "
    "Attractive_Man "
    "Attractive_Woman Indian Gray_Hair Bags_Under_Eyes Heavy_Makeup Rosy_Cheeks Shiny_Skin "
    "Pale_Skin "
    "5_o_Clock_Shadow Strong_Nose-Mouth_Lines Wearing_Lipstick Flushed_Face High_Cheekbones "
    "Brown_Eyes "
    "Wearing_Earrings Wearing_Necktie Wearing_Necklace"
).split()
"""Kumar et al.'s 73 attributes in file order (spaces as ``_``, apostrophe dropped)."""

DOWNLOADS = {
    KUMAR_MAT: (
        "https://raw.githubusercontent.com/Mmhmmmmm/knowledge_graph/"
        "a21d35f48a867bdc85084ab7773bea5cc4136a70/lfw_att_73_7.1.mat",
        "8bc4689b6b84a255427ca898c25373231a13602b6bfd2abb4ee4290a88f34d7f",
    ),
}
"""Files fetched when none is found locally: only those whose source repository has a licence
(MIT)."""

HOW_TO_GET_LABELS = f"""\
How to get LFW's attribute labels:
  * copy a labels folder (lfw_att_73_7.1.mat; optionally male_names.txt, female_names.txt,
    {SMILE_FILE}; see its PROVENANCE.md) and point {ENV_LABELS} at it, e.g.
      export {ENV_LABELS}=/path/to/lfw_labels
    or put it at data/lfw_labels/ in the repository, or beside the LFW folder as lfw_labels/;
  * online, craftlib downloads {KUMAR_MAT} (MIT-licensed source, SHA-256 checked) on first use.
    The gender lists (Afifi & Abdelhamed, arXiv:1706.04277) state no licence: get them from the
    authors' page and copy them in by hand; without them, gender is Kumar's Male classifier
    output."""


class LabelsNotFoundError(FileNotFoundError):
    """No labels folder was found and the Kumar matrix could not be downloaded."""


class LabelError(DataError):
    """A malformed label file, with the file and the line (or matrix row) named."""


# --------------------------------------------------------------------------------------------
# discovery


def _has_labels(folder: Path) -> bool:
    return folder.is_dir() and any(
        (folder / f).is_file() for f in (KUMAR_MAT, KUMAR_TXT, MALE_LIST)
    )


def candidate_folders(path: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, each with a label saying where it came from."""
    found = search_order(path, ENV_LABELS, REPO_ROOT / "data" / "lfw_labels")
    if os.environ.get(ENV_DATA):
        lfw = Path(os.environ[ENV_DATA])
        found += [
            (f"beside ${ENV_DATA}", lfw.parent / "lfw_labels"),
            (f"inside ${ENV_DATA}", lfw / "lfw_labels"),
        ]
    return found


def download_labels(folder: str | os.PathLike | None = None) -> Path:
    """Fetch the files of ``DOWNLOADS`` into ``folder`` (default ``data/lfw_labels``), checking
    SHA-256."""
    import urllib.request

    folder = Path(folder or REPO_ROOT / "data" / "lfw_labels")
    for name, (url, sha) in DOWNLOADS.items():
        target = folder / name
        if target.is_file() and file_sha256(target) == sha:
            continue
        with urllib.request.urlopen(url, timeout=60) as response:
            blob = response.read()
        got = hashlib.sha256(blob).hexdigest()
        if got != sha:
            raise LabelError(f"{url}: SHA-256 {got} does not match the expected {sha}; not saved")
        atomic_write(target, lambda tmp: tmp.write_bytes(blob))
    return folder


def find_labels(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The labels folder. An explicit path or ``$CRAFTLIB_LABELS`` that holds no labels is an
    error."""
    for origin, folder in candidate_folders(path):
        folder = folder.expanduser()
        if _has_labels(folder):
            return folder.resolve()
        if origin in ("argument", f"${ENV_LABELS}"):
            raise LabelsNotFoundError(
                f"{origin} points to {folder}, which holds none of {KUMAR_MAT}, {KUMAR_TXT}, "
                f"{MALE_LIST}.\n{HOW_TO_GET_LABELS}"
            )
    if download:
        try:
            return download_labels().resolve()
        except Exception as err:  # offline, host down, checksum mismatch
            raise LabelsNotFoundError(
                f"LFW labels not found locally and the download failed ({err}).\n"
                f"{HOW_TO_GET_LABELS}"
            ) from err
    raise LabelsNotFoundError(f"LFW labels not found (download disabled).\n{HOW_TO_GET_LABELS}")


# --------------------------------------------------------------------------------------------
# parsers: each returns {image key: values}, keys as ``Person/Person_NNNN.jpg``

_FILE_NAME = re.compile(r"^(?P<person>[^/\\\s]+)_(?P<num>\d{4})\.jpg$")


def _key_from_file_name(name: str, path: Path, where: str) -> str:
    match = _FILE_NAME.match(name)
    if not match:
        raise LabelError(
            f"{path}:{where}: expected an LFW image name like 'Aaron_Eckhart_0001.jpg', got "
            f"{name!r}"
        )
    return f"{match['person']}/{name}"


def read_name_list(path: str | os.PathLike) -> dict[str, int]:
    """A gender list: one image file name a line (CRLF or LF). Returns {key: line number}."""
    path = Path(path)
    out: dict[str, int] = {}
    for lineno, raw in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
    ):
        name = raw.strip()
        if not name:
            continue
        key = _key_from_file_name(name, path, str(lineno))
        if key in out:
            raise LabelError(f"{path}:{lineno}: {name} is listed twice (first on line {out[key]})")
        out[key] = lineno
    if not out:
        raise LabelError(f"{path}:1: empty name list")
    return out


def read_smile_labels(path: str | os.PathLike) -> dict[str, int]:
    """``./lfw/Person/Person_NNNN.jpg 0|1`` a line -> {key: 0 or 1}."""
    path = Path(path)
    out: dict[str, int] = {}
    for lineno, raw in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
    ):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 2 or parts[1] not in ("0", "1"):
            raise LabelError(f"{path}:{lineno}: expected '<image path> 0|1', got {raw!r}")
        name = parts[0].replace("\\", "/").split("/")[-1]
        key = _key_from_file_name(name, path, str(lineno))
        if key in out:
            raise LabelError(f"{path}:{lineno}: {key} is labelled twice")
        out[key] = int(parts[1])
    return out


def read_kumar_mat(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """The binary 73-attribute matrix: (keys, uint8 matrix) with the columns checked against
    ``KUMAR_NAMES``."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path)
    except Exception as err:  # truncated or not a MATLAB v5 file
        raise LabelError(
            f"{path}: not a readable MATLAB file ({type(err).__name__}: {err})"
        ) from None
    for var in ("name", "AttrName", "label"):
        if var not in mat:
            raise LabelError(
                f"{path}: variable {var!r} is missing (found "
                f"{sorted(k for k in mat if not k.startswith('__'))})"
            )
    names = [str(np.ravel(c)[0]) if np.size(c) else "" for c in np.ravel(mat["AttrName"])]
    if names != KUMAR_NAMES:
        bad = next(i for i, (a, b) in enumerate(zip(names + [""] * 73, KUMAR_NAMES)) if a != b)
        raise LabelError(
            f"{path}: AttrName column {bad + 1} is {names[bad] if bad < len(names) else None!r}, "
            f"expected {KUMAR_NAMES[bad]!r} (73 Kumar attributes in order)"
        )
    label = np.asarray(mat["label"])
    files = [str(np.ravel(c)[0]) if np.size(c) else "" for c in np.ravel(mat["name"])]
    if label.shape != (len(files), len(KUMAR_NAMES)):
        raise LabelError(
            f"{path}: label is {label.shape}, expected ({len(files)}, {len(KUMAR_NAMES)}) "
            "(one row per name, one column per attribute)"
        )
    bad = np.argwhere((label != 0) & (label != 1))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise LabelError(
            f"{path}: row {row + 1} ({files[row]}): {KUMAR_NAMES[col]} = {label[row, col]}, "
            f"expected 0 or 1"
        )
    keys = []
    for row, name in enumerate(files, start=1):
        parts = name.replace("\\", "/").split("/")
        if len(parts) != 2 or not parts[1].startswith(parts[0] + "_"):
            raise LabelError(f"{path}: row {row}: name {name!r} is not 'Person\\Person_NNNN.jpg'")
        keys.append(_key_from_file_name(parts[1], path, f"row {row}"))
    if len(set(keys)) != len(keys):
        seen: dict[str, int] = {}
        for row, key in enumerate(keys, start=1):
            if key in seen:
                raise LabelError(f"{path}: row {row}: {key} already labelled in row {seen[key]}")
            seen[key] = row
    return keys, label.astype(np.uint8)


def read_kumar_txt(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Kumar's original ``lfw_attributes.txt`` (tab-separated scores) -> (keys, binary matrix: score
    > 0)."""
    path = Path(path)
    keys, rows = [], []
    for lineno, raw in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
    ):
        if not raw.strip() or raw.startswith("#"):
            continue
        parts = raw.rstrip("\n").split("\t")
        if len(parts) != 2 + len(KUMAR_NAMES):
            raise LabelError(
                f"{path}:{lineno}: expected person, imagenum and {len(KUMAR_NAMES)} scores "
                f"({2 + len(KUMAR_NAMES)} tab-separated fields), got {len(parts)}"
            )
        person = parts[0].strip().replace(" ", "_")
        try:
            number = int(parts[1])
            scores = np.array([float(v) for v in parts[2:]])
        except ValueError as err:
            raise LabelError(f"{path}:{lineno}: {err}") from None
        keys.append(_key_from_file_name(f"{person}_{number:04d}.jpg", path, str(lineno)))
        rows.append(scores > 0)
    if not rows:
        raise LabelError(f"{path}:1: no attribute rows")
    return keys, np.asarray(rows, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# the label table


@dataclass
class AttributeLabels:
    """Every label found, per image key: the 73 Kumar columns, ``gender`` (1 male, 0 female) and
    ``smile``.

    ``values`` is int8 with ``UNKNOWN`` (-1) where an image has no label; ``sources`` says which
    file each column came from, ``notes`` what was decided on the way (doubly listed images,
    fallbacks).
    """

    keys: list[str]
    names: list[str]
    values: np.ndarray
    sources: dict[str, str]
    folder: Path
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._row = {k: i for i, k in enumerate(self.keys)}
        self._col = {n: j for j, n in enumerate(self.names)}

    def __repr__(self) -> str:
        return (
            f"AttributeLabels({len(self.keys)} images, {len(self.names)} columns, from "
            f"{self.folder})"
        )

    def lookup(self, files: list[str], columns: list[str] | None = None) -> np.ndarray:
        """An int8 matrix ``len(files) x len(columns)``; rows of images without any label are all
        ``UNKNOWN``."""
        columns = list(self.names) if columns is None else list(columns)
        missing = [c for c in columns if c not in self._col]
        if missing:
            raise KeyError(
                f"no label column {missing}; columns: gender, smile and the 73 Kumar names"
            )
        cols = [self._col[c] for c in columns]
        out = np.full((len(files), len(cols)), UNKNOWN, dtype=np.int8)
        for i, f in enumerate(files):
            r = self._row.get(f)
            if r is not None:
                out[i] = self.values[r, cols]
        return out


def load_labels(path: str | os.PathLike | None = None, download: bool = True) -> AttributeLabels:
    """Find the labels folder and read every label file in it into one table."""
    folder = find_labels(path, download)
    columns: dict[str, tuple[list[str], np.ndarray]] = {}  # name -> (keys, values)
    sources: dict[str, str] = {}
    notes: list[str] = []
    kumar = folder / KUMAR_TXT if (folder / KUMAR_TXT).is_file() else folder / KUMAR_MAT
    if kumar.is_file():
        keys, matrix = (read_kumar_txt if kumar.suffix == ".txt" else read_kumar_mat)(kumar)
        for j, name in enumerate(KUMAR_NAMES):
            columns[name], sources[name] = (keys, matrix[:, j]), kumar.name
    if (folder / MALE_LIST).is_file() and (folder / FEMALE_LIST).is_file():
        male, female = read_name_list(folder / MALE_LIST), read_name_list(folder / FEMALE_LIST)
        both = sorted(set(male) & set(female))
        gender = {k: 1 for k in male}
        # the doubly listed images sit at the top of the female list
        gender.update({k: 0 for k in female})
        if both:
            notes.append(
                f"{len(both)} images are in both gender lists and count as female "
                f"(manual corrections at the top of {FEMALE_LIST}): {', '.join(both)}"
            )
        columns["gender"] = (list(gender), np.fromiter(gender.values(), np.int8, len(gender)))
        sources["gender"] = f"{MALE_LIST} + {FEMALE_LIST}"
    elif "Male" in columns:
        columns["gender"], sources["gender"] = (
            columns["Male"],
            f"{kumar.name} (Male, classifier output)",
        )
        notes.append(
            f"{MALE_LIST}/{FEMALE_LIST} not found: gender is Kumar's Male classifier output "
            f"(noisier)"
        )
    if (folder / SMILE_FILE).is_file():
        smile = read_smile_labels(folder / SMILE_FILE)
        columns["smile"] = (list(smile), np.fromiter(smile.values(), np.int8, len(smile)))
        sources["smile"] = SMILE_FILE
    if not columns:
        raise LabelsNotFoundError(
            f"{folder} holds no label file this version reads.\n{HOW_TO_GET_LABELS}"
        )
    keys = sorted(set().union(*(k for k, _ in columns.values())))
    row = {k: i for i, k in enumerate(keys)}
    values = np.full((len(keys), len(columns)), UNKNOWN, dtype=np.int8)
    index_of: dict[int, np.ndarray] = {}  # id(key list) -> rows, computed once per file
    for j, (col_keys, col_values) in enumerate(columns.values()):
        if id(col_keys) not in index_of:
            index_of[id(col_keys)] = np.fromiter(
                (row[k] for k in col_keys), np.int64, len(col_keys)
            )
        values[index_of[id(col_keys)], j] = col_values
    return AttributeLabels(keys, list(columns), values, sources, folder, notes)


# --------------------------------------------------------------------------------------------
# the attributes the probes read


@dataclass(frozen=True)
class Attribute:
    """A binary attribute for the probes: the OR of some label columns, and what kind of property it
    is."""

    name: str
    kind: str  # "colour/texture" | "geometry" | "identity"
    columns: tuple[str, ...]
    description: str = ""


PROBE_ATTRIBUTES = (
    Attribute("black_hair", "colour/texture", ("Black_Hair",), "Kumar Black_Hair"),
    Attribute("blond_hair", "colour/texture", ("Blond_Hair",), "Kumar Blond_Hair"),
    Attribute("gray_hair", "colour/texture", ("Gray_Hair",), "Kumar Gray_Hair"),
    Attribute(
        "eyeglasses",
        "colour/texture",
        ("Eyeglasses", "Sunglasses"),
        "Kumar Eyeglasses or Sunglasses",
    ),
    Attribute("smiling", "geometry", ("Smiling",), "Kumar Smiling"),
    Attribute(
        "mouth_open",
        "geometry",
        ("Mouth_Slightly_Open", "Mouth_Wide_Open"),
        "Kumar Mouth_Slightly_Open or Mouth_Wide_Open",
    ),
    Attribute("male", "identity", ("gender",), "gender lists (Afifi & Abdelhamed), 1 = male"),
    Attribute("senior", "identity", ("Senior",), "age group: Kumar Senior"),
    Attribute(
        "young", "identity", ("Baby", "Child", "Youth"), "age group: Kumar Baby, Child or Youth"
    ),
)
"""The probed set: colour/texture (hair colours, eyewear), geometry (smile, open mouth),
identity-level (gender, two age groups). Every Kumar value is a classifier output; only gender is
manually verified."""

ATTRIBUTES = {a.name: a for a in PROBE_ATTRIBUTES}


def attribute_matrix(
    labels: AttributeLabels, files: list[str], attributes=PROBE_ATTRIBUTES
) -> np.ndarray:
    """int8 ``len(files) x len(attributes)``: 1 if any of an attribute's columns is 1, 0 if all are
    0, else -1."""
    out = np.full((len(files), len(attributes)), UNKNOWN, dtype=np.int8)
    for j, attr in enumerate(attributes):
        cols = labels.lookup(files, list(attr.columns))
        known = (cols != UNKNOWN).all(1)
        out[known, j] = (cols[known] == 1).any(1)
    return out


def coverage(labels: AttributeLabels, files: list[str], attributes=PROBE_ATTRIBUTES) -> dict:
    """How many of ``files`` each attribute labels (and how many positives); images with no label
    counted."""
    y = attribute_matrix(labels, files, attributes)
    any_row = labels.lookup(files)
    out = {
        "images": len(files),
        "no_label_at_all": int((any_row == UNKNOWN).all(1).sum()),
        "missing_some_attribute": int((y == UNKNOWN).any(1).sum()),
        "notes": list(labels.notes),
        "attributes": {},
    }
    for j, attr in enumerate(attributes):
        known = y[:, j] != UNKNOWN
        out["attributes"][attr.name] = {
            "kind": attr.kind,
            "labelled": int(known.sum()),
            "missing": int((~known).sum()),
            "positive": int((y[:, j] == 1).sum()),
            "source": ", ".join(sorted({labels.sources[c] for c in attr.columns})),
        }
    return out


def coverage_report(cov: dict) -> str:
    """The coverage as a few readable lines."""
    lines = [
        f"{cov['images']} images: {cov['no_label_at_all']} without any label, "
        f"{cov['missing_some_attribute']} missing at least one probed attribute"
    ]
    for name, c in cov["attributes"].items():
        share = c["positive"] / c["labelled"] if c["labelled"] else float("nan")
        lines.append(
            f"  {name:<11} {c['kind']:<15} labelled {c['labelled']:>6}  missing {c['missing']:>4}  "
            f"positive {share:6.1%}  ({c['source']})"
        )
    return "\n".join(lines + [f"  note: {n}" for n in cov["notes"]])


# --------------------------------------------------------------------------------------------
# the probe set and identity-disjoint splits


def identity_of(files: list[str]) -> np.ndarray:
    """The person of each image key, as an array of strings."""
    return np.array([f.split("/")[0] for f in files])


def identity_split(
    identities, test_fraction: float = 0.4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices such that no person is on both sides; a seeded random ``test_fraction``
    of people."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    identities = np.asarray(identities)
    people = np.unique(identities)
    if len(people) < 2:
        raise ValueError("an identity-disjoint split needs at least two people")
    rng = np.random.default_rng(seed)
    n_test = min(len(people) - 1, max(1, int(round(test_fraction * len(people)))))
    test_people = rng.choice(people, size=n_test, replace=False)
    test = np.isin(identities, test_people)
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    check_disjoint(identities, train_idx, test_idx)
    return train_idx, test_idx


def check_disjoint(identities, train_idx, test_idx) -> None:
    """Raise if any person has images on both sides of a split."""
    identities = np.asarray(identities)
    shared = set(identities[np.asarray(train_idx)]) & set(identities[np.asarray(test_idx)])
    if shared:
        raise ValueError(
            f"split is not identity-disjoint: {len(shared)} people on both sides, e.g. "
            f"{sorted(shared)[:3]}"
        )


@dataclass
class ProbeSet:
    """Faces of people the network never trained on, their attribute labels and an identity-disjoint
    split."""

    images: np.ndarray
    files: list[str] = field(repr=False)
    identities: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    attributes: tuple[Attribute, ...]
    train_idx: np.ndarray = field(repr=False)
    test_idx: np.ndarray = field(repr=False)
    coverage: dict = field(repr=False, default_factory=dict)

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def __repr__(self) -> str:
        return (
            f"ProbeSet({len(self.files)} faces of {len(np.unique(self.identities))} people; "
            f"{len(self.train_idx)} train / {len(self.test_idx)} test, identity-disjoint; "
            f"{len(self.attributes)} attributes)"
        )


def training_identities(lfw: LFW, exclude: str = "devtest", min_images: int = 2) -> set[str]:
    """The people ``LFW.training_set`` trains on (same rule: ``>= min_images`` images, not in the
    ``exclude`` pairs), without decoding a single image."""
    banned = lfw.pair_identities(exclude) if exclude else set()
    return {n for n, f in lfw.people.items() if len(f) >= min_images and n not in banned}


def probe_set(
    lfw: LFW,
    labels: AttributeLabels,
    exclude: set[str] | list[str] | None = None,
    attributes=PROBE_ATTRIBUTES,
    max_per_identity: int = 4,
    max_identities: int | None = None,
    test_fraction: float = 0.4,
    seed: int = 0,
    progress: bool = False,
) -> ProbeSet:
    """Faces for the probes: people *not* in ``exclude`` (default: LFW's DevTest-disjoint training
    identities, so the network never saw them), at most ``max_per_identity`` images each (the first
    by number, so that a few much-photographed people do not dominate), only images with at least
    one probed label.

    ``max_identities`` keeps a seeded random subset of people (FAST mode).
    """
    exclude = training_identities(lfw) if exclude is None else set(exclude)
    files = [
        f"{p}/{img}"
        for p, imgs in lfw.people.items()
        if p not in exclude
        for img in imgs[:max_per_identity]
    ]
    if max_identities is not None:
        people = np.unique(identity_of(files))
        keep = set(
            np.random.default_rng(seed).choice(
                people, size=min(max_identities, len(people)), replace=False
            )
        )
        files = [f for f in files if f.split("/")[0] in keep]
    cov = coverage(labels, files, attributes)
    y = attribute_matrix(labels, files, attributes)
    labelled = (y != UNKNOWN).any(1)
    if not labelled.any():
        raise LabelError(
            f"none of the {len(files)} probe images has a label in {labels.folder}: "
            "do the labels belong to this LFW folder?"
        )
    files = [f for f, k in zip(files, labelled) if k]
    ids = identity_of(files)
    train_idx, test_idx = identity_split(ids, test_fraction, seed)
    images = load_faces(lfw.image_root, files, lfw.crop, lfw.size, progress=progress)
    return ProbeSet(images, files, ids, y[labelled], tuple(attributes), train_idx, test_idx, cov)


def training_attributes(
    data: FaceSet, labels: AttributeLabels, attributes=PROBE_ATTRIBUTES
) -> np.ndarray:
    """The attribute matrix of a training set's images (for the branching model's attribute
    losses)."""
    return attribute_matrix(labels, data.files, attributes)
