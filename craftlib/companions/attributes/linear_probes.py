"""Linear probes: what a frozen face CNN encodes about attributes, stage by stage.

Forward hooks collect every stage's output (the stem after ``conv1 -> BN -> PReLU``, each of the
five body blocks, the embedding) for a set of faces; spatial maps are average-pooled to a small grid
(``pool`` x ``pool`` cells per channel, so a probe still knows *where*: top of the crop vs mouth) to
keep the probes fast on two cores. For each attribute and stage a logistic regression is fitted on
standardised features, its regularisation chosen by cross-validation over identity-disjoint folds of
the probe's training people, and scored on *other* people by balanced accuracy (chance = 0.5
whatever the attribute's base rate), with a 95% interval from a bootstrap over test identities (a
person's photos are not independent draws).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from craftlib.data import to_input
from craftlib.runtime import evaluating

from .branching import STAGES, stage_modules
from .labels import UNKNOWN, ProbeSet, check_disjoint

STAGE_LABELS = {
    "stem": "stem (conv1)",
    "embedding": "embedding",
    **{f"block{i}": f"block {i}" for i in range(1, 6)},
}
CS = (1e-3, 1e-2, 1e-1, 1.0)
"""The inverse regularisation strengths the inner cross-validation picks from."""
POOL = 2
N_BOOT = 1000


def _pool(t: torch.Tensor, pool: int) -> torch.Tensor:
    return F.adaptive_avg_pool2d(t, pool).flatten(1) if t.ndim == 4 else t.flatten(1)


@torch.no_grad()
def stage_features(
    model: nn.Module, images: np.ndarray, stages=STAGES, pool: int = POOL, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Frozen features of ``images`` (uint8 NHWC) at every stage, collected with forward hooks in
    one pass.

    Spatial maps are average-pooled to ``pool`` x ``pool`` cells per channel; the embedding is kept
    as is. The model is borrowed in eval mode (BatchNorm on running statistics) and handed back
    unchanged.
    """
    mods = stage_modules(model)
    unknown = [s for s in stages if s not in mods]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(mods)}")
    collected: dict[str, list[torch.Tensor]] = {s: [] for s in stages}
    handles = [
        mods[s].register_forward_hook(
            lambda _m, _i, out, s=s: collected[s].append(_pool(out, pool).float().cpu())
        )
        for s in stages
    ]
    device = next(model.parameters()).device
    try:
        with evaluating(model):
            for i in range(0, len(images), batch_size):
                model(
                    to_input(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))).to(
                        device
                    )
                )
    finally:
        for h in handles:
            h.remove()
    return {s: torch.cat(v).numpy() for s, v in collected.items()}


# --------------------------------------------------------------------------------------------
# statistics


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (0.5 = chance, whatever the base rate)."""
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    return float(((pred & y).sum() / max(1, y.sum()) + (~pred & ~y).sum() / max(1, (~y).sum())) / 2)


def balanced_accuracy_ci(
    y, pred, groups, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Balanced accuracy and its percentile interval from a bootstrap that resamples *people*, not
    images."""
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.zeros((g.max() + 1, 4))
    for j, m in enumerate((y & pred, y, ~y & ~pred, ~y)):
        np.add.at(counts[:, j], g, m)
    rng = np.random.default_rng(seed)
    n = len(counts)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    tp, p, tn, neg = (w @ counts).T
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (tp / p + tn / neg) / 2
    boot = boot[np.isfinite(boot)]
    alpha = (1 - level) / 2
    return balanced_accuracy(y, pred), (
        float(np.quantile(boot, alpha)),
        float(np.quantile(boot, 1 - alpha)),
    )


# --------------------------------------------------------------------------------------------
# one probe, and every probe of a model


@dataclass
class Probe:
    """One fitted probe: its test score, interval, chosen C and the test faces' decision values."""

    balanced_accuracy: float
    ci95: tuple[float, float]
    C: float
    cv_score: (
        float  # the inner cross-validation's balanced accuracy at that C (training people only)
    )
    n_train: int
    n_test: int
    test_index: np.ndarray = field(repr=False)  # into the probe set, only labelled test faces
    decision: np.ndarray = field(repr=False)  # w.x + b of each of them (> 0: predicted positive)


