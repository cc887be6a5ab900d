"""The companion comparison: standard, CRAFT, a CReLU stem and Top-K sparsity on one recipe, paired
by seed.

Four arms on the workshop recipe (``COMPANION_ARMS``): ``none`` (standard training), ``contextual``
(CRAFT), ``crelu`` (CReLU stem: half the ``conv1`` filters, both phases kept; no re-activation) and
``topk`` (Top-K keeping 20% of each map after stage 2, as the shape-bias paper's ``2_20`` setting;
no re-activation). Each run is trained as ``experiments.run_arm`` trains (the arm's CRAFT callback;
``none`` detects and logs only), measured by ``experiments.measure`` and written as one small JSON
record (``records/<arm>-s<seed>.json``) with, besides the main study's fields, ``companion``:
parameters, MACs, the pairing statistic of ``conv1`` (``pairing``) and the face shape-vs-texture
probe (``shapebias``). Every record of a folder carries the same fingerprint (the base recipe plus
the arm definitions), so ``results.summarize`` pools them and gives the paired Δ, 95% CI, Holm p,
power and MDE of the main study; ``summary`` adds the same paired statistics for the companion
metrics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from craftlib.activity import SILENT_TAU, model_scores
from craftlib.data import LFW
from craftlib.models import count_macs, count_params
from craftlib.recipes import WORKSHOP, Recipe
from craftlib.study.experiments import (
    drive,
    fingerprint,
    load_records,
    record_path,
    write_record,
)
from craftlib.study.experiments import measure as experiment_record
from craftlib.study.results import fmt, holm, paired, summarize

from .pairing import (
    TWIN_APART,
    TWIN_COS,
    TWIN_SAME,
    pairing_summary,
    random_reference,
    twin_thresholds,
    twin_verdict,
)
from .shapebias import probe as shape_probe

COMPANION_ARMS: dict[str, dict] = {
    "none": {"model": {}, "craft": "none", "label": "standard training"},
    "contextual": {"model": {}, "craft": "contextual", "label": "CRAFT (silent detector)"},
    "crelu": {
        "model": {"stem_act": "crelu"},
        "craft": "none",
        "label": "CReLU stem (32 filters, 2 phases)",
    },
    "topk": {
        "model": {"topk": 0.2, "topk_after": [2]},
        "craft": "none",
        "label": "Top-K 20% after stage 2",
    },
}
"""Arm -> changes to the recipe's ``ModelConfig`` and the CRAFT arm (``recipes.ARMS``) it trains
with."""
DEFAULT_OUT = "docs/results/companion_sparsity"
EXTRA_METRICS = (
    "pair_mean",
    "paired_fraction",
    "paired_matched",
    "shape_bias",
    "shape_bias_edges",
    "shape_retention",
    "texture_retention",
    "params",
    "macs",
)
PAIRED_METRICS = EXTRA_METRICS[:7]  # those with a paired test against standard training
EXTRA_LABELS = {
    "pair_mean": "mean pair cosine μ (conv1)",
    "paired_fraction": "paired conv1 filters (isotropic null)",
    "paired_matched": "paired conv1 filters (matched null)",
    "shape_bias": "shape-bias index (blur vs mosaic)",
    "shape_bias_edges": "shape-bias index (edges vs mosaic)",
    "shape_retention": "shape retention R (blur)",
    "texture_retention": "texture retention R (mosaic)",
    "params": "parameters",
    "macs": "MACs",
}
PERCENT_EXTRA = {"paired_fraction"}
SHAPE_FAMILIES = ("clean", "low_pass", "edge_map", "patch_shuffle", "patch_shuffle_fine")


def arm_recipe(recipe: Recipe, arm: str) -> Recipe:
    """The recipe an arm trains with: the base recipe with the arm's model changes."""
    if arm not in COMPANION_ARMS:
        raise ValueError(f"arm must be one of {sorted(COMPANION_ARMS)}, got {arm!r}")
    changes = {
        f"model__{k}": tuple(v) if isinstance(v, list) else v
        for k, v in COMPANION_ARMS[arm]["model"].items()
    }
    return recipe.but(**changes)


