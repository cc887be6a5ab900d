"""``python -m craftlib.companions.sparsity.cli``: the companion comparison (standard, CRAFT, CReLU
stem, Top-K) in one command.

Resumable: each finished run is one JSON record under ``OUT/records/``; run the command again to
continue (or with more ``--seeds``). After the runs it writes ``OUT/summary.md`` (the tables),
``OUT/summary.json`` and the figures ``OUT/seeds.png`` and ``OUT/pairing.png``. ``--report`` only
rewrites those from the records (seconds, no training); ``--remeasure`` recomputes every record's
companion measurements from the kept checkpoints (``--models``); ``--twins`` measures whether the
CReLU stem's φ/−φ twins cut their response at one threshold or two (``OUT/twins.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from craftlib.paths import atomic_write, fast_mode
from craftlib.validation import flag

from . import study as companion

REPRODUCE = (
    "make companion   # = python -m craftlib.companions.sparsity.cli --seeds 5 --out "
    "docs/results/companion_sparsity"
)


def report(out: str | Path, log=print) -> str:
    """Tables, JSON and figures from the records in ``out``; returns the Markdown written."""
    from craftlib.study.experiments import load_records

    from .widgets import save_figures

    out = Path(out)
    records = load_records(out)
    if not records:
        raise SystemExit(f"no records under {out}/records: run the comparison first")
    s = companion.summary(records)
    seeds = sorted({r["seed"] for r in records})
    arms = sorted({r["arm"] for r in records})
    done = {a: sorted(r["seed"] for r in records if r["arm"] == a) for a in arms}
    text = "\n\n".join(
        [
            f"Records: {len(records)} runs "
            f"({', '.join(f'{a}: seeds {v}' for a, v in done.items())}).",
            companion.render_markdown(s),
            "Shape-vs-texture probe (DevTest accuracy per family):",
            companion.render_shape_table(s),
            f"Reproduce: `{REPRODUCE}`",
        ]
    )
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text + "\n"))
    blob = {
        "main": json.loads(s["main"].to_json()),
        "extra": {
            a: {**e, "vs_baseline": {m: asdict(p) for m, p in e["vs_baseline"].items()}}
            for a, e in s["extra"].items()
        },
        "seeds": seeds,
    }
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(blob, indent=1)))
    try:
        from craftlib.pretrained import ModelNotFoundError, mobilefacenet_stem

        stem = mobilefacenet_stem(download=False)
    except (ModelNotFoundError, OSError):
        stem = None
    for path in save_figures(s, records, out, stem):
        log(f"wrote {path}")
    log(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m craftlib.companions.sparsity.cli", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--seeds", type=flag("seeds"), default=5, help="seeds 0..N-1 (default 5)")
    ap.add_argument(
        "--arms",
        nargs="+",
        default=list(companion.COMPANION_ARMS),
        choices=list(companion.COMPANION_ARMS),
    )
    ap.add_argument("--out", default=companion.DEFAULT_OUT, help="results folder (records/*.json)")
    ap.add_argument(
        "--models", default="runs/companion-models", help="folder for the runs' checkpoints"
    )
    ap.add_argument(
        "--jobs", type=flag("jobs"), default=1, help="trainings at once (forked, one thread each)"
    )
    ap.add_argument(
        "--fast", action="store_true", help="the FAST recipe (CI smoke; numbers mean nothing)"
    )
    ap.add_argument(
        "--report",
        action="store_true",
        help="only rewrite the summary and figures from the records",
    )
    ap.add_argument(
        "--remeasure",
        action="store_true",
        help="recompute the companion measurements from checkpoints",
    )
    ap.add_argument(
        "--twins", action="store_true", help="measure the CReLU twins' thresholds (OUT/twins.json)"
    )
    args = ap.parse_args(argv)
    if args.twins:
        blob = companion.twins(args.out, args.models)
        atomic_write(
            Path(args.out) / "twins.json", lambda tmp: tmp.write_text(json.dumps(blob, indent=1))
        )
        print(companion.render_twins(blob))
        return 0
    if args.remeasure:
        print(f"remeasured {companion.remeasure(args.out, args.models)} record(s)")
    elif not args.report:
        from craftlib.recipes import FAST, WORKSHOP

        recipe = FAST if (args.fast or fast_mode()) else WORKSHOP
        companion.compare(
            recipe,
            range(args.seeds),
            tuple(args.arms),
            out=args.out,
            models=args.models,
            jobs=args.jobs,
        )
    report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
