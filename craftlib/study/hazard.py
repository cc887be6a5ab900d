"""Survival compared fairly: renewed filters against standard training's filters alive at the *same*
epoch.

Pooling every renewal against every live filter (``survival.survival_stats``) mixes epochs: a filter
alive at epoch 1 faces the whole decay budget, one alive at epoch 6 almost none. Here each renewal
is compared with standard training's filters alive at the end of the same epoch (a stratum), first
passage counts (a filter that goes silent once, or is renewed again, has died), the strata are
weighted to CRAFT's own epoch mix, and intervals resample whole seeds (filters of one run are not
independent). Strata where standard training loses no filter afterwards are reported apart: there,
"survival" cannot tell a useful filter from a useless one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from craftlib.training import TrainConfig

from .survival import new_deaths, survival

BOOT = 2000


def heard_to_end(row: dict) -> bool:
    """First passage: alive at every snapshot from its start to the end of training."""
    return bool(all(row["alive"]))


def rows_by_seed(
    craft: dict[int, dict], base: dict[int, dict], config: TrainConfig, tau: float
) -> dict[int, dict[str, list[dict]]]:
    """Per seed both CRAFT and standard training ran: the renewals and the standard run's live
    filters."""
    epochs = sorted({e["epoch"] for r in craft.values() for e in r["events"] if e["filters"]})
    return {
        s: {
            "renewed": survival(craft[s], config, tau),
            "live": new_deaths(base[s], epochs, tau, config),
        }
        for s in sorted(set(craft) & set(base))
    }


def _strata(rows: dict[int, dict[str, list[dict]]], seeds) -> dict[int, dict[str, list[dict]]]:
    out: dict[int, dict[str, list[dict]]] = {}
    for s in seeds:
        for group in ("renewed", "live"):
            for row in rows[s][group]:
                out.setdefault(row["epoch"], {"renewed": [], "live": []})[group].append(row)
    return out


def _standardized(strata: dict, epochs: list[int]) -> tuple[float, float, float] | None:
    """(renewed, standard, difference) survival to the end, weighted to the renewals' epoch mix."""
    use = [e for e in epochs if e in strata and strata[e]["renewed"] and strata[e]["live"]]
    if not use:
        return None
    w = np.array([len(strata[e]["renewed"]) for e in use], float)
    w /= w.sum()
    r = np.array([np.mean([heard_to_end(x) for x in strata[e]["renewed"]]) for e in use])
    b = np.array([np.mean([heard_to_end(x) for x in strata[e]["live"]]) for e in use])
    return float(w @ r), float(w @ b), float(w @ (r - b))


def _end_ratio(rows: list[dict]) -> list[float]:
    return [x["ratio"][-1] for x in rows if heard_to_end(x) and "ratio" in x]


def _weighted_median(values: list[float], weights: list[float]) -> float | None:
    if not values:
        return None
    order = np.argsort(values)
    v, w = np.asarray(values)[order], np.asarray(weights, float)[order]
    return float(v[np.searchsorted(np.cumsum(w), 0.5 * w.sum())])


def compare(rows: dict[int, dict[str, list[dict]]], boot: int = BOOT, seed: int = 0) -> dict:
    """Per renewal epoch and weighted over them: survival to the end, their difference, norm
    ratios."""
    seeds = sorted(rows)
    strata = _strata(rows, seeds)
    epochs = sorted(e for e in strata if strata[e]["renewed"])
    possible = [
        e
        for e in epochs
        if strata[e]["live"] and not all(heard_to_end(x) for x in strata[e]["live"])
    ]
    table = []
    for e in epochs:
        r, b = strata[e]["renewed"], strata[e]["live"]
        table.append(
            {
                "epoch": e,
                "renewed": len(r),
                "renewed_again": sum(x["renewed_again"] is not None for x in r),
                "renewed_heard": float(np.mean([heard_to_end(x) for x in r])),
                "live": len(b),
                "live_heard": float(np.mean([heard_to_end(x) for x in b])) if b else None,
                "dying_possible": e in possible,
                "ratio_renewed": _median(_end_ratio(r)),
                "ratio_live": _median(_end_ratio(b)),
            }
        )
    rng = np.random.default_rng(seed)
    draws = {"all": [], "possible": []}
    for _ in range(boot if len(seeds) > 1 else 0):
        s = _strata(rows, rng.choice(seeds, len(seeds)))
        for key, eps in (("all", epochs), ("possible", possible)):
            got = _standardized(s, eps)
            if got is not None:
                draws[key].append(got[2])
    out = {
        "seeds": len(seeds),
        "strata": table,
        "tau_rule": "first passage: silent once, or renewed again",
    }
    for key, eps in (("all", epochs), ("possible", possible)):
        got = _standardized(strata, eps)
        d = draws[key]
        out[key] = (
            None
            if got is None
            else {
                "epochs": eps,
                "renewals": int(sum(len(strata[e]["renewed"]) for e in eps)),
                "renewed_heard": got[0],
                "live_heard": got[1],
                "difference": got[2],
                "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
                if d
                else None,
            }
        )
    weights = {
        e: len(strata[e]["renewed"]) / max(1, len(_end_ratio(strata[e]["live"]))) for e in epochs
    }
    live_ratios = [(v, weights[e]) for e in epochs for v in _end_ratio(strata[e]["live"])]
    out["ratio"] = {
        "renewed": _median([v for e in epochs for v in _end_ratio(strata[e]["renewed"])]),
        "live_weighted": _weighted_median([v for v, _ in live_ratios], [w for _, w in live_ratios]),
    }
    out["hazard"] = hazards(rows)
    return out


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def hazards(rows: dict[int, dict[str, list[dict]]]) -> list[dict]:
    """Per epoch: filters at risk (alive at the previous snapshot) and first deaths, renewed vs
    standard."""
    counts: dict[int, dict[str, list[int]]] = {}
    for per_seed in rows.values():
        for group in ("renewed", "live"):
            for row in per_seed[group]:
                for k in range(1, len(row["alive"])):
                    c = counts.setdefault(row["epoch"] + k, {"renewed": [0, 0], "live": [0, 0]})[
                        group
                    ]
                    c[0] += 1
                    if not row["alive"][k]:
                        c[1] += 1
                        break
    return [
        {"epoch": t, **{f"{g}_at_risk": c[g][0] for g in c}, **{f"{g}_deaths": c[g][1] for g in c}}
        for t, c in sorted(counts.items())
    ]


