"""The pairing measure of CReLU (Shang et al., ICML 2016): do first-layer filters come in
opposite-phase pairs?

For each filter φᵢ its *pair* is the other filter with the most negative cosine similarity,
``μᵢ = min_{j≠i} cos(φᵢ, φⱼ)``. A ReLU discards a filter's negative phase, so a network that needs
both phases of an edge learns the edge twice, once with each sign: ``μᵢ`` near −1. The reference is
the same measure on random Gaussian filters of the same shape and number (random directions in
``in·kh·kw`` dimensions are never far from orthogonal, so their ``μ`` sits much closer to 0). The
paper's figure is the histogram of ``μ`` against that reference: far left in ``conv1``, closing in
with depth.

Summary numbers (``pairing_summary``): the mean ``μ``, its shift from the random reference's mean,
and the *paired fraction* — the share of filters whose ``μ`` is below the random reference's 1st
percentile (a pair random filters would almost never show). Isotropic random filters are the paper's
reference; filters that crowd into a few directions (the mean colour, one dominant gradient) are
often near-opposite without being phase pairs, so the same numbers are also given against a
*matched* reference: Gaussian filters with the layer's own second moment. The measure is a property
of weights only: it is scale-free (cosines), so a decayed, "dead" filter still has a pair; ``mask``
restricts it to some filters (e.g. the live ones) when that matters.
"""

from __future__ import annotations

import numpy as np
import torch

from craftlib.runtime import to_numpy

RANDOM_DRAWS = 200  # random layers pooled into the reference histogram
PAIR_PERCENTILE = 1.0  # "paired": μ below this percentile of the random reference


def _unit(weight) -> torch.Tensor:
    w = torch.as_tensor(to_numpy(weight), dtype=torch.float64).flatten(1)
    return torch.nn.functional.normalize(w, dim=1)


