"""Shared fixtures: the real LFW at 32 px (session-scoped, small) and a fake LFW folder for bad inputs.

Tests that need LFW skip with a clear reason when ``$CRAFTLIB_DATA`` is unset; everything about bad
inputs runs on ``fake_lfw``, a few synthetic identities written into ``tmp_path``.
"""
from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from craftlib.data import FaceSet

SIZE = 32  # face size for every real-LFW test: small enough for 2 CPU cores
MAX_IDENTITIES = 120

# the fake LFW: name -> number of images; Dave has one image, so he can never be a training class
FAKE_PEOPLE = {"Alice_Aa": 3, "Bob_Bb": 2, "Carol_Cc": 2, "Dave_Dd": 1, "Eve_Ee": 2}
FAKE_PAIRS = {
    # View 1 test: 2 same + 2 different, over Alice and Bob only
    "pairsDevTest.txt": "2\nAlice_Aa\t1\t2\nBob_Bb\t1\t2\nAlice_Aa\t3\tBob_Bb\t1\nAlice_Aa\t1\tBob_Bb\t2\n",
    # View 1 train: 1 same + 1 different
    "pairsDevTrain.txt": "1\nCarol_Cc\t1\t2\nCarol_Cc\t1\tEve_Ee\t1\n",
    # View 2: 2 folds of 1 same + 1 different
    "pairs.txt": "2\t1\nAlice_Aa\t1\t2\nAlice_Aa\t1\tBob_Bb\t1\nCarol_Cc\t1\t2\nCarol_Cc\t2\tEve_Ee\t2\n",
}


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """The real LFW folder named by ``$CRAFTLIB_DATA`` (the test is skipped without it)."""
    value = os.environ.get("CRAFTLIB_DATA")
    if not value:
        pytest.skip("CRAFTLIB_DATA is not set: point it at an LFW folder (see data/README.md) to run real-LFW tests")
    root = Path(value)
    if not root.is_dir():
        pytest.skip(f"CRAFTLIB_DATA={value} is not a folder")
    return root


@pytest.fixture(scope="session")
def lfw(lfw_root):
    """``craftlib.data.LFW`` on the real folder at 32 px, never downloading."""
    from craftlib.data import LFW

    return LFW(lfw_root, download=False, size=SIZE)


@pytest.fixture(scope="session")
def faces(lfw) -> FaceSet:
    """The first 120 training identities (disjoint from DevTest) at 32 px: ~630 images."""
    return lfw.training_set(max_identities=MAX_IDENTITIES)


@pytest.fixture(scope="session")
def tiny_faces(faces) -> FaceSet:
    """The first 30 of those identities: a few training steps per epoch, for loop mechanics."""
    keep = faces.labels < 30
    files = [f for f, k in zip(faces.files, keep) if k]
    return FaceSet(faces.images[keep], faces.labels[keep], faces.classes[:30], files)


@pytest.fixture(scope="session")
def devtest(lfw):
    """The 1,000 View 1 test pairs at 32 px."""
    return lfw.pairs("devtest")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """Send the preprocessing cache to an empty temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CRAFTLIB_CACHE", str(cache))
    return cache


def write_jpeg(path: Path, seed: int, size: int = 250) -> Path:
    """A deterministic synthetic face-sized JPEG (smooth noise, so it compresses like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 10, size // 10, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


@pytest.fixture
def fake_lfw(tmp_path, tmp_cache):
    """Factory: ``fake_lfw(layout="lfw-deepfunneled", name="lfw")`` writes a tiny LFW folder and returns its root.

    Five identities (``FAKE_PEOPLE``) of synthetic 250x250 JPEGs and three small, valid pair files
    (``FAKE_PAIRS``) beside the image folder; the cache goes to a temporary folder.
    """

    def make(layout: str = "lfw-deepfunneled", name: str = "lfw", people=FAKE_PEOPLE, pairs=FAKE_PAIRS,
             size: int = 250) -> Path:
        root = tmp_path / name
        images = root / layout
        for i, (person, n) in enumerate(people.items()):
            for k in range(1, n + 1):
                write_jpeg(images / person / f"{person}_{k:04d}.jpg", seed=100 * i + k, size=size)
        for fname, text in pairs.items():
            (root / fname).write_text(text)
        return root

    return make
