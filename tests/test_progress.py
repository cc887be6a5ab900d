"""Progress bars that suit their output (craftlib.progress): lines in a log, text in a notebook,
bars on a terminal."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import nbformat
import pytest
from tqdm.std import tqdm

from craftlib import progress
from craftlib.progress import LogBar, progress_bar, where
from craftlib.training import train


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_where_tells_a_terminal_from_a_log(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert where() == "log" and type(progress_bar(range(3))) is LogBar
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert where() == "terminal"
    bar = progress_bar(range(3), desc="x")
    assert type(bar) is tqdm
    list(bar)
    assert "\r" in sys.stderr.getvalue()  # a terminal gets tqdm's redrawn bar


def test_training_writes_one_line_per_epoch_to_a_log(toy_faces, toy_config, capsys):
    train(toy_faces, toy_config, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], err
    assert all("100%" in line and "4/4" in line for line in lines)


def test_quiet_training_writes_nothing(toy_faces, toy_config, capsys):
    train(toy_faces, toy_config, progress=False)
    assert capsys.readouterr().err == ""


def test_a_long_bar_writes_a_line_every_interval_in_a_log(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    for _ in progress_bar(range(8), desc="faces", leave=False):
        time.sleep(0.03)
    lines = capsys.readouterr().err.splitlines()
    assert 3 <= len(lines) <= 8 and all(line.startswith("faces:") for line in lines)
    assert "8/8" in lines[-1] and "8/8" not in lines[0]


NOTEBOOK_CELL = """\
from craftlib.data import LFW
from craftlib.recipes import FAST
from craftlib.training import train

faces = LFW(size=32).training_set(max_identities=30)
trainer = train(faces, FAST.train.but(epochs=3, batch_size=32), progress=True)
print("trained", trainer.step, "steps")
"""


@pytest.mark.slow
def test_a_notebook_keeps_training_progress_as_text_not_widgets(lfw_root, tmp_path):
    """In a kernel each epoch's bar is one text/plain output, updated in place: it survives save and
    reopen."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    NotebookClient(nb, kernel_name="python3", timeout=600).execute()
    path = tmp_path / "progress.ipynb"
    nbformat.write(nb, path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    shown = [o for o in outputs if o.output_type == "display_data"]
    assert [o.data["text/plain"].split(":")[0] for o in shown] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    assert all(set(o.data) == {"text/plain"} and "100%" in o.data["text/plain"] for o in shown)
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert any("trained" in o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_the_command_line_logs_one_progress_line_per_epoch(lfw_root, tmp_path):
    """What `make demo > log` and CI see: stderr is a pipe, so one line per epoch and no redraw
    frames."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "craftlib",
            "train",
            "--recipe",
            "fast",
            "--epochs",
            "2",
            "--max-identities",
            "40",
            "--data",
            str(lfw_root),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stderr
    epochs = [line for line in out.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [
        "epoch 1/2",
        "epoch 2/2",
    ] and "100%" in epochs[-1]
    assert len(out.stderr) < 4_000, out.stderr  # the whole demo is 3 arms x 10 such lines: a few KB