def of_folder(
    folder: str | Path, tau: float | None = None, arm: str = "contextual", boot: int = BOOT
) -> dict:
    """The fair comparison for one arm of a results folder against its ``none`` arm."""
    from .experiments import load_records
    from .results import SILENT_TAU

    records = load_records(folder)
    if not records:
        raise ValueError(f"no run records under {folder}")
    config = TrainConfig.from_dict(records[0]["fingerprint"]["recipe"]["train"])
    craft = {r["seed"]: r for r in records if r["arm"] == arm}
    base = {r["seed"]: r for r in records if r["arm"] == "none"}
    return compare(rows_by_seed(craft, base, config, SILENT_TAU if tau is None else tau), boot)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _f2(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def markdown(result: dict) -> str:
    """The stratified table: one row per renewal epoch, then the two weighted comparisons."""
    lines = [
        "| renewal epoch | renewals (renewed again) | renewed, heard to the end | standard's live "
        "filters | "
        "standard, heard to the end | difference | norm / pure decay: renewed | standard's live |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["strata"]:
        diff = None if r["live_heard"] is None else r["renewed_heard"] - r["live_heard"]
        mark = "" if r["dying_possible"] else " (none die after)"
        lines.append(
            f"| {r['epoch']}{mark} | {r['renewed']} ({r['renewed_again']}) | "
            f"{_pct(r['renewed_heard'])} | "
            f"{r['live']} | {_pct(r['live_heard'])} | "
            f"{'—' if diff is None else f'{100 * diff:+.1f} pts'} | {_f2(r['ratio_renewed'])} | "
            f"{_f2(r['ratio_live'])} |"
        )
    for key, label in (
        ("all", "all renewal epochs"),
        ("possible", "epochs after which standard training loses filters"),
    ):
        w = result[key]
        if w is None or (key == "possible" and w["epochs"] == result["all"]["epochs"]):
            continue  # standard training loses filters after every renewal epoch: one row says it
        ci = w["ci95"]
        lines.append(
            f"| **{label}**, weighted to CRAFT's epoch mix | {w['renewals']} | "
            f"{_pct(w['renewed_heard'])} | | "
            f"{_pct(w['live_heard'])} | **{100 * w['difference']:+.1f} pts**"
            + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")
            + " | | |"
        )
    q = result["ratio"]
    lines.append(
        f"| norm / pure decay of filters heard to the end, median (standard's weighted to CRAFT's "
        f"epoch mix) "
        f"| | | | | | {_f2(q['renewed'])} | {_f2(q['live_weighted'])} |"
    )
    return "\n".join(lines)


def hazard_markdown(result: dict) -> str:
    """Per epoch: of the filters heard at the previous snapshot, how many died in it (first
    deaths)."""
    lines = [
        "| epoch | renewed: at risk | died | hazard | standard's live: at risk | died | hazard |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in result["hazard"]:
        cells = []
        for g in ("renewed", "live"):
            n, d = h[f"{g}_at_risk"], h[f"{g}_deaths"]
            cells += [str(n), str(d), f"{100 * d / n:.1f}%" if n else "—"]
        lines.append(f"| {h['epoch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m craftlib.study.hazard FOLDER... [--write JSON]``: the stratified survival tables
    of results folders."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m craftlib.study.hazard", description=main.__doc__)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--arm", default="contextual")
    ap.add_argument("--write", help="also write {folder name: result} to this JSON file")
    args = ap.parse_args(argv)
    results = {}
    for folder in args.folders:
        results[Path(folder).name] = of_folder(folder, arm=args.arm)
        result = results[Path(folder).name]
        print(f"{folder} ({args.arm} vs none)\n{markdown(result)}\n\n{hazard_markdown(result)}\n")
    if args.write:
        from craftlib.paths import atomic_write

        atomic_write(args.write, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
