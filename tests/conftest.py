"""The one fixture system of the suite: real LFW at 32 px, real runs on it, and small synthetic
stand-ins.

Real data (session-scoped, each computed at most once per pytest process):

- ``lfw_root`` / ``lfw``: the LFW folder named by ``$CRAFTLIB_DATA``; every test that needs it is
  **skipped with the reason** when the variable is unset (nothing is ever downloaded by the tests);
- ``faces``: the training subset every real-data test uses, the first ``MAX_IDENTITIES`` training
  identities (disjoint from DevTest) at 32 px; ``tiny_faces`` is its first ``TINY_IDENTITIES``
  identities (105 faces: 3 steps per epoch at batch 32, for loop mechanics in about a second);
- ``devtest`` (the 1,000 View 1 test pairs) and ``devtest_subset`` (every 4th pair, all 10 folds);
- ``stem``: the released MobileFaceNet's ``conv -> BN -> ReLU6`` (31 of 64 filters dead), skipped
  without ``$CRAFTLIB_MODELS``;
- ``tiny_run``: a finished FAST-schedule CRAFT run on ``tiny_faces`` (3 epochs of 3 steps, a few
  seconds); ``comparison_dir``: a results folder of real run records, two arms x two seeds (slow);
- ``trainer``: a fresh trainer on ``tiny_faces`` a test may change;
- ``workshop_executed``: notebooks 00-05 executed once, FAST, in order, with their exercise
  solutions appended (``tests/test_notebooks.py`` checks their own cells,
  ``tests/test_exercises.py`` the solutions and checkpoints: one execution serves both).

Synthetic stand-ins (no LFW needed): ``toy_faces`` + ``toy_config`` (random 16 px faces and a tiny
model, for loop mechanics in milliseconds); ``fake_lfw`` writes a tiny LFW folder of synthetic JPEGs
for bad inputs; ``make_record`` builds run records with the exact shape ``experiments.run_arm``
writes, for the statistics, figures and widgets that read records.

Markers: ``slow`` is every test that takes more than about a second of CPU (it trains a real model,
starts a subprocess, or redraws a widget's figures many times), or uses a fixture that does; the
notebook and browser tests count as slow too (``pytest_collection_modifyitems``), so
``pytest -m "not slow"`` is the quick inner loop (under 2 minutes; ``make test`` runs everything).
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib

import re
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from PIL import Image

from craftlib.data import FaceSet, PairSet

SIZE = 32  # face size for every real-LFW test: small enough for 2 CPU cores
MAX_IDENTITIES = (
    100  # the one training subset (tests/notebooks/widgets_browser.ipynb trains on the same)
)
TINY_IDENTITIES = 30  # its first 30 identities, 105 faces
TINY_BATCH = 32  # 105 faces // 32 = 3 steps per epoch

# the fake LFW: name -> number of images; Dave has one image, so he can never be a training class
FAKE_PEOPLE = {"Alice_Aa": 3, "Bob_Bb": 2, "Carol_Cc": 2, "Dave_Dd": 1, "Eve_Ee": 2}
FAKE_PAIRS = {
    # View 1 test: 2 same + 2 different, over Alice and Bob only
    "pairsDevTest.txt": "2\nAlice_Aa\t1\t2\nBob_Bb\t1\t2\n"
    "Alice_Aa\t3\tBob_Bb\t1\nAlice_Aa\t1\tBob_Bb\t2\n",
    # View 1 train: 1 same + 1 different
    "pairsDevTrain.txt": "1\nCarol_Cc\t1\t2\nCarol_Cc\t1\tEve_Ee\t1\n",
    # View 2: 2 folds of 1 same + 1 different
    "pairs.txt": "2\t1\nAlice_Aa\t1\t2\nAlice_Aa\t1\tBob_Bb\t1\n"
    "Carol_Cc\t1\t2\nCarol_Cc\t2\tEve_Ee\t2\n",
}


def pytest_collection_modifyitems(items):
    """Executing notebooks or driving a browser takes minutes: those tests are slow as well."""
    for item in items:
        if item.get_closest_marker("notebooks") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


# ---------------------------------------------------------------------------------------------
# real LFW


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """The real LFW folder named by ``$CRAFTLIB_DATA`` (the test is skipped without it)."""
    value = os.environ.get("CRAFTLIB_DATA")
    if not value:
        pytest.skip(
            "CRAFTLIB_DATA is not set: point it at an LFW folder (see data/README.md) to run "
            "real-LFW tests"
        )
    root = Path(value)
    if not root.is_dir():
        pytest.skip(f"CRAFTLIB_DATA={value} is not a folder")
    return root


@pytest.fixture(scope="session")
def lfw(lfw_root):
    """``craftlib.data.LFW`` on the real folder at 32 px, never downloading."""
    from craftlib.data import LFW

    return LFW(lfw_root, download=False, size=SIZE)


@pytest.fixture(scope="session")
def faces(lfw) -> FaceSet:
    """The first ``MAX_IDENTITIES`` training identities (disjoint from DevTest) at 32 px: 567
    faces."""
    return lfw.training_set(max_identities=MAX_IDENTITIES)


@pytest.fixture(scope="session")
def tiny_faces(faces) -> FaceSet:
    """The first ``TINY_IDENTITIES`` of those identities (105 faces): 3 steps per epoch at batch
    32."""
    keep = faces.labels < TINY_IDENTITIES
    files = [f for f, k in zip(faces.files, keep) if k]
    return FaceSet(faces.images[keep], faces.labels[keep], faces.classes[:TINY_IDENTITIES], files)


@pytest.fixture(scope="session")
def devtest(lfw) -> PairSet:
    """The 1,000 View 1 test pairs at 32 px."""
    return lfw.pairs("devtest")


@pytest.fixture(scope="session")
def devtest_subset(devtest) -> PairSet:
    """250 DevTest pairs (every 4th): same and different pairs in all 10 folds, 4x less to embed."""
    return devtest.thinned(4)


@pytest.fixture(scope="session")
def stem():
    """The released MobileFaceNet's ``conv -> BN -> ReLU6`` stem, checksum-verified, never
    downloaded here."""
    from craftlib import pretrained

    try:
        return pretrained.mobilefacenet_stem(download=False)
    except pretrained.ModelNotFoundError as err:
        pytest.skip(f"MobileFaceNet weights not available (set CRAFTLIB_MODELS): {err}")


# ---------------------------------------------------------------------------------------------
# real runs


@pytest.fixture(scope="session")
def tiny_recipe():
    """FAST at batch 32: on ``tiny_faces`` 3 epochs of 3 steps; re-activation (silent, τ 0.3) after
    epochs 1-2."""
    from craftlib.recipes import FAST

    return FAST.but(batch_size=TINY_BATCH)


@pytest.fixture(scope="session")
def tiny_run(tiny_faces, tiny_recipe):
    """A finished CRAFT (contextual) run on ``tiny_faces``: both epoch ends renew filters. Do not
    mutate it."""
    from craftlib.training import train

    trainer = train(
        tiny_faces, tiny_recipe.train, [tiny_recipe.callback(arm="contextual")], progress=False
    )
    assert [e["epoch"] for e in trainer.events] == [1, 2] and all(
        e["filters"] for e in trainer.events
    )
    return trainer


@pytest.fixture
def trainer(tiny_faces, tiny_recipe):
    """A fresh trainer on ``tiny_faces`` after 3 steps (one epoch), free to change."""
    from craftlib.training import Trainer

    t = Trainer(tiny_faces, tiny_recipe.train, progress=False)
    t.train_steps(3)
    return t


@pytest.fixture(scope="session")
def comparison_dir(tmp_path_factory, tiny_faces, tiny_recipe, lfw, devtest_subset):
    """A results folder as ``compare`` writes it: ``records/<arm>-s<seed>.json`` for none and
    contextual at seeds 0 and 1 (``tiny_recipe`` on ``tiny_faces``: 2 epochs of 3 steps,
    re-activation after epoch 1; 250 DevTest pairs). Four real runs: slow."""
    from dataclasses import replace

    from craftlib.study.experiments import fingerprint, run_arm, write_record

    out = tmp_path_factory.mktemp("comparison")
    recipe = replace(
        tiny_recipe.but(epochs=2, craft={"last_epoch": 1}), max_identities=TINY_IDENTITIES
    )
    meta = fingerprint(recipe, lfw.variant)
    for seed in (0, 1):
        for arm in ("none", "contextual"):
            write_record(out, run_arm(tiny_faces, devtest_subset, recipe, arm, seed), meta)
    return out


# ---------------------------------------------------------------------------------------------
# synthetic faces: loop mechanics without LFW, in milliseconds


@pytest.fixture(scope="session")
def toy_config():
    """A 16 px, 8-filter FaceCNN trained 3 epochs at batch 16 (4 steps per epoch on
    ``toy_faces``)."""
    from craftlib.models import ModelConfig
    from craftlib.training import TrainConfig

    return TrainConfig(
        epochs=3,
        batch_size=16,
        threads=1,
        model=ModelConfig(input_size=16, stem_channels=8, widths=(4, 8, 8), embedding_dim=8),
    )


@pytest.fixture(scope="session")
def toy_faces() -> FaceSet:
    """64 random 16 px "faces" of 4 identities."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 16)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    return FaceSet(
        images,
        labels,
        [f"P{i}" for i in range(4)],
        [f"P{k}/P{k}_{i:04d}.jpg" for i, k in enumerate(labels)],
    )


