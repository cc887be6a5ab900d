"""Does training keep its speed on a busy laptop? 1 vs N threads, idle and beside a busy neighbour,
with and without craftlib's thread policy (``craftlib.threads``: OpenMP's idle threads sleep instead
of spinning).

    .venv/bin/python benchmarks/threads.py            # the measurement (~6 min on 2 cores):
    results.json + doc .venv/bin/python benchmarks/threads.py --quick    # a smoke run (~1 min):
    benchmarks/out/threads.json only

Each cell is a fresh process (OpenMP reads its wait policy once, when torch loads) that trains the
workshop model (recipe ``workshop``: batch 64, 40 px, real LFW faces from the cache, 1,262
identities) for a few warm-up steps and then times ``--steps`` steps: images/s by the wall clock.
Cells are 1 thread and N threads (torch's default: one per physical core), with the OpenMP default
and with the policy, idle and beside one busy neighbour (a spinning process this script starts
before the cell and stops after it), interleaved over
``--rounds`` rounds so that a change in load hits every cell alike. Each cell also records how many
cores *other* processes used while it was timed (from /proc/stat), so an "idle" cell on a machine
that was not idle is reported as such. A full run writes the ``thread_policy`` section of
``benchmarks/results.json`` and the block ``<!-- threads -->`` (``craftlib.pages``) of
``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout even without `pip install -e .`

from benchmarks.report import update_block, write_section  # noqa: E402
from craftlib.threads import POLICY  # noqa: E402  (standard library only: no torch in this process's OpenMP)

RESULTS = REPO / "benchmarks" / "results.json"
QUICK_OUT = REPO / "benchmarks" / "out" / "threads.json"
DOC = REPO / "docs" / "PERFORMANCE.md"
KEY = "thread_policy"
TARGETS = {"idle": 1.5, "busy": 0.95}  # N threads / 1 thread under the policy (issue #25)
IDLE_OTHERS = (
    0.25  # an idle cell during which other processes used more cores than this was not idle
)
SPINNER = "while True: pass"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# one cell, in its own process


def busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def worker(threads: int, steps: int, warmup: int) -> dict:
    """Time ``steps`` workshop training steps with ``threads`` torch threads (0: torch's
    default)."""
    import torch

    from craftlib.data import LFW
    from craftlib.recipes import WORKSHOP
    from craftlib.training import Trainer

    config = WORKSHOP.train.but(threads=threads or None)
    data = LFW(size=config.model.input_size, download=False).training_set()
    trainer = Trainer(data, config, progress=False)
    trainer.train_steps(warmup)
    before, wall0, cpu0 = busy_jiffies(), time.perf_counter(), time.process_time()
    trainer.train_steps(steps)
    wall, own = time.perf_counter() - wall0, time.process_time() - cpu0
    after = busy_jiffies()
    others = None
    # machine-wide busy cores, minus this process's own
    if before and after and after[1] > before[1]:
        cores = os.cpu_count() or 1
        others = round((after[0] - before[0]) / (after[1] - before[1]) * cores - own / wall, 3)
    return {
        "threads": torch.get_num_threads(),
        "images_per_s": round(steps * config.batch_size / wall, 2),
        "own_cores": round(own / wall, 3),
        "other_cores": others,
        "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
    }


# --------------------------------------------------------------------------------------------
# the orchestra: cells interleaved, the neighbour started and stopped around each busy cell


def cell_env(policy: bool) -> dict[str, str]:
    """This environment without any thread setting, plus the policy's variables when ``policy``."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY and k != "OMP_NUM_THREADS"}
    return {**env, **(POLICY if policy else {})}


