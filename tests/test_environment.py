"""``environment.environment_report``: what a learner or an instructor checks before starting; never
downloads."""

from __future__ import annotations

import torch

from craftlib.workshop import environment


def test_report_names_versions_device_threads_and_where_things_are(lfw_root, monkeypatch):
    monkeypatch.setenv("CRAFT_FAST", "1")
    report = environment.environment_report()
    assert {
        "python",
        "platform",
        "craftlib",
        "torch",
        "numpy",
        "matplotlib",
        "ipywidgets",
        "device",
        "torch threads",
        "OMP_NUM_THREADS",
        "CPU cores",
        "FAST mode",
        "LFW",
        "MobileFaceNet",
        "face cache",
    } <= report.keys()
    assert all(isinstance(v, str) for v in report.values())
    assert report["torch"] == torch.__version__ and report["FAST mode"] == "True"
    assert report["LFW"] == str(lfw_root.resolve())


def test_missing_data_and_weights_are_reported_not_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("CRAFTLIB_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CRAFTLIB_MODELS", str(tmp_path / "nothing"))
    monkeypatch.setattr("craftlib.pretrained.REPO_ROOT", tmp_path)
    monkeypatch.setattr(
        "craftlib.data.download_lfw", lambda: (_ for _ in ()).throw(AssertionError("downloaded"))
    )
    monkeypatch.setattr(
        "craftlib.pretrained.urllib.request.urlopen",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("downloaded")),
    )
    report = environment.environment_report()
    assert report["LFW"].startswith("NOT FOUND") and "CRAFTLIB_DATA" in report["LFW"]
    assert (
        report["MobileFaceNet"].startswith("NOT FOUND")
        and "CRAFTLIB_MODELS" in report["MobileFaceNet"]
    )
