"""Is a *silent* filter useless? Ablate each ``conv1`` channel and measure what the network loses.

"Silent" is a statement about one probe batch: the channel's output, after BatchNorm and the
activation, hardly varies over 256 fixed training faces. That it carries nothing the network uses
is a further claim. Here each channel's post-activation output is replaced by its mean over the
probe batch (a constant carries no information, whatever the next layer does with it) and the
change in training loss and in DevTest accuracy is measured, for silent, small-but-live and ordinary
channels; and the silent detection is repeated on a second, disjoint probe set and on DevTest faces.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from craftlib.activity import SILENT_TAU, activation_scores, filter_norms, relative
from craftlib.data import FaceSet, PairSet, probe_batch, to_input
from craftlib.losses import MarginHead
from craftlib.runtime import evaluating
from craftlib.verification import evaluate

SMALL_TAU = 0.1  # the paper's small-weight reading (the silent detector's τ: activity.SILENT_TAU)
CLASSES = ("silent", "small_live", "ordinary")


def second_probe(images: np.ndarray, n: int = 256) -> torch.Tensor:
    """Up to ``n`` training faces spread over the set, none of them among ``probe_batch``'s."""
    first = set(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int).tolist())
    rest = np.array([i for i in range(len(images)) if i not in first])
    if not len(rest):
        raise ValueError(
            f"{len(images)} faces: none left outside the training probe for a second probe"
        )
    index = rest[np.unique(np.linspace(0, len(rest) - 1, min(n, len(rest))).round().astype(int))]
    return to_input(torch.from_numpy(np.ascontiguousarray(images[index])))


def silent_mask(model: torch.nn.Module, probe: torch.Tensor, tau: float = SILENT_TAU) -> np.ndarray:
    """Channels whose post-activation spread on ``probe`` is below ``tau`` of the loudest
    channel's."""
    return relative(activation_scores(model.stem, probe, owner=model, statistic="std")) < tau


def channel_classes(model: torch.nn.Module, probe: torch.Tensor) -> np.ndarray:
    """Per channel: ``silent``, ``small_live`` (max|w| < 0.1 of the strongest but not silent) or
    ``ordinary``."""
    silent = silent_mask(model, probe)
    small = relative(filter_norms(model.conv1.weight.detach(), "max")) < SMALL_TAU
    return np.where(silent, "silent", np.where(small, "small_live", "ordinary"))


@torch.no_grad()
def channel_means(model: torch.nn.Module, probe: torch.Tensor) -> torch.Tensor:
    """Each channel's post-activation output averaged over the probe's faces and positions (eval
    mode)."""
    with evaluating(model):
        return model.stem(probe).mean(dim=(0, 2, 3))


@contextmanager
def ablated(model: torch.nn.Module, channels: list[int], means: torch.Tensor):
    """Within the block, ``model``'s stem output carries the constant ``means[c]`` in each of
    ``channels``."""
    idx = torch.as_tensor(list(channels), dtype=torch.long)

    def hook(_module, _inputs, out):
        out = out.clone()
        out[:, idx] = means[idx].to(out.dtype)[None, :, None, None]
        return out

    handle = model.act1.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


@torch.no_grad()
def margin_loss(
    model: torch.nn.Module, head: MarginHead, faces: torch.Tensor, labels: torch.Tensor
) -> float:
    """The training objective (margin softmax) on fixed faces, in eval mode: what the task asks of
    the stem."""
    with evaluating(model):
        return float(F.cross_entropy(head(model(faces), labels), labels))