def run_cell(threads: int, policy: bool, busy: bool, steps: int, warmup: int) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if busy else None
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                str(threads),
                "--steps",
                str(steps),
                "--warmup",
                str(warmup),
            ],
            env=cell_env(policy),
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if out.returncode != 0:
        raise RuntimeError(
            f"cell (threads={threads}, policy={policy}, busy={busy}) failed:\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


CELLS = [
    (t, p, b) for b in (False, True) for p in (False, True) for t in (1, 0)
]  # threads 0: torch's default


def measure(rounds: int, steps: int, warmup: int) -> list[dict]:
    """Every cell once per round; each round starts one cell later, so no cell always runs first."""
    rows = []
    for r in range(rounds):
        for k in range(len(CELLS)):
            threads, policy, busy = CELLS[(k + r) % len(CELLS)]
            res = run_cell(threads, policy, busy, steps, warmup)
            rows.append({"round": r, "busy": busy, "policy": policy, **res, "requested": threads})
            log(
                f"round {r + 1}/{rounds}: {res['threads']} thread(s), "
                f"{'policy' if policy else 'default'}, "
                f"{'busy neighbour' if busy else 'idle'}: {res['images_per_s']:.0f} img/s "
                f"(other processes: {res['other_cores']} cores)"
            )
    return rows


def summarize(rows: list[dict]) -> dict:
    """Median img/s per cell, N/1 ratios (of the medians, and the range over rounds), and the
    verdicts."""
    n = max(r["threads"] for r in rows)

    def speeds(threads, policy, busy):
        return [
            r["images_per_s"]
            for r in sorted(rows, key=lambda r: r["round"])
            if (r["requested"] == 1) == (threads == 1)
            and r["policy"] == policy
            and r["busy"] == busy
        ]

    table = []
    for busy in (False, True):
        for policy in (False, True):
            one, many = speeds(1, policy, busy), speeds(n, policy, busy)
            paired = [m / o for m, o in zip(many, one)]
            table.append(
                {
                    "busy": busy,
                    "policy": policy,
                    "one": statistics.median(one),
                    "many": statistics.median(many),
                    "ratio": statistics.median(many) / statistics.median(one),
                    "ratio_range": [min(paired), max(paired)],
                }
            )
    idle_others = [r["other_cores"] for r in rows if not r["busy"] and r["other_cores"] is not None]
    idle = bool(idle_others) and max(idle_others) <= IDLE_OTHERS
    policy_rows = {("busy" if t["busy"] else "idle"): t for t in table if t["policy"]}
    verdict = {
        cond: {
            "ratio": round(policy_rows[cond]["ratio"], 3),
            "target": target,
            "holds": policy_rows[cond]["ratio"] >= target,
        }
        for cond, target in TARGETS.items()
    }
    verdict["idle"]["valid"] = idle
    return {
        "threads": n,
        "table": table,
        "idle_other_cores_max": max(idle_others, default=None),
        "machine_idle": idle,
        "verdict": verdict,
    }


# --------------------------------------------------------------------------------------------
# reporting


def render(r: dict) -> str:
    s, m = r["summary"], r["machine"]
    n = s["threads"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['platform']}, torch "
        f"{m['torch']}, "
        f"commit {m['git_commit']}; {r['rounds']} rounds x {r['steps']} timed steps per cell; "
        f"load average {r['loadavg_start'][0]:.2f} → {r['loadavg_end'][0]:.2f}; "
        f"mode: {'quick' if r['quick'] else 'full'}.",
        "",
        f"| neighbour | OpenMP wait policy | 1 thread (img/s) | {n} threads (img/s) | {n} / 1 "
        f"(range over rounds) "
        "| target |",
        "|---|---|---|---|---|---|",
    ]
    policy = " ".join(f"{k}={v}" for k, v in POLICY.items())
    for t in s["table"]:
        target = TARGETS["busy" if t["busy"] else "idle"] if t["policy"] else None
        lines.append(
            f"| {'one busy process' if t['busy'] else 'none (idle)'} | "
            f"{'craftlib: ' + policy if t['policy'] else 'default (spin, then sleep)'} | "
            f"{t['one']:.0f} | "
            f"{t['many']:.0f} | {t['ratio']:.2f} "
            f"({t['ratio_range'][0]:.2f}–{t['ratio_range'][1]:.2f}) | "
            f"{'≥ ' + format(target, 'g') if target else ''} |"
        )
    v = s["verdict"]
    idle = (
        "the machine was idle"
        if s["machine_idle"]
        else f"**the machine was not idle** (other processes used up to "
        f"{s['idle_other_cores_max']} cores during "
        "the idle cells), so the idle ratios do not count"
    )
    lines += [
        "",
        f"Verdict with the policy: busy neighbour {v['busy']['ratio']:.3f} "
        f"({'holds' if v['busy']['holds'] else 'MISSES'} ≥ {v['busy']['target']}); idle "
        f"{v['idle']['ratio']:.3f} ({'holds' if v['idle']['holds'] else 'MISSES'} ≥ "
        f"{v['idle']['target']}); "
        f"{idle}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round of 4 steps; writes benchmarks/out only",
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds over the 8 cells (default 3)"
    )
    ap.add_argument(
        "--steps", type=int, default=30, help="timed training steps per cell (default 30)"
    )
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/PERFORMANCE.md")
    ap.add_argument("--worker", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.warmup)))
        return
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 4, 1
    from run import machine  # benchmarks/run.py: the same machine record as the other benchmarks

    start = time.perf_counter()
    r = {
        "machine": machine(),
        "quick": args.quick,
        "rounds": args.rounds,
        "steps": args.steps,
        "policy": POLICY,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_start": list(os.getloadavg()),
    }
    r["cells"] = measure(args.rounds, args.steps, args.warmup)
    r["summary"] = summarize(r["cells"])
    r["loadavg_end"], r["wall_s"] = list(os.getloadavg()), time.perf_counter() - start
    out = QUICK_OUT if args.quick else RESULTS
    write_section(KEY, r, out)
    print("\n" + render(r) + f"\n\n{KEY} written to {out}")
    if not args.quick and not args.no_doc and update_block("threads", render(r)):
        print(f"updated the generated block of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
