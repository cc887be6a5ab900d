"""The real-world anchor: foamliu's released MobileFaceNet, whose first layer is half dead.

Offline first: its first block (``conv1`` weight and BatchNorm, 11 KB, Apache-2.0) ships inside this
package as ``assets/mobilefacenet_conv1.pt`` (see ``assets/NOTICE``), so the stem, notebook 02 and
the threshold explorer need neither ``$CRAFTLIB_MODELS`` nor a network. The full weights (4 MB) stay
an optional download: looked up in ``$CRAFTLIB_MODELS`` (or ``data/models`` in the repo) and,
online, downloaded from the GitHub repository with their SHA-256 checked. They are never committed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import torch
from torch import nn

from .paths import ENV_MODELS, REPO_ROOT, atomic_write, file_sha256

MOBILEFACENET = {
    "file": "mobilefacenet.pt",
    "folder": "foamliu_mobilefacenet",
    "url": "https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/weights/mobilefacenet.pt",
    "sha256": "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
    "license": "Apache-2.0 (github.com/foamliu/MobileFaceNet)",
}


STEM_FILE = Path(__file__).resolve().parent / "assets" / "mobilefacenet_conv1.pt"
STEM_SHA256 = "3a0a33d134d3b99ee541bc46cce60cc7b5b4d3c2a32c1d72be1f0ab62c906f41"
"""The packaged first block: the six ``conv1.*`` tensors of ``MOBILEFACENET``'s file, unchanged."""


class ModelNotFoundError(FileNotFoundError):
    """The released weights are neither on disk nor downloadable."""


def find_mobilefacenet(download: bool = True) -> Path:
    """Path of ``mobilefacenet.pt`` with a verified checksum, downloading it if needed and
    allowed."""
    roots = [Path(os.environ[ENV_MODELS])] if os.environ.get(ENV_MODELS) else []
    roots.append(REPO_ROOT / "data" / "models")
    for root in roots:
        for path in (
            root / MOBILEFACENET["folder"] / MOBILEFACENET["file"],
            root / MOBILEFACENET["file"],
        ):
            if path.is_file():
                if file_sha256(path) != MOBILEFACENET["sha256"]:
                    raise ModelNotFoundError(
                        f"{path}: SHA-256 does not match {MOBILEFACENET['sha256']}; re-download it"
                    )
                return path
    target = REPO_ROOT / "data" / "models" / MOBILEFACENET["folder"] / MOBILEFACENET["file"]
    how = (
        f"Set {ENV_MODELS} to a folder holding {MOBILEFACENET['folder']}/{MOBILEFACENET['file']}, "
        f"or download\n"
        f"  {MOBILEFACENET['url']}\ninto {target.parent} (sha256 {MOBILEFACENET['sha256']})."
    )
    if not download:
        raise ModelNotFoundError(f"MobileFaceNet weights not found.\n{how}")
    try:
        with urllib.request.urlopen(MOBILEFACENET["url"], timeout=30) as r:
            blob = r.read()
    except Exception as err:
        raise ModelNotFoundError(
            f"MobileFaceNet weights not found and the download failed ({err}).\n{how}"
        ) from err
    if hashlib.sha256(blob).hexdigest() != MOBILEFACENET["sha256"]:
        raise ModelNotFoundError(f"downloaded file has the wrong SHA-256; not saved.\n{how}")
    return atomic_write(target, lambda tmp: tmp.write_bytes(blob))


def extract_stem(state: dict) -> dict:
    """The first block's tensors (``conv1.*``) of a MobileFaceNet state_dict: what ``STEM_FILE``
    holds."""
    return {k: v.clone().contiguous() for k, v in state.items() if k.startswith("conv1.")}


def stem_state(source: str = "auto", download: bool = False) -> tuple[dict, str]:
    """The stem's ``conv1.*`` tensors and where they came from.

    ``source="auto"`` takes the full weights when they are on disk (checksum-verified; a file with
    the wrong checksum is an error, never skipped), else the packaged ``STEM_FILE`` — no network
    either way. ``"package"`` always uses the packaged file; ``"full"`` insists on the full weights
    (downloading them when ``download`` is true).
    """
    if source not in ("auto", "package", "full"):
        raise ValueError(f"source must be auto, package or full, got {source!r}")
    if source != "package":
        try:
            path = find_mobilefacenet(download=download and source == "full")
            return extract_stem(torch.load(path, map_location="cpu", weights_only=True)), str(path)
        except ModelNotFoundError as err:
            if source == "full" or "SHA-256" in str(err):
                raise
    if not STEM_FILE.is_file():
        raise ModelNotFoundError(f"the packaged stem {STEM_FILE} is missing: reinstall craftlib")
    if file_sha256(STEM_FILE) != STEM_SHA256:
        raise ModelNotFoundError(
            f"{STEM_FILE}: SHA-256 does not match {STEM_SHA256}; reinstall craftlib"
        )
    return torch.load(
        STEM_FILE, map_location="cpu", weights_only=True
    ), f"{STEM_FILE} (packaged with craftlib)"


def mobilefacenet_stem(download: bool = False, source: str = "auto") -> nn.Sequential:
    """The released model's first block, ``Conv2d(3, 64, 3, stride 2) -> BatchNorm2d -> ReLU6``, in
    eval mode.

    Works offline and without ``$CRAFTLIB_MODELS``: the tensors come from the full weights when they
    are on disk and from the copy packaged with craftlib otherwise (``stem_state``). Indexed like
    the original (``[0]`` conv, ``[1]`` BN), so ``filter_scores(stem[0], bn=stem[1])`` works.
    """
    state, _ = stem_state(source, download)
    stem = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
    stem.load_state_dict({k[len("conv1.") :]: v for k, v in state.items()})
    return stem.eval()