# ---------------------------------------------------------------------------------------------
# synthetic run records


@pytest.fixture(scope="session")
def make_record():
    """Factory: ``make_record(arm, seed, accuracy, silent=..., renewed=...)`` -> a run record
    (synthetic numbers).

    It has every field ``experiments.run_arm`` + ``write_record`` produce (fingerprint of FAST on
    the deep-funneled LFW, 3 epochs of 4 steps, 64 filters) so that ``results``, ``survival``,
    ``viz`` and ``widgets`` read it as a real one. ``silent`` is the share of filters whose final
    silent score is below ``results.SILENT_TAU``; ``renewed`` the filters renewed at the end of
    epoch 1 (arms other than ``none``; ``none`` logs the same filters as detected).
    """
    from craftlib.recipes import FAST
    from craftlib.study.experiments import fingerprint

    meta = fingerprint(FAST, "deepfunneled")

    def make(
        arm: str,
        seed: int,
        accuracy: float,
        silent: float = 0.25,
        renewed=(0, 1, 2),
        epochs: int = 3,
        steps: int = 4,
        fingerprint: dict | None = None,
    ) -> dict:
        rng = np.random.default_rng(1000 * seed + sum(map(ord, arm)))
        n = 64
        final_silent = rng.uniform(0.05, 1.0, n)
        final_silent[: int(round(silent * n))] = rng.uniform(0.0, 0.005, int(round(silent * n)))
        final_silent[-1] = 1.0
        strategy = "none" if arm == "none" else arm
        events = [
            {
                "epoch": 1,
                "step": steps,
                "strategy": strategy,
                "filters": list(renewed),
                "total": n,
                "notes": [],
                "score": "silent",
            }
        ]
        columns = epochs + 1
        out_std = rng.uniform(0.2, 1.0, (columns, n))
        l2 = rng.uniform(0.5, 1.0, (columns, n))
        out_std[:, -1] = 1.0
        roc_fpr = np.geomspace(1e-3, 1.0, 40)
        return {
            "arm": arm,
            "seed": seed,
            "spec": FAST.arm(arm).to_dict(),
            "train_seconds": 1.0,
            "threads": 1,
            "machine": "test",
            "accuracy": accuracy,
            "accuracy_std": 0.01,
            "fold_accuracies": [accuracy] * 10,
            "auc": 0.5 + accuracy / 2,
            "eer": 1 - accuracy,
            "n_pairs": 1000,
            "tar@far=0.01": accuracy / 2,
            "tar@far=0.001": None,
            "tar_notes": {
                "0.001": "not estimable: 450 impostor pairs per training split, fewer than 1/FAR = "
                "1000"
            },
            "roc": {"fpr": roc_fpr.tolist(), "tpr": np.sqrt(roc_fpr).tolist()},
            "scores": {
                "max": rng.uniform(0.01, 1.0, n).tolist(),
                "effective": rng.uniform(0.01, 1.0, n).tolist(),
                "gamma": rng.uniform(0.01, 1.0, n).tolist(),
                "silent": final_silent.tolist(),
            },
            "events": events,
            "timeline": {
                "epoch": list(range(columns)),
                "step": [steps * e for e in range(columns)],
                "lr": [0.1] * columns,
                "loss": [float("nan")] + [5.0] * epochs,
                "max": l2.tolist(),
                "l2": l2.tolist(),
                "gamma": out_std.tolist(),
                "output_std": out_std.tolist(),
            },
            "fingerprint": fingerprint if fingerprint is not None else meta,
        }

    return make