def fit_probe(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    Cs=CS,
    folds: int = 3,
    n_boot: int = N_BOOT,
    seed: int = 0,
    C: float | None = None,
) -> Probe | None:
    """Standardise on the training faces, pick C by identity-disjoint CV, score on the test people.

    ``y`` may hold ``UNKNOWN`` (-1): those faces are left out. ``None`` when a side lacks a class.
    With ``C`` given (a value an earlier cross-validation chose), that C is used and no CV runs
    (``cv_score`` is then NaN): the study holds each probe's C fixed across models this way.
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    check_disjoint(groups, train_idx, test_idx)
    tr = train_idx[y[train_idx] != UNKNOWN]
    te = test_idx[y[test_idx] != UNKNOWN]
    if len(np.unique(y[tr])) < 2 or len(np.unique(y[te])) < 2:
        return None
    scaler = StandardScaler().fit(X[tr])
    xtr, xte = scaler.transform(X[tr]), scaler.transform(X[te])
    if C is not None:
        clf = LogisticRegression(C=float(C), class_weight="balanced", max_iter=300, tol=1e-3).fit(
            xtr, y[tr]
        )
        decision = clf.decision_function(xte)
        ba, ci = balanced_accuracy_ci(y[te], decision > 0, groups[te], n_boot, seed)
        return Probe(
            ba,
            ci,
            float(C),
            float("nan"),
            int(len(tr)),
            int(len(te)),
            te,
            decision.astype(np.float32),
        )
    k = min(folds, len(np.unique(groups[tr])))
    cv = list(GroupKFold(k).split(xtr, y[tr], groups[tr]))
    clf = LogisticRegressionCV(
        Cs=list(Cs),
        cv=cv,
        l1_ratios=(0.0,),
        scoring="balanced_accuracy",
        class_weight="balanced",
        max_iter=300,
        tol=1e-3,
        use_legacy_attributes=False,
    )
    clf.fit(xtr, y[tr])
    decision = clf.decision_function(xte)
    ba, ci = balanced_accuracy_ci(y[te], decision > 0, groups[te], n_boot, seed)
    cv_score = float(np.asarray(clf.scores_).reshape(k, -1).mean(0).max())
    return Probe(
        ba,
        ci,
        float(np.ravel(clf.C_)[0]),
        cv_score,
        int(len(tr)),
        int(len(te)),
        te,
        decision.astype(np.float32),
    )


@dataclass
class ProbeResults:
    """Probes of one model: balanced accuracy (and interval) per attribute x stage, plus what the
    widget shows."""

    attributes: list[str]
    kinds: list[str]
    stages: list[str]
    balanced_accuracy: np.ndarray  # attributes x stages (NaN where a probe could not be fitted)
    ci_low: np.ndarray
    ci_high: np.ndarray
    C: np.ndarray
    # inner-CV balanced accuracy on the probe's training people: chooses depths fairly
    cv_score: np.ndarray
    probes: dict = field(repr=False, default_factory=dict)  # (attribute, stage) -> Probe
    probe_set: ProbeSet | None = field(repr=False, default=None)

    def best_stage(self, attribute: str, by: str = "cv") -> str:
        """The stage where ``attribute`` is decoded best (the earliest one on a tie).

        ``by="cv"`` ranks stages by the inner cross-validation on the probe's *training* people, so
        that a depth chosen here can be judged on the test people without selection bias;
        ``by="test"`` by the test score (descriptive only).
        """
        table = self.cv_score if by == "cv" else self.balanced_accuracy
        return self.stages[int(np.nanargmax(table[self.attributes.index(attribute)]))]

    def cell(self, attribute: str, stage: str) -> float:
        return float(
            self.balanced_accuracy[self.attributes.index(attribute), self.stages.index(stage)]
        )

    def most_wrong(self, attribute: str, stage: str, k: int = 8) -> list[dict]:
        """The ``k`` test faces the probe is most confidently wrong about (index into the probe set,
        label, margin)."""
        probe = self.probes[(attribute, stage)]
        y = self.probe_set.y[probe.test_index, self.attributes.index(attribute)] == 1
        # > 0: wrong side, larger = more confident
        signed = np.where(y, -probe.decision, probe.decision)
        order = np.argsort(-signed)[:k]
        return [
            {
                "index": int(probe.test_index[i]),
                "label": int(y[i]),
                "decision": float(probe.decision[i]),
                "file": self.probe_set.files[probe.test_index[i]],
            }
            for i in order
            if signed[i] > 0
        ]

    def to_dict(self) -> dict:
        """Plain numbers for a JSON record (no per-face values)."""

        def listed(a):
            return [[None if not np.isfinite(v) else round(float(v), 5) for v in row] for row in a]

        return {
            "attributes": self.attributes,
            "kinds": self.kinds,
            "stages": self.stages,
            "balanced_accuracy": listed(self.balanced_accuracy),
            "ci_low": listed(self.ci_low),
            "ci_high": listed(self.ci_high),
            "C": listed(self.C),
            "cv_score": listed(self.cv_score),
            "n_test": {
                a: next((p.n_test for (aa, _), p in self.probes.items() if aa == a), 0)
                for a in self.attributes
            },
        }


def probe_features(
    features: dict[str, np.ndarray],
    probe_set: ProbeSet,
    Cs=CS,
    n_boot: int = N_BOOT,
    seed: int = 0,
    progress=None,
    C: np.ndarray | None = None,
) -> ProbeResults:
    """A probe per attribute per stage on precomputed features (``stage_features`` or any dict of
    arrays).

    ``C`` (attributes x stages, e.g. another model's ``ProbeResults.C``) fixes each probe's
    regularisation instead of cross-validating it; a NaN cell is cross-validated.
    """
    stages = list(features)
    attrs = probe_set.attributes
    shape = (len(attrs), len(stages))
    ba, lo, hi, cs, cv = (np.full(shape, np.nan) for _ in range(5))
    probes = {}
    for j, stage in enumerate(stages):
        X = features[stage]
        for i, attr in enumerate(attrs):
            fixed = None if C is None or not np.isfinite(C[i][j]) else float(C[i][j])
            p = fit_probe(
                X,
                probe_set.y[:, i],
                probe_set.identities,
                probe_set.train_idx,
                probe_set.test_idx,
                Cs,
                n_boot=n_boot,
                seed=seed,
                C=fixed,
            )
            if p is not None:
                probes[(attr.name, stage)] = p
                ba[i, j], (lo[i, j], hi[i, j]), cs[i, j], cv[i, j] = (
                    p.balanced_accuracy,
                    p.ci95,
                    p.C,
                    p.cv_score,
                )
            if progress is not None:
                progress(attr.name, stage, p)
    return ProbeResults(
        [a.name for a in attrs],
        [a.kind for a in attrs],
        stages,
        ba,
        lo,
        hi,
        cs,
        cv,
        probes,
        probe_set,
    )


def run_probes(
    model: nn.Module,
    probe_set: ProbeSet,
    stages=STAGES,
    pool: int = POOL,
    Cs=CS,
    n_boot: int = N_BOOT,
    seed: int = 0,
    progress=None,
    C: np.ndarray | None = None,
) -> ProbeResults:
    """Features of the probe set's faces at every stage of ``model``, then every probe (``C``: see
    ``probe_features``)."""
    return probe_features(
        stage_features(model, probe_set.images, stages, pool),
        probe_set,
        Cs,
        n_boot,
        seed,
        progress,
        C,
    )


# --------------------------------------------------------------------------------------------
# a planted attribute: a check that the probes find what is there, where it is


def plant_tint(
    images: np.ndarray, seed: int = 0, strength: float = 12.0
) -> tuple[np.ndarray, np.ndarray]:
    """Tint a random half of ``images`` (red up, blue down by ``strength`` grey levels); return
    (images, labels).

    A colour shift is the simplest thing a first layer sees: a probe should decode it best at the
    stem.
    """
    rng = np.random.default_rng(seed)
    label = (rng.random(len(images)) < 0.5).astype(np.int8)
    out = images.astype(np.float32)
    out[label == 1, ..., 0] += strength
    out[label == 1, ..., 2] -= strength
    return np.clip(out, 0, 255).round().astype(np.uint8), label
