"""Nothing lost, nothing trusted (issue 24): bad flags refused at the door, runs that survive
interruption, one writer per results folder, and hostile inputs refused with the file named.

Flag and config checks run in milliseconds; the interrupted-run tests train real FAST-sized runs
(slow).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from craftlib import training
from craftlib.checkpoints import CheckpointError
from craftlib.models import ModelConfig
from craftlib.reactivation import CraftSpec
from craftlib.recipes import FAST
from craftlib.training import TrainConfig, Trainer
from craftlib.validation import RANGES
from craftlib.workshop import cli

REPO = Path(__file__).resolve().parent.parent
TINY = ["--recipe", "fast", "--max-identities", "30", "--batch-size", "32", "--quiet"]


def history_without_time(history: dict) -> str:
    """A run's history and events as one comparable string (wall seconds differ between runs; NaN ==
    NaN here)."""
    epochs = [{k: v for k, v in h.items() if k != "seconds"} for h in history["history"]]
    return json.dumps({"history": epochs, "events": history["events"]}, sort_keys=True)


def run_files(out: Path) -> set[str]:
    """What a run wrote into ``out`` (the writer lock's hidden files aside)."""
    return (
        {p.name for p in out.iterdir() if not p.name.startswith(".craftlib-lock")}
        if out.exists()
        else set()
    )


# ---------------------------------------------------------------------------------------------
# every flag validated at the door: exit 2, the flag and its range named, nothing written

BAD_FLAGS = [
    ("epochs", "0"),
    ("epochs", "-1"),
    ("batch-size", "0"),
    ("batch-size", "-1"),
    ("max-identities", "0"),
    ("max-identities", "-1"),
    ("size", "0"),
    ("size", "36"),
    ("last-epoch", "-5"),
    ("last-epoch", "0"),
    ("tau", "1.5"),
    ("tau", "nan"),
    ("lr", "0"),
    ("lr", "-0.1"),
    ("lr", "inf"),
    ("weight-decay", "-1e-4"),
    ("seed", "-1"),
    ("seed", "1.5"),
    ("every", "0"),
    ("strong-quantile", "1"),
]


@pytest.mark.parametrize("command", ["train", "compare", "demo"])
@pytest.mark.parametrize("name, value", BAD_FLAGS)
def test_a_bad_training_flag_exits_2_naming_the_flag_and_its_range(
    command, name, value, tmp_path, capsys
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, f"--{name}={value}", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert f"argument --{name}: must be " in err and repr(value) in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["compare", "--seeds", "0"], "argument --seeds: must be an integer >= 1"),
        (["compare", "--jobs", "0"], "argument --jobs: must be an integer >= 1"),
        (
            ["compare", "--first-seed", "-1"],
            "argument --first-seed: must be an integer in [0, 4294967295]",
        ),
        (["evaluate", "--size", "4"], "argument --size: must be a multiple of 8 >= 8"),
        (["check", "--seconds", "-3"], "argument --seconds: must be a number > 0"),
    ],
)
def test_study_flags_are_checked_too(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", str(tmp_path / "out")] if argv[0] != "check" else argv)
    assert exit_.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "module, argv, words",
    [
        ("study.dose_cli", ["--seeds", "0"], "argument --seeds: must be an integer >= 1"),
        ("study.dose_cli", ["--jobs", "-2"], "argument --jobs: must be an integer >= 1"),
        (
            "study.dose_cli",
            ["--first-seed", "-1"],
            "argument --first-seed: must be an integer in [0, ",
        ),
        ("companions.sparsity.cli", ["--seeds", "-1"], "argument --seeds: must be an integer >= 1"),
        ("companions.sparsity.cli", ["--jobs", "0"], "argument --jobs: must be an integer >= 1"),
        (
            "companions.attributes.cli",
            ["run", "--seeds", "3-1"],
            "argument --seeds: '3-1' is an empty range of seeds",
        ),
        (
            "companions.attributes.cli",
            ["run", "--seeds", "0,-4"],
            "argument --seeds: must be an integer in [0, ",
        ),
        (
            "companions.attributes.cli",
            ["run", "--branching-seeds", "x"],
            "argument --branching-seeds: must be an integer in [0, ",
        ),
    ],
)
def test_the_study_commands_share_the_checks(module, argv, words, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"craftlib.{module}").main
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out" if module != "study.dose_cli" else "--root", str(out)])
    assert exit_.value.code == 2 and words in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: TrainConfig(epochs=0), "epochs"),
        (lambda: TrainConfig(batch_size=-1), "batch_size"),
        (lambda: TrainConfig(lr=math.nan), "lr"),
        (lambda: TrainConfig(weight_decay_overrides={"conv1": -1.0}), "weight_decay"),
        (lambda: FAST.but(batch_size=0), "batch_size"),
        (lambda: FAST.but(model__input_size=0), "input_size"),
        (lambda: FAST.but(craft={"last_epoch": -5}), "last_epoch"),
        (lambda: FAST.but(craft={"first_epoch": 3, "last_epoch": 2}), "last_epoch"),
        (lambda: FAST.but(craft={"every": 0}), "every"),
        (lambda: replace(FAST, max_identities=0), "max_identities"),
        (lambda: ModelConfig(input_size=36), "input_size"),
        (lambda: CraftSpec(tau=-0.5), "tau"),
    ],
)
def test_the_config_objects_refuse_what_the_flags_refuse(make, field):
    """One definition: the library's message carries the same range words as the command line's."""
    with pytest.raises(ValueError, match=field) as err:
        make()
    assert RANGES[field].describe() in str(err.value) or "first_epoch" in str(err.value)


