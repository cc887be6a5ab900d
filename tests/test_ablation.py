"""Ablating a channel: a planted constant channel costs nothing; a loud one does; the probes are
disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib import pages
from craftlib.data import PairSet, probe_batch
from craftlib.losses import MarginHead
from craftlib.models import FaceCNN
from craftlib.study import ablation


@pytest.fixture()
def planted(toy_faces, toy_config):
    """A toy FaceCNN whose channel 2 outputs the constant 0.3 (BN γ = 0, β = 0.3), and toy DevTest
    pairs."""
    torch.manual_seed(0)
    model = FaceCNN(toy_config.model).eval()
    with torch.no_grad():
        model.bn1.weight[2] = 0.0
        model.bn1.bias[2] = 0.3
    head = MarginHead(toy_config.model.embedding_dim, 4).eval()
    n = len(toy_faces.images)
    left, right = np.arange(0, n, 2), np.arange(1, n, 2)
    same = toy_faces.labels[left] == toy_faces.labels[right]
    same[::5] = (
        False  # both kinds of pair, whatever the labels say: the numbers only need to be repeatable
    )
    pairs = PairSet(
        toy_faces.images, left, right, same, np.arange(len(left)) % 4, toy_faces.files, "toy"
    )
    return model, head, pairs


def test_a_constant_channel_ablates_to_nothing(planted, toy_faces):
    model, head, pairs = planted
    result = ablation.ablate(model, head, toy_faces, pairs, channels=[2, 0, 5], loss_faces=64)
    rows = {r["channel"]: r for r in result["channels"]}
    assert rows[2]["class"] == "silent"
    assert rows[2]["d_loss"] == 0.0 and rows[2]["d_accuracy"] == 0.0
    # a heard channel: ablating it shows
    assert rows[0]["class"] != "silent" and abs(rows[0]["d_loss"]) > 1e-6
    assert result["counts"]["silent"] == 1 and result["groups"]["silent"]["d_loss"] == 0.0


def test_the_hook_is_removed_and_the_model_unchanged(planted, toy_faces):
    model, _, _ = planted
    x = probe_batch(toy_faces.images)
    before = model(x)
    with ablation.ablated(model, [0, 1], ablation.channel_means(model, x)):
        during = model(x)
    assert not torch.equal(before, during) and torch.equal(before, model(x))


def test_the_second_probe_is_disjoint_from_the_first():
    """Faces whose pixels spell their index (red = i // 256, green = i % 256): decode which faces
    each probe took."""
    i = np.arange(1000)
    images = np.zeros((1000, 2, 2, 3), np.uint8)
    images[..., 0], images[..., 1] = (i // 256)[:, None, None], (i % 256)[:, None, None]

    def picked(batch):
        px = ((batch[:, :2, 0, 0] + 1) * 127.5).round().long()
        return set((px[:, 0] * 256 + px[:, 1]).tolist())

    first, second = picked(probe_batch(images)), picked(ablation.second_probe(images))
    assert len(first) == 256 and len(second) == 256 and not first & second
    with pytest.raises(ValueError, match="none left"):
        ablation.second_probe(images[:200])


def test_agreement_counts_add_up(planted):
    from craftlib.data import FaceSet

    model, _, pairs = planted
    rng = np.random.default_rng(1)
    faces = FaceSet(
        rng.integers(0, 256, (600, 16, 16, 3), dtype=np.uint8),
        np.repeat(np.arange(4), 150),
        [f"P{i}" for i in range(4)],
        [f"f{i}.jpg" for i in range(600)],
    )
    a = ablation.agreement(model, faces, pairs)
    for key in ("second_probe", "devtest_faces"):
        assert a[key]["both"] + a[key]["only_probe"] == a["probe"]
        assert a[key]["both"] + a[key]["only_other"] == a[key]["silent"]
    # the constant channel is silent on any faces
    assert a["probe"] >= 1 and a["second_probe"]["both"] >= 1


def test_results_md_ablation_table_is_the_committed_results():
    """RESULTS.md's ablation tables are ``ablation.markdown`` of the committed per-model JSON
    files."""
    import json

    from craftlib.paths import REPO_ROOT

    files = sorted((REPO_ROOT / "docs/results/ablation").glob("*.json"))
    block = pages.read_block(REPO_ROOT / "docs/RESULTS.md", "ablation:table")
    assert (
        files
        and block.strip() == ablation.markdown([json.loads(f.read_text()) for f in files]).strip()
    )