@pytest.fixture(scope="session")
def synthetic_records(make_record) -> list[dict]:
    """Three arms x five seeds with known accuracies (contextual +1.6 points, random_matched +0.4
    points) and silent fractions (about 50%, 10% and 20%, a few filters apart from seed to seed)."""
    acc = {
        "none": [0.80, 0.82, 0.81, 0.79, 0.83],
        "contextual": [0.84, 0.83, 0.83, 0.82, 0.84],
        "random_matched": [0.81, 0.82, 0.82, 0.79, 0.83],
    }
    silent = {"none": 0.5, "contextual": 0.1, "random_matched": 0.2}
    shift = {
        "none": (0, 2, 1, 3, 1),
        "contextual": (1, 0, 0, 2, 1),
        "random_matched": (0, 1, 3, 0, 2),
    }
    return [
        make_record(arm, seed, acc[arm][seed], silent[arm] + shift[arm][seed] / 64)
        for arm in acc
        for seed in range(5)
    ]


@pytest.fixture
def records_dir(tmp_path, synthetic_records) -> Path:
    """``synthetic_records`` written as a results folder (``records/<arm>-s<seed>.json``)."""
    from craftlib.study.experiments import write_record

    out = tmp_path / "results"
    for record in synthetic_records:
        write_record(
            out, {k: v for k, v in record.items() if k != "fingerprint"}, record["fingerprint"]
        )
    return out


