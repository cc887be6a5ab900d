"""Face verification on LFW pairs: embeddings with flip TTA, cosine scores and the 10-fold
protocol."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold, PredefinedSplit

from .data import PairSet, to_input
from .runtime import evaluating

FARS = (1e-2, 1e-3)


@torch.no_grad()
def embed(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 256, flip: bool = True
) -> np.ndarray:
    """L2-normalised embeddings; with ``flip`` the image and its mirror are summed first
    (insightface).

    The model is borrowed in eval mode and handed back in the mode it came in.
    """
    device = next(model.parameters()).device
    out = []
    with evaluating(model):
        for i in range(0, len(images), batch_size):
            x = to_input(torch.from_numpy(images[i : i + batch_size])).to(device)
            e = model(x)
            if flip:
                e = e + model(x.flip(3))
            out.append(F.normalize(e.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def pixel_embeddings(images: np.ndarray) -> np.ndarray:
    """The floor: each face's raw pixels, centred per image and L2-normalised."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_scores(emb: np.ndarray, pairs: PairSet) -> np.ndarray:
    """Cosine similarity of each pair (embeddings are already unit length)."""
    return np.sum(emb[pairs.left] * emb[pairs.right], axis=1)


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    if scores.shape != same.shape or scores.ndim != 1:
        raise ValueError(
            f"scores {scores.shape} and labels {same.shape} must be 1-D and the same length"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf; check the model's embeddings")
    if same.all() or not same.any():
        raise ValueError("verification needs both same-person and different-person pairs")
    return scores, same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (predict "same" when score > t).

    Sorting once and counting with cumulative sums makes this O(n log n) instead of O(n^2).
    """
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    neg_below = np.concatenate([[0], np.cumsum(~y)])  # negatives correctly rejected if cut before k
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])
    correct = neg_below + pos_above
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s[1:] > s[:-1]  # cannot cut between tied scores
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        return float(s[0] - 1e-6)
    if k == len(s):
        return float(s[-1] + 1e-6)
    return float((s[k - 1] + s[k]) / 2)


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The lowest threshold whose false-accept rate on these pairs is at most ``far``."""
    if not 0 < far < 1:
        raise ValueError(f"FAR must be in (0, 1), got {far}")
    neg = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(neg)))  # number of impostors we may accept
    return float(neg[allowed]) if allowed < len(neg) else float(neg[-1] - 1e-6)


def splits(n: int, folds: np.ndarray | None = None, n_splits: int = 10):
    """Official folds when given (``PredefinedSplit``), otherwise 10 contiguous folds
    (``KFold``)."""
    if folds is not None:
        return PredefinedSplit(np.asarray(folds)).split()
    return KFold(n_splits=n_splits, shuffle=False).split(np.arange(n))


def evaluate_scores(
    scores: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray | None = None,
    fars: tuple[float, ...] = FARS,
) -> dict:
    """The standard LFW report: 10-fold accuracy (threshold from the other 9 folds), AUC, EER,
    TAR@FAR.

    A TAR at a FAR is reported only where every training split holds at least 1/FAR impostor pairs
    (otherwise the threshold cannot be set at that FAR): ``None``, with the reason in ``tar_notes``.
    """
    scores, same = _check(scores, same)
    accs, thresholds, tars = [], [], {far: [] for far in fars}
    impostors = []  # impostor pairs each threshold is chosen on: a FAR below 1/that cannot be set
    for train_idx, test_idx in splits(len(scores), folds):
        impostors.append(int((~same[train_idx]).sum()))
        t = best_threshold(scores[train_idx], same[train_idx])
        thresholds.append(t)
        accs.append(float(np.mean((scores[test_idx] > t) == same[test_idx])))
        for far in fars:
            tf = threshold_at_far(scores[train_idx], same[train_idx], far)
            pos = scores[test_idx][same[test_idx]]
            tars[far].append(float(np.mean(pos > tf)) if len(pos) else np.nan)
    fpr, tpr, roc_thr = roc_curve(same, scores)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    report = {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "thresholds": thresholds,
        "auc": float(roc_auc_score(same, scores)),
        "eer": float((fpr[i] + 1 - tpr[i]) / 2),
        "n_pairs": int(len(scores)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }
    report["tar_notes"] = {}
    for far in fars:
        if min(impostors) * far < 1:
            report[f"tar@far={far:g}"] = None
            report["tar_notes"][f"{far:g}"] = (
                f"not estimable: {min(impostors)} impostor pairs per training split, "
                f"fewer than 1/FAR = {1 / far:.0f}"
            )
        else:
            report[f"tar@far={far:g}"] = float(np.nanmean(tars[far]))
    return report


def pair_scores(model: torch.nn.Module, pairs: PairSet, flip: bool = True) -> np.ndarray:
    """The cosine score of every pair (each image embedded once): what a run record keeps for
    resampling."""
    return cosine_scores(embed(model, pairs.images, flip=flip), pairs)


def evaluate(model: torch.nn.Module, pairs: PairSet, flip: bool = True) -> dict:
    """Embed every image of ``pairs`` once and return the full verification report."""
    return evaluate_scores(pair_scores(model, pairs, flip), pairs.same, pairs.folds)


def evaluate_pixels(pairs: PairSet) -> dict:
    """The raw-pixel cosine baseline on the same pairs and folds."""
    return evaluate_scores(
        cosine_scores(pixel_embeddings(pairs.images), pairs), pairs.same, pairs.folds
    )
