"""Measure the workshop notebooks' runtimes into docs/results/notebook_times.json (the one source of
every quoted time).

    python benchmarks/notebook_times.py --mode full          # 00-05 in order, full mode (about 15
    CPU-min) python benchmarks/notebook_times.py --mode fast 02 03    # some notebooks, FAST mode

Each notebook runs as ``python -m craftlib.workshop.notebooks NAME`` in a child process with one
thread (``OMP_NUM_THREADS=1``) and a fresh runs folder shared by the notebooks of one call, as a
learner's would be. What is recorded is the CPU seconds of the runner and its kernel
(``RUSAGE_CHILDREN``, Linux): about the wall time on an idle core, and stable on a shared machine,
where the wall time and load are kept beside it. Then ``python -m craftlib.workshop.quotes --fix``
rewrites the quoted times.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from craftlib.workshop import quotes  # noqa: E402
from craftlib.workshop.notebooks import list_notebooks  # noqa: E402

WORKSHOP = ["00", "01", "02", "03", "04", "05"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def adopt_orphans() -> None:
    """Make this process the Linux "subreaper" of its descendants: the Jupyter kernel outlives the
    runner that started it, and only a reaped process's CPU time reaches ``RUSAGE_CHILDREN``."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed: this needs Linux")


def reap() -> None:
    """Wait for every descendant (the kernel included) to exit."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def measure(
    name: str, fast: bool, runs: Path, out: Path
) -> tuple[float, float, tuple[float, float]]:
    """(wall s, CPU s, (load before, load after)) of one headless notebook run."""
    env = dict(
        os.environ, CRAFT_FAST="1" if fast else "0", OMP_NUM_THREADS="1", CRAFTLIB_RUNS=str(runs)
    )
    load0, cpu0, t0 = os.getloadavg()[0], children_cpu(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "craftlib.workshop.notebooks", name, "--out", str(out)],
        env=env,
        check=True,
        cwd=REPO,
    )
    reap()
    return time.perf_counter() - t0, children_cpu() - cpu0, (load0, os.getloadavg()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "names", nargs="*", default=WORKSHOP, help="notebooks, in the order a learner runs them"
    )
    ap.add_argument("--mode", choices=("fast", "full"), required=True)
    args = ap.parse_args(argv)
    adopt_orphans()
    runs = REPO / "runs" / f"timed-{args.mode}"
    shutil.rmtree(runs, ignore_errors=True)
    for path in list_notebooks(args.names):
        wall, cpu, load = measure(
            path.stem, args.mode == "fast", runs, REPO / "build" / f"timed-{args.mode}"
        )
        quotes.record_cpu(path.stem, args.mode, wall, cpu, load)
        print(
            f"{path.stem:<32} {args.mode}: {cpu:7.1f} CPU s, {wall:7.1f} s wall, load "
            f"{load[0]:.1f}->{load[1]:.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