# ---------------------------------------------------------------------------------------------
# a fake LFW folder for bad inputs


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """Send the preprocessing cache to an empty temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CRAFTLIB_CACHE", str(cache))
    return cache


def write_jpeg(path: Path, seed: int, size: int = 250) -> Path:
    """A deterministic synthetic face-sized JPEG (smooth noise, so it compresses like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 10, size // 10, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


@pytest.fixture
def fake_lfw(tmp_path, tmp_cache):
    """Factory: ``fake_lfw(layout="lfw-deepfunneled", name="lfw")`` writes a tiny LFW folder and
    returns its root.

    Five identities (``FAKE_PEOPLE``) of synthetic 250x250 JPEGs and three small, valid pair files
    (``FAKE_PAIRS``) beside the image folder; the cache goes to a temporary folder.
    """

    def make(
        layout: str = "lfw-deepfunneled",
        name: str = "lfw",
        people=FAKE_PEOPLE,
        pairs=FAKE_PAIRS,
        size: int = 250,
    ) -> Path:
        root = tmp_path / name
        images = root / layout
        for i, (person, n) in enumerate(people.items()):
            for k in range(1, n + 1):
                write_jpeg(images / person / f"{person}_{k:04d}.jpg", seed=100 * i + k, size=size)
        for fname, text in pairs.items():
            (root / fname).write_text(text)
        return root

    return make


# ---------------------------------------------------------------------------------------------
# the workshop notebooks, executed once

WORKSHOP_NOTEBOOKS = ["00", "01", "02", "03", "04", "05"]
SOLUTION = re.compile(r"<details><summary>Solution[^<]*</summary>(.*?)</details>", re.S)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def solutions(nb) -> list[tuple[int, str]]:
    """(exercise cell index, code) of every Python block inside a ``<details>`` solution of a
    notebook."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for block in SOLUTION.findall(cell.source):
                found += [(i, code.strip()) for code in PYTHON_BLOCK.findall(block)]
    return found


@pytest.fixture(scope="session")
def workshop_executed(lfw_root, tmp_path_factory) -> dict:
    """Notebooks 00-05 executed in FAST mode, in order, sharing one fresh runs folder as a learner's
    would, each with the code of its ``<details>`` solutions appended as extra cells (a solution
    that no longer runs fails the notebook). Maps name -> (executed notebook, number of its own
    cells) or the exception it raised; ``"_times"`` maps name -> seconds (also written to
    ``build/notebook_times.json``)."""
    import nbformat

    from craftlib.workshop import notebooks as runner

    folder = tmp_path_factory.mktemp("workshop")
    env = {"CRAFTLIB_RUNS": str(tmp_path_factory.mktemp("runs")), "CRAFTLIB_DATA": str(lfw_root)}
    out, times = {}, {}
    with patch.dict(os.environ, env):  # the kernels inherit this environment; restored afterwards
        for path in runner.list_notebooks(WORKSHOP_NOTEBOOKS):
            nb = nbformat.read(path, as_version=4)
            own = len(nb.cells)
            for k, (index, code) in enumerate(solutions(nb)):
                cell = nbformat.v4.new_code_cell(
                    f"# solution {k + 1} (exercise in cell {index})\n{code}"
                )
                cell.id = f"solution-{k + 1}"
                nb.cells.append(cell)
            copy = folder / path.name
            nbformat.write(nb, copy)
            try:
                done, seconds = runner.execute(copy, runner.EXECUTED_DIR, timeout=1200, fast=True)
            except Exception as err:  # noqa: BLE001 - reported by the tests of that notebook
                out[path.stem] = err
            else:
                out[path.stem], times[path.stem] = (done, own), seconds
    if times:
        runner.record_times(times, fast=True)
    out["_times"] = times
    return out
