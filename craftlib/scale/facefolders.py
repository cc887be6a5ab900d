"""Aligned face datasets as folders (CASIA-WebFace, MS1M exports):
``root/<identity>/<image>.jpg|png``.

The same rules as LFW (``craftlib.data``): a corrupt or missing image is a ``DataError`` naming the
file, identities with fewer than ``min_images`` images are left out, and ``max_identities`` keeps
the first N in name order. Labels follow the sorted identity names, as torchvision's
``ImageFolder``. ``FaceFolder`` decodes on the fly (MS1M's 5.8M images do not fit in RAM);
``load_face_folder`` decodes everything into a ``FaceSet`` (CASIA-size data and smaller). MS1M/Glint
``.rec`` files must be exported to folders first (insightface ships a ``rec2image.py`` script).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from craftlib.data import DataError, FaceSet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUT = "expected root/<identity>/<image>.jpg (or .png), one folder per identity"


def decode_face(source, size: int, name: str) -> np.ndarray:
    """Decode an image (a path or a file-like object) to ``size x size`` RGB uint8; ``name`` goes in
    the error."""
    try:
        with Image.open(source) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            # a writable copy: torch.from_numpy refuses read-only arrays
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{name}: image file is missing") from None
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as err:
        raise DataError(f"{name}: cannot decode image ({err})") from None


def _images(folder: Path) -> list[str]:
    return sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
    )


class FaceFolder(Dataset):
    """A face folder indexed once and decoded lazily: ``dataset[i]`` is ``(uint8 HxWx3 tensor,
    label)``.

    Paths are kept in one NumPy bytes array, not a list of ``str``: DataLoader workers then share
    the pages instead of copying millions of reference-counted objects.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 112,
        min_images: int = 1,
        max_identities: int | None = None,
    ):
        self.root, self.size = Path(root), int(size)
        if self.size < 8:
            raise ValueError(f"size {size} is too small; use at least 8 px")
        if min_images < 1:
            raise ValueError(f"min_images must be at least 1, got {min_images}")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder ({LAYOUT})")
        people = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        if not people:
            raise DataError(f"{self.root}: holds no identity folders ({LAYOUT})")
        kept = []
        # stops early with max_identities: a small MS1M subset does not list all 85k folders
        for person in people:
            images = _images(self.root / person)
            if len(images) >= min_images:
                kept.append((person, images))
                if len(kept) == max_identities:
                    break
        if not kept:
            raise DataError(
                f"{self.root}: no identity folder has >= {min_images} images ({LAYOUT})"
            )
        self.classes = [p for p, _ in kept]
        self.files = np.array([f"{p}/{img}".encode() for p, imgs in kept for img in imgs])
        self.labels = np.array(
            [k for k, (_, imgs) in enumerate(kept) for _ in imgs], dtype=np.int64
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"FaceFolder({self.root}, {self.num_classes} identities, {len(self)} images, "
            f"{self.size}px)"
        )

    def decode(self, i: int) -> np.ndarray:
        name = self.files[i].decode()
        return decode_face(self.root / name, self.size, str(self.root / name))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.decode(i)), int(self.labels[i])

    def faces(self, limit: int | None = None, progress: bool = False) -> FaceSet:
        """Decode every image, or ``limit`` of them spread evenly over the dataset, into a
        ``FaceSet``.

        The ``FaceSet`` keeps every identity in ``classes`` so that its labels mean the same as the
        dataset's.
        """
        from craftlib.progress import progress_bar

        n = len(self)
        index = (
            np.arange(n)
            if limit is None or limit >= n
            else np.unique(np.linspace(0, n - 1, limit).round().astype(int))
        )
        images = np.empty((len(index), self.size, self.size, 3), dtype=np.uint8)
        for k, i in enumerate(progress_bar(index, desc="faces", disable=not progress, leave=False)):
            images[k] = self.decode(i)
        return FaceSet(
            images, self.labels[index], list(self.classes), [self.files[i].decode() for i in index]
        )


def load_face_folder(
    root: str | os.PathLike,
    size: int = 112,
    min_images: int = 1,
    max_identities: int | None = None,
    progress: bool = False,
) -> FaceSet:
    """Decode a whole face folder into a ``FaceSet`` (uint8 N x size x size x 3, int64 labels)."""
    return FaceFolder(root, size, min_images, max_identities).faces(progress=progress)
