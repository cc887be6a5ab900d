"""The face shape-vs-texture probe: transforms that keep exactly one cue, the index, and its
validation."""

from __future__ import annotations

import numpy as np
import pytest

from craftlib.companions.sparsity import shapebias as sb


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("grid", [2, 4, 5, 3])  # 3 does not divide 40: the border stays in place
def test_patch_shuffle_preserves_each_images_pixel_histogram(images, grid):
    out = sb.patch_shuffle(images, grid, seed=1)
    assert out.shape == images.shape and out.dtype == np.uint8
    for a, b in zip(images, out):
        for c in range(3):
            np.testing.assert_array_equal(
                np.bincount(a[..., c].ravel(), minlength=256),
                np.bincount(b[..., c].ravel(), minlength=256),
            )
        # the same multiset of RGB pixels, not only per channel
        assert sorted(map(tuple, a.reshape(-1, 3))) == sorted(map(tuple, b.reshape(-1, 3)))
    assert not np.array_equal(out, images)  # and the arrangement did change
    # fixed seed: same mosaic
    np.testing.assert_array_equal(sb.patch_shuffle(images, grid, seed=1), out)


def test_patch_shuffle_moves_whole_tiles(images):
    out = sb.patch_shuffle(images, 4, seed=2)
    tiles = lambda x: {
        x[i : i + 10, j : j + 10].tobytes() for i in range(0, 40, 10) for j in range(0, 40, 10)
    }  # noqa: E731
    for a, b in zip(images, out):
        assert tiles(a) == tiles(b)


def test_low_pass_and_edges_remove_texture_but_keep_layout():
    x = np.zeros((1, 40, 40, 3), dtype=np.uint8)
    x[:, 10:30, 10:30] = 200  # a "face": a bright square
    rng = np.random.default_rng(0)
    # plus fine texture
    noisy = np.clip(x + rng.integers(-40, 40, x.shape), 0, 255).astype(np.uint8)
    blurred = sb.low_pass(noisy, 2.0)
    assert blurred[0, 20, 20].mean() > 150 and blurred[0, 2, 2].mean() < 50  # layout kept
    assert blurred[0, 14:26, 14:26].std() < noisy[0, 14:26, 14:26].std() / 3  # texture gone
    edges = sb.edge_map(x)
    assert edges.shape == x.shape and edges[0, 20, 10].mean() > 100 and edges[0, 20, 20].mean() < 10
    np.testing.assert_array_equal(sb.low_pass(x, 0), x)


def test_index_from_accuracies():
    assert sb.retention(0.75, 0.9) == pytest.approx(0.625)
    assert sb.retention(0.4, 0.9) == 0.0  # below chance counts as nothing retained
    assert sb.shape_bias_index(0.9, 0.8, 0.6) == pytest.approx(0.75)
    assert sb.shape_bias_index(0.9, 0.6, 0.8) == pytest.approx(0.25)
    assert sb.shape_bias_index(0.9, 0.7, 0.7) == pytest.approx(0.5)
    assert sb.shape_bias_index(0.5, 0.6, 0.6) is None  # a model at chance has no bias to measure
    assert sb.shape_bias_index(0.9, 0.5, 0.5) is None
    with pytest.raises(ValueError):
        sb.transformed_pairs(None, "grayscale")


def test_staged_embeddings_are_the_whole_models_to_the_bit(devtest_subset):
    """Real DevTest faces (250 pairs, 32 px), batches smaller than the set: every family's
    embeddings from activations kept at a stage equal ``embed`` of the whole model with the same
    Top-K, at two K, and so does the probe built on them."""
    import torch

    from craftlib.models import FaceCNN, ModelConfig, topk_at_inference
    from craftlib.verification import embed

    torch.manual_seed(0)
    model = FaceCNN(ModelConfig(input_size=32)).eval()
    staged = sb.StagedEmbeddings(model, devtest_subset, stage=2, batch_size=128)
    images = sb.families(devtest_subset)
    for fraction in (0.3, 0.6):
        with topk_at_inference(model, fraction, (2,)):
            for family in ("clean", "patch_shuffle"):
                assert np.array_equal(staged(family), embed(model, images[family], batch_size=128))
    with topk_at_inference(model, 0.3, (2,)):
        assert sb.probe(model, devtest_subset, embeddings=staged) == sb.probe(model, devtest_subset)
    assert sb.StagedEmbeddings.size(model, devtest_subset, 2) == 64 * 8 * 8 * 4 * 2 * 484 * 5


@pytest.mark.slow
def test_index_separates_a_texture_trained_from_a_normally_trained_model(faces, devtest_subset):
    """The probe's validation: train on patch-shuffled faces and the index must drop (FAST budget,
    32 px)."""
    from craftlib.recipes import FAST

    config = FAST.train.but(epochs=4, threads=1)
    result = sb.validate(faces, devtest_subset, config, sigma=1.6)  # the index's own 2 x 2 mosaic
    normal, texture = result["normal"], result["texture"]
    assert normal["index"] is not None and texture["index"] is not None
    assert texture["index"] < normal["index"] - 0.1, (normal, texture)
    assert texture["patch_shuffle"] > normal["patch_shuffle"]  # it learnt the mosaic's texture ...
    assert texture["low_pass"] <= normal["low_pass"] + 0.02  # ... and not the layout
