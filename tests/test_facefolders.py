"""Aligned face folders: labels, filters, lazy decoding, and LFW's bad-input rules on a tiny
synthetic tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from craftlib.data import DataError
from craftlib.scale.facefolders import FaceFolder, load_face_folder

SIZE = 16
PEOPLE = {"0042_bob": 3, "0007_alice": 2, "0100_carol": 1}  # sorted: alice, bob, carol


def _face(path, seed: int, size: int = 112, fmt: str | None = None):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture
def tree(tmp_path):
    """Three identities of 112 px faces (one PNG), a stray text file and an empty identity
    folder."""
    root = tmp_path / "casia"
    for k, (person, n) in enumerate(PEOPLE.items()):
        for i in range(n):
            _face(root / person / f"{i:03d}.jpg", 10 * k + i)
    _face(root / "0007_alice" / "extra.PNG", 99, fmt="PNG")
    (root / "0042_bob" / "notes.txt").write_text("not an image")
    (root / "0500_empty").mkdir()
    return root


def test_loads_identities_in_name_order(tree):
    faces = load_face_folder(tree, size=SIZE)
    assert faces.classes == [
        "0007_alice",
        "0042_bob",
        "0100_carol",
    ]  # the empty folder has no image: left out
    assert faces.images.shape == (7, SIZE, SIZE, 3) and faces.images.dtype == np.uint8
    assert faces.labels.dtype == np.int64 and faces.labels.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert faces.files[:3] == ["0007_alice/000.jpg", "0007_alice/001.jpg", "0007_alice/extra.PNG"]


def test_min_images_and_max_identities(tree):
    faces = load_face_folder(tree, size=SIZE, min_images=3)
    assert faces.classes == ["0007_alice", "0042_bob"] and len(faces.labels) == 6
    assert FaceFolder(tree, SIZE, max_identities=1).classes == ["0007_alice"]
    with pytest.raises(DataError, match=r"no identity folder has >= 9 images"):
        FaceFolder(tree, SIZE, min_images=9)


def test_lazy_dataset_decodes_the_same_faces(tree):
    lazy = FaceFolder(tree, size=SIZE)
    eager = load_face_folder(tree, size=SIZE)
    assert len(lazy) == 7 and lazy.num_classes == 3
    image, label = lazy[4]
    assert image.dtype == torch.uint8 and image.shape == (SIZE, SIZE, 3) and label == 1
    assert np.array_equal(image.numpy(), eager.images[4])
    batch, labels = next(iter(DataLoader(lazy, batch_size=7)))
    assert np.array_equal(batch.numpy(), eager.images) and labels.tolist() == eager.labels.tolist()
    # one array, shared by DataLoader workers, not 5.8M str objects
    assert isinstance(lazy.files, np.ndarray)


def test_a_spread_sample_keeps_every_class(tree):
    probe = FaceFolder(tree, size=SIZE).faces(limit=3)
    assert probe.files == ["0007_alice/000.jpg", "0042_bob/000.jpg", "0100_carol/000.jpg"]
    assert probe.num_classes == 3 and probe.labels.tolist() == [0, 1, 2]


def test_corrupt_image_is_named(tree):
    bad = tree / "0042_bob" / "001.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    lazy = FaceFolder(tree, size=SIZE)  # indexing does not decode: the error comes with the face
    with pytest.raises(DataError, match=r"0042_bob/001\.jpg: cannot decode image"):
        lazy[4]
    with pytest.raises(DataError, match=r"0042_bob/001\.jpg: cannot decode image"):
        load_face_folder(tree, size=SIZE)


def test_image_missing_after_indexing_is_named(tree):
    lazy = FaceFolder(tree, size=SIZE)
    (tree / "0100_carol" / "000.jpg").unlink()
    with pytest.raises(DataError, match=r"0100_carol/000\.jpg: image file is missing"):
        lazy[6]


def test_empty_or_missing_folders_are_explained(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        FaceFolder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    _face(tmp_path / "flat" / "a.jpg", 0)
    with pytest.raises(
        DataError, match=r"holds no identity folders \(expected root/<identity>/<image>"
    ):
        FaceFolder(tmp_path / "flat")
    with pytest.raises(ValueError, match="min_images"):
        FaceFolder(tmp_path / "flat", min_images=0)
