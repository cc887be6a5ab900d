"""``python -m craftlib setup|check|lab|demo|train|evaluate|compare|report|kit``: the Python API
from a terminal."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from craftlib.paths import fast_mode, write_json
from craftlib.validation import flag


def _refuse_overlap(lfw, classes: list[str] | None, protocol: str, allow: bool) -> str:
    """Evaluating on pairs whose people the model trained on is leakage: refuse unless explicitly
    allowed."""
    if protocol == "devtest":
        return ""
    if classes is None:
        if allow:
            return "training identities unknown (old checkpoint); overlap not checked"
        raise ValueError(
            f"this checkpoint does not record its training identities, so leakage into {protocol} "
            "cannot be ruled out; pass --allow-overlap to evaluate anyway (the report will say so)"
        )
    overlap = lfw.overlap(classes, protocol)
    if overlap and not allow:
        raise ValueError(
            f"{len(overlap)} of the model's {len(classes)} training identities appear in the "
            f"{protocol} "
            f"pairs (e.g. {sorted(overlap)[:3]}): that is test-set leakage. Evaluate on devtest, "
            f"or pass "
            "--allow-overlap and the report will be marked"
        )
    return (
        f"LEAKAGE: {len(overlap)} training identities appear in the {protocol} pairs"
        if overlap
        else ""
    )


def cmd_train(args) -> int:
    """Train one run into ``--out``: checked first, a checkpoint per epoch, resumable, stamped with
    its fingerprint."""
    from craftlib.data import LFW
    from craftlib.paths import folder_lock, remove_orphans
    from craftlib.recipes import recipe_from_flags
    from craftlib.runtime import Terminated, sigterm_as_interrupt
    from craftlib.study.runfolder import (
        CHECKPOINT,
        check_run,
        check_writable,
        resume_path,
        run_fingerprint,
        stopped_message,
    )
    from craftlib.training import NonFiniteLossError, Trainer
    from craftlib.validation import check_batch

    recipe, out = recipe_from_flags(args), Path(args.out)
    check_writable(out)  # a file in the way or a read-only folder fails now, not after the training
    lfw = LFW(args.data, size=recipe.train.model.input_size)
    stamp, resume = (
        run_fingerprint(recipe, lfw.variant, args.protocol),
        resume_path(args.resume, out),
    )
    check_run(out, stamp, resume)
    if args.protocol == "view2-leakfree":
        return _train_leakfree(args, lfw, recipe, out, stamp)
    data = lfw.training_set(max_identities=recipe.max_identities, progress=True)
    check_batch(recipe.train.batch_size, len(data.labels))
    leakage = _refuse_overlap(lfw, data.classes, args.protocol, args.allow_overlap)
    trainer = Trainer(data, recipe.train, [recipe.callback()], progress=not args.quiet)
    # refuses a checkpoint of other identities, another variant or architecture
    if resume is not None:
        trainer.resume(resume)
    trainer.stamp = {"run": stamp}
    with folder_lock(out):
        check_run(out, stamp, resume)  # again, now as the folder's only writer
        remove_orphans(out)
        try:
            with sigterm_as_interrupt():
                trainer.fit(checkpoint=out / CHECKPOINT)
                _finish_run(args, lfw, recipe, trainer, out, leakage)
        except (KeyboardInterrupt, NonFiniteLossError) as err:
            print(stopped_message(out, err, recipe.train.epochs), file=sys.stderr)
            return (
                2
                if isinstance(err, NonFiniteLossError)
                else 143
                if isinstance(err, Terminated)
                else 130
            )
    return 0


def _finish_run(args, lfw, recipe, trainer, out: Path, leakage: str) -> None:
    """The trained run's history and its verification report, both stamped with the run's
    fingerprint."""
    from craftlib.activity import inactive_fraction, model_scores
    from craftlib.verification import evaluate

    write_json(
        out / "history.json",
        {
            "history": trainer.history,
            "events": trainer.events,
            "recipe": recipe.to_dict(),
            "data_variant": lfw.variant,
            **trainer.stamp,
        },
    )
    metrics = evaluate(trainer.model, lfw.pairs(args.protocol))
    metrics["inactive_fraction"] = inactive_fraction(
        model_scores(trainer.model, recipe.craft.score, probe=trainer.probe), recipe.tau
    )
    metrics.update(data_variant=lfw.variant, leakage=leakage or None, **trainer.stamp)
    write_json(out / "metrics.json", metrics)
    print(
        f"{args.protocol} accuracy {metrics['accuracy']:.2%} ± {metrics['accuracy_std']:.2%}, "
        f"AUC {metrics['auc']:.3f}, inactive conv1 filters {metrics['inactive_fraction']:.0%} "
        f"({recipe.craft.score} < {recipe.tau:g}) -> {out}" + (f"\n{leakage}" if leakage else "")
    )


def _train_leakfree(args, lfw, recipe, out: Path, stamp: dict) -> int:
    """View 2 without leakage: ten trainings, one stamped metrics.json."""
    from craftlib.paths import folder_lock
    from craftlib.study.experiments import view2_leakfree
    from craftlib.study.runfolder import check_run

    result = view2_leakfree(lfw, recipe, recipe.train.seed)
    with folder_lock(out):
        check_run(out, stamp, None)
        write_json(out / "metrics.json", {**result, "run": stamp})
    print(
        f"View 2 without leakage ({args.strategy}): {result['accuracy']:.2%} ± "
        f"{result['accuracy_std']:.2%}"
    )
    return 0


def cmd_evaluate(args) -> int:
    from craftlib.checkpoints import load_model
    from craftlib.data import LFW
    from craftlib.verification import evaluate, evaluate_pixels

    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint)
        size = model.config.input_size
    else:
        model, ckpt, size = None, {}, args.size or 40
    lfw = LFW(args.data, size=size)
    leakage = (
        _refuse_overlap(lfw, ckpt.get("classes"), args.protocol, args.allow_overlap)
        if model
        else ""
    )
    pairs = lfw.pairs(args.protocol)
    metrics = evaluate(model, pairs) if model is not None else evaluate_pixels(pairs)
    metrics.update(data_variant=lfw.variant, leakage=leakage or None)
    if leakage:
        print(leakage)
    what = args.checkpoint or "raw pixels"
    print(
        f"{what} on {args.protocol}: accuracy {metrics['accuracy']:.2%} ± "
        f"{metrics['accuracy_std']:.2%}, "
        f"AUC {metrics['auc']:.3f}, EER {metrics['eer']:.3f}, TAR@FAR=1e-2 "
        f"{metrics['tar@far=0.01']:.3f}"
    )
    if args.out:
        write_json(Path(args.out) / "metrics.json", metrics)
    return 0


def cmd_compare(args) -> int:
    from craftlib.data import LFW
    from craftlib.recipes import recipe_from_flags
    from craftlib.runtime import Terminated, sigterm_as_interrupt
    from craftlib.study.experiments import compare
    from craftlib.study.results import render_text, summarize

    recipe = recipe_from_flags(args)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    lfw = LFW(args.data, size=recipe.train.model.input_size)
    try:
        with sigterm_as_interrupt():
            records = compare(
                recipe,
                seeds,
                tuple(args.arms),
                lfw=lfw,
                out=args.out,
                progress=not args.quiet,
                jobs=args.jobs,
                models=args.models,
            )
    except (
        KeyboardInterrupt
    ) as err:  # Ctrl-C or SIGTERM: the workers are gone, every finished run is kept
        print(
            f"stopped ({str(err) or 'interrupted'}); every finished run is kept in "
            f"{Path(args.out) / 'records'}: "
            "run the same command again to continue",
            file=sys.stderr,
        )
        return 143 if isinstance(err, Terminated) else 130
    summary = summarize(records)
    write_json(Path(args.out) / "summary.json", json.loads(summary.to_json()))
    print(render_text(summary))
    if args.figures:
        from craftlib.study.figures import save_comparison_figures

        save_comparison_figures(summary, records, Path(args.out))
    return 0


def cmd_demo(args) -> int:
    """The workshop pipeline headless: baseline, three arms at one seed, table, figures, JSON."""
    from craftlib.data import LFW
    from craftlib.recipes import recipe_from_flags
    from craftlib.study.experiments import check_folder, compare, fingerprint
    from craftlib.study.figures import save_comparison_figures
    from craftlib.study.results import render_text, summarize
    from craftlib.verification import evaluate_pixels

    args.recipe = "fast" if args.fast else args.recipe
    recipe = recipe_from_flags(args)
    out = Path(args.out)
    start = time.perf_counter()
    lfw = LFW(args.data, size=recipe.train.model.input_size)
    pixels = evaluate_pixels(lfw.pairs("devtest"))
    print(
        f"LFW at {lfw.root} ({lfw.variant}); raw-pixel baseline on DevTest: "
        f"{pixels['accuracy']:.2%}"
    )
    try:
        check_folder(out, fingerprint(recipe, lfw.variant))
    # a demo from older code or another recipe: its records are stale, not precious
    except ValueError:
        print(f"note: {out} held runs from another recipe or code version; starting afresh")
        shutil.rmtree(out / "records")
    records = compare(
        recipe, [args.seed], tuple(args.arms), lfw=lfw, out=out, progress=not args.quiet
    )
    summary = summarize(records)
    write_json(
        out / "summary.json",
        {
            **json.loads(summary.to_json()),
            "pixel_baseline_accuracy": pixels["accuracy"],
            "wall_seconds": time.perf_counter() - start,
        },
    )
    for path in save_comparison_figures(summary, records, out):
        print(f"figure: {path}")
    print(f"\nraw pixels: {pixels['accuracy']:.2%}")
    print(render_text(summary))
    print(
        f"\nwall time {(time.perf_counter() - start) / 60:.1f} min; results in {out}/summary.json"
    )
    return 0


def cmd_report(args) -> int:
    """Pool one or more results folders into one summary (refusing mismatched runs) and print it."""
    from craftlib.study.results import (
        curve_markdown,
        render_markdown,
        render_text,
        summarize_folders,
        survival_markdown,
    )

    summary = summarize_folders(args.folders)
    for metric in args.metrics:
        print(render_markdown(summary, metric) if args.markdown else render_text(summary, metric))
        print()
    if args.curves:
        print(curve_markdown(summary))
        print()
        print(survival_markdown(summary))
    if args.write:
        write_json(Path(args.write), json.loads(summary.to_json()))
        print(f"summary of {sum(len(a.seeds) for a in summary.arms.values())} runs -> {args.write}")
    if args.figures:
        from craftlib.study.experiments import load_records
        from craftlib.study.figures import save_comparison_figures

        records = [r for f in args.folders for r in load_records(f)]
        for path in save_comparison_figures(summary, records, Path(args.figures)):
            print(f"figure: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# setup, check, lab, kit: the commands that replace `make` on any system


def cmd_setup(args) -> int:
    """Create .venv (or use this Python with --here) and install craftlib from pyproject's
    ranges."""
    from .install import VENV, setup

    folder = None if args.here else (Path(args.venv) if args.venv else VENV)
    return setup(folder, dev=args.dev, torch=args.torch, kit=args.kit, dry_run=args.dry_run)


CHECK_MARK = {"OK": "OK  ", "FAIL": "FAIL", "NOTE": "note"}


def cmd_check(args) -> int:
    """One OK / FAIL line per item, then a verdict; exit 1 when anything failed."""
    from .environment import SPEED_BUDGET_S, run_checks

    width = 19
    if not args.no_speed:
        print(
            f"(the speed probe at the end trains for about {args.seconds or SPEED_BUDGET_S:.0f} s)",
            flush=True,
        )

    def show(check) -> None:
        print(
            f"{CHECK_MARK.get(check.status, check.status):4}  {check.name:<{width}} {check.detail}",
            flush=True,
        )

    checks = run_checks(
        args.data, speed=not args.no_speed, seconds=args.seconds or SPEED_BUDGET_S, report=show
    )
    failed = [c for c in checks if not c.ok]
    if args.json:
        write_json(Path(args.json), [c.__dict__ for c in checks])
    print()
    if failed:
        print(
            f"FAIL: {len(failed)} of {len(checks)} checks failed "
            f"({', '.join(c.name for c in failed)}): see the lines above"
        )
        return 1
    print(f"OK: all {len(checks)} checks passed; this machine is ready for the workshop")
    return 0


def prepare_workspace(source: Path, target: Path, refresh: bool = False) -> list[Path]:
    """Copy the workshop notebooks from ``source`` into ``target`` (git-ignored); never overwrite an
    edited copy.

    The tracked notebooks stay output-free; learners run and edit the copies. ``refresh`` first
    moves existing copies aside as ``NAME.ipynb.bak-N``. Returns the notebooks copied this time.
    """
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for nb in sorted(Path(source).glob("[0-9][0-9]_*.ipynb")):
        dest = target / nb.name
        if dest.exists() and refresh:
            n = 1
            while dest.with_name(f"{dest.name}.bak-{n}").exists():
                n += 1
            dest.rename(dest.with_name(f"{dest.name}.bak-{n}"))
        if not dest.exists():
            shutil.copy2(nb, dest)
            copied.append(dest)
    return copied


def notebook_to_open(workspace: Path, source: Path, name: str | None = None) -> str:
    """The one notebook ``lab`` opens: ``name`` (a prefix such as ``03``), else the one saved last
    (where the learner left off), else the first. A copy never saved keeps its source's time
    (``shutil.copy2``)."""
    notebooks = sorted(workspace.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no workshop notebooks in {workspace}")
    if name:
        match = [p.name for p in notebooks if p.name.startswith(name)]
        if not match:
            raise ValueError(
                f"no notebook {name!r} in {workspace}; there are "
                f"{', '.join(p.name for p in notebooks)}"
            )
        return match[0]
    saved = [
        p
        for p in notebooks
        if not (source / p.name).is_file() or p.stat().st_mtime != (source / p.name).stat().st_mtime
    ]
    return max(saved, key=lambda p: p.stat().st_mtime).name if saved else notebooks[0].name


def cmd_lab(args) -> int:
    """JupyterLab on a working copy of the notebooks (``workspace/``), so the tracked ones stay
    clean.

    It opens one notebook (``notebook_to_open``) in a fresh layout (``?reset``): JupyterLab would
    otherwise restore every tab of the last session and start a kernel for each.
    """
    import os

    from craftlib.paths import REPO_ROOT

    source = Path(args.notebooks) if args.notebooks else REPO_ROOT / "notebooks"
    target = Path(args.workspace) if args.workspace else REPO_ROOT / "workspace"
    if not source.is_dir():
        print(
            f"error: no notebooks at {source}; pass --notebooks DIR (a room kit has them in "
            f"notebooks/)",
            file=sys.stderr,
        )
        return 2
    copied = prepare_workspace(source, target, args.refresh)
    print(
        f"notebooks: {target} ({len(copied)} copied from {source}; your edits there are never "
        f"overwritten)"
    )
    from craftlib.threads import kernel_env

    # the kernels JupyterLab starts inherit the thread policy (craftlib.threads)
    env = kernel_env(os.environ)
    if args.seed is not None:
        env["CRAFT_SEED"] = str(args.seed)
    extra = args.lab_args[1:] if args.lab_args[:1] == ["--"] else args.lab_args
    try:
        first = notebook_to_open(target, source, args.open)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={target}",
        f"--LabApp.default_url=/lab/tree/{first}?reset",
        *extra,
    ]
    if args.dry_run:
        print("$ " + " ".join(cmd))
        return 0
    return run_stoppable(cmd, env)


def run_stoppable(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` and pass a termination request on to it: stopping ``craftlib lab`` (a process
    manager, a test) must stop JupyterLab and its kernels too, not orphan them. A terminal's
    Ctrl-C reaches JupyterLab itself, which asks before it stops."""
    import signal
    import subprocess

    child = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_kit(args) -> int:
    """Build a room kit: wheels, LFW, stem, pre-trained runs, the executed notebooks as offline
    HTML, a README."""
    from .kit import build_kit

    manifest = build_kit(
        args.out,
        platforms=args.platforms,
        pythons=args.pythons,
        lfw=args.data,
        lfw_people=args.lfw_people,
        notebooks=args.notebooks,
        fast=args.fast,
        runs=args.runs,
        torch_spec=args.torch_spec,
        torch_index=args.torch_index,
        html=not args.no_html,
        wheels=not args.no_wheels,
    )
    print(f"room kit in {args.out}: {manifest['summary']}")
    return 0


