"""Real-data check of the dose study's shortcut (``craftlib.study.dose.fork_point``): at a (level,
seed) whose arms were all recorded from scratch, rerun standard training keeping its per-epoch
checkpoints, start the other arms from it as the study now does, and compare every record with the
committed one, digit for digit. Writes docs/results/dose/fork_check.json.

    .venv/bin/python benchmarks/dose_fork_check.py --level wd5e-3 --seed 0   # ~20 CPU-minutes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from craftlib.data import LFW
from craftlib.paths import atomic_write
from craftlib.study import dose
from craftlib.study.experiments import fingerprint, read_record, record_path, write_record

SKIP = ("train_seconds", "forked_from", "resumed_from", "fingerprint")  # when and how, not what


def same(a: dict, b: dict) -> bool:
    """Equal as the JSON the study writes (NaN equals itself there)."""
    keep = lambda r: json.dumps({k: v for k, v in r.items() if k not in SKIP}, sort_keys=True)
    return keep(a) == keep(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="wd5e-3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/fork-check")
    ap.add_argument("--out", default="docs/results/dose/fork_check.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the study's runs (records say threads: 1)
    recipe, work = dose.recipe(args.level), Path(args.work)
    lfw = LFW(size=recipe.train.model.input_size)
    train_set, pairs = lfw.training_set(), lfw.pairs("devtest")
    committed = dose.DEFAULT_ROOT / args.level
    rows = []
    for arm in ("none", "contextual", "random_matched"):
        fork = dose.fork_point(work, work / "models", args.level, args.seed, arm)
        models = work / "models"
        record = dose.run_forked(train_set, pairs, args.level, arm, args.seed, fork, models)
        if arm == "none":
            write_record(work / args.level, record, fingerprint(recipe, lfw.variant))
        dose.drop_past(models, args.level, arm, args.seed)  # as the study does once it records
        before = read_record(record_path(committed, arm, args.seed))
        rows.append(
            {
                "arm": arm,
                "started_from_epoch": record.get("resumed_from", {}).get(
                    "epoch", fork[1] if fork else 0
                ),
                "identical_to_committed": same(record, before),
                # the seconds depend on the machine's load, the epochs do not
                "epochs_trained": recipe.train.epochs
                - record.get("resumed_from", {}).get("epoch", fork[1] if fork else 0),
            }
        )
        print(rows[-1], flush=True)
    result = {"level": args.level, "seed": args.seed, "arms": rows}
    atomic_write(Path(args.out), lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))


if __name__ == "__main__":
    main()
