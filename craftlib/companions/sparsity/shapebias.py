"""A face shape-vs-texture probe: how much verification accuracy survives when one cue is taken
away.

Two families of DevTest images, the same transform applied to both faces of every pair:

- **shape kept, texture removed** — ``low_pass`` (a Gaussian blur: the layout of eyes, nose, mouth
  and hairline stays, skin and hair texture and fine detail go) or ``edge_map`` (the grey-level
  gradient magnitude: outlines only, no colour or shading);
- **texture kept, shape broken** — ``patch_shuffle``: each face is cut into a ``grid x grid`` mosaic
  whose tiles are permuted at random. Every pixel stays in the image (the image's pixel histogram is
  exactly preserved, and so is all texture inside a tile); only the arrangement — the shape — is
  lost. The index uses a 2 x 2 mosaic (20-px quarters at 40 px); a 4 x 4 one (10-px tiles) is also
  reported: on it every trained workshop model is at chance, so an index built on it sits at 1 for
  all of them.

Verification is re-run on each family with the usual 10-fold protocol (thresholds re-fitted on the
transformed scores, so a uniform shift in similarity is not counted as a loss). Accuracy above
chance (0.5) that survives, as a fraction of the clean accuracy above chance, is the *retention* of
a cue: ``R = max(0, acc_t − 0.5) / (acc_clean − 0.5)``. The **shape-bias index** is

    SBI = R_shape / (R_shape + R_texture)           (in [0, 1]; 0.5 = both cues equally retained)

the face-verification analogue of Geirhos et al.'s shape bias (shape decisions / (shape + texture
decisions) on cue-conflict images): above 0.5 the model leans on shape, below on texture.

Limits (also in docs/RESULTS.md): the index depends on the transform strengths (``sigma``,
``grid``), so it compares models under one probe setting and says nothing in absolute terms; blur
also removes some shape (fine contours) and the mosaic keeps some shape (inside each tile), so
neither family is a pure cue; the index is undefined (``None``) when a model is at chance on clean
faces or retains neither cue; it is measured on 1,000 DevTest pairs, so a difference of a few points
between two single runs is within noise. ``validate`` checks the probe: a model trained on
patch-shuffled faces must score lower (more texture-biased) than one trained on normal faces.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from craftlib.data import FaceSet, PairSet, to_input
from craftlib.models import topk_at_inference
from craftlib.runtime import evaluating
from craftlib.verification import cosine_scores, embed, evaluate_scores

SIGMA = 2.0  # low-pass: Gaussian σ in pixels at 40 px (≈ 5% of the face width)
GRID = 2  # patch shuffle for the index: a 2 x 2 mosaic (20 px quarters at 40 px)
# reported beside it: a 4 x 4 mosaic (10 px tiles), at chance for every trained workshop model
FINE_GRID = 4
SEED = 0  # the mosaic's permutations: the same for every model
SHAPE_TRANSFORMS = ("low_pass", "edge_map")
CHANCE = 0.5


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 faces N x H x W x 3, got {images.dtype} {images.shape}")
    return images


def low_pass(images: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Gaussian blur of every face (per colour channel): layout kept, texture and fine detail
    removed."""
    images = _check(images)
    if sigma <= 0:
        return images.copy()
    out = ndimage.gaussian_filter(
        images.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="nearest"
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def edge_map(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Outlines only: grey-level gradient magnitude (Sobel after a light blur), each face scaled to
    0-255."""
    images = _check(images)
    grey = images.astype(np.float32).mean(axis=3)
    if sigma > 0:
        grey = ndimage.gaussian_filter(grey, sigma=(0, sigma, sigma))
    mag = np.hypot(ndimage.sobel(grey, axis=1), ndimage.sobel(grey, axis=2))
    mag /= np.maximum(mag.reshape(len(mag), -1).max(axis=1), 1e-6)[:, None, None]
    return np.repeat(np.rint(255 * mag).astype(np.uint8)[..., None], 3, axis=3)


def patch_shuffle(images: np.ndarray, grid: int = GRID, seed: int = SEED) -> np.ndarray:
    """Each face cut into ``grid x grid`` tiles, permuted at random (a new permutation per face).

    A permutation of tiles moves pixels without changing any: each image's pixel histogram is
    exactly the original's. Rows/columns beyond the last whole tile (when the size is not a multiple
    of ``grid``) stay in place.
    """
    images = _check(images)
    n, h, w, _ = images.shape
    if grid < 1 or grid > min(h, w):
        raise ValueError(f"grid must be between 1 and the image size, got {grid}")
    th, tw = h // grid, w // grid
    out = images.copy()
    rng = np.random.default_rng(seed)
    region = images[:, : th * grid, : tw * grid]
    tiles = (
        region.reshape(n, grid, th, grid, tw, 3)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(n, grid * grid, th, tw, 3)
    )
    for i in range(n):
        tiles_i = tiles[i][rng.permutation(grid * grid)]
        out[i, : th * grid, : tw * grid] = (
            tiles_i.reshape(grid, grid, th, tw, 3)
            .transpose(0, 2, 1, 3, 4)
            .reshape(th * grid, tw * grid, 3)
        )
    return out


TRANSFORMS = {"low_pass": low_pass, "edge_map": edge_map, "patch_shuffle": patch_shuffle}


def retention(accuracy: float, clean: float) -> float | None:
    """Share of the clean accuracy above chance that a transformed set keeps (0 at or below
    chance)."""
    if clean is None or accuracy is None or clean <= CHANCE:
        return None
    return max(0.0, accuracy - CHANCE) / (clean - CHANCE)


def shape_bias_index(clean: float, shape_kept: float, texture_kept: float) -> float | None:
    """``R_shape / (R_shape + R_texture)`` from three accuracies; ``None`` when it is undefined."""
    rs, rt = retention(shape_kept, clean), retention(texture_kept, clean)
    if rs is None or rt is None or rs + rt == 0:
        return None
    return rs / (rs + rt)


def transformed_pairs(pairs: PairSet, transform: str, **kwargs) -> PairSet:
    """The same pairs and folds, every image passed through one of ``TRANSFORMS``."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
    return replace(
        pairs,
        images=TRANSFORMS[transform](pairs.images, **kwargs),
        name=f"{pairs.name}+{transform}",
    )


def families(
    pairs: PairSet,
    sigma: float = SIGMA,
    grid: int = GRID,
    seed: int = SEED,
    fine_grid: int = FINE_GRID,
) -> dict[str, np.ndarray]:
    """The probe's five versions of the pairs' faces: clean, shape kept two ways, texture kept at
    two mosaic sizes."""
    return {
        "clean": pairs.images,
        "low_pass": low_pass(pairs.images, sigma),
        "edge_map": edge_map(pairs.images),
        "patch_shuffle": patch_shuffle(pairs.images, grid, seed),
        "patch_shuffle_fine": patch_shuffle(pairs.images, fine_grid, seed),
    }


def probe(
    model,
    pairs: PairSet,
    sigma: float = SIGMA,
    grid: int = GRID,
    seed: int = SEED,
    shape: str = "low_pass",
    clean: float | None = None,
    fine_grid: int = FINE_GRID,
    embeddings: Callable[[str], np.ndarray] | None = None,
) -> dict:
    """Verification accuracy on clean, shape-kept and texture-kept DevTest faces, and the shape-bias
    index.

    ``shape`` picks the shape-kept family for the index (``low_pass`` or ``edge_map``; both
    accuracies are reported). ``clean`` reuses an accuracy already measured on the same pairs.
    ``embeddings(family)`` may stand in for embedding ``families(...)[family]`` with ``model``
    (``StagedEmbeddings``: the same numbers, from activations kept below a Top-K layer).
    """
    if shape not in SHAPE_TRANSFORMS:
        raise ValueError(f"shape must be one of {SHAPE_TRANSFORMS}, got {shape!r}")
    if embeddings is None:
        images = families(pairs, sigma, grid, seed, fine_grid)
        embeddings = lambda family: embed(model, images[family])  # noqa: E731

    def accuracy(family: str) -> float:
        scores = cosine_scores(embeddings(family), pairs)
        return evaluate_scores(scores, pairs.same, pairs.folds)["accuracy"]

    out = {
        "clean": accuracy("clean") if clean is None else float(clean),
        **{f: accuracy(f) for f in ("low_pass", "edge_map", "patch_shuffle", "patch_shuffle_fine")},
        "settings": {
            "sigma": sigma,
            "grid": grid,
            "fine_grid": fine_grid,
            "seed": seed,
            "shape": shape,
        },
    }
    out["shape_retention"] = retention(out[shape], out["clean"])
    out["texture_retention"] = retention(out["patch_shuffle"], out["clean"])
    out["index"] = shape_bias_index(out["clean"], out[shape], out["patch_shuffle"])
    out["index_edges"] = shape_bias_index(out["clean"], out["edge_map"], out["patch_shuffle"])
    return out


class StagedEmbeddings:
    """The probe's embeddings with a Top-K layer after ``stage``, for any K, from activations kept
    at that stage's output: a new K runs only the layers above it (the Top-K explorer's slider).

    Equal to ``embed(model, images)`` with the Top-K in place, bit for bit: the same batches through
    the same layers (``FaceCNN.up_to`` / ``from_stage``). Keeps two maps per face and family.
    """

    def __init__(self, model, pairs: PairSet, stage: int, batch_size: int = 256):
        self.model, self.stage = model, stage
        self.kept: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        device = next(model.parameters()).device
        with evaluating(model), torch.no_grad(), topk_at_inference(model, 1.0):
            for family, images in families(pairs).items():
                batches = (
                    to_input(torch.from_numpy(images[i : i + batch_size])).to(device)
                    for i in range(0, len(images), batch_size)
                )
                self.kept[family] = [
                    (model.up_to(stage, x), model.up_to(stage, x.flip(3))) for x in batches
                ]

    @staticmethod
    def size(model, pairs: PairSet, stage: int) -> int:
        """Bytes the kept activations take: five families, each face and its mirror."""
        side = pairs.images.shape[1]
        with evaluating(model), torch.no_grad(), topk_at_inference(model, 1.0):
            one = model.up_to(stage, torch.zeros(1, 3, side, side)).numel() * 4
        return one * 2 * len(pairs.images) * 5

    def __call__(self, family: str) -> np.ndarray:
        """L2-normalised embeddings of one family, with whatever Top-K the model holds now."""
        with evaluating(self.model), torch.no_grad():
            out = [
                F.normalize(
                    (
                        self.model.from_stage(self.stage, a) + self.model.from_stage(self.stage, b)
                    ).float(),
                    dim=1,
                ).cpu()
                for a, b in self.kept[family]
            ]
        return torch.cat(out).numpy()


def shuffled_faces(faces: FaceSet, grid: int = GRID, seed: int = SEED + 1) -> FaceSet:
    """A training set whose every face is patch-shuffled: what a texture-only face model learns
    from."""
    return replace(faces, images=patch_shuffle(faces.images, grid, seed))


def validate(
    faces: FaceSet, pairs: PairSet, config, grid: int = GRID, sigma: float = SIGMA
) -> dict:
    """Train the same config on normal and on patch-shuffled faces; probe both (the probe's own
    check).

    Returns ``{"normal": probe, "texture": probe}``; the texture-trained model must have the lower
    index.
    """
    from craftlib.training import train  # floor 2: imported here only for the check

    normal = train(faces, config, progress=False).model
    texture = train(shuffled_faces(faces, grid), config, progress=False).model
    return {
        "normal": probe(normal, pairs, sigma, grid),
        "texture": probe(texture, pairs, sigma, grid),
    }
