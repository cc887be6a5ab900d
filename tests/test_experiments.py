"""Seed comparisons as one JSON record per finished run: the record, the folder, resume, append and
merge.

The real comparison (``compare`` on LFW) uses FAST on 30 identities, one epoch of 3 steps, and 250
DevTest pairs, so that eight runs take seconds rather than minutes (still marked slow).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from craftlib import __version__
from craftlib.data import LFW
from craftlib.recipes import FAST
from craftlib.study.experiments import (
    RECORD_SCORES,
    check_folder,
    compare,
    fingerprint,
    fingerprint_diff,
    load_records,
    pending,
    record_path,
    run_arm,
    write_record,
)
from craftlib.study.results import summarize, summarize_folders

ARMS = ("none", "contextual")


# ---------------------------------------------------------------------------------------------
# fingerprints and the folder (no training)


def test_fingerprint_is_json_normalised_and_names_what_must_agree():
    meta = fingerprint(FAST, "deepfunneled")
    assert set(meta) == {"recipe", "data_variant", "code"} and meta["code"] == __version__
    assert json.loads(json.dumps(meta)) == meta  # what a record reads back compares equal
    assert meta == fingerprint(FAST, "deepfunneled") != fingerprint(FAST, "funneled")
    assert (
        meta["recipe"]["craft"]["tau"] == FAST.tau
        and meta["recipe"]["train"]["model"]["input_size"] == 32
    )


def test_fingerprint_diff_names_the_first_fields():
    a, b = (
        fingerprint(FAST, "deepfunneled"),
        fingerprint(FAST.but(lr=0.05, craft={"tau": 0.2}), "deepfunneled"),
    )
    assert fingerprint_diff(a, b) == "recipe.craft.tau: 0.3 != 0.2, recipe.train.lr: 0.1 != 0.05"
    assert fingerprint_diff(a, a) == "identical"
    assert "data_variant" in fingerprint_diff(None, a)


def test_records_pending_and_the_folder_check(tmp_path, make_record):
    meta = fingerprint(FAST, "deepfunneled")
    assert record_path(tmp_path, "none", 3) == tmp_path / "records" / "none-s3.json"
    assert pending(tmp_path, [0, 1], ARMS) == [
        (0, "none"),
        (0, "contextual"),
        (1, "none"),
        (1, "contextual"),
    ]
    assert pending(None, [0], ARMS) == [(0, "none"), (0, "contextual")]
    check_folder(tmp_path, meta)  # empty: anything goes
    record = {k: v for k, v in make_record("contextual", 0, 0.8).items() if k != "fingerprint"}
    path = write_record(tmp_path, record, meta)
    assert path == record_path(tmp_path, "contextual", 0) and [
        p.name for p in path.parent.iterdir()
    ] == [path.name]
    assert json.loads(path.read_text())["fingerprint"] == meta
    assert pending(tmp_path, [0, 1], ARMS) == [
        (0, "none"),
        (1, "none"),
        (1, "contextual"),
    ]  # seed-major
    write_record(tmp_path, {**record, "arm": "none", "seed": 1}, meta)
    assert [(r["arm"], r["seed"]) for r in load_records(tmp_path)] == [
        ("contextual", 0),
        ("none", 1),
    ]
    check_folder(tmp_path, meta)
    with pytest.raises(ValueError, match=r"recipe\.train\.lr: 0\.1 != 0\.05.*another --out"):
        check_folder(tmp_path, fingerprint(FAST.but(lr=0.05), "deepfunneled"))
    assert load_records(tmp_path / "nothing") == []


# ---------------------------------------------------------------------------------------------
# one run, for real


@pytest.fixture(scope="module")
def tiny_compare_recipe():
    """FAST at batch 32 on 30 identities (= ``tiny_faces``): one epoch of 3 steps, re-activation
    after it."""
    return replace(FAST.but(epochs=1, batch_size=32, craft={"last_epoch": 1}), max_identities=30)


@pytest.mark.slow
def test_run_arm_record(tiny_faces, devtest_subset, tiny_compare_recipe, tmp_path):
    recipe = tiny_compare_recipe.but(epochs=2)
    record = run_arm(
        tiny_faces, devtest_subset, recipe, "contextual", 1, checkpoint=tmp_path / "m.pt"
    )
    assert (record["arm"], record["seed"]) == ("contextual", 1)
    assert record["spec"] == recipe.arm("contextual").to_dict()
    assert (
        0 <= record["accuracy"] <= 1
        and record["n_pairs"] == 250
        and record["tar@far=0.001"] is None
    )
    assert "not estimable" in record["tar_notes"]["0.001"]
    assert set(record["scores"]) == set(RECORD_SCORES) and all(
        len(v) == 64 for v in record["scores"].values()
    )
    assert max(record["scores"]["silent"]) == pytest.approx(1.0)
    assert [e["epoch"] for e in record["events"]] == [1] and record["events"][0][
        "score"
    ] == "silent"
    tl = record["timeline"]
    assert tl["epoch"] == [0, 1, 2] and tl["step"] == [0, 3, 6]
    assert all(np.asarray(tl[k]).shape == (3, 64) for k in ("max", "l2", "gamma", "output_std"))
    assert len(record["roc"]["fpr"]) == len(record["roc"]["tpr"]) == 40
    assert "thresholds" not in record
    json.dumps(record)  # a record is plain JSON
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["classes"] == tiny_faces.classes and saved["epoch"] == 2


# ---------------------------------------------------------------------------------------------
# compare: resume after an interruption, append seeds, merge folders, refuse mismatches


class Interrupted(Exception):
    pass


@pytest.fixture
def small_lfw(lfw_root, devtest_subset):
    """The real LFW, whose DevTest is the 250-pair subset (``compare`` always evaluates on
    DevTest)."""
    lfw = LFW(lfw_root, download=False, size=32)
    lfw.pairs = lambda protocol="devtest", progress=False: devtest_subset
    return lfw


def stripped(records: list[dict]) -> list[dict]:
    """Records without what legitimately differs between two runs of the same seed (wall time)."""
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


@pytest.mark.slow
def test_compare_resumes_appends_and_merges(tmp_path, small_lfw, tiny_compare_recipe):
    recipe = tiny_compare_recipe
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"

    def stop_after_the_first_run(message: str) -> None:
        if message.startswith("seed"):
            raise Interrupted(message)

    with pytest.raises(Interrupted):  # the first run finishes, then the run is cut off
        compare(
            recipe, [0, 1], ARMS, lfw=small_lfw, out=a, progress=False, log=stop_after_the_first_run
        )
    first = record_path(a, "none", 0)
    assert [p.name for p in (a / "records").iterdir()] == [first.name]  # the finished run was saved
    saved, mtime = first.read_bytes(), first.stat().st_mtime_ns

    logged = []
    records = compare(recipe, [0, 1], ARMS, lfw=small_lfw, out=a, progress=False, log=logged.append)
    assert logged[0] == "3 run(s) to do (1 already recorded)" and len(logged) == 4
    assert first.read_bytes() == saved and first.stat().st_mtime_ns == mtime  # not redone
    assert [(r["arm"], r["seed"]) for r in records] == [
        ("contextual", 0),
        ("contextual", 1),
        ("none", 0),
        ("none", 1),
    ]
    assert records == load_records(a)

    logged.clear()
    assert (
        compare(recipe, [0, 1], ARMS, lfw=small_lfw, out=a, progress=False, log=logged.append)
        == records
    )
    assert logged == ["0 run(s) to do (4 already recorded)"]  # all done: nothing trains

    torch_threads = torch.get_num_threads()
    # jobs=2 gives each fork one thread: the same arithmetic as this process now
    torch.set_num_threads(1)
    try:
        compare(
            recipe, [2], ARMS, lfw=small_lfw, out=b, progress=False, log=lambda *_: None, jobs=2
        )
        shutil.copytree(a, c)  # one folder that grows to all seeds: append seed 2 to a copy of a
        logged.clear()
        compare(recipe, [0, 1, 2], ARMS, lfw=small_lfw, out=c, progress=False, log=logged.append)
    finally:
        torch.set_num_threads(torch_threads)
    assert logged[0] == "2 run(s) to do (4 already recorded)"
    # same seed, same run
    assert stripped(load_records(b)) == stripped([r for r in load_records(c) if r["seed"] == 2])

    merged = summarize_folders([a, b])
    assert merged == summarize(load_records(c))
    assert (
        merged.arms["contextual"].seeds == [0, 1, 2]
        and merged.arms["contextual"].vs_baseline["accuracy"].n == 3
    )

    # refusals: another recipe cannot join a folder, nor be pooled with it; nor can the same seed
    # twice
    before = sorted(p.name for p in (a / "records").iterdir())
    with pytest.raises(ValueError, match=r"recipe\.train\.lr"):
        compare(
            recipe.but(lr=0.05),
            [5],
            ARMS,
            lfw=small_lfw,
            out=a,
            progress=False,
            log=lambda *_: None,
        )
    assert sorted(p.name for p in (a / "records").iterdir()) == before
    other = tmp_path / "other"
    for record in load_records(b):
        write_record(
            other, {**record, "seed": 7}, fingerprint(recipe.but(lr=0.05), small_lfw.variant)
        )
    with pytest.raises(
        ValueError, match=r"recipe\.train\.lr: 0\.1 != 0\.05|recipe\.train\.lr: 0\.05 != 0\.1"
    ):
        summarize_folders([a, other])
    with pytest.raises(ValueError, match="appears twice"):
        summarize_folders([a, c])


def test_a_record_keeps_the_scores_its_accuracy_came_from(tiny_run, devtest_subset):
    """Per-pair DevTest scores in every record: re-scoring them reproduces the record's accuracy
    exactly."""
    from craftlib.recipes import FAST
    from craftlib.study.experiments import measure
    from craftlib.verification import evaluate_scores

    record = measure(tiny_run, devtest_subset, FAST, "contextual", 0, 1.0)
    scores = record["pair_scores"]
    assert len(scores) == len(devtest_subset)
    again = evaluate_scores(scores, devtest_subset.same, devtest_subset.folds)
    assert again["accuracy"] == pytest.approx(record["accuracy"], abs=1e-9)
