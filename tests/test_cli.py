"""``python -m craftlib``: flags reach the recipe, train / evaluate with the leakage refusal,
compare and report.

In-process ``main()`` for most, one real subprocess for the help and one for the refusal (exit code
2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from craftlib.data import read_pairs
from craftlib.recipes import ARM_LABELS, FAST, WORKSHOP, recipe_from_flags
from craftlib.study.experiments import load_records
from craftlib.study.results import load_summary, summarize_folders
from craftlib.workshop.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent


def identities(lfw, protocol: str) -> set[str]:
    """The people of a protocol's pair file, read independently of ``LFW.overlap``."""
    return {
        name.split("/")[0]
        for p in read_pairs(lfw.pair_file(protocol))
        for name in (p.left, p.right)
    }


# ---------------------------------------------------------------------------------------------
# flags -> recipe (no training)


def test_every_craft_flag_reaches_the_spec():
    args = build_parser().parse_args(
        [
            "train",
            "--recipe",
            "fast",
            "--strategy",
            "orthogonal",
            "--score",
            "max",
            "--tau",
            "0.2",
            "--last-epoch",
            "1",
            "--every",
            "5",
            "--strong-quantile",
            "0.25",
            "--downstream",
            "zero",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--size",
            "40",
            "--max-identities",
            "30",
            "--seed",
            "3",
        ]
    )
    recipe = recipe_from_flags(args)
    craft = recipe.craft
    assert (craft.strategy, craft.score, craft.tau, craft.last_epoch, craft.every) == (
        "orthogonal",
        "max",
        0.2,
        1,
        5,
    )
    assert (craft.strong_quantile, craft.downstream) == (0.25, "zero")
    t = recipe.train
    assert (t.epochs, t.batch_size, t.lr, t.seed, t.model.input_size) == (2, 32, 0.05, 3, 40)
    assert recipe.max_identities == 30 and recipe.name == "fast"


def test_without_flags_the_recipe_is_untouched():
    recipe = recipe_from_flags(build_parser().parse_args(["compare", "--recipe", "workshop"]))
    assert recipe == WORKSHOP
    train = recipe_from_flags(build_parser().parse_args(["train", "--recipe", "fast"]))
    # train's own default strategy: standard training
    assert train == FAST.but(craft={"strategy": "none"})
    assert build_parser().parse_args(["train", "--every", "epoch"]).every == "epoch"


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "train"),
        (["train"], "--allow-overlap"),
        (["evaluate"], "--checkpoint"),
        (["compare"], "--first-seed"),
        (["report"], "--curves"),
    ],
)
def test_help(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    assert words in capsys.readouterr().out


def test_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--recipe", "huge"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_craftlib_help():
    result = subprocess.run(
        [sys.executable, "-m", "craftlib", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "evaluate", "compare", "report", "demo"):
        assert command in result.stdout


# ---------------------------------------------------------------------------------------------
# leakage: View 2 / DevTrain refused for a model whose training identities are in those pairs


@pytest.fixture(scope="module")
def workshop_checkpoint(lfw, tmp_path_factory):
    """A checkpoint whose training identities are the workshop recipe's (all 1,262 outside DevTest).

    What matters is the identity list it records, so the faces are not decoded (blank images) and
    the network is not trained: the refusal must come before any evaluation.
    """
    from craftlib import data
    from craftlib.training import Trainer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            data,
            "load_faces",
            lambda root, names, crop, size, **kw: np.zeros((len(names), size, size, 3), np.uint8),
        )
        faces = lfw.training_set(max_identities=WORKSHOP.max_identities)
    trainer = Trainer(faces, FAST.train, progress=False)
    return trainer.save(tmp_path_factory.mktemp("workshop") / "checkpoint.pt"), faces.classes


@pytest.mark.slow
def test_view2_is_refused_with_the_overlap_count_in_a_real_subprocess(
    workshop_checkpoint, lfw_root, lfw
):
    path, classes = workshop_checkpoint
    expected = len(set(classes) & identities(lfw, "view2"))
    assert (expected, len(classes)) == (1220, 1262)  # issue #9's count
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "craftlib",
            "evaluate",
            "--data",
            str(lfw_root),
            "--checkpoint",
            str(path),
            "--protocol",
            "view2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(
        "error: 1220 of the model's 1262 training identities appear in the view2 pairs"
    )
    assert "--allow-overlap" in result.stderr and "Traceback" not in result.stderr


