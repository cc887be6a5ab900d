"""``python -m craftlib train|evaluate|compare|demo``: the Python API from a terminal."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from .paths import atomic_write, fast_mode


def _recipe(args):
    from .recipes import get_recipe

    recipe = get_recipe(args.recipe)
    train = recipe.train
    changes = {k: getattr(args, k) for k in ("epochs", "batch_size", "optimizer", "lr", "weight_decay",
                                             "weight_decay_scope", "schedule", "head", "seed", "device")
               if getattr(args, k, None) is not None}
    if getattr(args, "size", None):
        changes["model__input_size"] = args.size
    return replace(recipe, train=train.but(**changes),
                   tau=args.tau if getattr(args, "tau", None) is not None else recipe.tau,
                   reactivate_last_epoch=getattr(args, "last_epoch", None) or recipe.reactivate_last_epoch,
                   max_identities=getattr(args, "max_identities", None) or recipe.max_identities)


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def cmd_train(args) -> int:
    from .activity import inactive_fraction, model_scores
    from .data import LFW
    from .reactivation import ReactivationCallback
    from .training import train
    from .verification import evaluate

    recipe = _recipe(args)
    lfw = LFW(args.data, size=recipe.train.model.input_size)
    data = lfw.training_set(max_identities=recipe.max_identities, progress=True)
    callbacks = [ReactivationCallback(args.strategy, recipe.tau, args.score, every=args.every,
                                      last_epoch=recipe.last_epoch, seed=recipe.train.seed)]
    out = Path(args.out)
    trainer = train(data, recipe.train, callbacks, progress=not args.quiet, resume_from=args.resume)
    trainer.save(out / "checkpoint.pt")
    _write_json(out / "history.json", {"history": trainer.history, "events": trainer.events,
                                      "config": recipe.train.to_dict(), "strategy": args.strategy})
    metrics = evaluate(trainer.model, lfw.pairs(args.protocol))
    metrics["inactive_fraction"] = inactive_fraction(model_scores(trainer.model), recipe.tau)
    _write_json(out / "metrics.json", metrics)
    print(f"{args.protocol} accuracy {metrics['accuracy']:.2%} ± {metrics['accuracy_std']:.2%}, "
          f"AUC {metrics['auc']:.3f}, inactive conv1 filters {metrics['inactive_fraction']:.0%} -> {out}")
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoints import load_model
    from .data import LFW
    from .verification import evaluate, evaluate_pixels

    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint)
        size = model.config.input_size
    else:
        model, size = None, args.size or 40
    pairs = LFW(args.data, size=size).pairs(args.protocol)
    metrics = evaluate(model, pairs) if model is not None else evaluate_pixels(pairs)
    what = args.checkpoint or "raw pixels"
    print(f"{what} on {args.protocol}: accuracy {metrics['accuracy']:.2%} ± {metrics['accuracy_std']:.2%}, "
          f"AUC {metrics['auc']:.3f}, EER {metrics['eer']:.3f}, TAR@FAR=1e-2 {metrics['tar@far=0.01']:.3f}")
    if args.out:
        _write_json(Path(args.out) / "metrics.json", metrics)
    return 0


def cmd_compare(args) -> int:
    from .data import LFW
    from .experiments import compare, format_table

    recipe = _recipe(args)
    seeds = list(range(args.seeds))
    lfw = LFW(args.data, size=recipe.train.model.input_size)
    summary = compare(recipe, seeds, tuple(args.arms), lfw=lfw, out=args.out, progress=not args.quiet,
                      jobs=args.jobs)
    print(format_table(summary))
    if args.figures:
        from .viz import save_comparison_figures

        save_comparison_figures(Path(args.out))
    return 0


def cmd_demo(args) -> int:
    """The workshop pipeline headless: baseline, three arms at one seed, table, figures, JSON."""
    from .data import LFW
    from .experiments import compare, format_table
    from .verification import evaluate_pixels

    args.recipe = "fast" if args.fast else args.recipe
    recipe = _recipe(args)
    out = Path(args.out)
    start = time.perf_counter()
    lfw = LFW(args.data, size=recipe.train.model.input_size)
    pixels = evaluate_pixels(lfw.pairs("devtest"))
    print(f"LFW at {lfw.root}; raw-pixel baseline on DevTest: {pixels['accuracy']:.2%}")
    summary = compare(recipe, [args.seed], tuple(args.arms), lfw=lfw, out=out, progress=not args.quiet)
    summary["pixel_baseline_accuracy"] = pixels["accuracy"]
    summary["wall_seconds"] = time.perf_counter() - start
    _write_json(out / "summary.json", summary)
    try:
        from .viz import save_comparison_figures

        for path in save_comparison_figures(out):
            print(f"figure: {path}")
    except ImportError:
        pass
    print()
    print(f"raw pixels{'':<14}{pixels['accuracy']:>32.2%}")
    print(format_table(summary))
    print(f"\nwall time {summary['wall_seconds'] / 60:.1f} min; results in {out}/summary.json")
    return 0


def cmd_report(args) -> int:
    from .experiments import format_markdown, format_table, load_summary, tau_sensitivity

    summary = load_summary(args.summary)
    if summary is None:
        raise ValueError(f"no summary.json at {args.summary}; run `python -m craftlib compare --out DIR` first")
    print(format_markdown(summary) if args.markdown else format_table(summary))
    if args.taus:
        print()
        print(tau_sensitivity(summary, tuple(args.taus)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m craftlib", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, training=True):
        p.add_argument("--data", help="LFW folder (default: $CRAFTLIB_DATA, data/lfw, scikit-learn cache, download)")
        p.add_argument("--out", default=None, help="output folder")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if training:
            p.add_argument("--recipe", default="workshop", choices=["workshop", "paper", "fast"])
            for name, typ in (("epochs", int), ("batch-size", int), ("lr", float), ("weight-decay", float),
                              ("seed", int), ("size", int), ("tau", float), ("last-epoch", int),
                              ("max-identities", int)):
                p.add_argument(f"--{name}", type=typ)
            p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
            p.add_argument("--weight-decay-scope", choices=["all", "no_norm_bias"])
            p.add_argument("--schedule", choices=["onecycle", "cosine", "step", "constant"])
            p.add_argument("--head", choices=["cosface", "arcface"])
            p.add_argument("--device")

    p = sub.add_parser("train", help="train one model (optionally with CRAFT) and evaluate it")
    common(p)
    p.add_argument("--strategy", default="none", choices=["none", "random", "contextual", "perturbed", "orthogonal"])
    p.add_argument("--score", default="max", choices=["max", "l1", "l2", "gamma", "effective", "activation"])
    p.add_argument("--every", default="epoch", type=lambda s: s if s == "epoch" else int(s))
    p.add_argument("--protocol", default="devtest", choices=["devtest", "devtrain", "view2"])
    p.add_argument("--resume", help="checkpoint to continue from")
    p.set_defaults(func=cmd_train, out="runs/train")

    p = sub.add_parser("evaluate", help="verification report of a checkpoint (or of raw pixels)")
    common(p, training=False)
    p.add_argument("--checkpoint", help="checkpoint.pt from `train` (omit for the raw-pixel baseline)")
    p.add_argument("--size", type=int, help="face size for the pixel baseline")
    p.add_argument("--protocol", default="devtest", choices=["devtest", "devtrain", "view2"])
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="standard vs random vs CRAFT over seeds, with paired tests")
    common(p)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--arms", nargs="+", default=["none", "random", "contextual"])
    p.add_argument("--figures", action="store_true", help="also write figures beside summary.json")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (forked, one thread each)")
    p.set_defaults(func=cmd_compare, out="runs/compare")

    p = sub.add_parser("report", help="print the table of a saved comparison (summary.json or its folder)")
    p.add_argument("summary")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--taus", type=float, nargs="+", help="also the inactive fraction at these thresholds")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the workshop pipeline headless (what `make demo` runs)")
    common(p)
    p.add_argument("--arms", nargs="+", default=["none", "random", "contextual"])
    p.add_argument("--fast", action="store_true", default=fast_mode(), help="CI budget (also CRAFT_FAST=1)")
    p.set_defaults(func=cmd_demo, out="runs/demo")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the imports below, so --help does not wait for torch
    from .checkpoints import CheckpointError
    from .data import DataError, LFWNotFoundError
    from .training import NonFiniteLossError

    if getattr(args, "seed", None) is None and args.command == "demo":
        args.seed = 0
    try:
        return args.func(args)
    except (LFWNotFoundError, DataError, CheckpointError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