def test_the_shipped_recipes_and_small_configs_stay_valid(toy_config):
    assert FAST.tau == 0.3 and FAST.but(batch_size=32, epochs=1).train.batch_size == 32
    assert (
        toy_config.model.input_size == 16
        and TrainConfig(threads=None, margin=None).grad_clip is None
    )


@pytest.mark.slow
def test_a_batch_larger_than_the_training_set_is_refused(lfw_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            ["train", "--data", str(lfw_root), *TINY, "--batch-size", "100000", "--out", str(out)]
        )
        == 2
    )
    assert (
        "batch_size must be at most the 105 training faces, got 100000"
        in capsys.readouterr().err.replace(" (an epoch is at least one full batch)", "")
    )
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# --out checked before any work


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("precious")
    for out in (blocker, blocker / "run"):
        assert (
            cli.main(["train", "--data", str(tmp_path / "no-lfw-needed"), *TINY, "--out", str(out)])
            == 2
        )
        assert "is a file" in capsys.readouterr().err
    assert blocker.read_text() == "precious"


def test_out_that_is_not_writable_is_refused_before_any_work(tmp_path):
    """As root every folder is writable, so the command runs as ``nobody`` there (a real permission
    check)."""
    import tempfile

    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        user = {"user": 65534} if os.geteuid() == 0 else {}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "craftlib",
                "train",
                *TINY,
                "--data",
                str(base / "none"),
                "--out",
                str(locked / "run"),
            ],
            cwd="/tmp",
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            **user,
        )
        assert result.returncode == 2, result.stderr
        assert f"{locked} is not writable" in result.stderr and "Traceback" not in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        (base / "locked").chmod(0o755)
        import shutil

        shutil.rmtree(base)


# ---------------------------------------------------------------------------------------------
# runs that survive: a checkpoint per epoch, resumed bit for bit


def craft_trainer(faces, recipe) -> Trainer:
    return Trainer(faces, recipe.train, [recipe.callback(arm="contextual")], progress=False)


@pytest.mark.slow
def test_a_craft_run_stopped_after_any_epoch_resumes_bit_identically(
    tiny_faces, tiny_recipe, tmp_path, monkeypatch
):
    straight = craft_trainer(tiny_faces, tiny_recipe)
    straight.fit()
    assert len(straight.events) == 2 and all(e["filters"] for e in straight.events)
    for stop in (1, 2):  # after each epoch but the last (CRAFT acts at the end of epochs 1 and 2)
        cut = craft_trainer(tiny_faces, tiny_recipe)
        cut.fit(epochs=stop, checkpoint=tmp_path / f"cut{stop}.pt")
        assert torch.load(tmp_path / f"cut{stop}.pt", weights_only=True)["epoch"] == stop
        resumed = craft_trainer(tiny_faces, tiny_recipe).resume(tmp_path / f"cut{stop}.pt")
        resumed.fit(checkpoint=tmp_path / f"resumed{stop}.pt")
        assert history_without_time(vars(resumed)) == history_without_time(vars(straight))
        for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
            assert torch.equal(a, b)
    # the control: without CRAFT's generator state the second re-activation draws other filters
    from craftlib.reactivation import ReactivationCallback

    monkeypatch.setattr(ReactivationCallback, "load_state_dict", lambda self, state: None)
    forgetful = craft_trainer(tiny_faces, tiny_recipe).resume(tmp_path / "cut1.pt")
    forgetful.fit()
    assert history_without_time(vars(forgetful)) != history_without_time(vars(straight))