def pair_cosines(weight, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """For each filter (``out x ...``): the most negative cosine with any *other* filter, and which
    filter.

    With ``mask`` (one bool per filter) only the selected filters are compared with each other; the
    others get ``nan`` and partner ``-1``. A layer of fewer than two (selected) filters has no
    pairs.
    """
    u = _unit(weight)
    n = u.shape[0]
    keep = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != (n,):
        raise ValueError(f"mask must have one entry per filter ({n}), got shape {keep.shape}")
    cos_min, partner = np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        return cos_min, partner
    sub = u[torch.as_tensor(idx)]
    cos = sub @ sub.T
    cos.fill_diagonal_(np.inf)
    values, where = cos.min(dim=1)
    cos_min[idx] = values.numpy()
    partner[idx] = idx[where.numpy()]
    return cos_min, partner


def second_moment(weight) -> np.ndarray:
    """``E[φ φᵀ]`` over the layer's unit-length filters (``d x d``): the directions the layer's
    filters occupy."""
    u = _unit(weight).numpy()
    return u.T @ u / len(u)


def random_reference(
    shape: tuple[int, ...],
    draws: int = RANDOM_DRAWS,
    seed: int = 0,
    moment: np.ndarray | None = None,
) -> np.ndarray:
    """The pair cosines of ``draws`` random layers of ``shape``, pooled.

    Without ``moment``: i.i.d. Gaussian weights (isotropic, the paper's reference). With ``moment``
    (a ``d x d`` second-moment matrix, e.g. ``second_moment(layer)``): zero-mean Gaussian filters
    with that second moment — random filters that occupy the same directions as the layer's but have
    no pairs beyond what those directions imply (the *matched* reference).
    """
    if len(shape) < 2 or shape[0] < 2:
        raise ValueError(
            f"need a layer shape (filters, ...) with at least two filters, got {shape}"
        )
    n, d = shape[0], int(np.prod(shape[1:]))
    w = np.random.default_rng(seed).standard_normal((draws, n, d))
    if moment is not None:
        vals, vecs = np.linalg.eigh(np.asarray(moment, dtype=np.float64))
        w = w @ (vecs * np.sqrt(np.clip(vals, 0.0, None))).T  # rows ~ N(0, moment)
    w /= np.maximum(np.linalg.norm(w, axis=2, keepdims=True), 1e-300)
    cos = np.einsum("bid,bjd->bij", w, w)  # one batched product instead of a loop over draws
    cos[:, np.arange(n), np.arange(n)] = np.inf
    return cos.min(axis=2).ravel()


def mutual_pairs(
    cos_min: np.ndarray, partner: np.ndarray, threshold: float
) -> list[tuple[int, int]]:
    """Pairs (i < j) that are each other's partner with a cosine below ``threshold``."""
    return [
        (i, int(j))
        for i, j in enumerate(partner)
        if j > i and partner[j] == i and cos_min[i] < threshold
    ]


def _against(cos: np.ndarray, reference: np.ndarray) -> dict:
    threshold = float(np.percentile(reference, PAIR_PERCENTILE))
    return {
        "random_mean": float(reference.mean()),
        "threshold": threshold,
        "shift": float(cos.mean() - reference.mean()),
        "paired_fraction": float(np.mean(cos < threshold)),
    }


def pairing_summary(
    weight,
    mask=None,
    draws: int = RANDOM_DRAWS,
    seed: int = 0,
    reference: np.ndarray | None = None,
    matched: bool = True,
) -> dict:
    """The pairing statistic of one layer against random filters of the same shape.

    Returns plain numbers (JSON-ready): ``n`` filters measured, ``mean`` μ, ``random_mean`` and the
    ``threshold`` (the isotropic random reference's 1st percentile), ``shift`` = mean − random mean
    (negative: more paired than chance), ``paired_fraction`` (μ below the threshold),
    ``mutual_pairs`` and the per-filter ``cos`` and ``partner``. The reference has as many filters
    as are measured.

    ``matched`` adds the same numbers against the *matched* reference
    (``random_reference(moment=…)`` with the measured filters' own second moment): filters that
    crowd into a few directions — the mean colour, a dominant gradient — are often near-opposite
    without being phase pairs, and only pairing beyond that shows up against the matched reference.
    """
    w = torch.as_tensor(to_numpy(weight), dtype=torch.float64)
    cos_min, partner = pair_cosines(w, mask)
    measured = ~np.isnan(cos_min)
    n = int(measured.sum())
    out = {
        "n": n,
        "cos": [None if np.isnan(v) else round(float(v), 6) for v in cos_min],
        "partner": partner.tolist(),
    }
    if n < 2:
        return {
            **out,
            "mean": None,
            "random_mean": None,
            "threshold": None,
            "shift": None,
            "paired_fraction": None,
            "mutual_pairs": [],
            "matched": None,
        }
    shape = (n, *w.shape[1:])
    if reference is None:
        reference = random_reference(shape, draws, seed)
    values = cos_min[measured]
    out.update(mean=float(values.mean()), **_against(values, reference))
    out["mutual_pairs"] = mutual_pairs(cos_min, partner, out["threshold"])
    if matched:
        moment = second_moment(w[torch.as_tensor(np.flatnonzero(measured))])
        out["matched"] = _against(values, random_reference(shape, draws, seed, moment))
    return out


def anti_partner(weight, index: int) -> tuple[int, float]:
    """The filter most opposite to filter ``index`` and their cosine (what the notebook's widget
    shows)."""
    cos_min, partner = pair_cosines(weight)
    return int(partner[index]), float(cos_min[index])


def planted_pairs(n_pairs: int, shape: tuple[int, ...] = (3, 3, 3), seed: int = 0) -> torch.Tensor:
    """A layer of ``2·n_pairs`` filters built as φ₁, −φ₁, φ₂, −φ₂, … (for tests and the
    notebook)."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n_pairs, *shape, generator=g, dtype=torch.float64)
    return torch.stack([phi, -phi], dim=1).reshape(2 * n_pairs, *shape)


TWIN_COS = -0.97  # "twins": mutual partners this close to exact opposites
TWIN_SAME, TWIN_APART = (
    0.1,
    0.5,
)  # median gap (sd of the response) below: one threshold; at or above: two


def twin_thresholds(
    model: torch.nn.Module, faces: torch.Tensor, cutoff: float = TWIN_COS
) -> list[dict]:
    """Do a CReLU stem's φ/−φ twins cut their shared response at the same point?

    Why ask: CReLU already passes both phases of every filter on, so exact twins look redundant —
    unless BatchNorm (which sits before the split, one shift per filter) gives them different
    thresholds. On ``faces``, each mutual twin pair's BN responses (``model.filter_response``, eval
    mode) are fitted as ``z_j ≈ a·z_i + b``: ``gap`` is the distance of j's zero crossing (``z_i =
    −b/a``) from i's, in sd of ``z_i``; ``disagree`` the share of positions where the twins disagree
    about the edge's sign (one fires, its twin's matching phase does not); ``r`` the fit's
    correlation. Redundant twins have gap 0.
    """
    cos, partner = pair_cosines(model.conv1.weight.detach())
    twins = mutual_pairs(cos, partner, cutoff)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = model.filter_response(faces).transpose(0, 1).flatten(1).double().numpy()
    model.train(was_training)
    out = []
    for i, j in twins:
        zi, zj = z[i], z[j]
        a, b = np.polyfit(zi, zj, 1)
        out.append(
            {
                "i": i,
                "j": j,
                "cos": round(float(cos[i]), 6),
                "r": round(float(np.corrcoef(zi, zj)[0, 1]), 6),
                "gap": round(float(abs(b / a) / zi.std()), 6),
                "disagree": round(float(np.mean(np.sign(zi) != np.sign(a) * np.sign(zj))), 6),
            }
        )
    return out


def twin_verdict(gaps: list[float]) -> str:
    """The rule fixed before the CReLU checkpoints were measured: the median gap decides."""
    if not gaps:
        return "no twins"
    median = float(np.median(gaps))
    return (
        "one threshold (redundant)"
        if median < TWIN_SAME
        else "two thresholds"
        if median >= TWIN_APART
        else "inconclusive"
    )