def _every(text: str) -> str | int:
    """``--every``: ``epoch`` or a positive number of steps."""
    return text if text == "epoch" else flag("every")(text)


def build_parser() -> argparse.ArgumentParser:
    from craftlib.activity import SCORES
    from craftlib.reactivation import DOWNSTREAM, STRATEGIES
    from craftlib.recipes import ARMS, DEFAULT_ARMS, RECIPES
    from craftlib.study.results import METRICS

    ap = argparse.ArgumentParser(prog="python -m craftlib", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, training=True):
        p.add_argument(
            "--data",
            help="LFW folder (default: $CRAFTLIB_DATA, data/lfw, scikit-learn cache, download)",
        )
        p.add_argument("--out", default=None, help="output folder")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if training:
            p.add_argument("--recipe", default="workshop", choices=sorted(RECIPES))
            for name in (
                "epochs",
                "batch-size",
                "lr",
                "weight-decay",
                "seed",
                "size",
                "tau",
                "last-epoch",
                "max-identities",
                "strong-quantile",
            ):
                p.add_argument(f"--{name}", type=flag(name))
            p.add_argument(
                "--score", choices=SCORES, help="detector (default: the recipe's, 'silent')"
            )
            p.add_argument(
                "--downstream",
                choices=DOWNSTREAM,
                help="next layer's input weights of a renewed channel",
            )
            p.add_argument("--every", type=_every, help="'epoch' or N steps")
            p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
            p.add_argument("--weight-decay-scope", choices=["all", "no_norm_bias"])
            p.add_argument("--schedule", choices=["onecycle", "cosine", "step", "constant"])
            p.add_argument("--head", choices=["cosface", "arcface"])
            p.add_argument("--device")

    p = sub.add_parser("train", help="train one model (optionally with CRAFT) and evaluate it")
    common(p)
    p.add_argument("--strategy", default="none", choices=STRATEGIES)
    p.add_argument(
        "--protocol",
        default="devtest",
        choices=["devtest", "devtrain", "view2", "view2-leakfree"],
        help="view2-leakfree trains one model per View 2 fold without that fold's people (10x the "
        "time)",
    )
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even where training identities are in the pairs",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="CHECKPOINT",
        help="continue the run in --out (or from CHECKPOINT) after an interruption; bit-identical",
    )
    p.set_defaults(func=cmd_train, out="runs/train")

    p = sub.add_parser("evaluate", help="verification report of a checkpoint (or of raw pixels)")
    common(p, training=False)
    p.add_argument(
        "--checkpoint", help="checkpoint.pt from `train` (omit for the raw-pixel baseline)"
    )
    p.add_argument("--size", type=flag("size"), help="face size for the pixel baseline")
    p.add_argument("--protocol", default="devtest", choices=["devtest", "devtrain", "view2"])
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even where training identities are in the pairs",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="standard vs random vs CRAFT over seeds, with paired tests")
    common(p)
    p.add_argument("--seeds", type=flag("seeds"), default=5, help="how many seeds")
    p.add_argument(
        "--first-seed",
        type=flag("first-seed"),
        default=0,
        help="start there (a laptop in a room takes its own)",
    )
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=sorted(ARMS))
    p.add_argument("--figures", action="store_true", help="also write figures beside summary.json")
    p.add_argument(
        "--jobs", type=flag("jobs"), default=1, help="trainings at once (forked, one thread each)"
    )
    p.add_argument(
        "--models", help="also save each run's checkpoint in this folder (kept out of OUT)"
    )
    p.set_defaults(func=cmd_compare, out="runs/compare")

    p = sub.add_parser(
        "report", help="pool results folders (records/*.json) into one paired summary"
    )
    p.add_argument("folders", nargs="+")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--metrics", nargs="+", default=["accuracy"], choices=list(METRICS))
    p.add_argument(
        "--curves", action="store_true", help="also the silent fraction at several thresholds"
    )
    p.add_argument("--write", help="write the pooled summary.json here")
    p.add_argument("--figures", help="write the comparison figures into this folder")
    p.set_defaults(func=cmd_report)

    _setup_parser(sub)

    p = sub.add_parser(
        "check", help="is this machine ready? one OK / FAIL line per item, then a verdict"
    )
    p.add_argument(
        "--data",
        help="LFW folder (default: $CRAFTLIB_DATA, data/lfw, scikit-learn cache; never downloads)",
    )
    p.add_argument("--no-speed", action="store_true", help="skip the ~20 s training speed probe")
    p.add_argument("--seconds", type=flag("seconds"), help="length of the speed probe (default 20)")
    p.add_argument("--json", help="also write the checks to this JSON file")
    p.set_defaults(func=cmd_check)

    _lab_parser(sub)

    p = sub.add_parser("kit", help="build a room kit for an offline workshop (instructors)")
    p.add_argument("--out", default="room-kit", help="the kit folder")
    p.add_argument("--data", help="the LFW folder to include (default: the one craftlib finds)")
    p.add_argument(
        "--platforms",
        nargs="+",
        default=["all"],
        help="linux-x86_64 windows-x86_64 macos-arm64 macos-x86_64, 'all' or 'here'",
    )
    p.add_argument(
        "--pythons", nargs="+", default=["all"], help="3.10 3.11 3.12 3.13, 'all' or 'here'"
    )
    p.add_argument(
        "--lfw-people",
        type=int,
        help="copy only DevTest's images and this many training identities (CI)",
    )
    p.add_argument(
        "--notebooks", nargs="*", help="which notebooks to execute and render (default: all)"
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="execute the notebooks in FAST mode (CI; numbers mean nothing)",
    )
    p.add_argument(
        "--runs",
        help="a runs folder to include as pre-trained runs (besides those the notebooks make)",
    )
    p.add_argument(
        "--torch-spec", help="torch requirement for the wheels (default: pyproject's range)"
    )
    p.add_argument(
        "--torch-index",
        help="index for Linux torch wheels (default: PyTorch's CPU index; '' = pip's own)",
    )
    p.add_argument(
        "--no-html", action="store_true", help="skip executing and rendering the notebooks"
    )
    p.add_argument("--no-wheels", action="store_true", help="skip downloading wheels")
    p.set_defaults(func=cmd_kit)

    p = sub.add_parser("demo", help="the workshop pipeline headless (what `make demo` runs)")
    common(p)
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=sorted(ARMS))
    p.add_argument(
        "--fast", action="store_true", default=fast_mode(), help="CI budget (also CRAFT_FAST=1)"
    )
    p.set_defaults(func=cmd_demo, out="runs/demo")
    return ap


