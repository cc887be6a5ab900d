"""``python -m craftlib.study.dose_cli``: the dose–response study (docs/STUDY.md) — run it, or
report it.

Resumable: every finished run is one JSON record under ``ROOT/<level>/records/``; run the command
again to continue. ``--report`` writes ``ROOT/summary.json``, ``ROOT/summary.md`` and the figure
``ROOT/dose.png`` from the records (seconds, no training); ``--status`` says how far along it is.
"""

from __future__ import annotations

import argparse

from craftlib.recipes import ARMS, DEFAULT_ARMS
from craftlib.validation import flag

from . import dose


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m craftlib.study.dose_cli", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--root",
        default=str(dose.DEFAULT_ROOT),
        help="the study's folder (one sub-folder per level)",
    )
    ap.add_argument(
        "--seeds", type=flag("seeds"), default=10, help="seeds FIRST..FIRST+N-1 (default 10)"
    )
    ap.add_argument("--first-seed", type=flag("first-seed"), default=0)
    ap.add_argument("--levels", nargs="+", choices=list(dose.LEVELS), help="default: every level")
    ap.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(DEFAULT_ARMS))
    ap.add_argument(
        "--jobs", type=flag("jobs"), default=2, help="trainings at once (forked, one thread each)"
    )
    ap.add_argument(
        "--data",
        help="LFW folder (default: $CRAFTLIB_DATA, data/lfw, scikit-learn cache, download)",
    )
    ap.add_argument(
        "--models",
        help="keep each run's checkpoint under MODELS/<level>/ (for the ablation) and standard "
        "training's per epoch, which the other arms start from until their detector first fires",
    )
    ap.add_argument(
        "--report", action="store_true", help="only write the summary, table and figure"
    )
    ap.add_argument(
        "--status",
        action="store_true",
        help="only say how far along the study is (with --models: the runs under way too)",
    )
    ap.add_argument(
        "--results",
        metavar="PAGE",
        help="with --report: also rewrite PAGE's generated dose blocks (docs/RESULTS.md)",
    )
    args = ap.parse_args(argv)
    if args.results and not args.report:
        ap.error("--results goes with --report")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.status:
        from .dose_status import status

        print(status(args.root, args.models, seeds, args.levels, tuple(args.arms), args.jobs))
        return 0
    if args.report:
        from .dose_report import write_report

        try:
            print(write_report(args.root, results=args.results))
        except ValueError as err:  # a results page without its blocks
            raise SystemExit(str(err)) from None
        return 0
    dose.run(args.root, seeds, args.levels, tuple(args.arms), args.jobs, args.data, args.models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