def test_resume_refuses_other_identities_and_another_variant(toy_faces, toy_config, tmp_path):
    trainer = Trainer(toy_faces, toy_config, progress=False)
    trainer.fit(epochs=1, checkpoint=tmp_path / "c.pt")
    others = replace(toy_faces, classes=["P0", "P1", "P2", "Q3"])  # same count, one person differs
    with pytest.raises(
        CheckpointError, match=r"other identities \(1 of 4 differ, e.g. 'P3' saved, 'Q3' here\)"
    ):
        Trainer(others, toy_config, progress=False).resume(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="trained on unknown LFW, this data is funneled"):
        Trainer(replace(toy_faces, variant="funneled"), toy_config, progress=False).resume(
            tmp_path / "c.pt"
        )
    assert Trainer(toy_faces, toy_config, progress=False).resume(tmp_path / "c.pt").epoch == 1


# ---------------------------------------------------------------------------------------------
# one run per folder: every file stamped, another run's folder refused untouched


@pytest.fixture(scope="module")
def finished_run(lfw_root, tmp_path_factory) -> Path:
    """A finished CLI run: FAST on 30 identities, 2 epochs of 3 steps."""
    out = tmp_path_factory.mktemp("robust") / "run"
    assert (
        cli.main(["train", "--data", str(lfw_root), *TINY, "--epochs", "2", "--out", str(out)]) == 0
    )
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_every_file_of_a_run_carries_its_fingerprint(finished_run):
    assert run_files(finished_run) == {"checkpoint.pt", "history.json", "metrics.json"}
    stamps = [torch.load(finished_run / "checkpoint.pt", weights_only=True)["run"]]
    stamps += [
        json.loads((finished_run / name).read_text())["run"]
        for name in ("history.json", "metrics.json")
    ]
    assert stamps[0] == stamps[1] == stamps[2]
    assert stamps[0]["protocol"] == "devtest" and stamps[0]["recipe"]["train"]["epochs"] == 2
    assert stamps[0]["data_variant"] == "deepfunneled"


@pytest.mark.slow
def test_a_folder_holding_another_run_is_refused_untouched(finished_run, lfw_root, capsys):
    before = snapshot(finished_run)
    argv = ["train", "--data", str(lfw_root), *TINY, "--epochs", "2", "--out", str(finished_run)]
    assert cli.main([*argv, "--lr", "0.05"]) == 2
    assert (
        f"{finished_run} holds another run (checkpoint.pt: recipe.train.lr: 0.1 != 0.05)"
        in capsys.readouterr().err
    )
    assert cli.main(argv) == 2  # the same run again: only when asked to continue it
    assert (
        "already holds this run (checkpoint.pt, history.json, metrics.json): continue it with "
        "--resume" in capsys.readouterr().err
    )
    assert snapshot(finished_run) == before


def test_files_of_a_run_without_fingerprint_are_refused(lfw_root, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    # as craftlib wrote it before runs were stamped
    (out / "metrics.json").write_text('{"accuracy": 0.9}')
    assert cli.main(["train", "--data", str(lfw_root), *TINY, "--out", str(out)]) == 2
    assert "holds metrics.json without a run fingerprint" in capsys.readouterr().err
    (out / "metrics.json").write_text('{"accuracy": 0.')  # truncated: named, not a traceback
    assert cli.main(["train", "--data", str(lfw_root), *TINY, "--out", str(out)]) == 2
    assert f"{out / 'metrics.json'} is unreadable" in capsys.readouterr().err
    assert run_files(out) == {"metrics.json"}


@pytest.mark.slow
def test_resuming_a_finished_run_cleans_orphans_and_changes_no_number(
    finished_run, lfw_root, tmp_path
):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished_run, out)
    orphan = out / ".checkpoint.pt.k3j2h1.tmp"  # what a write killed by SIGKILL leaves
    orphan.write_bytes(b"half a checkpoint")
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(lfw_root),
                *TINY,
                "--epochs",
                "2",
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 0
    )
    assert not orphan.exists()
    assert (
        json.loads((out / "metrics.json").read_text())["accuracy"]
        == json.loads((finished_run / "metrics.json").read_text())["accuracy"]
    )