def _setup_parser(sub) -> None:
    p = sub.add_parser(
        "setup", help="create .venv and install craftlib + JupyterLab (what `make install` does)"
    )
    p.add_argument("--venv", help="virtual environment folder (default: .venv in the checkout)")
    p.add_argument(
        "--here",
        action="store_true",
        help="install into this Python (conda, Colab) instead of a venv",
    )
    p.add_argument(
        "--torch",
        choices=["auto", "cpu", "pypi"],
        default="auto",
        help="auto: CPU-only torch on Linux without an NVIDIA GPU (about 190 MB instead of 3 GB)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="also the test packages, at constraints.txt's exact versions (CI)",
    )
    p.add_argument("--kit", help="install offline from a room kit folder (its wheels/)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.set_defaults(func=cmd_setup)


def _lab_parser(sub) -> None:
    p = sub.add_parser(
        "lab",
        help="JupyterLab on a working copy of the notebooks in workspace/ (what `make lab` does)",
    )
    p.add_argument(
        "--notebooks", help="where the workshop notebooks are (default: notebooks/ in the checkout)"
    )
    p.add_argument(
        "--workspace", help="the working copy (default: workspace/ in the checkout, git-ignored)"
    )
    p.add_argument(
        "--refresh",
        action="store_true",
        help="start again from clean notebooks (old copies kept as .bak-N)",
    )
    p.add_argument(
        "--open", metavar="NN", help="the notebook to open, e.g. 04 (default: the one saved last)"
    )
    p.add_argument(
        "--seed",
        type=flag("seed"),
        help="this laptop's seed in the room's experiment (sets CRAFT_SEED)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="prepare the copy, print the command, do not start"
    )
    p.add_argument(
        "lab_args", nargs=argparse.REMAINDER, help="anything after -- goes to jupyter lab"
    )
    p.set_defaults(func=cmd_lab)


def _light_parser() -> argparse.ArgumentParser:
    """``setup`` and ``lab``, parsed without importing torch (``build_parser`` imports the library's
    choices)."""
    ap = argparse.ArgumentParser(prog="python -m craftlib")
    sub = ap.add_subparsers(dest="command", required=True)
    _setup_parser(sub)
    _lab_parser(sub)
    return ap


LIGHT = (
    "setup",
    "lab",
)  # parsed without importing torch: setup runs on a bare Python, lab needs only JupyterLab
IN_ENV = {
    "check": "torch",
    "lab": "jupyterlab",
    "demo": "torch",
}  # re-run inside .venv when this Python lacks it


def main(argv: list[str] | None = None) -> int:
    from craftlib import threads

    # before anything imports torch: OpenMP reads its wait policy once, when torch loads it
    threads.apply()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:  # paper-scale training and .bin evaluation (docs/SCALE.md)
        from craftlib.scale.cli import main as scale_main

        return scale_main(argv[1:])
    argv = list(argv)
    if argv and argv[0] in IN_ENV:
        from .install import delegate

        code = delegate(argv, needs=IN_ENV[argv[0]])
        if code is not None:
            return code
    if argv and argv[0] in LIGHT:
        args = _light_parser().parse_args(argv)
        return args.func(args)
    args = build_parser().parse_args(argv)
    from craftlib.checkpoints import CheckpointError
    from craftlib.data import DataError, LFWNotFoundError
    from craftlib.training import NonFiniteLossError

    if getattr(args, "seed", None) is None and args.command == "demo":
        args.seed = 0
    try:
        return args.func(args)
    except (LFWNotFoundError, DataError, CheckpointError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
