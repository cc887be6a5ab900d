"""``python -m craftlib.scale.cli train|evaluate-bin``: CRAFT on aligned face folders, one process
or many.

``train`` runs as it is on one device and under ``torchrun`` on many (docs/SCALE.md);
``evaluate-bin`` scores a checkpoint (craftlib's, or an arcface_torch ``model.pt``) on the field's
verification ``.bin`` files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from craftlib.checkpoints import load_embedding_model
from craftlib.paths import write_json
from craftlib.recipes import recipe_from_flags

PIXEL_SIZE = (
    40  # the raw-pixel floor at 112 px would hold 12,000 x 37,632 floats (1.8 GB) for lfw.bin
)


def cmd_train(args) -> int:
    from craftlib.activity import inactive_fraction, model_scores

    from .distributed import DistributedTrainer, SyncedReactivation, init_distributed
    from .facefolders import FaceFolder

    recipe = recipe_from_flags(args)
    rank, world = init_distributed(recipe.train.device)
    torch.backends.cudnn.benchmark = (
        True  # fixed 112 px shapes: let cuDNN pick its fastest kernels (arcface_torch)
    )
    folder = FaceFolder(
        args.data, recipe.train.model.input_size, args.min_images, args.max_identities
    )
    data = folder if args.lazy else folder.faces(progress=not args.quiet and rank == 0)
    workers = args.workers if args.workers is not None else (4 if args.lazy else 0)
    callbacks = [
        recipe.craft.callback(recipe.train.seed, recipe.train.epochs, cls=SyncedReactivation)
    ]
    trainer = DistributedTrainer(
        data,
        recipe.train,
        callbacks,
        progress=not args.quiet,
        backbone=args.backbone,
        amp=args.amp,
        workers=workers,
    )
    if args.resume:
        trainer.resume(args.resume)
    trainer.fit()
    out = Path(args.out)
    trainer.save(out / "checkpoint.pt")
    if rank == 0:
        write_json(
            out / "history.json",
            {
                "history": trainer.history,
                "events": trainer.events,
                "recipe": recipe.to_dict(),
                "backbone": args.backbone,
                "world_size": world,
                "amp": args.amp,
            },
        )
        inactive = inactive_fraction(
            model_scores(trainer.model, recipe.craft.score, recipe.craft.reference, trainer.probe),
            recipe.tau,
        )
        print(
            f"{args.backbone} on {folder.num_classes} identities, {world} process(es): final loss "
            f"{trainer.history[-1]['loss']:.3f}, {len(trainer.events)} re-activation events, "
            f"inactive conv1 "
            f"filters ({recipe.craft.score} < {recipe.tau:g}) {inactive:.0%} -> {out}"
        )
    return 0


def cmd_evaluate_bin(args) -> int:
    from craftlib.iresnet import IResNet
    from craftlib.runtime import pick_device
    from craftlib.verification import evaluate, evaluate_pixels

    from .facebin import read_bin

    model = (
        load_embedding_model(args.checkpoint).to(pick_device(args.device))
        if args.checkpoint
        else None
    )
    size = args.size or (
        PIXEL_SIZE
        if model is None
        else model.input_size
        if isinstance(model, IResNet)
        else model.config.input_size
    )
    results = {}
    for path in args.bins:
        pairs = read_bin(path, size, progress=not args.quiet)
        m = evaluate(model, pairs) if model is not None else evaluate_pixels(pairs)
        results[pairs.name] = m
        tar = m["tar@far=0.001"]  # None where the folds hold too few impostor pairs to set that FAR
        print(
            f"{pairs.name}: accuracy {m['accuracy']:.2%} ± {m['accuracy_std']:.2%}, AUC "
            f"{m['auc']:.4f}, "
            f"TAR@FAR=1e-3 {'n/a' if tar is None else f'{tar:.3f}'} ({m['n_pairs']} pairs, "
            f"{args.checkpoint or 'raw pixels'})"
        )
    if args.out:
        write_json(Path(args.out) / "bin_metrics.json", results)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from craftlib.activity import SCORES
    from craftlib.iresnet import BACKBONES
    from craftlib.reactivation import STRATEGIES

    ap = argparse.ArgumentParser(prog="python -m craftlib.scale.cli", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train", help="train a backbone on a face folder, with CRAFT, on one or many processes"
    )
    p.add_argument("--data", required=True, help="aligned face folder: root/<identity>/<image>.jpg")
    p.add_argument(
        "--out", default="runs/scale", help="output folder (checkpoint.pt, history.json)"
    )
    p.add_argument("--backbone", default="iresnet50", choices=BACKBONES)
    p.add_argument(
        "--recipe", default="gpu", help="gpu (default), or one of craftlib.recipes.RECIPES"
    )
    for name, typ in (
        ("epochs", int),
        ("batch-size", int),
        ("lr", float),
        ("weight-decay", float),
        ("seed", int),
        ("size", int),
        ("embedding-dim", int),
        ("tau", float),
        ("last-epoch", int),
        ("grad-clip", float),
        ("max-identities", int),
        ("workers", int),
    ):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument(
        "--min-images", type=int, default=1, help="leave out identities with fewer images"
    )
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", choices=["onecycle", "cosine", "step", "constant"])
    p.add_argument("--head", choices=["cosface", "arcface"])
    p.add_argument("--device", help="auto (default), cuda or cpu")
    p.add_argument(
        "--amp", choices=["bf16", "fp16"], help="mixed precision for the backbone (fp16 needs CUDA)"
    )
    p.add_argument(
        "--lazy",
        action="store_true",
        help="decode images on the fly (MS1M-size data) instead of in RAM",
    )
    p.add_argument("--strategy", choices=STRATEGIES, help="default: the recipe's (contextual)")
    p.add_argument("--score", choices=SCORES, help="inactivity detector (default: the recipe's)")
    p.add_argument(
        "--every", type=lambda s: s if s == "epoch" else int(s), help="'epoch' or a number of steps"
    )
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate-bin",
        help="10-fold verification on .bin files (lfw, cfp_fp, agedb_30, calfw, cplfw)",
    )
    p.add_argument(
        "--checkpoint",
        help="checkpoint.pt from train, or an arcface_torch model.pt (omit: raw pixels)",
    )
    p.add_argument("--bins", nargs="+", required=True, help=".bin files")
    p.add_argument(
        "--size",
        type=int,
        help=f"face size (default: the model's input size; {PIXEL_SIZE} for raw pixels)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="folder for bin_metrics.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate_bin)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch.distributed as dist

    from craftlib.checkpoints import CheckpointError
    from craftlib.data import DataError
    from craftlib.training import NonFiniteLossError

    from .distributed import ReplicaMismatchError

    try:
        return args.func(args)
    except (
        DataError,
        CheckpointError,
        NonFiniteLossError,
        ReplicaMismatchError,
        ValueError,
    ) as err:
        where = f"[rank {dist.get_rank()}] " if dist.is_initialized() else ""
        print(f"{where}error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