def folder_fingerprint(recipe: Recipe, variant: str) -> dict:
    """The base recipe's fingerprint plus the arm definitions: what every record in a folder must
    share."""
    return json.loads(
        json.dumps({**fingerprint(recipe, variant), "companion_arms": COMPANION_ARMS})
    )


def _pair_stats(
    weight: torch.Tensor, live: np.ndarray, renewed: list[int], reference: np.ndarray
) -> dict:
    """Pairing over all filters, over the live ones, and what renewed (CRAFT) filters show."""
    every = pairing_summary(weight, reference=reference)
    out = {
        k: every[k]
        for k in (
            "n",
            "mean",
            "random_mean",
            "threshold",
            "shift",
            "paired_fraction",
            "matched",
            "cos",
            "partner",
        )
    }
    out["mutual_pairs"] = len(every["mutual_pairs"])
    live_only = pairing_summary(weight, mask=live) if live.sum() >= 2 else None
    out["live"] = (
        None
        if live_only is None
        else {k: live_only[k] for k in ("n", "mean", "shift", "paired_fraction", "matched")}
    )
    cos = np.asarray([np.nan if v is None else v for v in every["cos"]])
    renewed = sorted(set(renewed))
    kept = [i for i in range(len(cos)) if i not in renewed]
    out["renewed"] = renewed
    out["renewed_mean"] = float(np.mean(cos[renewed])) if renewed else None
    out["kept_mean"] = float(np.mean(cos[kept])) if kept else None
    return out


def measure(
    model: torch.nn.Module, pairs, record: dict, probe_faces: torch.Tensor | None = None
) -> dict:
    """The companion measurements of a trained model (also recomputable later from its
    checkpoint)."""
    silent = (
        np.asarray(record["scores"]["silent"])
        if probe_faces is None
        else model_scores(model, "silent", probe=probe_faces)
    )
    live = silent >= SILENT_TAU
    weight = model.conv1.weight.detach()
    renewed = [
        f
        for e in record.get("events", [])
        if e.get("strategy") != "none"
        for f in e.get("filters", [])
    ]
    reference = random_reference(tuple(weight.shape))
    return {
        "params": count_params(model),
        "macs": count_macs(model),
        "pairing": _pair_stats(weight, live, renewed, reference),
        "shapebias": shape_probe(model, pairs, clean=record["accuracy"]),
    }


def run_one(
    data, pairs, recipe: Recipe, arm: str, seed: int, models: str | Path | None = None
) -> dict:
    """Train (or load) and measure one arm at one seed: the record ``write_record`` stores.

    The checkpoint goes to ``models/<arm>-s<seed>.pt`` and is kept: a finished checkpoint of the
    same model config is loaded instead of retrained (a run whose measurement failed costs no second
    training), and ``remeasure`` can redo the companion measurements later.
    """
    from craftlib.checkpoints import CheckpointError
    from craftlib.training import Trainer, train

    rec_recipe = arm_recipe(recipe, arm)
    craft_arm = COMPANION_ARMS[arm]["craft"]
    config = rec_recipe.train.but(seed=seed)
    callback = rec_recipe.arm(craft_arm).callback(seed, config.epochs)
    ckpt = Path(models) / f"{arm}-s{seed}.pt" if models is not None else None
    trainer = None
    if ckpt is not None and ckpt.is_file():
        try:
            loaded = Trainer(data, config, [callback], progress=False).resume(ckpt)
            trainer = loaded if loaded.epoch == config.epochs else None
        except CheckpointError:
            trainer = None
    if trainer is None:
        start = time.perf_counter()
        trainer = train(data, config, [callback], progress=False)
        seconds = time.perf_counter() - start
        if ckpt is not None:
            trainer.save(ckpt)
    else:
        seconds = sum(h["seconds"] for h in trainer.history)
    record = experiment_record(trainer, pairs, rec_recipe, craft_arm, seed, seconds)
    start = time.perf_counter()
    record = {
        **record,
        "arm": arm,
        "craft_arm": craft_arm,
        "model": rec_recipe.train.model.to_dict(),
    }
    record["companion"] = measure(trainer.model, pairs, record)
    record["companion"]["measure_seconds"] = round(time.perf_counter() - start, 1)
    return record


