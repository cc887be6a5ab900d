"""One source for every number: what the prose quotes and what a learner should see, read from
committed files.

**Committed sources** (all under ``docs/results/``):
- ``study/records/*.json`` (or any ``*/records``) and ``compare_summary.json`` — the seed study
  (``make study``);
- ``fast/records/*.json`` — a small comparison with the FAST recipe (what CI's notebooks are checked
  against);
- ``reference.json`` — deterministic facts: the released MobileFaceNet's first layer, the raw-pixel
  floor (``python -m craftlib.workshop.quotes --write`` recomputes it);
- ``notebook_times.json`` — measured notebook run times, FAST and full.

**Quoted numbers** in the prose are computed from these sources by ``craftlib.workshop.quotes``.

**Checkpoints.** ``you_should_see(metric, value, recipe, arm)`` prints whether a learner's number
lies in the range the committed seeds of the same recipe spanned (widened by a quarter of its width
on each side), or says that no committed results exist yet for that recipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from craftlib.paths import REPO_ROOT, atomic_write
from craftlib.recipes import DEFAULT_ARMS, RECIPES, WORKSHOP, Recipe

from .results import METRIC_LABELS, PERCENT, Summary, fmt, run_values

RESULTS_DIR = REPO_ROOT / "docs" / "results"
FAST_DIR = RESULTS_DIR / "fast"
SUMMARY_FILE = RESULTS_DIR / "compare_summary.json"
EARLY_FILE = RESULTS_DIR / "early_summary.json"
REFERENCE_FILE = RESULTS_DIR / "reference.json"
TIMES_FILE = RESULTS_DIR / "notebook_times.json"
# craftlib.study.hazard's tables of the study folders
SURVIVAL_FILE = RESULTS_DIR / "survival_stratified.json"
DOSE_FILE = RESULTS_DIR / "dose" / "summary.json"
WIDEN = 0.25


class MissingSource(LookupError):
    """A quoted number's source file is not committed (yet)."""


# ---------------------------------------------------------------------------------------------
# committed results