def ablate(
    model: torch.nn.Module,
    head: MarginHead,
    data: FaceSet,
    pairs: PairSet,
    channels=None,
    loss_faces: int = 1024,
    sample: int | None = 16,
    log=None,
) -> dict:
    """Channels ablated alone, then each class together.

    ``channels`` default: every silent channel and up to ``sample`` of each other class drawn at
    random (generator seed 0; ``None``: all of them) — each ablation costs a DevTest evaluation.
    DevTest accuracy is computed without flip averaging (both intact and ablated), to halve the
    cost; the differences are what matter.
    """
    probe = probe_batch(data.images)
    index = np.unique(
        np.linspace(0, len(data.images) - 1, min(loss_faces, len(data.images))).round().astype(int)
    )
    faces, labels = (
        to_input(torch.from_numpy(data.images[index])),
        torch.from_numpy(data.labels[index]),
    )
    classes = channel_classes(model, probe)
    means = channel_means(model, probe)
    base_loss, base_acc = (
        margin_loss(model, head, faces, labels),
        evaluate(model, pairs, flip=False)["accuracy"],
    )

    def measure(chs) -> dict:
        with ablated(model, chs, means):
            return {
                "d_loss": margin_loss(model, head, faces, labels) - base_loss,
                "d_accuracy": evaluate(model, pairs, flip=False)["accuracy"] - base_acc,
            }

    if channels is None:
        rng = np.random.default_rng(0)
        channels = np.flatnonzero(classes == "silent").tolist()
        for k in ("small_live", "ordinary"):
            members = np.flatnonzero(classes == k)
            if sample is not None and len(members) > sample:
                members = rng.choice(members, sample, replace=False)
            channels += members.tolist()
        channels = sorted(channels)
    rows = []
    for i, c in enumerate(channels):
        rows.append({"channel": int(c), "class": str(classes[c]), **measure([c])})
        if log is not None and i % 8 == 7:
            log(f"  {i + 1} of {len(channels)} channels")
    groups = {
        k: measure(list(np.flatnonzero(classes == k))) for k in CLASSES if (classes == k).any()
    }
    n_silent = int((classes == "silent").sum())
    ordinary = np.flatnonzero(classes == "ordinary")
    if n_silent and len(ordinary) >= n_silent:  # the same number of ordinary channels, three draws
        rng = np.random.default_rng(0)
        groups["ordinary_matched"] = [
            measure(list(rng.choice(ordinary, n_silent, replace=False))) for _ in range(3)
        ]
    return {
        "base_loss": base_loss,
        "base_accuracy": base_acc,
        "channels": rows,
        "groups": groups,
        "counts": {k: int((classes == k).sum()) for k in CLASSES},
    }


def agreement(model: torch.nn.Module, data: FaceSet, pairs: PairSet) -> dict:
    """The silent set on the training probe against a disjoint training probe and against DevTest
    faces."""
    a = silent_mask(model, probe_batch(data.images))
    others = {
        "second_probe": silent_mask(model, second_probe(data.images)),
        "devtest_faces": silent_mask(model, probe_batch(pairs.images)),
    }
    return {
        "probe": int(a.sum()),
        **{
            k: {
                "silent": int(m.sum()),
                "both": int((a & m).sum()),
                "only_probe": int((a & ~m).sum()),
                "only_other": int((~a & m).sum()),
            }
            for k, m in others.items()
        },
    }


def of_checkpoint(path: str | Path, data: FaceSet, pairs: PairSet, log=None) -> dict:
    """Ablation and agreement of one trained run (a craftlib checkpoint with its margin head)."""
    from craftlib.checkpoints import load_checkpoint, load_model

    model, ckpt = load_model(path)
    cfg = ckpt["config"]
    head = MarginHead(
        model.config.embedding_dim, ckpt["num_classes"], cfg["head"], cfg["scale"], cfg["margin"]
    )
    head.load_state_dict(load_checkpoint(path)["head"])
    head.eval()
    return {
        "checkpoint": str(path),
        **ablate(model, head, data, pairs, log=log),
        "agreement": agreement(model, data, pairs),
    }


def summary_rows(results: list[dict]) -> list[dict]:
    """Per channel class, over every model: how many, and what ablating one of them costs."""
    out = []
    for k in CLASSES:
        rows = [r for res in results for r in res["channels"] if r["class"] == k]
        if not rows:
            continue
        dl = np.array([r["d_loss"] for r in rows])
        da = np.array([r["d_accuracy"] for r in rows])
        out.append(
            {
                "class": k,
                "channels": len(rows),
                "d_loss_median": float(np.median(dl)),
                "d_loss_max": float(dl.max()),
                "d_acc_mean": float(da.mean()),
                "d_acc_min": float(da.min()),
                "d_acc_max": float(da.max()),
            }
        )
    return out