@pytest.mark.slow
def test_a_nan_loss_stops_at_the_last_good_checkpoint_and_says_how_to_go_on(
    lfw_root, tmp_path, capsys, monkeypatch
):
    real, calls = training.margin_loss, []

    def diverging(head, emb, y):  # the loss of step 5 (epoch 2 of 3-step epochs) is NaN
        loss, acc = real(head, emb, y)
        calls.append(1)
        return (loss * math.nan if len(calls) == 5 else loss), acc

    monkeypatch.setattr(training, "margin_loss", diverging)
    out, argv = tmp_path / "run", ["train", "--data", str(lfw_root), *TINY, "--epochs", "3"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "loss became nan at epoch 2" in err
    assert f"last good checkpoint is {out / 'checkpoint.pt'} (epoch 1 of 3)" in err
    assert f"--resume {out / 'checkpoint.pt'}" in err and "--out NEW_FOLDER" in err
    assert run_files(out) == {"checkpoint.pt"}
    monkeypatch.setattr(training, "margin_loss", real)
    new = ["--lr", "0.05", "--out", str(tmp_path / "new"), "--resume", str(out / "checkpoint.pt")]
    assert cli.main([*argv, *new]) == 0
    history = json.loads((tmp_path / "new" / "history.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_training_killed_by_sigterm_resumes_to_the_uninterrupted_history(lfw_root, tmp_path):
    """A real ``train`` subprocess, killed once its first checkpoint exists (wherever it is by
    then), then resumed."""
    argv = [
        sys.executable,
        "-m",
        "craftlib",
        "train",
        "--data",
        str(lfw_root),
        *TINY,
        "--epochs",
        "4",
        "--strategy",
        "contextual",
        "--last-epoch",
        "3",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*argv, "--out", str(killed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    epoch = torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"]
    assert (
        1 <= epoch < 4
        and f"(epoch {epoch} of 4)" in err
        and "run the same command again with --resume" in err
    )
    assert run_files(killed) == {"checkpoint.pt"} and "Traceback" not in err
    for out, extra in ((killed, ["--resume"]), (tmp_path / "straight", [])):
        done = subprocess.run(
            [*argv, "--out", str(out), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
    resumed, straight = (
        json.loads((out / "history.json").read_text()) for out in (killed, tmp_path / "straight")
    )
    assert len(straight["events"]) == 3 and history_without_time(resumed) == history_without_time(
        straight
    )
    assert (
        json.loads((killed / "metrics.json").read_text())["accuracy"]
        == json.loads((tmp_path / "straight" / "metrics.json").read_text())["accuracy"]
    )


# ---------------------------------------------------------------------------------------------
# one writer per results folder; records checked when read; workers stop with their parent


def test_a_held_folder_refuses_a_second_writer_with_the_holder_named(tmp_path):
    from craftlib.paths import FolderInUseError, folder_lock

    script = (
        f"import time\nfrom craftlib.paths import folder_lock\nwith "
        f"folder_lock({str(tmp_path)!r}):\n"
        "    print('held', flush=True)\n    time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=f"in use by PID {holder.pid} on "):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):  # the OS dropped a killed holder's lock: the folder is not stuck
        assert (tmp_path / ".craftlib-lock.owner").read_text().startswith(f"PID {os.getpid()} ")
    assert not (tmp_path / ".craftlib-lock.owner").exists()


@pytest.mark.slow
def test_two_concurrent_compares_with_different_recipes_the_second_is_refused_and_no_record_lost(
    lfw_root, tmp_path, capsys
):
    from craftlib.study.experiments import load_records
    from craftlib.study.results import summarize_folders

    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--data",
        str(lfw_root),
        *TINY,
        "--epochs",
        "1",
        "--last-epoch",
        "1",
        "--arms",
        "none",
        "contextual",
        "--seeds",
        "1",
        "--out",
        str(out),
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "craftlib", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not (
        out / ".craftlib-lock.owner"
    ).exists():  # the first holds the folder once this names it
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    assert cli.main([*argv, "--lr", "0.05"]) == 2
    assert f"{out} is in use by PID {first.pid} on " in capsys.readouterr().err
    _, err = first.communicate(timeout=900)
    assert first.returncode == 0, err
    records = load_records(out)
    assert [(r["arm"], r["seed"]) for r in records] == [("contextual", 0), ("none", 0)]
    assert {r["fingerprint"]["recipe"]["train"]["lr"] for r in records} == {0.1}
    assert summarize_folders([out]).arms["contextual"].seeds == [0]


def test_a_truncated_or_malformed_record_is_named_when_read(records_dir, capsys):
    from craftlib.study.experiments import RecordError, check_folder, fingerprint, load_records

    path = sorted((records_dir / "records").glob("*.json"))[3]
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a copy cut off half-way
    with pytest.raises(RecordError, match=f"{path}: not a readable run record"):
        load_records(records_dir)
    assert cli.main(["report", str(records_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not a readable run record") and "Traceback" not in err
    with pytest.raises(RecordError, match=str(path)):  # what compare checks before any training
        check_folder(records_dir, fingerprint(FAST, "deepfunneled"))
    path.write_text('["a list, not a record"]')
    with pytest.raises(RecordError, match=f"{path}: not a run record"):
        load_records(records_dir)


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process table from /proc"
)
def test_sigterm_to_compare_jobs_2_takes_its_workers_down(lfw_root, tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "craftlib",
            "compare",
            "--data",
            str(lfw_root),
            *TINY,
            "--epochs",
            "6",
            "--arms",
            "none",
            "contextual",
            "--seeds",
            "1",
            "--jobs",
            "2",
            "--out",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while len(workers := children(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped (SIGTERM); every finished run is kept" in err, err
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()], "workers outlived their parent"


# ---------------------------------------------------------------------------------------------
# inputs: bombs, pipes, paths out of the data folder, a cache that cannot be written, an empty
# CRAFTLIB_DATA


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (what a decompression bomb looks
    like)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if the block takes more than 20 s."""

    def alarm(signum, frame):
        raise TimeoutError("hung")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# over Pillow's limit (a warning there) and over twice it
@pytest.mark.parametrize("side", [10_000, 20_000])
def test_a_decompression_bomb_in_the_training_folder_is_refused_with_the_file_named(fake_lfw, side):
    from craftlib.data import LFW, DataError

    root = fake_lfw()
    bomb = root / "lfw-deepfunneled" / "Carol_Cc" / "Carol_Cc_0002.jpg"
    bomb.write_bytes(png_claiming(side, side))
    with pytest.raises(DataError, match=f"{bomb}: refused as a possible decompression bomb"):
        LFW(root, download=False, size=32).training_set()


def test_a_pipe_named_like_an_image_is_refused_not_waited_on(fake_lfw, no_hang):
    from craftlib.data import LFW, DataError, load_face

    root = fake_lfw()
    pipe = root / "lfw-deepfunneled" / "Carol_Cc" / "Carol_Cc_0002.jpg"
    pipe.unlink()
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=f"{pipe}: not a regular file"):
        load_face(pipe)
    with pytest.raises(DataError, match="not a regular file"):
        LFW(root, download=False, size=32).training_set()


@pytest.mark.parametrize(
    "line, shown",
    [("../../etc\t1\t2", "'../../etc'"), ("Alice_Aa\t1\t../x\t2", "'../x'"), ("..\t1\t2", "'..'")],
)
def test_pair_names_cannot_leave_the_data_folder(fake_lfw, line, shown):
    from craftlib.data import LFW, DataError

    from conftest import FAKE_PAIRS

    pairs = FAKE_PAIRS["pairsDevTest.txt"].splitlines()
    pairs[2 if line.count("\t") == 2 else 3] = line
    root = fake_lfw()
    (root / "pairsDevTest.txt").write_text("\n".join(pairs) + "\n")
    lineno = 3 if line.count("\t") == 2 else 4
    with pytest.raises(
        DataError, match=rf"pairsDevTest.txt:{lineno}: {shown} is not a person's folder name"
    ):
        LFW(root, download=False, size=32).pairs("devtest")


def test_a_cache_that_cannot_be_made_or_written_degrades_to_no_cache(
    fake_lfw, tmp_path, monkeypatch
):
    from craftlib.data import LFW, CacheWarning, _cache_key

    root = fake_lfw()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CRAFTLIB_CACHE", str(blocker / "cache"))  # a file where the folder would go
    with pytest.warns(CacheWarning, match="no face cache"):
        faces = LFW(root, download=False, size=32).training_set()
    assert faces.images.shape == (4, 32, 32, 3)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CRAFTLIB_CACHE", str(cache))
    lfw = LFW(root, download=False, size=32)
    key = _cache_key(lfw.image_root.resolve(), faces.files, lfw.crop, 32)
    # the rename onto it fails, as on a full disk
    (cache / f"faces-32px-{key}.npy").mkdir(parents=True)
    with pytest.warns(CacheWarning, match="could not write the face cache"):
        again = lfw.training_set()
    assert (again.images == faces.images).all()


def test_an_empty_craftlib_data_is_an_error_not_a_download(monkeypatch, tmp_path, capsys):
    from craftlib import data

    monkeypatch.setenv("CRAFTLIB_DATA", "")
    monkeypatch.setattr(
        data, "download_lfw", lambda *a, **k: pytest.fail("a download was attempted")
    )
    with pytest.raises(data.LFWNotFoundError, match=r"\$CRAFTLIB_DATA is set but empty"):
        data.find_lfw()
    assert cli.main(["evaluate", "--out", str(tmp_path / "out")]) == 2
    assert "$CRAFTLIB_DATA is set but empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
