"""``python -m craftlib``: train and evaluate in-process, clear exit codes, and one real subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from craftlib.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained_run(lfw_root, tmp_path_factory):
    """One FAST training run through the CLI (100 identities, 1 epoch, 32 px)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--data", str(lfw_root), "--recipe", "fast", "--max-identities", "100", "--epochs", "1",
                 "--out", str(out), "--quiet"])
    return code, out


def test_train_writes_history_metrics_and_checkpoint(trained_run):
    code, out = trained_run
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"history.json", "metrics.json", "checkpoint.pt"}
    history = json.loads((out / "history.json").read_text())
    assert len(history["history"]) == 2 and history["strategy"] == "none"
    assert history["config"]["epochs"] == 1 and history["config"]["model"]["input_size"] == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_pairs"] == 1000 and 0 <= metrics["accuracy"] <= 1
    assert 0 <= metrics["inactive_fraction"] <= 1


def test_evaluate_a_checkpoint(trained_run, lfw_root, tmp_path, capsys):
    _, out = trained_run
    code = main(["evaluate", "--data", str(lfw_root), "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "checkpoint.pt on devtest: accuracy" in printed
    again = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(trained["accuracy"])  # the saved model is the evaluated one


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


@pytest.mark.parametrize("argv, words", [([], "train"), (["train"], "--max-identities"), (["evaluate"], "--checkpoint")])
def test_help(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    assert words in capsys.readouterr().out


def test_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--recipe", "huge"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_python_dash_m_craftlib_help():
    result = subprocess.run([sys.executable, "-m", "craftlib", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("train", "evaluate", "compare", "demo"):
        assert command in result.stdout
