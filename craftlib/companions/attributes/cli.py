"""The companion attribute study from a terminal: ``python -m craftlib.companions.attributes.cli
run|report``.

``run`` (resumable: a record already in ``--out`` is kept) finds each ``<arm>-s<seed>.pt`` in the
``--models`` folders (first hit wins), trains the missing ones with ``--train-missing`` (the
workshop recipe, one thread per run, checkpoints into the last ``--models`` folder), writes one JSON
record per model and measurement under ``<out>/records/``, then the tables (``summary.md``) and the
depth-curve figure. ``report`` redraws tables and figure from the records alone (seconds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from craftlib.paths import REPO_ROOT, atomic_write, fast_mode
from craftlib.validation import flag

from . import study
from .widgets import depth_curves_figure

DEFAULT_OUT = REPO_ROOT / "docs" / "results" / "companion_attributes"
DEFAULT_MODELS = ("runs/study-models", "runs/attribute-models")


def report(out: str | Path, figures: bool = True, log=print) -> str:
    """Write ``summary.md`` (and ``depth_curves.png``) from the records of ``out``; return the
    Markdown."""
    out = Path(out)
    records = study.load_records(out)
    if not records:
        raise SystemExit(
            f"no records under {out}/records: run `python -m craftlib.companions.attributes.cli "
            f"run --out {out}` first"
        )
    text = study.render_markdown(records)
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text + "\n"))
    if figures:
        fig = depth_curves_figure(study.depth_curves(records))
        atomic_write(out / "depth_curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    log(
        f"{len(records)} records -> {out / 'summary.md'}"
        + (f", {out / 'depth_curves.png'}" if figures else "")
    )
    return text


def _seeds(text: str) -> list[int]:
    """``0-4`` or ``0,1,2``: each seed in ``validation.RANGES["seed"]``, at least one."""
    seed = flag("seed")
    ends = text.split("-")
    if len(ends) > 2:
        raise argparse.ArgumentTypeError(
            f"must be FIRST-LAST or a comma-separated list of seeds, got {text!r}"
        )
    seeds = (
        list(range(seed(ends[0]), seed(ends[1]) + 1))
        if len(ends) == 2
        else [seed(s) for s in text.split(",")]
    )
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} is an empty range of seeds")
    return seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m craftlib.companions.attributes.cli", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="probes, branching and per-group verification for every model found"
    )
    run.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="folders of <arm>-s<seed>.pt, in order",
    )
    run.add_argument("--arms", nargs="+", default=["none", "contextual"])
    run.add_argument("--seeds", type=_seeds, default=list(range(5)), help="e.g. 0-4 or 0,1,2")
    run.add_argument("--branching-seeds", type=_seeds, default=[0])
    run.add_argument(
        "--train-missing", action="store_true", help="train models not found (workshop recipe)"
    )
    run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    run.add_argument(
        "--fast", action="store_true", help="CI budget (also CRAFT_FAST=1): numbers mean nothing"
    )
    rep = sub.add_parser("report", help="tables and figure from the records")
    rep.add_argument("out", type=Path, nargs="?", default=DEFAULT_OUT)
    rep.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "report":
        print(report(args.out, figures=not args.no_figures))
        return 0
    fast = args.fast or fast_mode()
    settings = study.FAST_SETTINGS if fast else study.StudySettings()
    folders = [Path(f) if Path(f).is_absolute() else REPO_ROOT / f for f in args.models]
    if args.train_missing:
        from craftlib.recipes import FAST, WORKSHOP
        from craftlib.study.experiments import compare

        found = study.find_models(folders, args.arms, args.seeds)
        missing = sorted({s for a in args.arms for s in args.seeds if (a, s) not in found})
        if missing:
            recipe = FAST if fast else WORKSHOP
            print(
                f"training {len(missing)} seed(s) {missing} of {args.arms} ({recipe.name} recipe) "
                f"into {folders[-1]}"
            )
            for seed in missing:
                arms = tuple(a for a in args.arms if (a, seed) not in found)
                compare(
                    recipe,
                    [seed],
                    arms,
                    out=folders[-1] / "compare",
                    progress=False,
                    models=folders[-1],
                )
    models = study.find_models(folders, args.arms, args.seeds)
    print(f"{len(models)} model(s) found: " + ", ".join(f"{a}-s{s}" for a, s in sorted(models)))
    st = study.prepare(settings)
    print(repr(st.probe_set))
    study.run_study(st, models, args.out, branching_seeds=args.branching_seeds)
    report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
