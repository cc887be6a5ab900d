"""Search for the accelerated workshop recipe: how much death, how fast, at what accuracy cost.

    python benchmarks/recipe_sweep.py --grid 0 --out docs/results/recipe_sweep.jsonl

Each line of the output is one run: the recipe overrides, the strategy, the re-activation schedule,
per-epoch inactive fraction (max|w| < tau of the strongest) and the DevTest 10-fold accuracy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from craftlib.activity import timeline
from craftlib.data import LFW
from craftlib.recipes import WORKSHOP
from craftlib.study.experiments import run_arm

GRIDS = [
    [  # grid 0: the BACKGROUND.md setting, then CRAFT on it
        dict(weight_decay=2e-2, epochs=12, strategy="none", last=8),
        dict(weight_decay=2e-2, epochs=12, strategy="contextual", last=8),
        dict(weight_decay=2e-2, epochs=12, strategy="random", last=8),
        dict(weight_decay=2e-2, epochs=12, strategy="contextual", last=6),
    ],
    [  # grid 1: weaker decay (2e-2 kills ~95% of conv1 at 40 px)
        dict(weight_decay=1e-2, epochs=12, strategy="none", last=8),
        dict(weight_decay=5e-3, epochs=12, strategy="none", last=8),
    ],
    # grid 2: the workshop budget (10 epochs) with the paper's decay, and with BN/bias excluded from
    # decay
    [
        dict(weight_decay=5e-4, epochs=10, strategy="none", last=6),
        dict(
            weight_decay=1e-2, epochs=10, strategy="none", last=6, weight_decay_scope="no_norm_bias"
        ),
    ],
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=0)
    ap.add_argument("--out", default="docs/results/recipe_sweep.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--table", action="store_true", help="print the markdown table of --out and exit"
    )
    args = ap.parse_args()
    if args.table:
        print(table(args.out))
        return
    torch.set_num_threads(args.threads)
    lfw = LFW(size=WORKSHOP.train.model.input_size)
    data, pairs = lfw.training_set(), lfw.pairs("devtest")
    for spec in GRIDS[args.grid]:
        spec = dict(spec)
        strategy, last = spec.pop("strategy"), spec.pop("last")
        recipe = replace(
            WORKSHOP, train=replace(WORKSHOP.train, **spec), reactivate_last_epoch=last
        )
        run = run_arm(data, pairs, recipe, strategy, args.seed)
        tl = timeline(run["history"])
        row = {
            **spec,
            "strategy": strategy,
            "last_epoch": last,
            "seed": args.seed,
            "tau": recipe.tau,
            "inactive_by_epoch": [
                float((tl[:, e] < recipe.tau).mean()) for e in range(tl.shape[1])
            ],
            "inactive_20_by_epoch": [float((tl[:, e] < 0.2).mean()) for e in range(tl.shape[1])],
            "reactivated_per_event": [
                len(e["filters"]) for e in run["events"] if e["strategy"] != "none"
            ],
            **{
                k: run[k]
                for k in (
                    "inactive_fraction",
                    "accuracy",
                    "accuracy_std",
                    "auc",
                    "tar@far=0.01",
                    "train_seconds",
                )
            },
        }
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


def table(path: str) -> str:
    """Markdown table of a sweep file (what docs/RECIPE.md shows)."""
    rows = [
        "| wd | decayed | epochs | strategy | re-activate until | inactive by epoch (τ=0.1) | "
        "final inactive | DevTest acc | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for line in open(path):
        r = json.loads(line)
        until = "–" if r["strategy"] == "none" else r["last_epoch"]
        curve = " ".join(f"{x:.0%}" for x in r["inactive_by_epoch"][1:])
        scope = "all" if r.get("weight_decay_scope", "all") == "all" else "not BN/bias"
        rows.append(
            f"| {r['weight_decay']:g} | {scope} | {r['epochs']} | {r['strategy']} | {until} | "
            f"{curve} | "
            f"{r['inactive_fraction']:.0%} | {r['accuracy']:.1%} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
