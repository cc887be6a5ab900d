"""Speed benchmarks for the workshop: is the teaching code fast enough to use on a laptop?

    .venv/bin/python benchmarks/run.py            # what `make bench` runs (~5 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run of every measurement (~1-2 min)

Measures (a) training images/s of ``Trainer.fit`` against a bare PyTorch loop on the same model,
data, optimizer and schedule, alternating the order; (b) LFW first load (cold cache) against a
cached load; (c) verification of the 1,000 DevTest pairs (flip-TTA embeddings + the 10-fold report);
(d) what the CRAFT ``ReactivationCallback`` costs per epoch and how long one ``reactivate_model``
call takes; (e) the latency of the threshold explorer's callback (when ``craftlib.widgets`` provides
one).

A full run writes ``benchmarks/results.json``, prints a markdown table and refreshes the generated
part of ``docs/PERFORMANCE.md`` (its ``<!-- bench -->`` block, ``craftlib.pages``) unless
``--no-doc``; ``--quick`` and ``--only`` runs write ``benchmarks/out/results.json`` and leave the
doc alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from unittest.mock import patch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout even without `pip install -e .`

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.report import update_block  # noqa: E402
from craftlib.callbacks import Callback  # noqa: E402
from craftlib.data import LFW, FaceSet, to_input  # noqa: E402
from craftlib.losses import MarginHead  # noqa: E402
from craftlib.models import FaceCNN  # noqa: E402
from craftlib.reactivation import PAPER_READING, reactivate_model  # noqa: E402
from craftlib.recipes import WORKSHOP  # noqa: E402
from craftlib.runtime import seed_everything  # noqa: E402
from craftlib.training import (  # noqa: E402
    Trainer,
    conv1_snapshot,
    make_optimizer,
    make_schedule,
    parameter_groups,
)
from craftlib.verification import cosine_scores, embed, evaluate, evaluate_scores  # noqa: E402

RESULTS = REPO / "benchmarks" / "results.json"
DOC = REPO / "docs" / "PERFORMANCE.md"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# (a) Trainer.fit against a bare loop


def bare_epoch(data: FaceSet, cfg) -> tuple[float, float]:
    """One epoch of the plainest loop we would write by hand: same model, optimizer, schedule and
    batches.

    No history, no callbacks, no ``.item()``, no finiteness check, no accuracy. Returns images/s by
    the wall clock and by this process's CPU time (less sensitive to other processes on a busy
    machine).
    """
    seed_everything(cfg.seed)
    model = FaceCNN(cfg.model)
    head = MarginHead(cfg.model.embedding_dim, data.num_classes, cfg.head, cfg.scale, cfg.margin)
    opt = make_optimizer(parameter_groups(model, head, cfg), cfg)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    bs, steps = cfg.batch_size, max(1, len(labels) // cfg.batch_size)
    sched = make_schedule(opt, cfg, steps * cfg.epochs)
    model.train()
    head.train()
    start, cpu = time.perf_counter(), time.process_time()
    g = torch.Generator().manual_seed(cfg.seed * 100_003)
    order, flips = (
        torch.randperm(len(labels), generator=g),
        torch.rand(len(labels), generator=g) < 0.5,
    )
    for i in range(steps):
        idx = order[i * bs : (i + 1) * bs]
        x = to_input(images[idx])
        x = torch.where(flips[idx, None, None, None], x.flip(3), x)
        y = labels[idx]
        loss = F.cross_entropy(head(model(x), y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return steps * bs / (time.perf_counter() - start), steps * bs / (time.process_time() - cpu)


def trainer_epoch(data: FaceSet, cfg, callbacks=()) -> tuple[tuple[float, float], Trainer]:
    """One epoch of ``Trainer.fit`` (construction not timed, as for the bare loop): images/s (wall,
    CPU)."""
    trainer = Trainer(data, cfg, list(callbacks), progress=False)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit()
    n = trainer.steps_per_epoch * cfg.batch_size
    return (n / (time.perf_counter() - start), n / (time.process_time() - cpu)), trainer


def trainer_extras_ms(data: FaceSet, cfg, reps: int = 50) -> tuple[float, float]:
    """The work ``Trainer`` does beyond the bare loop, timed in isolation (min of ``reps``; robust
    to load).

    Per step: the margin-free accuracy (a second cosine matrix + argmax), the finiteness check and
    two ``.item()`` calls. Per epoch: the history record (conv1 + BN snapshot as lists, two means).
    """
    model = FaceCNN(cfg.model).train()
    head = MarginHead(cfg.model.embedding_dim, data.num_classes, cfg.head, cfg.scale, cfg.margin)
    x, y = (
        to_input(torch.from_numpy(data.images[: cfg.batch_size])),
        torch.from_numpy(data.labels[: cfg.batch_size]),
    )
    emb = model(x).detach()
    loss = F.cross_entropy(head(emb, y), y)
    per_step, per_epoch = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            acc = (head.cosine(emb).argmax(1) == y).float().mean()
        bool(torch.isfinite(loss))
        loss.item(), acc.item()
        t1 = time.perf_counter()
        conv1_snapshot(model), float(np.mean([1.0] * 16)), float(np.mean([1.0] * 16))
        t2 = time.perf_counter()
        per_step.append(t1 - t0)
        per_epoch.append(t2 - t1)
    return 1e3 * min(per_step), 1e3 * min(per_epoch)


def bench_training(data: FaceSet, cfg, repeats: int) -> dict:
    log(
        f"(a) training throughput: {len(data.labels)} faces, {data.num_classes} identities, "
        f"{cfg.model.input_size}px, batch {cfg.batch_size}, {repeats} repeats"
    )
    warm = FaceSet(
        data.images[: 3 * cfg.batch_size],
        data.labels[: 3 * cfg.batch_size] % 3,
        data.classes[:3],
        [],
    )
    bare_epoch(warm, cfg)  # warm-up: allocator, thread pool, kernels
    trainer_epoch(warm, cfg)
    runs = {"trainer": [], "bare": []}
    cpu = {"trainer": [], "bare": []}
    for rep in range(repeats):
        order = ("trainer", "bare") if rep % 2 == 0 else ("bare", "trainer")
        for name in order:
            wall_ips, cpu_ips = (
                trainer_epoch(data, cfg)[0] if name == "trainer" else bare_epoch(data, cfg)
            )
            runs[name].append(wall_ips)
            cpu[name].append(cpu_ips)
            log(
                f"    rep {rep + 1} {name:<7} {wall_ips:7.1f} images/s (wall), {cpu_ips:7.1f} per "
                f"CPU-second"
            )
    best = max(runs["trainer"]) / max(runs["bare"])
    median = statistics.median(runs["trainer"]) / statistics.median(runs["bare"])
    by_cpu = statistics.median(cpu["trainer"]) / statistics.median(cpu["bare"])
    log(f"    Trainer / bare: best-of {best:.3f}, medians {median:.3f}, CPU time {by_cpu:.3f}")
    step_ms, epoch_ms = trainer_extras_ms(data, cfg)
    steps = len(data.labels) // cfg.batch_size
    bare_epoch_ms = 1e3 * steps * cfg.batch_size / max(runs["bare"])
    extra = (steps * step_ms + epoch_ms) / bare_epoch_ms
    log(
        f"    Trainer-only work: {step_ms:.3f} ms/step + {epoch_ms:.2f} ms/epoch = {extra:.3%} of "
        f"the fastest bare "
        f"epoch -> implied ratio {1 / (1 + extra):.4f}"
    )
    return {
        "images": len(data.labels),
        "identities": data.num_classes,
        "input_size": cfg.model.input_size,
        "batch_size": cfg.batch_size,
        "steps_per_epoch": len(data.labels) // cfg.batch_size,
        "repeats": repeats,
        "trainer_images_per_s": runs["trainer"],
        "bare_images_per_s": runs["bare"],
        "trainer_images_per_cpu_s": cpu["trainer"],
        "bare_images_per_cpu_s": cpu["bare"],
        "trainer_best": max(runs["trainer"]),
        "bare_best": max(runs["bare"]),
        "trainer_median": statistics.median(runs["trainer"]),
        "bare_median": statistics.median(runs["bare"]),
        "ratio": best,
        "ratio_of_medians": median,
        "ratio_cpu_time": by_cpu,
        "ratio_per_repeat": [t / b for t, b in zip(runs["trainer"], runs["bare"])],
        "extras_ms_per_step": step_ms,
        "extras_ms_per_epoch": epoch_ms,
        "extras_fraction": extra,
        "ratio_implied_by_extras": 1 / (1 + extra),
        "target_ratio": 0.95,
    }


# --------------------------------------------------------------------------------------------
# (b) LFW first load against a cached load


def bench_loading(size: int, max_identities: int | None) -> tuple[dict, LFW]:
    log(
        f"(b) LFW loading at {size}px (training "
        f"set{'' if max_identities is None else f', {max_identities} ids'} + DevTest)"
    )
    out = {}
    with (
        tempfile.TemporaryDirectory(prefix="craft-bench-cache-") as tmp,
        patch.dict(os.environ, {"CRAFTLIB_CACHE": tmp}),
    ):
        for phase in ("cold", "cached"):
            t0 = time.perf_counter()
            lfw = LFW(size=size, download=False)
            t1 = time.perf_counter()
            train = lfw.training_set(max_identities=max_identities)
            pairs = lfw.pairs("devtest")
            t2 = time.perf_counter()
            out[phase] = {"total_s": t2 - t0, "scan_s": t1 - t0, "faces_s": t2 - t1}
            log(
                f"    {phase:<6} {t2 - t0:6.2f} s (folder scan {t1 - t0:.2f} s, faces "
                f"{t2 - t1:.2f} s)"
            )
    out.update(
        images=len(train.files) + len(pairs.files),
        train_images=len(train.files),
        devtest_images=len(pairs.files),
        speedup=out["cold"]["total_s"] / out["cached"]["total_s"],
    )
    return out, lfw


# --------------------------------------------------------------------------------------------
# (c) verification


def bench_verification(pairs, model_cfg, repeats: int) -> dict:
    log(f"(c) verification of {len(pairs)} DevTest pairs ({len(pairs.images)} images, flip TTA)")
    torch.manual_seed(0)
    model = FaceCNN(model_cfg).eval()
    totals, reports = [], []
    emb = embed(model, pairs.images)
    for _ in range(repeats):
        t0 = time.perf_counter()
        # the public one-call path: embed every image and its mirror, then the report
        evaluate(model, pairs)
        t1 = time.perf_counter()
        evaluate_scores(cosine_scores(emb, pairs), pairs.same, pairs.folds)  # the report alone
        t2 = time.perf_counter()
        totals.append(t1 - t0)
        reports.append(t2 - t1)
    total, report = statistics.median(totals), statistics.median(reports)
    log(f"    total {total:.2f} s (10-fold report {1e3 * report:.0f} ms)")
    return {
        "pairs": len(pairs),
        "images": len(pairs.images),
        "input_size": model_cfg.input_size,
        "total_s": total,
        "embed_s": total - report,
        "report_s": report,
        "total_runs_s": totals,
    }


# --------------------------------------------------------------------------------------------
# (d) re-activation


class Timed(Callback):
    """Delegate to a callback and add up the time spent in its hooks."""

    def __init__(self, inner: Callback):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def _time(self, hook, trainer):
        t0 = time.perf_counter()
        getattr(self.inner, hook)(trainer)
        self.seconds += time.perf_counter() - t0
        self.calls += 1

    def on_train_start(self, trainer):
        self._time("on_train_start", trainer)

    def on_step_end(self, trainer):
        self._time("on_step_end", trainer)

    def on_epoch_end(self, trainer):
        self._time("on_epoch_end", trainer)


class Silence(Callback):
    """Make 16 of the 64 conv1 filters inactive just before CRAFT looks, so every call has work to
    do."""

    def __init__(self, every):
        self.every = every

    def _kill(self, trainer):
        with torch.no_grad():
            trainer.model.conv1.weight[::4] *= 1e-3

    def on_step_end(self, trainer):
        if self.every != "epoch" and trainer.step % self.every == 0:
            self._kill(trainer)

    def on_epoch_end(self, trainer):
        if self.every == "epoch":
            self._kill(trainer)


def bench_reactivation(data: FaceSet, cfg, calls: int) -> dict:
    log("(d) re-activation: callback share of an epoch, and one reactivate_model call")
    out = {}
    for label, every in (("every epoch", "epoch"), ("every 10 steps", 10)):
        timed = Timed(
            PAPER_READING.but(every=every, first_epoch=1, last_epoch=1).callback(
                0, WORKSHOP.train.epochs
            )
        )
        _, trainer = trainer_epoch(data, cfg, [Silence(every), timed])
        epoch_s = trainer.history[-1]["seconds"]
        out[label] = {
            "callback_s": timed.seconds,
            "epoch_s": epoch_s,
            "fraction": timed.seconds / epoch_s,
            "reactivations": len(trainer.events),
            "hook_calls": timed.calls,
            "filters_reactivated": sum(len(e["filters"]) for e in trainer.events),
        }
        log(
            f"    {label:<15} {timed.seconds * 1e3:7.1f} ms of a {epoch_s:.1f} s epoch "
            f"({timed.seconds / epoch_s:.3%}, "
            f"{len(trainer.events)} calls, {out[label]['filters_reactivated']} filters "
            f"re-activated)"
        )
    # one call on a trained conv1 with 16 filters made inactive; the optimizer holds momentum for
    # all
    model, opt = trainer.model, trainer.optimizer
    base = model.conv1.weight.detach().clone()
    dead = torch.arange(0, 64, 4)
    g = torch.Generator().manual_seed(0)

    def timed_calls(n: int) -> tuple[list[float], int]:
        times, count = [], 0
        for _ in range(n):
            with torch.no_grad():
                model.conv1.weight.copy_(base)
                model.conv1.weight[dead] *= 1e-3
            t0 = time.perf_counter()
            result = reactivate_model(model, PAPER_READING, opt, generator=g)
            times.append(time.perf_counter() - t0)
            count = len(result.filters)
        return times, count

    times, count = timed_calls(calls)
    threads = torch.get_num_threads()
    # the same call with one thread: tells thread wake-up cost from compute
    torch.set_num_threads(1)
    times_1, _ = timed_calls(calls)
    torch.set_num_threads(threads)
    out["reactivate_model"] = {
        "median_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * float(np.percentile(times, 90)),
        "median_ms_1_thread": 1e3 * statistics.median(times_1),
        "threads": threads,
        "calls": calls,
        "filters_reactivated": count,
        "target_ms": 5.0,
    }
    out["target_fraction"] = 0.01
    log(
        f"    reactivate_model  median {out['reactivate_model']['median_ms']:.2f} ms with "
        f"{threads} threads, "
        f"{out['reactivate_model']['median_ms_1_thread']:.2f} ms with 1 ({count} of 64 filters)"
    )
    return out


# --------------------------------------------------------------------------------------------
# (e) the threshold explorer's callback


def bench_widgets(model_cfg, calls: int) -> dict:
    try:
        import craftlib.widgets as widgets
    except Exception as err:  # noqa: BLE001 - any import failure means "not measurable here"
        return {"skipped": f"craftlib.widgets not importable ({type(err).__name__}: {err})"}
    update = getattr(widgets, "threshold_update", None)
    source_of = getattr(widgets, "score_source", None)
    if update is None or source_of is None:
        return {"skipped": "craftlib.widgets has no threshold_update/score_source callback"}
    log("(e) threshold explorer: callback latency for 64 filters")
    torch.manual_seed(0)
    model = FaceCNN(model_cfg)
    source = source_of(model)
    taus = np.linspace(0.02, 0.6, 29)
    out = {"filters": int(model.conv1.out_channels), "target_ms": 50.0}
    for score in ("max", "effective"):
        times = []
        for i in range(calls):
            t0 = time.perf_counter()
            update(source, score, float(taus[i % len(taus)]))
            times.append(time.perf_counter() - t0)
        out[f"callback_{score}_median_ms"] = 1e3 * statistics.median(times)
    explorer_cls = getattr(widgets, "ThresholdExplorer", None)
    if explorer_cls is not None:  # the whole round trip a learner sees: callback + redraw + PNG
        explorer = explorer_cls(model)
        times = []
        for tau in taus[:10]:
            t0 = time.perf_counter()
            explorer.tau.value = float(tau)  # fires refresh()
            times.append(time.perf_counter() - t0)
        out["full_refresh_median_ms"] = 1e3 * statistics.median(times)
    log(
        f"    callback median {out['callback_max_median_ms']:.3f} ms; full refresh "
        f"{out.get('full_refresh_median_ms', float('nan')):.0f} ms"
    )
    return out


# --------------------------------------------------------------------------------------------
# report


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "craftlib"],
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def spread(t: dict) -> float:
    """How much the wall-clock throughput of identical epochs varied (max / min): 1.0 on a quiet
    machine."""
    runs = t["trainer_images_per_s"] + t["bare_images_per_s"]
    return (
        max(
            max(t["trainer_images_per_s"]) / min(t["trainer_images_per_s"]),
            max(t["bare_images_per_s"]) / min(t["bare_images_per_s"]),
        )
        if min(runs) > 0
        else float("inf")
    )


def table(r: dict) -> str:
    rows = [("metric", "value", "target")]
    if "training" in r:
        t = r["training"]
        rows += [
            (
                f"training, `Trainer.fit`, images/s (best of {t['repeats']})",
                f"{t['trainer_best']:.1f}",
                "",
            ),
            (
                f"training, bare PyTorch loop, images/s (best of {t['repeats']})",
                f"{t['bare_best']:.1f}",
                "",
            ),
            (
                "training, Trainer / bare (best runs)",
                f"{t['ratio']:.3f}",
                "≥ 0.95"
                + (f" (inconclusive: repeats vary {spread(t):.1f}x)" if spread(t) > 1.3 else ""),
            ),
            (
                "  Trainer / bare (medians; per CPU-second)",
                f"{t['ratio_of_medians']:.3f}; {t['ratio_cpu_time']:.3f}",
                "",
            ),
            (
                "  Trainer-only work timed in isolation (share of a bare epoch)",
                f"{t['extras_fraction']:.3%} → ratio {t['ratio_implied_by_extras']:.4f}",
                "",
            ),
        ]
    if "loading" in r:
        ld = r["loading"]
        rows += [
            (
                f"LFW first load, cold cache ({ld['images']} faces)",
                f"{ld['cold']['total_s']:.2f} s",
                "",
            ),
            ("LFW load, cached", f"{ld['cached']['total_s']:.2f} s", ""),
            ("  of which folder scan (cached)", f"{ld['cached']['scan_s']:.2f} s", ""),
        ]
    if "verification" in r:
        v = r["verification"]
        rows += [
            (
                f"verification, {v['pairs']} DevTest pairs (embed + 10-fold)",
                f"{v['total_s']:.2f} s",
                "",
            ),
            ("  embed (flip TTA)", f"{v['embed_s']:.2f} s", ""),
            ("  10-fold report", f"{1e3 * v['report_s']:.0f} ms", ""),
        ]
    if "reactivation" in r:
        d = r["reactivation"]
        rows += [
            (
                "`ReactivationCallback` per epoch (every epoch)",
                f"{d['every epoch']['fraction']:.3%}",
                "≤ 1%",
            ),
            (
                "`ReactivationCallback` per epoch (every 10 steps)",
                f"{d['every 10 steps']['fraction']:.3%}",
                "",
            ),
            (
                f"one `reactivate_model` call, conv1, {d['reactivate_model']['threads']} threads "
                f"(median)",
                f"{d['reactivate_model']['median_ms']:.2f} ms",
                "≤ 5 ms",
            ),
            (
                "  the same call with 1 thread (median)",
                f"{d['reactivate_model']['median_ms_1_thread']:.2f} ms",
                "",
            ),
        ]
    if "widgets" in r:
        w = r["widgets"]
        if "skipped" in w:
            rows.append(("threshold explorer callback", "skipped", w["skipped"]))
        else:
            rows += [
                (
                    f"threshold explorer callback, {w['filters']} filters (median)",
                    f"{w['callback_max_median_ms']:.3f} ms",
                    "≤ 50 ms",
                )
            ]
            if "full_refresh_median_ms" in w:
                rows.append(
                    (
                        "  full refresh: callback + redraw + PNG (median)",
                        f"{w['full_refresh_median_ms']:.0f} ms",
                        "",
                    )
                )
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(c.ljust(width[i]) for i, c in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in width) + "|")
    return "\n".join(lines)


def update_doc(r: dict) -> bool:
    """Rewrite the ``bench`` block of docs/PERFORMANCE.md; the hand-written text around it is
    kept. True when it changed."""
    m = r["machine"]
    load = (
        ", ".join(f"{x:.2f}" for x in r["loadavg_start"])
        + " → "
        + ", ".join(f"{x:.2f}" for x in r["loadavg_end"])
    )
    return update_block(
        "bench",
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['platform']}, "
        f"Python {m['python']}, "
        f"torch {m['torch']} with {m['torch_threads']} threads, commit {m['git_commit']}; "
        f"load average (1, 5, 15 min) {load}; mode: {'quick' if r['quick'] else 'full'}; "
        f"{r['wall_s'] / 60:.1f} min wall.\n\n{table(r)}",
        DOC,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small data, 1 repeat")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads (default 2, a laptop's share)"
    )
    ap.add_argument(
        "--size", type=int, default=WORKSHOP.train.model.input_size, help="face size (workshop: 40)"
    )
    ap.add_argument(
        "--max-identities",
        type=int,
        default=150,
        help="identities for the throughput runs (default 150: ~800 faces, 12 steps/epoch)",
    )
    ap.add_argument(
        "--full-load",
        action="store_true",
        help="time the loading of all 1,262 training identities (default unless --quick)",
    )
    ap.add_argument(
        "--repeats", type=int, default=5, help="alternated Trainer/bare epoch pairs (default 5)"
    )
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["training", "loading", "verification", "reactivation", "widgets"],
    )
    ap.add_argument(
        "--out",
        help="results file (default: benchmarks/results.json for a full run, "
        "benchmarks/out/results.json for --quick or --only)",
    )
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/PERFORMANCE.md")
    ap.add_argument(
        "--render",
        metavar="JSON",
        help="measure nothing: print the table of a results file and "
        "refresh docs/PERFORMANCE.md from it",
    )
    args = ap.parse_args()
    if args.render:
        r = json.loads(Path(args.render).read_text())
        print(table(r))
        if not args.no_doc and update_doc(r):
            print(f"updated the generated block of {DOC.relative_to(REPO)}")
        return
    if args.quick:
        args.max_identities, args.repeats = min(args.max_identities, 60), 1
    torch.set_num_threads(args.threads)
    only = set(args.only or ["training", "loading", "verification", "reactivation", "widgets"])
    # smoke and partial runs never overwrite the published numbers
    partial = args.quick or bool(args.only)
    args.out = args.out or str(REPO / "benchmarks" / "out" / "results.json" if partial else RESULTS)

    start = time.perf_counter()
    r = {
        "machine": machine(),
        "loadavg_start": list(os.getloadavg()),
        "quick": args.quick,
        "threads": args.threads,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    cfg = WORKSHOP.train.but(epochs=1, threads=args.threads, model__input_size=args.size)
    log(f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, load {r['loadavg_start']}")

    # the shared cache: fast after the first `make`
    lfw_cached = LFW(size=args.size, download=False)
    data = lfw_cached.training_set(max_identities=args.max_identities)
    if "loading" in only:
        r["loading"], _ = bench_loading(
            args.size, None if (args.full_load or not args.quick) else args.max_identities
        )
    if "training" in only:
        r["training"] = bench_training(data, cfg, args.repeats)
    if "verification" in only:
        r["verification"] = bench_verification(
            lfw_cached.pairs("devtest"), cfg.model, min(args.repeats, 3)
        )
    if "reactivation" in only:
        # the callback's share is of a real workshop epoch (all 1,262 identities, 108 steps), not a
        # mini one
        r["reactivation"] = bench_reactivation(
            data if args.quick else lfw_cached.training_set(), cfg, 50 if args.quick else 200
        )
    if "widgets" in only:
        r["widgets"] = bench_widgets(cfg.model, 50 if args.quick else 500)
    r["loadavg_end"] = list(os.getloadavg())
    r["wall_s"] = time.perf_counter() - start

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    # benchmarks/threads.py's section stays
    r.update(
        {k: kept[k] for k in ("thread_policy", "training_profile", "widget_latency") if k in kept}
    )
    Path(args.out).write_text(json.dumps(r, indent=1) + "\n")
    print()
    print(table(r))
    print(f"\nload average {r['loadavg_start']} -> {r['loadavg_end']}; results in {args.out}")
    if not args.no_doc and not partial and update_doc(r):
        print(f"updated the generated block of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
