"""``python -m craftlib.companions.federated.cli``: the federated seed study (notebook 08,
docs/RESULTS.md) in one command.

Resumable: each finished run is one JSON record under ``OUT/records/``; run the command again to
continue (or with more ``--seeds``). ``--report`` trains nothing: it writes ``OUT/summary.md`` (the
study, death and re-activation tables) and ``OUT/death.png`` from the records. ``--privacy``
measures what a shared per-person mean gives away on a trained model (``OUT/privacy.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from craftlib.data import LFW
from craftlib.paths import atomic_write

from .federation import FEDERATED, FedConfig, federation, privacy_study, privacy_table
from .study import (
    STUDY_ARMS,
    arm_names,
    death_table,
    load_study,
    reactivation_table,
    study,
    study_table,
)
from .widgets import death_figure


def report(out: str | Path, log=print) -> str:
    """The three tables (``OUT/summary.md``) and the death figure (``OUT/death.png``) from the
    records."""
    out = Path(out)
    records = load_study(out)
    if not records:
        raise SystemExit(f"no records under {out}/records: run the study first")
    text = "\n\n".join(
        [
            f"Records: {len(records)} runs.",
            study_table(records),
            "Filter death against the decay budget (no CRAFT):",
            death_table(records),
            "What re-activation did:",
            reactivation_table(records),
        ]
    )
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text + "\n"))
    atomic_write(
        out / "death.png", lambda tmp: death_figure(records).savefig(tmp, dpi=110, format="png")
    )
    log(text)
    log(f"wrote {out / 'summary.md'} and {out / 'death.png'}")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m craftlib.companions.federated.cli", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--out", default="docs/results/companion_federated")
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds, from --first-seed on")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=FedConfig().rounds)
    ap.add_argument("--local-epochs", type=int, default=FedConfig().local_epochs)
    ap.add_argument(
        "--identities",
        type=int,
        default=FedConfig().identities,
        help="training identities dealt to the sites (LFW has 1,262 outside DevTest; --public more "
        "are the server's)",
    )
    ap.add_argument("--public", type=int, default=FedConfig().public)
    ap.add_argument(
        "--arms",
        nargs="+",
        metavar="STRATEGY-SPLIT-CRAFT",
        help="only these arms, named as in the records (e.g. central-all-none fedavg-iid-server)",
    )
    ap.add_argument(
        "--report",
        action="store_true",
        help="train nothing: write OUT/summary.md and OUT/death.png",
    )
    ap.add_argument(
        "--privacy",
        action="store_true",
        help="train one AdaFedFR-style run sharing the sites' own means (seed 0, dirichlet) at "
        "this budget, "
        "attack it, write OUT/privacy.json",
    )
    args = ap.parse_args(argv)
    budget = FedConfig(
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        identities=args.identities,
        public=args.public,
    )
    if args.privacy:
        fed = budget.but(strategy="adafedfr", split="dirichlet", negatives_source="clients")
        torch.set_num_threads(1)
        lfw = LFW(size=FEDERATED.train.model.input_size)
        blob = privacy_study(FEDERATED, fed, federation(lfw, fed))
        atomic_write(
            Path(args.out) / "privacy.json", lambda tmp: tmp.write_text(json.dumps(blob, indent=1))
        )
        print(privacy_table(blob))
        return 0
    if args.report:
        report(args.out)
        return 0
    arms = STUDY_ARMS
    if args.arms:
        names = arm_names()
        unknown = sorted(set(args.arms) - set(names))
        if unknown:
            ap.error(f"unknown arm(s) {unknown}; choose from {sorted(names)}")
        arms = [names[a] for a in args.arms]
    print(
        study_table(
            study(
                args.out,
                list(range(args.first_seed, args.first_seed + args.seeds)),
                budget,
                arms=arms,
            )
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
