"""The benchmark scripts: the background-study ones must run the code snapshot they take, not the
working tree being edited; the training-step profile must find every layer and count its FLOPs as
torch does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import write_section

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH needs Python 3.11")
def test_snapshot_sh_makes_python_import_the_snapshot(tmp_path):
    name = f"pytest-{tmp_path.name}"
    script = (
        f'source benchmarks/snapshot.sh {name}; $PY -c "import craftlib; print(craftlib.__file__)"'
    )
    try:
        out = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        assert Path(out) == REPO / "runs" / f"{name}-code" / "craftlib" / "__init__.py", out
    finally:
        shutil.rmtree(REPO / "runs" / f"{name}-code", ignore_errors=True)


@pytest.mark.parametrize("script", ["study.sh", "federated_full.sh"])
def test_study_scripts_parse_and_use_the_snapshot(script):
    text = (REPO / "benchmarks" / script).read_text()
    assert 'source "$(dirname "$0")/snapshot.sh"' in text
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], check=True)


def test_the_one_thread_kernel_ceiling_takes_weight_gradients_off_the_chain():
    """A stem whose backward is all weight gradient (its input needs none), a conv whose backward
    is half, an elementwise layer that stays on the chain, and the optimizer, data and rest off it:
    100 ms of step, 40 off the chain, so at most 100 / 60 with two threads — and never past two."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import step_profile as sp

    layers = {
        "conv1": {"flops_fwd": 5, "flops_bwd": 5},
        "body": {"flops_fwd": 5, "flops_bwd": 10},
        "bn": {"flops_fwd": 0, "flops_bwd": 0},
    }
    ms = {"conv1|fwd": 5, "conv1|bwd": 10, "body|fwd": 10, "body|bwd": 40, "bn|fwd": 5, "bn|bwd": 5}
    rest = {"data|fwd": 1, "optimizer|step": 4, f"{sp.REST}|fwd": 5}
    c = sp.overlap_ceiling(layers, {"layers": {**ms, **rest, "step": 100.0}})
    assert c["weight_gradients_ms"] == 30 and c["off_chain_ms"] == 40 and c["chain_ms"] == 60
    assert c["ceiling"] == pytest.approx(100 / 60)
    assert sp.overlap_ceiling(layers, {"layers": {**ms, **rest, "step": 60.0}})["ceiling"] == 2
    assert "at most 1.67× one thread" in sp.one_thread_kernels(c)


def test_step_profile_tables_on_a_tiny_model(toy_faces, toy_config, tmp_path, monkeypatch):
    """benchmarks/step_profile.py on a tiny model: each layer clocked forward and backward and found
    by the profiler, its FLOPs as torch's own counter counts them, the tables rendered and the other
    results sections kept."""
    from torch.utils.flop_counter import FlopCounterMode

    from craftlib.losses import margin_loss
    from craftlib.training import Trainer

    sys.path.insert(0, str(REPO / "benchmarks"))
    import step_profile as sp

    monkeypatch.setattr(sp, "PEAK", (64, 64, 64))  # the reference sgemm, small for a test
    trainers = {
        mode: Trainer(toy_faces, toy_config, progress=False) for mode in ("stock", "craftlib")
    }
    sp.without_fixes(trainers["stock"], set(sp.FIXES))
    cell = sp.measure_cells(trainers, steps=2, clocked=2, profiled=1, warmup=1)
    trainer = trainers["craftlib"]
    layers, clock, ops = (
        cell["layers"],
        cell["modes"]["craftlib"]["clock_ms"],
        cell["modes"]["craftlib"]["ops"],
    )
    assert list(layers)[:3] == ["conv1", "bn1", "act1"] and list(layers)[-1] == "margin head"
    for name, v in layers.items():
        assert clock[f"{name}|fwd"] > 0
        if v["type"] in ("Conv2d", "BatchNorm2d", "PReLU", "Linear", "MarginHead"):
            assert clock[f"{name}|bwd"] > 0, name
            # backward ops matched to their layer
            assert any(k.startswith(f"{name}|bwd|") for k in ops), name
    assert clock["step"] >= sum(
        v for k, v in clock.items() if k != "step" and not k.startswith(sp.REST)
    )

    x, y = next(trainer._batches())
    with FlopCounterMode(display=False) as counter:
        loss, _ = margin_loss(trainer.head, trainer.model(x), y)
        loss.backward()
    # the margin-free accuracy's cosines (no backward)
    accuracy = 2 * x.shape[0] * trainer.head.weight.numel()
    assert counter.get_total_flops() == sp.step_flops(layers) + accuracy

    cells = [{**cell, "process": "allocator", "round": 0}]
    r = {
        "machine": {
            "date": "today",
            "cpu": "cpu",
            "cores": 2,
            "platform": "linux",
            "torch": "2",
            "git_commit": "x",
        },
        "rounds": 1,
        "steps": 2,
        "clocked": 2,
        "profiled": 1,
        "random": True,
        "quick": True,
        "wall_s": 60.0,
        "loadavg_start": [1.0] * 3,
        "loadavg_end": [1.0] * 3,
        "cell_load": [1.0, 1.0],
        "fixes": sp.FIXES,
        "candidates": sp.CANDIDATES,
        "summary": sp.summarize(cells),
        "cells": [sp.slim(c) for c in cells],
    }
    text = sp.render(r)
    assert all(f"`{name}` " in text for name in layers)
    assert "**FLOP share:" in text and "| craftlib | every fix" in text and "| stock | " in text
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"thread_policy": {"kept": True}}))
    write_section(sp.KEY, r, results)
    assert set(json.loads(results.read_text())) == {"thread_policy", sp.KEY}