def markdown(results: list[dict]) -> str:
    """The ablation table (one row per channel class) and the agreement of the silent sets."""
    label = {
        "silent": "silent (spread < 0.01)",
        "small_live": "small but live (max\\|w\\| < 0.1, heard)",
        "ordinary": "ordinary",
    }
    lines = [
        f"{len(results)} trained model{'s' if len(results) != 1 else ''}; every silent `conv1` "
        f"channel, and up to 16 small-but-live and 16 ordinary "
        "ones drawn at random, ablated alone (output := its probe mean).",
        "",
        "| channels | count | Δ loss, median | Δ loss, max | Δ DevTest accuracy, mean "
        "| min … max |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary_rows(results):
        lines.append(
            f"| {label[r['class']]} | {r['channels']} | {r['d_loss_median']:+.5f} | "
            f"{r['d_loss_max']:+.4f} | "
            f"{100 * r['d_acc_mean']:+.3f} pts | {100 * r['d_acc_min']:+.2f} … "
            f"{100 * r['d_acc_max']:+.2f} pts |"
        )
    lines += [
        "",
        "| model | silent on the training probe | also on a disjoint training probe | only there | "
        "also on DevTest faces | only there | all silent ablated: Δ loss / Δ accuracy | as many "
        "ordinary "
        "(3 draws): Δ loss / Δ accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        a, g = res["agreement"], res["groups"]
        sil = g.get("silent")
        matched = g.get("ordinary_matched", [])
        lines.append(
            f"| `{res.get('name', Path(res['checkpoint']).stem)}` | {a['probe']} | "
            f"{a['second_probe']['both']} | {a['second_probe']['only_other']} | "
            f"{a['devtest_faces']['both']} | "
            f"{a['devtest_faces']['only_other']} | "
            + (f"{sil['d_loss']:+.4f} / {100 * sil['d_accuracy']:+.2f} pts" if sil else "—")
            + " | "
            + (
                "; ".join(f"{m['d_loss']:+.3f} / {100 * m['d_accuracy']:+.1f}" for m in matched)
                or "—"
            )
            + " |"
        )
    lines += [
        "",
        "— : the model has no silent channel, or fewer ordinary channels than silent ones.",
    ]
    return "\n".join(lines)


def ensure_checkpoint(
    level: str, arm: str, seed: int, models: str | Path, data: FaceSet, pairs: PairSet
) -> Path:
    """The dose study's checkpoint of (level, arm, seed), trained now if this machine does not have
    it.

    Training is deterministic for a seed on one machine at one thread, so a rerun rebuilds the very
    model the study recorded (its record's accuracy is the check).
    """
    from .dose import recipe
    from .experiments import run_arm

    path = Path(models) / level / f"{arm}-s{seed}.pt"
    if not path.is_file():
        # as the study's workers trained it: the same summation order, the same model
        torch.set_num_threads(1)
        run_arm(data, pairs, recipe(level), arm, seed, checkpoint=path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m craftlib.study.ablation --levels L... --seeds N --out FOLDER``: one JSON per
    model, then summary.md.

    Each model is a dose-study run (``--arm``, default standard training) read from ``--models`` or
    trained there first; ``--checkpoints`` ablates given checkpoints instead. Resumable: a finished
    model is skipped.
    """
    import argparse

    from craftlib.checkpoints import load_checkpoint
    from craftlib.data import LFW
    from craftlib.paths import atomic_write

    from .dose import LEVELS, recipe

    ap = argparse.ArgumentParser(prog="python -m craftlib.study.ablation", description=main.__doc__)
    ap.add_argument("--levels", nargs="+", choices=list(LEVELS), default=[])
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of each level")
    ap.add_argument("--arm", default="none")
    ap.add_argument(
        "--models", default="runs/dose-models", help="where the dose study keeps its checkpoints"
    )
    ap.add_argument("--checkpoints", nargs="*", default=[], help="ablate these checkpoints instead")
    ap.add_argument("--out", required=True, help="results folder (one JSON per model, summary.md)")
    ap.add_argument("--data", help="LFW folder (default: $CRAFTLIB_DATA, ...)")
    args = ap.parse_args(argv)
    out, sets = Path(args.out), {}

    def faces(size: int):
        if size not in sets:
            lfw = LFW(args.data, size=size)
            sets[size] = (lfw.training_set(), lfw.pairs("devtest"))
        return sets[size]

    jobs = [
        (f"{Path(p).parent.name}-{Path(p).stem}", lambda p=p: Path(p)) for p in args.checkpoints
    ]
    jobs += [
        (
            f"{lv}-{args.arm}-s{s}",
            lambda lv=lv, s=s: ensure_checkpoint(
                lv, args.arm, s, args.models, *faces(recipe(lv).train.model.input_size)
            ),
        )
        for lv in args.levels
        for s in range(args.seeds)
    ]
    results = []
    for name, checkpoint in jobs:
        target = out / f"{name}.json"
        if not target.is_file():
            path = checkpoint()
            print(f"{name}: ablating every channel of {path}")
            res = of_checkpoint(
                path, *faces(load_checkpoint(path)["config"]["model"]["input_size"]), log=print
            )
            atomic_write(
                target, lambda tmp: tmp.write_text(json.dumps({**res, "name": name}, indent=1))
            )
        results.append(json.loads(target.read_text()))
    text = markdown(results)
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text + "\n"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
