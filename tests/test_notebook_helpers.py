"""The small library helpers the notebooks call: run caching, context, tracking, summaries, the runner.

All on synthetic data (no LFW needed) except where noted, so they run in a second or two.
"""
from __future__ import annotations

import json
import os

import nbformat
import numpy as np
import pytest
import torch

from craftlib import activity, experiments, notebooks, paths, reactivation, training
from craftlib.data import FaceSet, Pair, identities_by_fold
from craftlib.models import ModelConfig

SMALL = ModelConfig(input_size=16, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)


@pytest.fixture
def toy_faces() -> FaceSet:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 16)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    return FaceSet(images, labels, [f"P{i}" for i in range(4)], [f"P{k}/P{k}_{i:04d}.jpg" for i, k in enumerate(labels)])


def _config(**kw) -> training.TrainConfig:
    return training.TrainConfig(epochs=3, batch_size=16, model=SMALL, threads=1, **kw)


# ---------------------------------------------------------------------------------------------
# train_cached


def test_train_cached_saves_reloads_and_resumes(toy_faces, tmp_path):
    cfg, seen = _config(), []
    first = training.train_cached(toy_faces, cfg, name="toy", keep=(1,), folder=tmp_path, progress=False,
                                  log=lambda *a: None, after_epoch=lambda t: seen.append(t.epoch))
    assert seen == [1, 2, 3]
    assert sorted(p.name.rsplit("-", 1)[1] for p in tmp_path.glob("toy-*.pt")) == ["e001.pt", "e003.pt"]
    again = training.train_cached(toy_faces, cfg, name="toy", folder=tmp_path, progress=False, log=lambda *a: None,
                                  after_epoch=lambda t: seen.append(("loaded", t.epoch)))
    assert seen[-1] == ("loaded", 3) and again.epoch == 3
    assert torch.equal(again.model.conv1.weight, first.model.conv1.weight)
    # stopping early loads the kept epoch; a fresh run to epoch 1 gives the same weights
    early = training.train_cached(toy_faces, cfg, name="toy", until=1, folder=tmp_path, progress=False, log=lambda *a: None)
    fresh = training.Trainer(toy_faces, cfg, progress=False)
    fresh.fit(epochs=1)
    assert early.epoch == 1 and torch.equal(early.model.conv1.weight, fresh.model.conv1.weight)


def test_train_cached_resumes_a_shorter_run_bit_for_bit(toy_faces, tmp_path):
    cfg = _config()
    training.train_cached(toy_faces, cfg, name="toy", until=2, folder=tmp_path, progress=False, log=lambda *a: None)
    resumed = training.train_cached(toy_faces, cfg, name="toy", folder=tmp_path, progress=False, log=lambda *a: None)
    straight = training.Trainer(toy_faces, cfg, progress=False)
    straight.fit()
    assert resumed.epoch == 3
    assert torch.equal(resumed.model.conv1.weight, straight.model.conv1.weight)


def test_train_cached_keys_on_config_and_callbacks(toy_faces, tmp_path):
    quiet = dict(folder=tmp_path, progress=False, log=lambda *a: None)
    training.train_cached(toy_faces, _config(), name="run", **quiet)
    training.train_cached(toy_faces, _config(weight_decay=1e-2), name="run", **quiet)
    cb = reactivation.ReactivationCallback("contextual", 0.5, last_epoch=2)
    crafted = training.train_cached(toy_faces, _config(), [cb], name="run", **quiet)
    assert len(list(tmp_path.glob("run-*-e003.pt"))) == 3
    assert crafted.events, "the callback ran"


def test_callbacks_start_after_resume(toy_faces, tmp_path):
    """on_train_start must run for a resumed trainer too (it fills ReactivationCallback's defaults)."""
    cfg = _config()
    t = training.Trainer(toy_faces, cfg, progress=False)
    t.fit(epochs=1)
    path = t.save(tmp_path / "ck.pt")
    cb = reactivation.ReactivationCallback("contextual", 0.6)  # last_epoch=None: set in on_train_start
    resumed = training.Trainer(toy_faces, cfg, [cb], progress=False).resume(path)
    resumed.fit()
    assert cb.last_epoch == cfg.epochs - 1 and resumed.events


# ---------------------------------------------------------------------------------------------
# context, similarity, tracking


