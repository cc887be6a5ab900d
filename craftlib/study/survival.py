"""Do re-activated filters stay alive? Survival measured against the schedule's own decay.

A weight that receives no task gradient still moves: weight decay shrinks it by a factor fixed by
the learning-rate schedule alone (``decay_curve``). A renewed filter whose norm only follows that
curve is coasting, not learning; one that stays above it is held up by the task. ``survival``
follows every renewed filter from its event to the end of training; ``new_deaths`` is the same count
for the filters standard training had alive at the same moments, the baseline survival must beat.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from craftlib.activity import relative
from craftlib.training import TrainConfig, make_optimizer, make_schedule


def learning_rates(config: TrainConfig, steps_per_epoch: int) -> np.ndarray:
    """The learning rate of every optimisation step of a run, read off torch's own scheduler.

    Cached and read-only: a study's summary asks for the same schedule at every renewal event, and
    stepping torch's scheduler a thousand times each made a dashboard click take seconds.
    """
    return _learning_rates(_Key(config), steps_per_epoch)


def decay_curve(config: TrainConfig, steps_per_epoch: int, start_step: int) -> np.ndarray:
    """Factor by which a gradient-free weight has shrunk at every step after ``start_step`` (SGD +
    momentum).

    ``v <- momentum * v + wd * w; w <- w - lr * v`` with the momentum buffer reset at ``start_step``
    (as re-activation does). Entry ``k`` is the factor after ``k`` steps (entry 0 is 1). Cached and
    read-only, like ``learning_rates``.
    """
    return _decay_curve(_Key(config), steps_per_epoch, start_step)


class _Key:
    """A config as a cache key: equal when their reprs are (its per-layer overrides are a dict, so
    the config itself is not hashable)."""

    def __init__(self, config: TrainConfig):
        self.config, self.text = config, repr(config)

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Key) and self.text == other.text


@lru_cache(maxsize=32)
def _learning_rates(key: _Key, steps_per_epoch: int) -> np.ndarray:
    config = key.config
    param = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([{"params": [param], "weight_decay": 0.0}], config)
    total = steps_per_epoch * config.epochs
    schedule = make_schedule(opt, config, total)
    lrs = np.empty(total)
    for i in range(total):
        lrs[i] = opt.param_groups[0]["lr"]
        opt.step()
        schedule.step()
    lrs.flags.writeable = False
    return lrs


@lru_cache(maxsize=1024)
def _decay_curve(key: _Key, steps_per_epoch: int, start_step: int) -> np.ndarray:
    lrs = _learning_rates(key, steps_per_epoch)[start_step:]
    curve = np.asarray([1.0] + [w for w, _ in coast(key.config, lrs, 1.0, 0.0)])
    curve.flags.writeable = False
    return curve


def coast(config: TrainConfig, lrs, w: float, v: float):
    """Yield ``(w, v)`` after each SGD step of a weight that gets no gradient: only weight decay,
    through the momentum buffer ``v``. Shared by ``decay_curve`` and the federated decay budget
    (sites keep their momentum between rounds)."""
    if config.optimizer != "sgd":
        raise ValueError(
            "the analytic decay curve is defined for SGD (Adam's decay depends on the gradient)"
        )
    for lr in lrs:
        v = config.momentum * v + config.weight_decay * w
        w = w - lr * v
        yield w, v


def _scores(timeline: dict) -> np.ndarray:
    """Every snapshot's silent scores (snapshot x filter), computed once per record."""
    return np.stack([relative(np.asarray(column)) for column in timeline["output_std"]])


def survival(record: dict, config: TrainConfig, tau: float) -> list[dict]:
    """One row per renewed filter per event: its silent score and decay ratio at every later epoch.

    ``ratio`` is its L2 norm relative to the moment of renewal, divided by the pure-decay factor
    over the same steps: ≈ 1 coasting on the schedule, > 1 held up by the task gradient, < 1 pushed
    down. A filter renewed *again* later had died first (the detector found it silent), and the
    snapshot after that event shows its replacement: from that epoch on the row counts it dead
    (``renewed_again`` names the epoch), so a second renewal never passes for survival.
    """
    tl = record["timeline"]
    steps_per_epoch = tl["step"][1] - tl["step"][0]
    renewed_at = _renewal_epochs(record)
    scores = _scores(tl)
    rows = []
    for event in record["events"]:
        if event["strategy"] == "none" or not event["filters"]:
            continue
        col = tl["epoch"].index(event["epoch"])
        curve = decay_curve(config, steps_per_epoch, event["step"])
        for f in event["filters"]:
            later = range(col, len(tl["epoch"]))
            again = min((e for e in renewed_at.get(f, ()) if e > event["epoch"]), default=None)
            silent = [float(scores[c, f]) for c in later]
            ratio = [
                tl["l2"][c][f] / tl["l2"][col][f] / curve[tl["step"][c] - event["step"]]
                for c in later
            ]
            alive = [
                s >= tau and (again is None or tl["epoch"][c] < again)
                for s, c in zip(silent, later)
            ]
            rows.append(
                {
                    "filter": f,
                    "epoch": event["epoch"],
                    "silent_score": silent,
                    "ratio": ratio,
                    "alive": alive,
                    "renewed_again": again,
                }
            )
    return rows


