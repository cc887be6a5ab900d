"""The thread policy (craftlib.threads): where it is set, that OpenMP really sees it, and the
benchmark's arithmetic."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.report import update_block, write_section
from craftlib import pages, threads
from craftlib.study.experiments import forked
from craftlib.workshop import cli
from craftlib.workshop.environment import check_threads

REPO = Path(__file__).resolve().parent.parent


def test_the_policy_fills_in_only_what_the_user_left_unset():
    assert threads.policy_env({}) == threads.POLICY == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.policy_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    env = {"OMP_WAIT_POLICY": "ACTIVE", "HOME": "/x"}
    assert threads.apply(env) == {} and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"HOME": "/x"}
    assert threads.apply(env) == threads.POLICY and env == {"HOME": "/x", **threads.POLICY}
    assert threads.kernel_env({"HOME": "/x"}) == {"HOME": "/x", **threads.POLICY}


@pytest.mark.parametrize(
    "jobs, cores, each", [(1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 8, 4), (0, 2, 2)]
)
def test_forked_workers_share_the_threads(jobs, cores, each):
    assert threads.worker_threads(jobs, cores) == each


def test_check_reports_the_policy_and_when_it_is_not_in_effect(monkeypatch):
    monkeypatch.setattr(threads, "_applied", {})
    monkeypatch.setattr(threads, "_late", False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    check = check_threads()
    assert (
        check.status == "NOTE"
        and "not set" in check.detail
        and "python -m craftlib lab" in check.detail
    )
    assert f"{torch.get_num_threads()} torch thread(s)" in check.detail

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # as a kernel started by `lab` sees it
    check = check_threads()
    assert (
        check.status == "OK"
        and "OMP_WAIT_POLICY=PASSIVE (from the environment: idle threads sleep)" in check.detail
    )

    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert threads.apply() == threads.POLICY  # torch is imported already: too late for this process
    check = check_threads()
    assert check.status == "NOTE" and "after torch was imported" in check.detail


def test_the_lab_launcher_hands_the_policy_to_the_kernels(monkeypatch, tmp_path):
    calls = []
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(cli, "run_stoppable", lambda cmd, env: calls.append(env) or 0)
    args = cli._light_parser().parse_args(
        ["lab", "--notebooks", str(REPO / "notebooks"), "--workspace", str(tmp_path / "ws")]
    )
    assert cli.cmd_lab(args) == 0
    assert calls[0]["OMP_WAIT_POLICY"] == "PASSIVE" and calls[0]["PATH"] == os.environ["PATH"]


@pytest.mark.slow
def test_forked_compare_workers_run_their_share_of_threads():
    got = list(forked(lambda i: (i, torch.get_num_threads()), [(0,), (1,)], jobs=2))
    assert sorted(got) == [(i, threads.worker_threads(2, torch.get_num_threads())) for i in (0, 1)]


def _spin_counts(stderr: str) -> list[str]:
    """GNU OpenMP's spin count(s) from OMP_DISPLAY_ENV=VERBOSE: 0 under PASSIVE, 300000 by
    default."""
    return [
        line.split("=")[1].strip(" '")
        for line in stderr.splitlines()
        if line.strip().startswith("GOMP_SPINCOUNT")
    ]


@pytest.mark.slow
def test_the_command_line_sets_passive_waiting_before_torch_loads_openmp(lfw_root):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    plain = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True, check=True
    )
    if not _spin_counts(plain.stderr):
        pytest.skip("torch's OpenMP here is not GNU OpenMP: its wait policy cannot be read back")
    assert set(_spin_counts(plain.stderr)) != {"0"}, (
        "without the policy OpenMP should spin: the test proves nothing"
    )
    out = subprocess.run(
        [sys.executable, "-m", "craftlib", "check", "--no-speed", "--data", str(lfw_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert set(_spin_counts(out.stderr + out.stdout)) == {"0"}, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.split()[1:2] == ["threads"])
    assert line.startswith("OK") and "OMP_WAIT_POLICY=PASSIVE (craftlib's policy" in line


# --------------------------------------------------------------------------------------------
# benchmarks/threads.py: its summary, its results section and its doc block


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_threads", REPO / "benchmarks" / "threads.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(speed: dict, others: float) -> list[dict]:
    """Two rounds of the eight cells with the given img/s per (threads, policy, busy)."""
    return [
        {
            "round": r,
            "busy": b,
            "policy": p,
            "threads": 2 if t == 0 else 1,
            "requested": t,
            "images_per_s": speed[(t, p, b)] * (1 + 0.1 * r),
            "other_cores": 1.0 if b else others,
        }
        for r in range(2)
        for t, p, b in speed
    ]


def test_the_benchmark_computes_ratios_and_refuses_a_busy_idle(bench):
    speed = {
        (1, False, False): 250,
        (0, False, False): 400,
        (1, True, False): 250,
        (0, True, False): 390,
        (1, False, True): 280,
        (0, False, True): 157,
        (1, True, True): 285,
        (0, True, True): 287,
    }
    s = bench.summarize(_rows(speed, others=0.05))
    by = {(t["busy"], t["policy"]): t for t in s["table"]}
    assert by[(True, True)]["ratio"] == pytest.approx(287 / 285) and by[(False, False)][
        "ratio"
    ] == pytest.approx(1.6)
    assert s["verdict"]["busy"]["holds"] and s["verdict"]["idle"]["holds"] and s["machine_idle"]
    assert not bench.summarize(_rows(speed, others=1.5))["machine_idle"]
    speed[(0, True, True)] = 200
    assert not bench.summarize(_rows(speed, others=0.05))["verdict"]["busy"]["holds"]


def test_the_benchmark_writes_its_section_and_its_block_only(bench, tmp_path, monkeypatch):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"training": {"x": 1}}))
    speed = {(t, p, b): 100.0 for t in (1, 0) for p in (False, True) for b in (False, True)}
    r = {
        "machine": {
            "date": "d",
            "cpu": "c",
            "cores": 2,
            "platform": "p",
            "torch": "t",
            "git_commit": "g",
        },
        "rounds": 2,
        "steps": 30,
        "quick": False,
        "loadavg_start": [0.1],
        "loadavg_end": [0.2],
        "summary": bench.summarize(_rows(speed, others=0.0)),
    }
    write_section(bench.KEY, r, results)
    assert json.loads(results.read_text()) == {"training": {"x": 1}, "thread_policy": r}
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("before\n<!-- threads -->\nold\n<!-- /threads -->\nafter\n")
    assert update_block("threads", bench.render(r), doc)
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "\nold\n" not in text
    assert (
        "| one busy process | craftlib: OMP_WAIT_POLICY=PASSIVE | 105 | 105 | 1.00 (1.00–1.00) | ≥ "
        "0.95 |" in text
    )
    assert "MISSES ≥ 1.5" in text and "the machine was idle" in text


def test_performance_doc_has_the_thread_block(bench):
    text = (REPO / "docs" / "PERFORMANCE.md").read_text()
    assert "Verdict with the policy" in pages.block(text, "threads")
    assert "benchmarks/threads.py" in text and pages.block(text, "widgets")