def test_context_gaussian_matches_new_filters():
    strong = torch.randn(10, 27, dtype=torch.float64)
    mean, cov = reactivation.context_gaussian(strong)
    assert torch.allclose(mean, strong.mean(0))
    assert torch.allclose(cov, cov.T) and torch.linalg.eigvalsh(cov).min() > 0  # shrunk to full rank
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = mean + torch.randn(4, 27, generator=g2, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    got = reactivation.new_filters("contextual", strong, 4, g1, match_scale=False)
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError):
        reactivation.context_gaussian(torch.empty(0, 27))


def test_max_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[-3.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(activity.max_cosine(a, b), [1.0, np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(activity.max_cosine(a, a, exclude_self=True), [0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError):
        activity.max_cosine(a, b[:1], exclude_self=True)


def test_track_records_before_and_during_and_detaches(toy_faces):
    t = training.Trainer(toy_faces, _config(), progress=False)
    probe = training.to_input(torch.from_numpy(toy_faces.images[:8]))
    tracks = activity.track(t, 6, every=2, scores=("max", "activation"), probe=probe)
    steps, matrix = tracks["max"]
    assert steps == [0, 2, 4, 6] and matrix.shape == (8, 4)
    assert tracks["activation"][1].shape == (8, 4)
    assert not any(isinstance(cb, activity.ActivityRecorder) for cb in t.callbacks)


def test_identities_by_fold():
    pairs = [Pair("A/A_0001.jpg", "A/A_0002.jpg", True, 0, 2), Pair("B/B_0001.jpg", "C/C_0001.jpg", False, 1, 3)]
    assert identities_by_fold(pairs) == {0: {"A"}, 1: {"B", "C"}}


# ---------------------------------------------------------------------------------------------
# summaries, environment, atomic writes


def _runs():
    rows = []
    for seed, (a, b, i) in enumerate([(0.80, 0.81, 0.45), (0.82, 0.84, 0.5), (0.79, 0.80, 0.55)]):
        for strategy, acc, inact in (("none", a, i), ("contextual", b, i / 5)):
            rows.append({"strategy": strategy, "seed": seed, "accuracy": acc, "inactive_fraction": inact,
                         "auc": 0.9, "tar@far=0.01": 0.5, "tar@far=0.001": 0.3})
    return rows


def test_summarize_without_scores_and_headline(tmp_path):
    summary = experiments.summarize(_runs())  # rows rebuilt from a summary carry no "scores"
    assert "final_scores" not in summary["arms"]["none"]
    text = experiments.headline(summary)
    assert "50% → CRAFT (contextual) 10%" in text and "paired t p =" in text
    assert experiments.load_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert experiments.load_summary(tmp_path)["arms"].keys() == summary["arms"].keys()
    assert "needs the arms" in experiments.headline({"arms": {}})


def test_environment_report_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("CRAFTLIB_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CRAFTLIB_MODELS", str(tmp_path / "nothing"))
    monkeypatch.setattr("craftlib.pretrained.REPO_ROOT", tmp_path)
    report = paths.environment_report()
    assert {"python", "torch", "device", "torch threads", "LFW", "MobileFaceNet"} <= report.keys()
    assert report["MobileFaceNet"].startswith("NOT FOUND")


def test_atomic_write_uses_normal_permissions(tmp_path):
    path = paths.atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("hi"))
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)


# ---------------------------------------------------------------------------------------------
# the runner (no kernel needed)


def test_runner_lists_strips_and_matches(tmp_path):
    for name in ("00_a", "01_b"):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("1 + 1")
        cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
        cell.execution_count = 1
        nb.cells = [cell]
        nb.metadata["widgets"] = {"state": {}}
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    (tmp_path / "scratch.ipynb").write_text("{}")
    found = notebooks.list_notebooks(folder=tmp_path)
    assert [p.stem for p in found] == ["00_a", "01_b"]
    assert [p.stem for p in notebooks.list_notebooks(["01"], folder=tmp_path)] == ["01_b"]
    with pytest.raises(SystemExit):
        notebooks.list_notebooks(["0"], folder=tmp_path)  # ambiguous
    assert len(notebooks.problems(nbformat.read(found[0], as_version=4))) == 3
    assert notebooks.clean(found) == found
    assert notebooks.problems(nbformat.read(found[0], as_version=4)) == []
    assert notebooks.clean(found) == []


def test_record_times_merges(tmp_path):
    target = tmp_path / "times.json"
    notebooks.record_times({"00_a": 1.234}, fast=True, path=target)
    notebooks.record_times({"01_b": 5.0}, fast=False, path=target)
    data = json.loads(target.read_text())
    assert data["fast"] == {"00_a": 1.2} and data["full"] == {"01_b": 5.0}