def test_devtrain_is_refused_too(workshop_checkpoint, lfw_root, lfw, capsys):
    path, classes = workshop_checkpoint
    expected = len(set(classes) & identities(lfw, "devtrain"))
    assert expected > 0
    code = main(
        ["evaluate", "--data", str(lfw_root), "--checkpoint", str(path), "--protocol", "devtrain"]
    )
    assert (
        code == 2
        and f"{expected} of the model's 1262 training identities appear in the devtrain pairs"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_devtest_is_never_refused(workshop_checkpoint, lfw_root, tmp_path, capsys):
    path, _ = workshop_checkpoint
    assert (
        main(
            ["evaluate", "--data", str(lfw_root), "--checkpoint", str(path), "--out", str(tmp_path)]
        )
        == 0
    )
    assert "on devtest: accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        metrics["leakage"] is None
        and metrics["n_pairs"] == 1000
        and metrics["tar@far=0.001"] is None
    )
    assert metrics["data_variant"] == "deepfunneled"


@pytest.mark.slow
def test_view2_with_allow_overlap_is_marked(workshop_checkpoint, lfw_root, tmp_path, capsys):
    path, _ = workshop_checkpoint
    code = main(
        [
            "evaluate",
            "--data",
            str(lfw_root),
            "--checkpoint",
            str(path),
            "--protocol",
            "view2",
            "--allow-overlap",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    leak = "LEAKAGE: 1220 training identities appear in the view2 pairs"
    assert leak in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["leakage"] == leak and metrics["n_pairs"] == 6000
    assert isinstance(metrics["tar@far=0.001"], float)  # View 2 has the impostors for it


def test_a_checkpoint_without_identities_is_refused_for_view2(
    workshop_checkpoint, lfw_root, tmp_path, capsys
):
    import torch

    path, _ = workshop_checkpoint
    old = torch.load(path, weights_only=True)
    del old["classes"]  # as the first release wrote them
    torch.save(old, tmp_path / "old.pt")
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(lfw_root),
                "--checkpoint",
                str(tmp_path / "old.pt"),
                "--protocol",
                "view2",
            ]
        )
        == 2
    )
    assert "does not record its training identities" in capsys.readouterr().err