def compare(
    recipe: Recipe = WORKSHOP,
    seeds: list[int] = range(5),
    arms=tuple(COMPANION_ARMS),
    lfw: LFW | None = None,
    out: str | Path = DEFAULT_OUT,
    models: str | Path | None = "runs/companion-models",
    jobs: int = 1,
    log=print,
) -> list[dict]:
    """Run every arm at every seed not yet recorded in ``out`` (resumable); return the folder's
    records."""
    for arm in arms:
        arm_recipe(recipe, arm)  # fail on a bad arm name before any training
    lfw = lfw or LFW(size=recipe.train.model.input_size)
    data = lfw.training_set(max_identities=recipe.max_identities)
    pairs = lfw.pairs("devtest")

    def line(record: dict) -> str:
        c = record["companion"]
        return (
            f"seed {record['seed']} {record['arm']:>10}: accuracy {record['accuracy']:.2%}  "
            f"pair μ {c['pairing']['mean']:+.3f}  shape bias {fmt('x', c['shapebias']['index'])}  "
            f"({record['train_seconds']:.0f} s)"
        )

    def one(seed: int, arm: str) -> dict:
        return run_one(data, pairs, recipe, arm, seed, models)

    meta = folder_fingerprint(recipe, lfw.variant)
    return drive(out, meta, list(seeds), tuple(arms), one, jobs, log, line)


def remeasure(
    out: str | Path = DEFAULT_OUT,
    models: str | Path = "runs/companion-models",
    lfw: LFW | None = None,
    log=print,
) -> int:
    """Recompute every record's ``companion`` block from its checkpoint (after a change to a
    measure)."""
    from craftlib.checkpoints import load_model

    records = load_records(out)
    if not records:
        return 0
    size = records[0]["fingerprint"]["recipe"]["train"]["model"]["input_size"]
    pairs = (lfw or LFW(size=size)).pairs("devtest")
    n = 0
    for record in records:
        path = Path(models) / f"{record['arm']}-s{record['seed']}.pt"
        if not path.is_file():
            log(f"{path}: no checkpoint; {record['arm']} seed {record['seed']} left as it was")
            continue
        model, _ = load_model(path)
        record["companion"] = {**measure(model, pairs, record), "remeasured": True}
        meta = record.pop("fingerprint")
        write_record(out, record, meta)
        n += 1
    return n


def twins(
    out: str | Path = DEFAULT_OUT,
    models: str | Path = "runs/companion-models",
    arm: str = "crelu",
    lfw: LFW | None = None,
) -> dict:
    """``pairing.twin_thresholds`` of every ``arm`` checkpoint, on the probe faces its silent score
    used.

    Tests our reading of the CReLU stem's twins (different BN shifts, so not redundant) by the rule
    ``pairing.twin_verdict`` fixed before measuring. Returns (and ``companion_cli --twins`` writes
    to ``OUT/twins.json``) the pairs per seed and the pooled verdict.
    """
    from craftlib.checkpoints import load_model
    from craftlib.data import probe_batch

    records = sorted((r for r in load_records(out) if r["arm"] == arm), key=lambda r: r["seed"])
    if not records:
        raise FileNotFoundError(f"no {arm} records under {out}/records")
    recipe = records[0]["fingerprint"]["recipe"]
    lfw = lfw or LFW(size=recipe["train"]["model"]["input_size"])
    faces = probe_batch(lfw.training_set(max_identities=recipe.get("max_identities")).images)
    seeds = {}
    for record in records:
        path = Path(models) / f"{arm}-s{record['seed']}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no checkpoint for {arm} seed {record['seed']} (train it: make companion)"
            )
        model, _ = load_model(path)
        seeds[str(record["seed"])] = twin_thresholds(model, faces)
    gaps = [t["gap"] for pairs in seeds.values() for t in pairs]
    return {
        "arm": arm,
        "cutoff": TWIN_COS,
        "probe_faces": len(faces),
        "seeds": seeds,
        "verdict": twin_verdict(gaps),
    }