def _renewal_epochs(record: dict) -> dict[int, list[int]]:
    """Filter -> the epochs at which it was renewed (not the baseline's logged detections)."""
    out: dict[int, list[int]] = {}
    for event in record["events"]:
        if event["strategy"] != "none":
            for f in event["filters"]:
                out.setdefault(f, []).append(event["epoch"])
    return out


def new_deaths(
    record: dict, epochs: list[int], tau: float, config: TrainConfig | None = None
) -> list[dict]:
    """For standard training: of the filters alive at each epoch in ``epochs``, which are alive
    later.

    With ``config``, each row also carries its norm against the pure-decay curve from that epoch on
    (``ratio``), the same number renewed filters get, so the two can be compared at the same epochs.
    """
    tl = record["timeline"]
    steps_per_epoch = tl["step"][1] - tl["step"][0]
    alive = _scores(tl) >= tau
    rows = []
    for epoch in epochs:
        col = tl["epoch"].index(epoch)
        curve = (
            decay_curve(config, steps_per_epoch, tl["step"][col]) if config is not None else None
        )
        live = np.flatnonzero(alive[col])
        for f, states in zip(live.tolist(), alive[col:, live].T.tolist()):
            later = range(col, len(tl["epoch"]))
            row = {"filter": f, "epoch": epoch, "alive": states}
            if curve is not None:
                row["ratio"] = [
                    tl["l2"][c][f] / tl["l2"][col][f] / curve[tl["step"][c] - tl["step"][col]]
                    for c in later
                ]
            rows.append(row)
    return rows


def survival_curve(rows: list[dict], horizon: int) -> np.ndarray:
    """Fraction of ``rows`` alive k epochs after their start, k = 0..horizon (NaN where none reach
    k)."""
    alive = np.zeros((len(rows), horizon + 1))
    reached = np.zeros((len(rows), horizon + 1), bool)
    for i, row in enumerate(rows):
        states = row["alive"][: horizon + 1]
        alive[i, : len(states)], reached[i, : len(states)] = states, True
    n = reached.sum(0)
    return np.where(n > 0, alive.sum(0) / np.maximum(n, 1), np.nan)


def survival_stats(rows_by_seed: dict[int, list[dict]], boot: int = 2000, seed: int = 0) -> dict:
    """The survival table's numbers: share of ``rows`` alive at the end of training, with a 95%
    interval.

    Filters of one run are not independent (one schedule, one network), so the interval resamples
    whole seeds (cluster bootstrap, percentile). For renewed filters it also gives their final norm
    relative to the pure-decay curve (median and quartiles), when the rows carry ``ratio``.
    """
    runs = {s: rows for s, rows in rows_by_seed.items() if rows}
    if not runs:
        return {"filters": 0, "runs": 0}
    alive = {s: np.asarray([r["alive"][-1] for r in rows], float) for s, rows in runs.items()}
    pooled = np.concatenate(list(alive.values()))
    rng = np.random.default_rng(seed)
    # whole seeds drawn with replacement: a draw's share alive is its seeds' alive count over their
    # filter count (0/1 values: the same numbers as averaging the concatenated draw, at a fraction
    # of the cost the dashboard pays on every click)
    alive_n = np.array([a.sum() for a in alive.values()])
    total_n = np.array([a.size for a in alive.values()])
    picks = rng.integers(0, len(alive), (boot, len(alive))) if len(alive) > 1 else None
    draws = [] if picks is None else list(alive_n[picks].sum(1) / total_n[picks].sum(1))
    out = {
        "filters": int(pooled.size),
        "runs": len(runs),
        "alive_end": float(pooled.mean()),
        "alive_end_ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
        if draws
        else None,
    }
    ratios = [r["ratio"][-1] for rows in runs.values() for r in rows if "ratio" in r]
    if ratios:
        out["ratio_end"] = [float(q) for q in np.percentile(ratios, [25, 50, 75])]
    return out
