"""Synthetic stand-ins for the attribute tests: a probe set of random small faces, a tiny face CNN,
records.

Plain functions (not fixtures) so that the probe, branching, study and widget tests share them.
"""

from __future__ import annotations

import numpy as np
import torch

from craftlib.companions.attributes.labels import PROBE_ATTRIBUTES, ProbeSet, identity_split
from craftlib.models import FaceCNN, ModelConfig

TOY = ModelConfig(input_size=16, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)


def toy_model(seed: int = 0) -> FaceCNN:
    torch.manual_seed(seed)
    return FaceCNN(TOY).eval()


def toy_probe_set(
    n_people: int = 40, per: int = 3, size: int = 16, attributes=PROBE_ATTRIBUTES[:3], seed: int = 0
) -> ProbeSet:
    """Random faces; attribute 0 is 'bright image' (decodable), the others are coin flips; a few
    unknown labels."""
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"P{i:03d}" for i in range(n_people)], per)
    images = rng.integers(0, 200, (len(ids), size, size, 3), dtype=np.uint8)
    bright = rng.random(len(ids)) < 0.4
    images[bright] = np.clip(images[bright].astype(int) + 50, 0, 255).astype(np.uint8)
    y = rng.integers(0, 2, (len(ids), len(attributes))).astype(np.int8)
    y[:, 0] = bright
    y[::17, -1] = -1
    files = [f"{p}/{p}_{k % per + 1:04d}.jpg" for k, p in enumerate(ids)]
    train, test = identity_split(ids, 0.4, seed)
    return ProbeSet(images, files, ids, y, tuple(attributes), train, test, {})


def probe_record(
    arm: str,
    seed: int,
    shift: float = 0.0,
    stages=("stem", "block1", "embedding"),
    attributes=("black_hair", "smiling", "male"),
    kinds=("colour/texture", "geometry", "identity"),
) -> dict:
    """A ``probe-<arm>-s<seed>.json`` record with known numbers (``shift`` added to every cell)."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0.6, 0.9, len(stages))[None, :] + 0.01 * rng.standard_normal(
        (len(attributes), len(stages))
    )
    ba = (base + shift).round(4).tolist()

    def group(acc_men, acc_women):
        def rate(r, n):
            return {"k": int(r * n), "n": n, "rate": r, "ci95": [r - 0.05, r + 0.05]}

        return {
            "accuracy": 0.8,
            "groups": {
                "men": {
                    "pairs": 600,
                    "genuine": 300,
                    "impostor": 300,
                    "accuracy": rate(acc_men, 600),
                    "fnmr": rate(0.2, 300),
                    "fmr": rate(0.15, 300),
                },
                "women": {
                    "pairs": 100,
                    "genuine": 80,
                    "impostor": 20,
                    "accuracy": rate(acc_women, 100),
                    "fnmr": rate(0.25, 80),
                    "fmr": rate(0.1, 20),
                },
            },
            "mixed": {"pairs": 250, "genuine": 1, "fmr": rate(0.05, 249)},
            "unlabelled_pairs": 3,
        }

    verification = {"gender": group(0.82 + shift, 0.78 + 0.5 * shift), "age": group(0.8, 0.79)}
    verification["age"]["groups"] = {
        "senior": verification["age"]["groups"]["men"],
        "not senior": verification["age"]["groups"]["women"],
    }
    return {
        "kind": "probe",
        "arm": arm,
        "seed": seed,
        "model": {"source": f"{arm}-s{seed}.pt"},
        "probes": {
            "attributes": list(attributes),
            "kinds": list(kinds),
            "stages": list(stages),
            "balanced_accuracy": ba,
            "ci_low": (np.array(ba) - 0.02).tolist(),
            "ci_high": (np.array(ba) + 0.02).tolist(),
            "C": [[0.1] * len(stages)] * len(attributes),
            "cv_score": ba,
            "n_test": {a: 1000 for a in attributes},
        },
        "verification": verification,
        "seconds": 1.0,
        "fingerprint": {"test": True},
    }