def render_twins(blob: dict) -> str:
    """Per seed: twin pairs, their cosine, the threshold gap and the share of positions the twins
    disagree on."""

    def med(values, f):
        return (
            "—"
            if not values
            else f"{np.median(values):{f}} "
            f"[{np.percentile(values, 25):{f}}, {np.percentile(values, 75):{f}}]"
        )

    rows = [
        "| seed | twin pairs (cos < %g) | weight cosine | response correlation r | threshold gap "
        "(sd) | positions disagreeing (%%) |" % blob["cutoff"],
        "|---|---|---|---|---|---|",
    ]
    groups = [(seed, pairs) for seed, pairs in blob["seeds"].items()]
    groups.append(("all", [t for _, pairs in groups for t in pairs]))
    for seed, pairs in groups:
        col = {k: [t[k] for t in pairs] for k in ("cos", "r", "gap", "disagree")}
        rows.append(
            f"| {seed} | {len(pairs)} | {med(col['cos'], '.3f')} | {med(col['r'], '.3f')} | "
            f"{med(col['gap'], '.2f')} | {med([100 * d for d in col['disagree']], '.1f')} |"
        )
    gaps = np.asarray([t["gap"] for t in groups[-1][1]])
    same = sum(t["r"] > 0 for t in groups[-1][1])
    return "\n".join(rows) + (
        f"\n\nMedians [quartiles]. Pairs by gap: {np.sum(gaps < TWIN_SAME)} below {TWIN_SAME:g} "
        f"sd, "
        f"{np.sum((gaps >= TWIN_SAME) & (gaps < TWIN_APART))} between, "
        f"{np.sum(gaps >= TWIN_APART)} at or above "
        f"{TWIN_APART:g} sd; {same} with a positive response correlation (a negative BN scale "
        f"makes the weight "
        f"twins read the same sign). Verdict by the declared rule: **{blob['verdict']}**."
    )


# ---------------------------------------------------------------------------------------------
# summary


def extra_values(record: dict) -> dict[str, float | None]:
    c = record["companion"]
    matched = c["pairing"].get("matched") or {}
    return {
        "pair_mean": c["pairing"]["mean"],
        "paired_fraction": c["pairing"]["paired_fraction"],
        "paired_matched": matched.get("paired_fraction"),
        "shape_bias": c["shapebias"]["index"],
        "shape_bias_edges": c["shapebias"]["index_edges"],
        "shape_retention": c["shapebias"]["shape_retention"],
        "texture_retention": c["shapebias"]["texture_retention"],
        "params": float(c["params"]),
        "macs": float(c["macs"]),
    }


