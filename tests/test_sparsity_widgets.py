"""Notebook 06's views: the anti-partner state and widget, the Top-K state and widget, the study
figures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from craftlib.companions.sparsity import pairing
from craftlib.companions.sparsity import widgets as sw
from craftlib.data import PairSet
from craftlib.models import FaceCNN, ModelConfig

SMALL = ModelConfig(input_size=16, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)


@pytest.fixture(scope="module")
def toy_pairs():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    n = 40
    return PairSet(
        images,
        np.arange(n) % 40,
        (np.arange(n) + 1) % 40,
        np.arange(n) % 2 == 0,
        np.repeat(np.arange(10), 4),
        [f"f{i}" for i in range(40)],
        "toy",
    )


def test_pair_state_finds_the_planted_partner():
    layer = pairing.planted_pairs(4).numpy()
    state = sw.pair_state(layer, 2)
    assert (
        state["partner"] == 3
        and state["cos"] == pytest.approx(-1)
        and state["paired"]
        and state["mutual"]
    )
    assert state["paired_matched"] and state["matched_fraction"] == 1.0
    assert "filter 2 → anti-partner 3" in sw.pair_caption(state) and "a pair" in sw.pair_caption(
        state
    )
    with pytest.raises(ValueError):
        sw.pair_state(layer, 8)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.slow
def test_pair_view_and_explorer_agree():
    model = FaceCNN(SMALL)
    layers = {"planted": pairing.planted_pairs(4).numpy(), "model": model}
    fig = sw.pair_view(layers["planted"], 0)
    assert len(fig.axes) == 4
    explorer = sw.PairExplorer(layers)
    assert explorer.state["partner"] == 1 and explorer.image.value[:4] == b"\x89PNG"
    explorer.layer.value = "model"
    assert explorer.filter.max == 7 and explorer.error.value == ""
    explorer.filter.value = 5
    assert (
        explorer.state["index"] == 5
        and explorer.state["partner"] == sw.pair_state(model, 5)["partner"]
    )
    # a new filter redraws its tiles, μ line and legend over the layer's kept histogram: the
    # page shows what a full redraw of the same filter shows
    fig, redrawer = explorer._figures["model"]
    for index in (2, 7):
        explorer.filter.value = index
        assert fig.axes[0].get_title() == f"filter {index}"
        assert (pixels(explorer.image.value) == pixels(redrawer.png(full=True))).all()


@pytest.mark.slow
def test_topk_state_sparsifies_the_maps_and_probes(toy_pairs):
    model = FaceCNN(SMALL).eval()
    face = toy_pairs.images[0]
    state = sw.topk_state(model, face, toy_pairs, fraction=0.25, stage=1)
    m = state["maps"]
    assert m["side"] == 8 and len(m["channels"]) == 4  # stage 1 has 4 channels here
    assert ((m["sparse"] != 0).reshape(4, -1).sum(1) <= 16).all()
    assert set(state["probe"]) >= {"clean", "low_pass", "patch_shuffle", "index"}
    assert "K = 25%" in sw.topk_caption(state)
    assert not model.sparsify  # the model's own layers are back
    explorer = sw.TopKExplorer(model, face, None, fraction=0.5, stage=0)
    assert explorer.error.value == "" and "probe" not in explorer.state
    # the menu, the caption and the text: one name
    menu = dict((v, k) for k, v in explorer.stage.options)
    assert (
        menu[0] == "stage 0 (stem)"
        and menu[2] == "stage 2"
        and "after stage 0 (stem)" in explorer.caption.value
    )
    explorer.fraction.value = 0.1
    assert explorer.state["fraction"] == pytest.approx(0.1)
    assert len(sw.topk_view(model, face, None).axes) >= 3
    # with pairs: the same probe as the plain function, computed once per (K, stage)
    probing = sw.TopKExplorer(model, face, toy_pairs, fraction=0.25, stage=1)
    assert probing.state["probe"] == state["probe"] and "computing" not in probing.caption.value
    probing.fraction.value = 0.5
    kept = probing.state["probe"]
    # K moved over activations kept below stage 1's Top-K: the plain probe's numbers exactly
    assert probing._kept.stage == 1
    assert kept == sw.topk_state(model, face, toy_pairs, fraction=0.5, stage=1)["probe"]
    probing.fraction.value = 0.25
    probing.fraction.value = 0.5
    assert probing.state["probe"] is kept and len(probing._shown) == 2
    probing.stage.value = 2  # one stage kept at a time
    assert probing._kept.stage == 2


@pytest.mark.slow
def test_topk_explorer_over_its_memory_bound_probes_the_whole_model(toy_pairs, monkeypatch):
    model = FaceCNN(SMALL).eval()
    face = toy_pairs.images[0]
    monkeypatch.setattr(sw.TopKExplorer, "MAX_KEPT", 0)
    explorer = sw.TopKExplorer(model, face, toy_pairs, fraction=0.25, stage=1)
    assert explorer._kept is None
    assert explorer.state["probe"] == sw.topk_state(model, face, toy_pairs, 0.25, 1)["probe"]


def test_pairing_histograms_take_models_and_weights():
    fig = sw.pairing_histograms({"model": FaceCNN(SMALL), "planted": pairing.planted_pairs(4)})
    assert (
        len(fig.axes) == 2 and "paired 100% (isotropic) / 100% (matched)" in fig.axes[1].get_title()
    )
