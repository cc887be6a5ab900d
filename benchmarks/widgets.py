"""How fast each widget answers, kernel side: from a control's new value to the PNG and text ready
to send (the browser test, tests/test_browser_widgets.py, times the whole trip in a real page).

    .venv/bin/python benchmarks/widgets.py          # results.json's widget_latency + the doc block
    .venv/bin/python benchmarks/widgets.py --quick  # fewer moves; benchmarks/out/widgets.json only

Controls: the threshold explorer's τ and score over MobileFaceNet's stem (notebook 02), the decay
race (01), the re-activation lab's τ on a FAST-recipe model (03), the comparison dashboard's metric
and seeds over the committed FAST records and over the seed study's 90 runs (05), notebook 06's
pairing filter and Top-K K slider (the probe's first visit and a revisit) and 08's federated rounds
over the committed study. Each is
moved over a fixed sequence of values; the median and range are reported with the machine's load,
since a shared core stretches every number.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout even without `pip install -e .`

from benchmarks.report import update_block, write_section  # noqa: E402
from craftlib import threads  # noqa: E402

threads.apply()  # as the `lab` launcher sets it for the kernels
QUICK_OUT = REPO / "benchmarks" / "out" / "widgets.json"
KEY = "widget_latency"
RE_READ_MS = 100  # issue #25: a control that only re-reads data


def timed(move, values) -> list[float]:
    out = []
    for v in values:
        t0 = time.perf_counter()
        move(v)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(n: int) -> dict:
    import numpy as np

    from craftlib import data, pretrained, recipes, widgets
    from craftlib.companions.federated import study as fs
    from craftlib.companions.federated import widgets as fw
    from craftlib.companions.sparsity import widgets as sw
    from craftlib.study import dashboard, reference
    from craftlib.training import Trainer

    taus = [float(t) for t in np.logspace(-2.5, -0.3, n)]
    rows = {}
    federated = fs.load_study(REPO / "docs" / "results" / "companion_federated_full")
    rounds = fw.RoundsExplorer({fw.run_label(r): r for r in federated if r["seed"] == 0})
    stem = pretrained.mobilefacenet_stem()
    explorer = widgets.ThresholdExplorer(stem, score="max", tau=0.1)
    rows["explorer τ (02)"] = timed(lambda t: setattr(explorer.tau, "value", t), taus)
    scores = ["l1", "l2", "max"]
    rows["explorer score, first visit (02)"] = timed(
        lambda s: setattr(explorer.score, "value", s), scores[:2]
    )
    rows["explorer score, revisit (02)"] = timed(
        lambda s: setattr(explorer.score, "value", s), scores * 2
    )
    race = widgets.DecayRace()
    rows["decay race task gradient (01, computes)"] = timed(
        lambda g: setattr(race.grad, "value", g), [0.0, 0.005, 0.01, 0.015, 0.002]
    )
    fast = recipes.RECIPES["fast"]
    lfw = data.LFW(size=fast.train.model.input_size)
    train = lfw.training_set(max_identities=fast.max_identities)
    trainer = Trainer(train, fast.train.but(epochs=1), progress=False)
    trainer.fit()
    lab = widgets.ReactivationLab(trainer, tau=0.05)
    rows["lab τ (03)"] = timed(lambda t: setattr(lab.tau, "value", t), taus)
    dash = dashboard.ComparisonDashboard(reference.FAST_DIR)
    metrics = ["auc", "eer", "silent_fraction", "tar@far=0.01", "accuracy"]
    rows["dashboard metric, first visit (05)"] = timed(
        lambda m: setattr(dash.metric, "value", m), metrics
    )
    rows["dashboard metric, revisit (05)"] = timed(
        lambda m: setattr(dash.metric, "value", m), metrics[::-1][1:] + metrics[-1:]
    )
    seeds = list(dash.seeds.value)
    rows["dashboard seeds (05)"] = timed(
        lambda s: setattr(dash.seeds, "value", s),
        [tuple(seeds[:k]) for k in range(len(seeds) - 1, 1, -1)],
    )
    study = dashboard.ComparisonDashboard(reference.RESULTS_DIR / "study")
    rows["study dashboard metric, first visit (05, 90 runs)"] = timed(
        lambda m: setattr(study.metric, "value", m), metrics
    )
    everyone = list(study.seeds.value)
    rows["study dashboard seeds (05, 90 runs)"] = timed(
        lambda s: setattr(study.seeds, "value", s),
        [tuple(everyone[:k]) for k in (10, 5, 20, 12, 7, 25)],
    )
    pairing = sw.PairExplorer({"MobileFaceNet": stem, "FAST model": trainer.model})
    rows["pairing filter, first visit (06)"] = timed(
        lambda i: setattr(pairing.filter, "value", i), range(1, n + 1)
    )
    rows["federated round, first visit (08)"] = timed(
        lambda r: setattr(rounds.slider, "value", r), range(rounds.slider.max - 1, 0, -1)
    )
    pairs = lfw.pairs("devtest").thinned(4)  # notebook 06's widget_pairs: 250 pairs
    topk = sw.TopKExplorer(trainer.model, train.images[0], pairs, fraction=0.2, stage=2)
    ks = [0.3, 0.4, 0.5]
    rows["Top-K K, first visit, maps + probe (06)"] = timed(
        lambda k: setattr(topk.fraction, "value", k), ks
    )
    rows["Top-K K, revisit (06)"] = timed(lambda k: setattr(topk.fraction, "value", k), [0.2, 0.3])
    return {
        name: {
            "median_ms": round(statistics.median(v), 1),
            "min_ms": round(min(v), 1),
            "max_ms": round(max(v), 1),
            "moves": len(v),
        }
        for name, v in rows.items()
    }


def render(r: dict) -> str:
    lines = [
        f"Measured {r['date']} on {r['machine']}, torch threads {r['threads']}; 1-min load "
        f"{r['load'][0]:.1f} → {r['load'][1]:.1f} on {os.cpu_count()} cores (`python "
        "benchmarks/widgets.py`). Kernel side: from the control's new value to the figure and "
        "text ready to send.",
        "",
        "| control | median | range | moves |",
        "|---|---|---|---|",
    ]
    for name, v in r["controls"].items():
        lines.append(
            f"| {name} | {v['median_ms']:.0f} ms | {v['min_ms']:.0f}–{v['max_ms']:.0f} ms | "
            f"{v['moves']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 moves per slider; out/ only")
    args = ap.parse_args()
    import torch

    load0 = os.getloadavg()[0]
    controls = measure(5 if args.quick else 15)
    r = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "threads": torch.get_num_threads(),
        "load": [load0, os.getloadavg()[0]],
        "controls": controls,
        "bound_ms": RE_READ_MS,
    }
    print(render(r))
    if args.quick:
        write_section(KEY, r, QUICK_OUT)
    else:
        write_section(KEY, r)
        changed = update_block("widgets", render(r))
        print("doc block updated" if changed else "doc block already current")


if __name__ == "__main__":
    main()