def source_name(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_source(path: Path) -> dict:
    if not path.is_file():
        raise MissingSource(f"{source_name(path)} is not committed")
    return json.loads(path.read_text())


def _same_recipe(theirs: dict, recipe: Recipe) -> bool:
    """Whether a record's recipe is ``recipe`` (fields a later version added count as their
    defaults)."""
    from .experiments import normalized

    return normalized({"recipe": theirs}) == normalized(
        {"recipe": json.loads(json.dumps(recipe.to_dict()))}
    )


def committed_folders() -> list[Path]:
    """Every committed results folder: ``docs/results/`` itself and each ``docs/results/*/`` with
    records."""
    return (
        [
            f
            for f in [RESULTS_DIR, *sorted(p for p in RESULTS_DIR.iterdir() if p.is_dir())]
            if any(f.glob("records/*.json"))
        ]
        if RESULTS_DIR.is_dir()
        else []
    )


def committed_folder(recipe: Recipe) -> Path | None:
    """The committed results folder made with exactly ``recipe`` (None if there is none)."""
    return committed_records(recipe)[1]


def committed_records(recipe: Recipe) -> tuple[list[dict], Path | None, str]:
    """The committed run records made with ``recipe`` (exactly this recipe), their folder, and a
    note.

    Looks in every committed results folder (the seed study, ``fast/``, ...); the note says why
    nothing was found (not committed yet, or made with another version of the recipe). Where
    several folders hold the recipe (a companion study reuses the workshop recipe with its own
    arms), the one with the study's arms wins, then the one with most runs: the seed study.
    """
    notes, found = [], []
    for folder in committed_folders():
        paths = sorted(folder.glob("records/*.json"))
        first = json.loads(paths[0].read_text())
        theirs = first.get("fingerprint", {}).get("recipe", {})
        if theirs.get("name") != recipe.name:
            continue
        if not _same_recipe(theirs, recipe):
            notes.append(
                f"{source_name(folder)} holds recipe {recipe.name!r} runs made with other settings"
            )
            continue
        records = [json.loads(p.read_text()) for p in paths]
        study_arms = set(DEFAULT_ARMS) <= {r.get("arm") for r in records}
        found.append(((study_arms, len(records)), records, folder))
    if found:
        _, records, folder = max(found, key=lambda f: f[0])
        return records, folder, ""
    return [], None, "; ".join(notes) or f"no committed results for recipe {recipe.name!r} yet"


def committed_summary(path: Path = SUMMARY_FILE) -> tuple[Summary | None, str]:
    """The committed study's summary (or the ``workshop-early`` one), or None and why (not committed
    yet, or an older schema)."""
    try:
        return Summary.from_dict(read_source(path)), ""
    except MissingSource as err:
        return None, f"{err}: the seed study has not been committed yet"
    except (ValueError, KeyError, TypeError) as err:
        return None, (
            f"{source_name(path)} is from an earlier study ({err}); "
            "the new study's summary has not been committed yet"
        )


@dataclass
class Range:
    """What a learner should see for one metric of one arm: the committed seeds' range, widened."""

    metric: str
    arm: str
    low: float
    high: float
    n: int
    folder: Path

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        return f"between {fmt(self.metric, self.low)} and {fmt(self.metric, self.high)}"


def expected_range(metric: str, recipe: Recipe, arm: str = "none") -> tuple[Range | None, str]:
    """The range of ``metric`` over the committed seeds of ``arm`` (``results.run_values``
    metrics)."""
    records, folder, note = committed_records(recipe)
    values = [run_values(r)[metric] for r in records if r["arm"] == arm]
    values = [v for v in values if v is not None]
    if not values:
        return None, note or f"no committed {arm!r} runs for recipe {recipe.name!r}"
    low, high = min(values), max(values)
    pad = WIDEN * (high - low)
    low, high = low - pad, high + pad
    if metric in PERCENT:
        low, high = max(0.0, low), min(1.0, high)
    return Range(metric, arm, low, high, len(values), folder), ""


def you_should_see(
    metric: str, value: float, recipe: Recipe, arm: str = "none", what: str | None = None, log=print
) -> bool | None:
    """A checkpoint: print whether ``value`` lies in the committed range; True / False, None when
    unknown."""
    from craftlib.recipes import ARM_LABELS

    what = what or f"{METRIC_LABELS.get(metric, metric)} ({ARM_LABELS.get(arm, arm)})"
    expected, note = expected_range(metric, recipe, arm)
    yours = f"yours: {fmt(metric, value)}"
    if expected is None:
        log(
            f"– you should see: {what} — {note}, so there is nothing to check against; {yours}. "
            "Compare with your neighbours."
        )
        return None
    where = f"{expected.n} committed seeds, {source_name(expected.folder)}/records"
    ok = value in expected
    mark = "✓" if ok else "✗"
    advice = (
        ""
        if ok
        else (
            " — outside the range: did every cell above run, in order, with this recipe? "
            "(A different machine or thread count moves the last digits, not this much.)"
        )
    )
    log(f"{mark} you should see: {what} {expected.text()} ({where}); {yours}{advice}")
    return ok


def mode_banner(recipe: Recipe, seed: int = 0) -> str:
    """The line every notebook prints first: which recipe and seed, and in FAST mode what that
    means."""
    if recipe.name == "fast":
        return (
            f"FAST mode — recipe 'fast', seed {seed}: {recipe.train.epochs} short epochs, "
            f"{recipe.max_identities} people, {recipe.train.model.input_size} px. Every code path "
            "runs, but the numbers mean nothing; where the text describes a full run, this output "
            f"will differ. The silent threshold is τ = {recipe.tau:g} here (the workshop's: "
            f"{WORKSHOP.tau:g}), so that so short a run has filters to re-activate; at that τ many "
            "filters count as silent even untrained."
        )
    return f"recipe {recipe.name!r}, seed {seed}: {recipe.description}"


def fast_note(recipe: Recipe) -> str:
    """A tag for outputs that would contradict the prose in FAST mode (empty otherwise)."""
    return (
        " [FAST mode: a 3-epoch smoke run, not what the text describes]"
        if recipe.name == "fast"
        else ""
    )


def work_mask(scores, tau: float, recipe: Recipe, k: int = 8) -> tuple[np.ndarray, str]:
    """Filters below ``tau`` — or, in FAST mode when none is, the ``k`` quietest, so the cells have
    work to do.

    Returns the mask and a note to print (empty unless the FAST stand-in was used).
    """
    scores = np.asarray(scores)
    mask = scores < tau
    if mask.any() or recipe.name != "fast":
        return mask, ""
    mask = np.zeros(len(scores), bool)
    mask[np.argsort(scores, kind="stable")[:k]] = True
    return mask, (
        f"FAST mode: no channel is below τ = {tau:g} after a few short epochs, so the {k} quietest "
        "stand in for dead ones below"
    )


FACTS = ("mfn", "pixels", "lfw", "model")


def fact(key: str):
    """A deterministic fact of ``reference.json`` (``mfn.dead``, ``pixels.40``, ``lfw.people``,
    ``model.*``)."""
    head, _, rest = key.partition(".")
    if head not in FACTS:
        raise KeyError(f"{key!r} is not a fact: keys start with one of {FACTS}")
    if head == "mfn":
        m = read_source(REFERENCE_FILE)["mobilefacenet"]
        if rest == "dead":
            return f"{m['dead']} / {m['filters']}"
        if rest == "dead_share":
            return m["dead"] / m["filters"]
        return m[rest]
    return read_source(REFERENCE_FILE)[head][rest]


def matches(
    key: str, value, tolerance: float = 1e-3, what: str | None = None, log=print
) -> bool | None:
    """A checkpoint against a deterministic fact of ``reference.json`` (``mfn.*``, ``pixels.*``)."""
    what = what or key
    try:
        expected = fact(key)
    except MissingSource as err:
        log(f"– you should see: {what} — {err}; yours: {value}")
        return None
    if isinstance(expected, str):
        ok, shown = str(value) == expected, expected
    else:
        ok, shown = abs(float(value) - float(expected)) <= tolerance, fmt("accuracy", expected)
        value = fmt("accuracy", float(value))
    log(
        f"{'✓' if ok else '✗'} you should see: {what} = {shown} ({source_name(REFERENCE_FILE)}); "
        f"yours: {value}"
        + ("" if ok else " — different: is this the same LFW folder and face size?")
    )
    return ok


def expect(ok: bool, what: str, yours: str = "", log=print) -> bool:
    """A checkpoint on something the notebook computes two ways (the learner's code against the
    library's)."""
    log(f"{'✓' if ok else '✗'} you should see: {what}" + (f"; yours: {yours}" if yours else ""))
    return bool(ok)


def paired_sd(
    recipe: Recipe, arm: str = "contextual", metric: str = "accuracy"
) -> tuple[float | None, str]:
    """The spread of paired differences ``arm − none`` over the committed seeds of ``recipe``, and
    its source."""
    records, folder, note = committed_records(recipe)
    if not records:
        return None, note
    from .results import summarize

    p = summarize(records).arms[arm].vs_baseline[metric]
    return (
        p.sd_difference,
        f"{p.n} committed seeds of recipe {recipe.name!r} ({source_name(folder)})",
    )


# ---------------------------------------------------------------------------------------------
# deterministic facts: reference.json


def compute_facts(sizes: tuple[int, ...] = (32, 40)) -> dict:
    """The released MobileFaceNet's first layer and the raw-pixel floor on DevTest (needs the model
    and LFW)."""
    from craftlib.activity import filter_scores
    from craftlib.data import LFW
    from craftlib.models import FaceCNN, count_macs
    from craftlib.pretrained import mobilefacenet_stem
    from craftlib.verification import evaluate_pixels

    stem = mobilefacenet_stem()
    scores = filter_scores(stem[0], "max")
    gamma = filter_scores(stem[0], "gamma", bn=stem[1])
    dead = scores < 0.05
    mfn = {
        "filters": int(len(scores)),
        "dead": int(dead.sum()),
        "tau": 0.05,
        "largest_dead": float(scores[dead].max()),
        "smallest_live": float(scores[~dead].min()),
        "low_gamma": int((gamma < 0.05).sum()),
        "same_channels": bool(np.array_equal(dead, gamma < 0.05)),
        "largest_dead_gamma": float(gamma[dead].max()),
        "smallest_live_gamma": float(gamma[~dead].min()),
    }
    pixels = {
        str(size): float(evaluate_pixels(LFW(size=size).pairs("devtest"))["accuracy"])
        for size in sizes
    }
    lfw = LFW(size=RECIPES["workshop"].train.model.input_size)
    train = lfw.training_set()
    devtest, view2, devtrain = (lfw.pair_identities(p) for p in ("devtest", "view2", "devtrain"))
    data = {
        "people": len(lfw.people),
        "images": sum(len(f) for f in lfw.people.values()),
        "train_identities": train.num_classes,
        "train_images": int(len(train.images)),
        "devtest_identities": len(devtest),
        "devtest_in_view2": len(devtest & view2),
        "view2_in_devtrain": len(view2 & devtrain),
    }
    model = FaceCNN(RECIPES["workshop"].train.model)
    net = {
        "macs_millions": count_macs(model) / 1e6,
        "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    return {"mobilefacenet": mfn, "pixels": pixels, "lfw": data, "model": net}


def write_facts(path: Path = REFERENCE_FILE) -> Path:
    facts = compute_facts()
    return atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    )