def test_train_refuses_view2_before_training(lfw_root, lfw, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(lfw_root),
            "--recipe",
            "fast",
            "--max-identities",
            "30",
            "--protocol",
            "view2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    classes = lfw.training_set(max_identities=30).classes
    expected = len(set(classes) & identities(lfw, "view2"))
    assert (
        code == 2
        and f"{expected} of the model's 30 training identities appear in the view2 pairs"
        in capsys.readouterr().err
    )
    assert not out.exists()  # refused before anything was trained or written


# ---------------------------------------------------------------------------------------------
# train and evaluate for real (tiny)


@pytest.fixture(scope="module")
def trained_run(lfw_root, tmp_path_factory):
    """One CRAFT training run through the CLI: FAST on 30 identities, 2 epochs of 3 steps, 32 px."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        [
            "train",
            "--data",
            str(lfw_root),
            "--recipe",
            "fast",
            "--max-identities",
            "30",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--strategy",
            "contextual",
            "--last-epoch",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    return code, out


@pytest.mark.slow
def test_train_writes_history_metrics_and_checkpoint(trained_run):
    code, out = trained_run
    assert code == 0
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "history.json",
        "metrics.json",
        "checkpoint.pt",
    }  # beside the lock
    history = json.loads((out / "history.json").read_text())
    assert len(history["history"]) == 3 and [e["epoch"] for e in history["events"]] == [1]
    assert (
        history["recipe"]["craft"]["strategy"] == "contextual"
        and history["recipe"]["train"]["epochs"] == 2
    )
    assert (
        history["data_variant"] == "deepfunneled"
        and "output_std" in history["history"][-1]["conv1"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["n_pairs"] == 1000 and 0 <= metrics["accuracy"] <= 1 and metrics["leakage"] is None
    )
    assert 0 <= metrics["inactive_fraction"] <= 1


@pytest.mark.slow
def test_evaluate_a_checkpoint(trained_run, lfw_root, tmp_path, capsys):
    _, out = trained_run
    code = main(
        [
            "evaluate",
            "--data",
            str(lfw_root),
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "checkpoint.pt on devtest: accuracy" in capsys.readouterr().out
    again = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    # the saved model is the evaluated one
    assert again["accuracy"] == pytest.approx(trained["accuracy"])


def test_evaluate_without_checkpoint_is_the_pixel_baseline(lfw_root, tmp_path, capsys):
    code = main(["evaluate", "--data", str(lfw_root), "--size", "32", "--out", str(tmp_path)])
    assert code == 0
    assert "raw pixels on devtest" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.55 <= metrics["accuracy"] <= 0.70


@pytest.mark.parametrize("command", [["evaluate"], ["train", "--recipe", "fast", "--quiet"]])
def test_bad_data_path_exits_2_with_a_clear_message(tmp_path, capsys, command):
    missing = tmp_path / "no-lfw-here"
    code = main([*command, "--data", str(missing), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err
    assert "CRAFTLIB_DATA" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_checkpoint_exits_2(lfw_root, tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    assert main(["evaluate", "--data", str(lfw_root), "--checkpoint", str(bogus)]) == 2
    assert "bogus.pt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# compare and report


@pytest.mark.slow
def test_report_prints_and_writes_the_pooled_summary(records_dir, tmp_path, capsys):
    target = tmp_path / "summary.json"
    code = main(
        [
            "report",
            str(records_dir),
            "--metrics",
            "accuracy",
            "silent_fraction",
            "--curves",
            "--write",
            str(target),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "DevTest accuracy" in out and "silent conv1" in out and "area" in out
    assert "summary of 15 runs" in out
    assert load_summary(target) == summarize_folders([records_dir])
    assert main(["report", str(records_dir), "--markdown"]) == 0
    assert "|---|" in capsys.readouterr().out


def test_report_refuses_folders_of_different_recipes(records_dir, tmp_path, capsys, make_record):
    from craftlib.study.experiments import fingerprint, write_record

    other = tmp_path / "other"
    record = make_record("none", 11, 0.8)
    write_record(
        other,
        {k: v for k, v in record.items() if k != "fingerprint"},
        fingerprint(FAST.but(lr=0.2), "deepfunneled"),
    )
    assert main(["report", str(records_dir), str(other)]) == 2
    assert "recipe.train.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_compare_appends_seeds(lfw_root, devtest_subset, tmp_path, capsys, monkeypatch):
    from craftlib.data import LFW

    monkeypatch.setattr(
        LFW, "pairs", lambda self, protocol="devtest", progress=False: devtest_subset
    )
    out, models = tmp_path / "cmp", tmp_path / "models"
    argv = [
        "compare",
        "--data",
        str(lfw_root),
        "--recipe",
        "fast",
        "--max-identities",
        "30",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--last-epoch",
        "1",
        "--arms",
        "none",
        "contextual",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main([*argv, "--seeds", "1", "--first-seed", "3", "--models", str(models)]) == 0
    assert sorted(p.name for p in (out / "records").iterdir()) == [
        "contextual-s3.json",
        "none-s3.json",
    ]
    assert sorted(p.name for p in models.iterdir()) == ["contextual-s3.pt", "none-s3.pt"]
    assert ARM_LABELS["contextual"] in capsys.readouterr().out
    assert main([*argv, "--seeds", "2", "--first-seed", "3"]) == 0  # seeds 3 and 4: only 4 is new
    assert "2 run(s) to do (2 already recorded)" in capsys.readouterr().out
    assert [r["seed"] for r in load_records(out)] == [3, 4, 3, 4]
    summary = load_summary(out)
    assert (
        summary.arms["contextual"].seeds == [3, 4]
        and summary.arms["contextual"].vs_baseline["accuracy"].n == 2
    )
