"""The room as one experiment: pooling laptops' folders, the seat's seed, uploads, and notebook 05's
reuse of runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from craftlib import runs
from craftlib.study import dashboard, reference, results, room
from craftlib.study.experiments import load_records


@pytest.fixture(scope="module")
def fast_records() -> list[Path]:
    paths = sorted((reference.FAST_DIR / "records").glob("*.json"))
    if not paths:
        pytest.skip("docs/results/fast/records is not committed")
    return paths


def laptops(root: Path, paths: list[Path], split: dict[str, set[int]]) -> list[Path]:
    """Copy the committed FAST records into one folder per 'laptop', by seed."""
    folders = []
    for name, seeds in split.items():
        folder = root / name
        (folder / "records").mkdir(parents=True)
        for p in paths:
            if int(p.stem.rsplit("-s", 1)[1]) in seeds:
                shutil.copy(p, folder / "records" / p.name)
        folders.append(folder)
    return folders


def test_two_small_folders_pool_into_one_paired_analysis_with_a_ci(tmp_path, fast_records):
    a, b = laptops(tmp_path, fast_records, {"a": {0, 1, 2}, "b": {3, 4, 5, 6, 7}})
    pooled = results.summarize_folders([a, b])
    alone = results.summarize(load_records(reference.FAST_DIR))
    for arm in ("contextual", "random_matched"):
        p, q = pooled.arms[arm].vs_baseline["accuracy"], alone.arms[arm].vs_baseline["accuracy"]
        assert p.n == 8 and p.ci95 is not None and p.holm_pvalue is not None and p.mde is not None
        assert p.ci95 == pytest.approx(q.ci95) and p.t_pvalue == pytest.approx(q.t_pvalue)
    summary, records = dashboard.pool([a, b])
    assert len(records) == 24 and summary.arms["contextual"].vs_baseline["accuracy"].n == 8
    assert "95% CI" in results.headline(summary)


def test_the_same_seed_in_two_folders_counts_once(tmp_path, fast_records):
    a, b = laptops(tmp_path, fast_records, {"a": {0, 1, 2}, "b": {2, 3}})
    records, notes = dashboard.pool_records([a, b])
    assert (
        len(records) == 12
        and len(notes) == 3
        and all("seed 2" in n and "kept the first" in n for n in notes)
    )


def test_poolable_leaves_out_a_foreign_or_empty_folder_with_the_reason(tmp_path, fast_records):
    a, b = laptops(tmp_path, fast_records, {"a": {0, 1}, "b": {2, 3}})
    for path in (b / "records").glob("*.json"):
        record = json.loads(path.read_text())
        record["fingerprint"]["recipe"]["train"]["weight_decay"] = 0.5
        path.write_text(json.dumps(record))
    empty = tmp_path / "empty"
    empty.mkdir()
    kept, notes = room.poolable([a, b, empty])
    assert kept == [a] and len(notes) == 2
    assert "weight_decay" in notes[0] and "no records yet" in notes[1]
    with pytest.raises(ValueError, match="cannot pool"):
        results.summarize_folders([a, b])  # without poolable, pooling refuses the whole room


def test_poolable_says_which_seeds_a_later_folder_repeats(tmp_path, fast_records):
    """A learner working alone pools their seed-0 folder with the committed one, which holds seed 0
    too: the note says the pool keeps the learner's runs for it."""
    mine, committed = laptops(tmp_path, fast_records, {"mine": {0}, "committed": {0, 1, 2}})
    kept, notes = room.poolable([mine, committed])
    assert kept == [mine, committed] and len(notes) == 1
    assert f"{committed} repeats seed 0 of {mine}: the pool keeps {mine}'s runs" in notes[0]
    assert room.poolable([committed, tmp_path / "none"])[1] == [
        f"left out {tmp_path / 'none'}: no records yet"
    ]


def test_room_folders_finds_every_laptop_under_a_shared_folder(tmp_path, fast_records):
    laptops(tmp_path / "shared", fast_records, {"seat-0": {0}, "nested/seat-1": {1}})
    (tmp_path / "shared" / "notes").mkdir()
    assert [p.name for p in room.room_folders(tmp_path / "shared")] == [
        "seat-1",
        "seat-0",
    ] or sorted(p.name for p in room.room_folders(tmp_path / "shared")) == ["seat-0", "seat-1"]
    assert room.room_folders(None) == []


def test_seat_seed_reads_craft_seed(monkeypatch):
    monkeypatch.delenv("CRAFT_SEED", raising=False)
    assert room.seat_seed() == 0 and room.seat_seed(default=3) == 3
    monkeypatch.setenv("CRAFT_SEED", "17")
    assert room.seat_seed() == 17
    monkeypatch.setenv("CRAFT_SEED", "seat 4")
    with pytest.raises(ValueError, match="seat number"):
        room.seat_seed()


def test_uploaded_records_land_in_a_folder_and_pool(tmp_path, fast_records):
    files = [{"name": p.name, "content": memoryview(p.read_bytes())} for p in fast_records[:6]]
    written = dashboard.save_uploads(files, tmp_path / "uploads")
    assert len(written) == 6 and len(load_records(tmp_path / "uploads")) == 6
    with pytest.raises(ValueError, match="not a run record"):
        dashboard.save_uploads(
            [{"name": "notes.json", "content": memoryview(b'{"hello": 1}')}], tmp_path / "uploads"
        )
    upload = dashboard.RecordUpload(tmp_path / "more")
    upload._save()  # nothing uploaded yet: no error, nothing written
    assert upload.error.value == "" and not (tmp_path / "more").exists()


# ---------------------------------------------------------------------------------------------
# the seat reuses the notebooks' runs (real LFW, FAST recipe)


@pytest.mark.slow
def test_run_seat_reuses_saved_runs_resumes_and_matches_compare(lfw_root, tmp_path, monkeypatch):
    from craftlib.data import LFW
    from craftlib.recipes import FAST
    from craftlib.study.experiments import run_arm

    monkeypatch.setenv("CRAFTLIB_RUNS", str(tmp_path / "runs"))
    lfw = LFW(lfw_root, download=False, size=FAST.train.model.input_size)
    data = lfw.training_set(max_identities=FAST.max_identities)
    runs.train_or_load(data, FAST, 0, progress=False, log=lambda *_: None)  # what notebook 01 does
    lines: list[str] = []
    out = tmp_path / "seat"
    records = room.run_seat(
        FAST, 0, out, ("none", "contextual"), lfw=lfw, progress=False, log=lines.append
    )
    assert any("none: loaded epoch" in line for line in lines), lines  # 01's run, not retrained
    assert sum("about" in line and "left" in line for line in lines) <= 1
    assert [r["arm"] for r in records] == ["contextual", "none"]
    again: list[str] = []
    room.run_seat(FAST, 0, out, ("none", "contextual"), lfw=lfw, progress=False, log=again.append)
    assert again == ["0 run(s) to do (2 already recorded)"]  # the study's driver: nothing reruns
    direct = run_arm(data, lfw.pairs("devtest"), FAST, "contextual", 0)
    mine = next(r for r in records if r["arm"] == "contextual")
    assert mine["accuracy"] == direct["accuracy"] and mine["scores"] == direct["scores"]
    assert mine["events"] == direct["events"]
