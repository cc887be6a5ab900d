"""The released MobileFaceNet anchor: found by ``$CRAFTLIB_MODELS``, checksum-pinned, a clear error
otherwise.

(What its first layer says — 31 of 64 filters dead — is tested with the scores in
``test_activity.py``.)
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

import craftlib.pretrained as pretrained


def test_stem_is_conv_bn_relu6_in_eval_mode(stem):
    assert (
        isinstance(stem[0], nn.Conv2d)
        and isinstance(stem[1], nn.BatchNorm2d)
        and isinstance(stem[2], nn.ReLU6)
    )
    assert stem[0].weight.shape == (64, 3, 3, 3) and stem[0].stride == (2, 2)
    assert not stem.training
    assert stem(torch.zeros(1, 3, 112, 112)).shape == (1, 64, 56, 56)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty CRAFTLIB_MODELS, with the repo's data/models fallback pointed away too."""
    monkeypatch.setenv("CRAFTLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(pretrained, "REPO_ROOT", tmp_path / "repo")
    return tmp_path / "models"


def test_wrong_bytes_fail_the_checksum(models_dir):
    path = models_dir / "foamliu_mobilefacenet" / "mobilefacenet.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the weights")
    with pytest.raises(pretrained.ModelNotFoundError, match="SHA-256"):
        pretrained.mobilefacenet_stem(download=False)


def test_missing_file_names_the_variable_and_the_url(models_dir):
    with pytest.raises(pretrained.ModelNotFoundError) as info:
        pretrained.find_mobilefacenet(download=False)
    message = str(info.value)
    assert "CRAFTLIB_MODELS" in message and pretrained.MOBILEFACENET["url"] in message
    assert isinstance(info.value, FileNotFoundError)


def test_bad_download_is_not_saved(models_dir, monkeypatch):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"a tampered file"

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(pretrained.ModelNotFoundError, match="wrong SHA-256"):
        pretrained.find_mobilefacenet(download=True)
    assert not any((pretrained.REPO_ROOT / "data").rglob("*.pt"))


def test_failed_download_explains(models_dir, monkeypatch):
    def offline(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", offline)
    with pytest.raises(pretrained.ModelNotFoundError, match="download failed") as info:
        pretrained.find_mobilefacenet(download=True)
    assert pretrained.MOBILEFACENET["url"] in str(info.value)


def test_pinned_checksum_matches_provenance():
    """The pin in the code is the one in PROVENANCE.md (and the URL names the same commit)."""
    assert (
        pretrained.MOBILEFACENET["sha256"]
        == "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4"
    )
    assert "a6cc9032a659b615f477833e1a70b5e7931bcccc" in pretrained.MOBILEFACENET["url"]


def test_the_file_on_disk_is_the_pinned_one(stem):
    path = pretrained.find_mobilefacenet(download=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pretrained.MOBILEFACENET["sha256"]
