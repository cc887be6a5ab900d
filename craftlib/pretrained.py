"""The real-world anchor: foamliu's released MobileFaceNet, whose first layer is half dead.

Looked up in ``$CRAFTLIB_MODELS`` (or ``data/models`` in the repo) and, online, downloaded from the
GitHub repository with its SHA-256 checked. Never committed to this project.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import torch
from torch import nn

from .paths import ENV_MODELS, REPO_ROOT, atomic_write

MOBILEFACENET = {
    "file": "mobilefacenet.pt",
    "folder": "foamliu_mobilefacenet",
    "url": "https://github.com/foamliu/MobileFaceNet/raw/a6cc9032a659b615f477833e1a70b5e7931bcccc/weights/mobilefacenet.pt",
    "sha256": "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
    "license": "Apache-2.0 (github.com/foamliu/MobileFaceNet)",
}


class ModelNotFoundError(FileNotFoundError):
    """The released weights are neither on disk nor downloadable."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_mobilefacenet(download: bool = True) -> Path:
    """Path of ``mobilefacenet.pt`` with a verified checksum, downloading it if needed and allowed."""
    roots = [Path(os.environ[ENV_MODELS])] if os.environ.get(ENV_MODELS) else []
    roots.append(REPO_ROOT / "data" / "models")
    for root in roots:
        for path in (root / MOBILEFACENET["folder"] / MOBILEFACENET["file"], root / MOBILEFACENET["file"]):
            if path.is_file():
                if sha256(path) != MOBILEFACENET["sha256"]:
                    raise ModelNotFoundError(f"{path}: SHA-256 does not match {MOBILEFACENET['sha256']}; re-download it")
                return path
    target = REPO_ROOT / "data" / "models" / MOBILEFACENET["folder"] / MOBILEFACENET["file"]
    how = (f"Set {ENV_MODELS} to a folder holding {MOBILEFACENET['folder']}/{MOBILEFACENET['file']}, or download\n"
           f"  {MOBILEFACENET['url']}\ninto {target.parent} (sha256 {MOBILEFACENET['sha256']}).")
    if not download:
        raise ModelNotFoundError(f"MobileFaceNet weights not found.\n{how}")
    try:
        with urllib.request.urlopen(MOBILEFACENET["url"], timeout=30) as r:
            blob = r.read()
    except Exception as err:
        raise ModelNotFoundError(f"MobileFaceNet weights not found and the download failed ({err}).\n{how}") from err
    if hashlib.sha256(blob).hexdigest() != MOBILEFACENET["sha256"]:
        raise ModelNotFoundError(f"downloaded file has the wrong SHA-256; not saved.\n{how}")
    return atomic_write(target, lambda tmp: tmp.write_bytes(blob))


def mobilefacenet_stem(download: bool = True) -> nn.Sequential:
    """The released model's first block, ``Conv2d(3, 64, 3, stride 2) -> BatchNorm2d -> ReLU6``, in eval mode.

    Indexed like the original (``[0]`` conv, ``[1]`` BN), so ``filter_scores(stem[0], bn=stem[1])`` works.
    """
    state = torch.load(find_mobilefacenet(download), map_location="cpu", weights_only=True)
    stem = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
    stem.load_state_dict({k[len("conv1."):]: v for k, v in state.items() if k.startswith("conv1.")})
    return stem.eval()
