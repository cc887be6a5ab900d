"""Calibrate `python -m craftlib check`'s speed probe against a full workshop run measured on the
same machine.

    python benchmarks/speed_probe.py     # notebook 01's full training, check's 20-s probe around
    every epoch
                                         # (about 3.5 min of probes + one run: 6 min on 2 idle
                                         cores)

The probe (``environment.speed_probe``) predicts the minutes of one workshop run from a few seconds
of training; the full run is what notebook 01's training cell does (``runs.train_or_load(train,
WORKSHOP, seed)`` into a fresh folder, so it really trains). On a shared machine (here: beside a
niced background study and other jobs) absolute times move with the load, so the two are compared
under the same conditions: the probe runs before the first epoch and after every epoch
(``after_epoch``), each epoch's wall time is taken between them, and each epoch is predicted by the
mean of the two probes around it. The ratio is Σ predicted / Σ measured over the ten epochs; the
same is done in CPU time, which the load hardly moves. The result goes to
docs/results/speed_probe.json; ``tests/test_check.py`` holds the ratio to ±25%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUT = REPO / "docs" / "results" / "speed_probe.json"


def interleaved_run(seconds: float, seed: int = 0) -> dict:
    """Notebook 01's training cell with a probe before it and after each epoch: per-epoch times and
    predictions."""
    from craftlib import recipes, runs
    from craftlib.data import LFW
    from craftlib.workshop.environment import speed_probe

    recipe = recipes.WORKSHOP
    train = LFW(size=recipe.train.model.input_size).training_set(
        max_identities=recipe.max_identities
    )
    probes, epochs, load = [speed_probe(seconds)], [], [os.getloadavg()[0]]
    mark = [time.perf_counter(), time.process_time()]

    def between_epochs(
        _trainer,
    ) -> None:  # the epoch's time, then a probe that is not counted in the next one
        epochs.append((time.perf_counter() - mark[0], time.process_time() - mark[1]))
        probes.append(speed_probe(seconds))
        load.append(os.getloadavg()[0])
        mark[:] = [time.perf_counter(), time.process_time()]

    with tempfile.TemporaryDirectory() as folder:
        trainer = runs.train_or_load(
            train,
            recipe,
            seed,
            keep=(recipe.last_epoch,),
            folder=folder,
            progress=False,
            log=lambda *_: None,
            after_epoch=between_epochs,
        )
    n = recipe.train.epochs
    predicted = [
        (a["minutes"] + b["minutes"]) * 30 / n for a, b in zip(probes, probes[1:])
    ]  # s per epoch
    predicted_cpu = [
        (a["cpu_minutes"] + b["cpu_minutes"]) * 30 / n for a, b in zip(probes, probes[1:])
    ]
    return {
        "steps": trainer.step,
        "epoch_seconds": [round(e[0], 2) for e in epochs],
        "predicted_epoch_seconds": [round(p, 2) for p in predicted],
        "ratio": round(sum(predicted) / sum(e[0] for e in epochs), 3),
        "cpu_ratio": round(sum(predicted_cpu) / sum(e[1] for e in epochs), 3),
        "measured_minutes": round(sum(e[0] for e in epochs) / 60, 2),
        "predicted_minutes": round(sum(predicted) / 60, 2),
        "load": [round(x, 1) for x in load],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seconds", type=float, default=None, help="each probe's budget (default: check's, 20 s)"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    from craftlib.workshop.environment import SPEED_BUDGET_S

    seconds = args.seconds or SPEED_BUDGET_S
    result = interleaved_run(seconds)
    result.update(
        probe_seconds=seconds,
        torch_threads=torch.get_num_threads(),
        omp={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        how="python benchmarks/speed_probe.py: notebook 01's full training (WORKSHOP, arm none, "
        "seed 0, a "
        "fresh runs folder) with check's probe before it and after every epoch; ratio = Σ "
        "predicted / "
        "Σ measured epoch seconds, each epoch predicted by the two probes around it",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