def summary(records: list[dict], baseline: str = "none") -> dict:
    """``results.summarize`` for the main metrics plus the same paired statistics for the companion
    ones."""
    main = summarize(records, baseline)
    for name, arm in main.arms.items():
        arm.label = COMPANION_ARMS.get(name, {}).get("label", arm.label)
    by_arm: dict[str, dict[int, dict]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    extra: dict[str, dict] = {}
    for name, runs in by_arm.items():
        vals = [extra_values(runs[s]) for s in sorted(runs)]
        extra[name] = {
            "seeds": sorted(runs),
            "values": {m: [v[m] for v in vals] for m in EXTRA_METRICS},
            "shape": {
                k: [runs[s]["companion"]["shapebias"].get(k) for s in sorted(runs)]
                for k in SHAPE_FAMILIES
            },
            "vs_baseline": {},
        }
    if baseline in extra:
        base = extra[baseline]
        for metric in PAIRED_METRICS:
            for name, e in extra.items():
                if name == baseline:
                    continue
                common = [
                    s
                    for s in e["seeds"]
                    if s in base["seeds"]
                    and e["values"][metric][e["seeds"].index(s)] is not None
                    and base["values"][metric][base["seeds"].index(s)] is not None
                ]
                e["vs_baseline"][metric] = paired(
                    [e["values"][metric][e["seeds"].index(s)] for s in common],
                    [base["values"][metric][base["seeds"].index(s)] for s in common],
                )
            adjusted = holm(
                {n: e["vs_baseline"][metric].t_pvalue for n, e in extra.items() if n != baseline}
            )
            for name, p in adjusted.items():
                extra[name]["vs_baseline"][metric].holm_pvalue = p
    return {"main": main, "extra": extra}


def _mean_sd(values, percent: bool = False, digits: int = 3) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    m, s = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
    if percent:
        return f"{100 * m:.1f}% ± {100 * s:.1f}%"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _delta(p, percent: bool = False) -> str:
    if p is None or p.mean_difference is None:
        return "—"
    scale, unit = (100, " pts") if percent else (1, "")
    ci = "" if p.ci95 is None else f" [{scale * p.ci95[0]:+.2f}, {scale * p.ci95[1]:+.2f}]"
    return (
        f"{scale * p.mean_difference:+.2f}{unit}{ci}, p {fmt('p', p.t_pvalue)} (Holm "
        f"{fmt('p', p.holm_pvalue)})"
    )


def render_markdown(s: dict) -> str:
    """The companion table (Markdown): one row per arm, Δ vs standard with 95% CI and Holm-adjusted
    p."""
    main, extra = s["main"], s["extra"]
    lines = [
        "| arm | seeds | DevTest accuracy | Δ accuracy vs standard [95% CI], p | silent conv1 "
        "(τ=0.01) | "
        "small-weight conv1 (τ=0.1) | pair μ | paired (isotropic / matched null) | shape-bias "
        "index | "
        "Δ shape bias [95% CI], p | params | MACs |",
        "|---|" + "---|" * 11,
    ]
    for name, arm in main.arms.items():
        e = extra[name]
        pa = arm.vs_baseline.get("accuracy")
        lines.append(
            " | ".join(
                [
                    f"| {arm.label}",
                    str(len(arm.seeds)),
                    f"{fmt('accuracy', arm.mean('accuracy'))} ± "
                    f"{fmt('accuracy', arm.std('accuracy'))}",
                    _delta(pa, percent=True),
                    _mean_sd(arm.values["silent_fraction"], True),
                    _mean_sd(arm.values["weight_fraction"], True),
                    _mean_sd(e["values"]["pair_mean"]),
                    f"{_mean_sd(e['values']['paired_fraction'], True)} / "
                    f"{_mean_sd(e['values']['paired_matched'], True)}",
                    _mean_sd(e["values"]["shape_bias"]),
                    _delta(e["vs_baseline"].get("shape_bias")),
                    f"{int(e['values']['params'][0]):,}",
                    f"{e['values']['macs'][0] / 1e6:.1f} M",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def render_shape_table(s: dict) -> str:
    """The probe per arm (mean ± sd over seeds): raw accuracies (clean, blurred, edges, mosaic), the
    two retentions with Δ vs standard, and the indices. The retentions stay informative where the
    index sits at a bound (a model that retains no texture scores 1 whatever its shape
    retention)."""
    lines = [
        "| arm | clean | low-pass (σ=2) | edge map | mosaic 2×2 | mosaic 4×4 | R shape (blur) | Δ "
        "R shape [95% CI], p | "
        "R texture (2×2) | Δ R texture [95% CI], p | index (blur) | index (edges) |",
        "|---|" + "---|" * 11,
    ]
    for name in s["main"].arms:
        e, label = s["extra"][name], s["main"].arms[name].label
        cells = [_mean_sd(e["shape"][k], True) for k in SHAPE_FAMILIES]
        cells += [
            _mean_sd(e["values"]["shape_retention"]),
            _delta(e["vs_baseline"].get("shape_retention")),
            _mean_sd(e["values"]["texture_retention"]),
            _delta(e["vs_baseline"].get("texture_retention")),
            _mean_sd(e["values"]["shape_bias"]),
            _mean_sd(e["values"]["shape_bias_edges"]),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finished(
    out: str | Path = DEFAULT_OUT, seeds=range(5), arms=tuple(COMPANION_ARMS)
) -> list[tuple[int, str]]:
    """(seed, arm) runs recorded in ``out``."""
    return [(s, a) for s in seeds for a in arms if record_path(out, a, s).is_file()]
