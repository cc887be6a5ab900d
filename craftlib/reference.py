"""One source for every number: what the prose quotes and what a learner should see, read from committed files.

**Committed sources** (all under ``docs/results/``):
- ``study/records/*.json`` (or any ``*/records``) and ``compare_summary.json`` — the seed study (``make study``);
- ``fast/records/*.json`` — a small comparison with the FAST recipe (what CI's notebooks are checked against);
- ``reference.json`` — deterministic facts: the released MobileFaceNet's first layer, the raw-pixel floor
  (``python -m craftlib.reference --write`` recomputes it);
- ``notebook_times.json`` — measured notebook run times, FAST and full.

**Quoted numbers.** A number in a notebook's Markdown or in a doc is marked where it stands:
``<!--q:KEY|FORMAT-->31 / 64<!--/q-->``. The marks are HTML comments, invisible when rendered;
``tests/test_quoted_numbers.py`` computes ``quote(KEY, FORMAT)`` from the committed sources and fails when the
text between the marks differs. Keys: ``mfn.*``, ``pixels.*``, ``lfw.*`` and ``model.*`` (``reference.json``), ``time.fast.NB`` /
``time.full.NB`` (seconds), ``recipe.NAME.a.b`` (a field of a recipe), ``study.*`` (the summary; ``early.*`` the
same keys for the ``workshop-early`` summary), and
``fast.*`` (the FAST comparison). Formats: ``pct0``/``pct1``/``pct2`` (42% / 42.2% / 42.19%),
``pts`` (signed points, ``results.fmt``), ``upts`` (unsigned points: an sd or MDE), ``f2`` (two decimals), ``p`` (a p-value, ``results.fmt``), ``int``, ``n`` (1,262), ``f0``, ``g``, ``sci``
(1e-2), ``x`` (20×), ``s`` (62 s), ``min`` (2.7 min), ``min0`` (3 min); no format: the value as text.

**Checkpoints.** ``you_should_see(metric, value, recipe, arm)`` prints whether a learner's number lies in
the range the committed seeds of the same recipe spanned (widened by a quarter of its width on each
side), or says that no committed results exist yet for that recipe.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paths import REPO_ROOT, atomic_write
from .recipes import RECIPES, Recipe
from .results import METRIC_LABELS, PERCENT, Summary, fmt, run_values

RESULTS_DIR = REPO_ROOT / "docs" / "results"
FAST_DIR = RESULTS_DIR / "fast"
SUMMARY_FILE = RESULTS_DIR / "compare_summary.json"
EARLY_FILE = RESULTS_DIR / "early_summary.json"
REFERENCE_FILE = RESULTS_DIR / "reference.json"
TIMES_FILE = RESULTS_DIR / "notebook_times.json"
SURVIVAL_FILE = RESULTS_DIR / "survival_stratified.json"  # craftlib.hazard's tables of the study folders
QUOTE = re.compile(r"(?<!`)<!--q:(?P<key>[\w.@\-/]+)(?:\|(?P<format>\w+))?-->(?P<text>.*?)<!--/q-->", re.S)
WIDEN = 0.25


class MissingSource(LookupError):
    """A quoted number's source file is not committed (yet)."""


# ---------------------------------------------------------------------------------------------
# committed results


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise MissingSource(f"{_shown(path)} is not committed")
    return json.loads(path.read_text())


def _same_recipe(theirs: dict, recipe: Recipe) -> bool:
    """Whether a record's recipe is ``recipe`` (fields a later version added count as their defaults)."""
    from .experiments import normalized

    return normalized({"recipe": theirs}) == normalized({"recipe": json.loads(json.dumps(recipe.to_dict()))})


def committed_folders() -> list[Path]:
    """Every committed results folder: ``docs/results/`` itself and each ``docs/results/*/`` with records."""
    return [f for f in [RESULTS_DIR, *sorted(p for p in RESULTS_DIR.iterdir() if p.is_dir())]
            if any(f.glob("records/*.json"))] if RESULTS_DIR.is_dir() else []


def committed_folder(recipe: Recipe) -> Path | None:
    """The committed results folder made with exactly ``recipe`` (None if there is none)."""
    return committed_records(recipe)[1]


def committed_records(recipe: Recipe) -> tuple[list[dict], Path | None, str]:
    """The committed run records made with ``recipe`` (exactly this recipe), their folder, and a note.

    Looks in every committed results folder (the seed study, ``fast/``, ...); the note says why nothing
    was found (not committed yet, or made with another version of the recipe).
    """
    notes = []
    for folder in committed_folders():
        paths = sorted(folder.glob("records/*.json"))
        if not paths:
            continue
        first = json.loads(paths[0].read_text())
        theirs = first.get("fingerprint", {}).get("recipe", {})
        if theirs.get("name") != recipe.name:
            continue
        if not _same_recipe(theirs, recipe):
            notes.append(f"{_shown(folder)} holds recipe {recipe.name!r} runs made with other settings")
            continue
        return [json.loads(p.read_text()) for p in paths], folder, ""
    return [], None, "; ".join(notes) or f"no committed results for recipe {recipe.name!r} yet"


def committed_summary(path: Path = SUMMARY_FILE) -> tuple[Summary | None, str]:
    """The committed study's summary (or the ``workshop-early`` one), or None and why (not committed yet,
    or an older schema)."""
    try:
        return Summary.from_dict(_read(path)), ""
    except MissingSource as err:
        return None, f"{err}: the seed study has not been committed yet"
    except (ValueError, KeyError, TypeError) as err:
        return None, (f"{_shown(path)} is from an earlier study ({err}); "
                      "the new study's summary has not been committed yet")


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
    """The range of ``metric`` over the committed seeds of ``arm`` (``results.run_values`` metrics)."""
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


def you_should_see(metric: str, value: float, recipe: Recipe, arm: str = "none", what: str | None = None,
                   log=print) -> bool | None:
    """A checkpoint: print whether ``value`` lies in the committed range; True / False, None when unknown."""
    from .recipes import ARM_LABELS

    what = what or f"{METRIC_LABELS.get(metric, metric)} ({ARM_LABELS.get(arm, arm)})"
    expected, note = expected_range(metric, recipe, arm)
    yours = f"yours: {fmt(metric, value)}"
    if expected is None:
        log(f"– you should see: {what} — {note}, so there is nothing to check against; {yours}. "
            "Compare with your neighbours.")
        return None
    where = f"{expected.n} committed seeds, {_shown(expected.folder)}/records"
    ok = value in expected
    mark = "✓" if ok else "✗"
    advice = "" if ok else (" — outside the range: did every cell above run, in order, with this recipe? "
                            "(A different machine or thread count moves the last digits, not this much.)")
    log(f"{mark} you should see: {what} {expected.text()} ({where}); {yours}{advice}")
    return ok


def mode_banner(recipe: Recipe, seed: int = 0) -> str:
    """The line every notebook prints first: which recipe and seed, and in FAST mode what that means."""
    if recipe.name == "fast":
        return (f"FAST mode — recipe 'fast', seed {seed}: {recipe.train.epochs} short epochs, "
                f"{recipe.max_identities} people, {recipe.train.model.input_size} px. Every code path runs, but the "
                "numbers mean nothing; where the text describes a full run, this output will differ.")
    return f"recipe {recipe.name!r}, seed {seed}: {recipe.description}"


def fast_note(recipe: Recipe) -> str:
    """A tag for outputs that would contradict the prose in FAST mode (empty otherwise)."""
    return " [FAST mode: a 3-epoch smoke run, not what the text describes]" if recipe.name == "fast" else ""


def work_mask(scores, tau: float, recipe: Recipe, k: int = 8) -> tuple[np.ndarray, str]:
    """Filters below ``tau`` — or, in FAST mode when none is, the ``k`` quietest, so the cells have work to do.

    Returns the mask and a note to print (empty unless the FAST stand-in was used).
    """
    scores = np.asarray(scores)
    mask = scores < tau
    if mask.any() or recipe.name != "fast":
        return mask, ""
    mask = np.zeros(len(scores), bool)
    mask[np.argsort(scores, kind="stable")[:k]] = True
    return mask, (f"FAST mode: no channel is below τ = {tau:g} after a few short epochs, so the {k} quietest "
                  "stand in for dead ones below")


def matches(key: str, value, tolerance: float = 1e-3, what: str | None = None, log=print) -> bool | None:
    """A checkpoint against a deterministic fact of ``reference.json`` (``mfn.*``, ``pixels.*``)."""
    what = what or key
    try:
        expected = value_of(key)
    except MissingSource as err:
        log(f"– you should see: {what} — {err}; yours: {value}")
        return None
    if isinstance(expected, str):
        ok, shown = str(value) == expected, expected
    else:
        ok, shown = abs(float(value) - float(expected)) <= tolerance, fmt("accuracy", expected)
        value = fmt("accuracy", float(value))
    log(f"{'✓' if ok else '✗'} you should see: {what} = {shown} ({_shown(REFERENCE_FILE)}); "
        f"yours: {value}" + ("" if ok else " — different: is this the same LFW folder and face size?"))
    return ok


def expect(ok: bool, what: str, yours: str = "", log=print) -> bool:
    """A checkpoint on something the notebook computes two ways (the learner's code against the library's)."""
    log(f"{'✓' if ok else '✗'} you should see: {what}" + (f"; yours: {yours}" if yours else ""))
    return bool(ok)


def paired_sd(recipe: Recipe, arm: str = "contextual", metric: str = "accuracy") -> tuple[float | None, str]:
    """The spread of paired differences ``arm − none`` over the committed seeds of ``recipe``, and its source."""
    records, folder, note = committed_records(recipe)
    if not records:
        return None, note
    from .results import summarize

    p = summarize(records).arms[arm].vs_baseline[metric]
    return p.sd_difference, f"{p.n} committed seeds of recipe {recipe.name!r} ({_shown(folder)})"


# ---------------------------------------------------------------------------------------------
# deterministic facts: reference.json


def compute_facts(sizes: tuple[int, ...] = (32, 40)) -> dict:
    """The released MobileFaceNet's first layer and the raw-pixel floor on DevTest (needs the model and LFW)."""
    from .activity import filter_scores
    from .data import LFW
    from .models import FaceCNN, count_macs
    from .pretrained import mobilefacenet_stem
    from .verification import evaluate_pixels

    stem = mobilefacenet_stem()
    scores = filter_scores(stem[0], "max")
    gamma = filter_scores(stem[0], "gamma", bn=stem[1])
    dead = scores < 0.05
    mfn = {"filters": int(len(scores)), "dead": int(dead.sum()), "tau": 0.05,
           "largest_dead": float(scores[dead].max()), "smallest_live": float(scores[~dead].min()),
           "low_gamma": int((gamma < 0.05).sum()), "same_channels": bool(np.array_equal(dead, gamma < 0.05)),
           "largest_dead_gamma": float(gamma[dead].max()), "smallest_live_gamma": float(gamma[~dead].min())}
    pixels = {str(size): float(evaluate_pixels(LFW(size=size).pairs("devtest"))["accuracy"]) for size in sizes}
    lfw = LFW(size=RECIPES["workshop"].train.model.input_size)
    train = lfw.training_set()
    devtest, view2, devtrain = (lfw.pair_identities(p) for p in ("devtest", "view2", "devtrain"))
    data = {"people": len(lfw.people), "images": sum(len(f) for f in lfw.people.values()),
            "train_identities": train.num_classes, "train_images": int(len(train.images)),
            "devtest_identities": len(devtest), "devtest_in_view2": len(devtest & view2),
            "view2_in_devtrain": len(view2 & devtrain)}
    model = FaceCNN(RECIPES["workshop"].train.model)
    net = {"macs_millions": count_macs(model) / 1e6, "params_millions": sum(p.numel() for p in model.parameters()) / 1e6}
    return {"mobilefacenet": mfn, "pixels": pixels, "lfw": data, "model": net}


def write_facts(path: Path = REFERENCE_FILE) -> Path:
    facts = compute_facts()
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n"))


# ---------------------------------------------------------------------------------------------
# quoted numbers


def value_of(key: str):
    """The raw value behind a quote key, from its committed source (``MissingSource`` if not committed)."""
    head, _, rest = key.partition(".")
    if head == "mfn":
        m = _read(REFERENCE_FILE)["mobilefacenet"]
        if rest == "dead":
            return f"{m['dead']} / {m['filters']}"
        if rest == "dead_share":
            return m["dead"] / m["filters"]
        return m[rest]
    if head in ("pixels", "lfw", "model"):
        return _read(REFERENCE_FILE)[head][rest]
    if head == "time":
        mode, _, notebook = rest.partition(".")
        times = _read(TIMES_FILE).get(mode)
        if not times:
            raise MissingSource(f"{_shown(TIMES_FILE)} holds no {mode}-mode times yet")
        hits = [v for k, v in times.items() if k == notebook or k.startswith(notebook)]
        if len(hits) != 1:
            raise KeyError(f"{key}: {len(hits)} notebooks in {TIMES_FILE.name} match {notebook!r}")
        return hits[0]
    if head == "recipe":
        name, _, path = rest.partition(".")
        node = RECIPES[name].to_dict()
        for part in path.split("."):
            node = node[part]
        return node
    if head == "ratio" and rest == "wd.workshop.paper":
        return RECIPES["workshop"].train.weight_decay / RECIPES["paper"].train.weight_decay
    if head in ("study", "early"):
        return _study_value(rest, SUMMARY_FILE if head == "study" else EARLY_FILE)
    if head == "fast":
        return _fast_value(rest)
    if head == "surv":  # surv.<folder>.<path>: e.g. surv.study.all.difference, surv.study.all.ci95.0
        node = _read(SURVIVAL_FILE)
        for part in rest.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node
    raise KeyError(f"unknown quote key {key!r}")


def _study_value(rest: str, path: Path = SUMMARY_FILE):
    summary, note = committed_summary(path)
    if summary is None:
        raise MissingSource(note)
    what, arm, *metric = rest.split(".")
    a = summary.arms[arm]
    metric = metric[0] if metric else summary.primary
    if what == "seeds":
        return len(a.seeds)
    if what == "mean":
        return a.mean(metric)
    if what == "area":  # the inactive-vs-τ curve's area for a score (metric = silent / max / effective)
        return a.curve_area(metric)
    if what in ("renewed", "alive_end", "alive_low", "alive_high", "ratio_end"):  # survival (none: its live filters)
        r = summary.baseline_renewal if arm == summary.baseline else a.renewal
        if not r.get("filters"):
            return None
        ci, q = r.get("alive_end_ci95") or (None, None), r.get("ratio_end") or (None, None, None)
        return {"renewed": r["filters"], "alive_end": r["alive_end"], "ratio_end": q[1], "alive_low": ci[0],
                "alive_high": ci[1]}[what]
    p = a.vs_baseline[metric]
    return {"delta": p.mean_difference, "ci_low": p.ci95[0] if p.ci95 else None,
            "ci_high": p.ci95[1] if p.ci95 else None, "p": p.t_pvalue, "holm": p.holm_pvalue,
            "mde": p.mde, "power": p.power, "n": p.n, "sd": p.sd_difference}[what]


def _fast_value(rest: str):
    records, _, note = committed_records(RECIPES["fast"])
    if not records:
        raise MissingSource(note)
    what, arm = rest.split(".")
    if what == "seeds":
        return len({r["seed"] for r in records if r["arm"] == arm})
    raise KeyError(f"unknown FAST key {rest!r}")


def _sci(v: float) -> str:
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


FORMATS = {
    "pct0": lambda v: f"{100 * v:.0f}%", "pct1": lambda v: f"{100 * v:.1f}%", "pct2": lambda v: f"{100 * v:.2f}%",
    "pts": lambda v: fmt("accuracy", v, True), "pts1": lambda v: f"{100 * v:+.1f} pts", "upts": lambda v: f"{100 * v:.2f} pts", "p": lambda v: fmt("p", v), "int": lambda v: str(int(round(v))),
    "g": lambda v: f"{v:g}", "n": lambda v: f"{int(v):,}", "f0": lambda v: f"{v:.0f}", "f2": lambda v: f"{v:.2f}", "sci": _sci, "x": lambda v: f"{v:.0f}×", "s": lambda v: f"{v:.0f} s",
    "min": lambda v: f"{v / 60:.1f} min", "min0": lambda v: f"{max(1, round(v / 60)):.0f} min",
}


def quote(key: str, format: str | None = None) -> str:
    """The text a quote of ``key`` must show, in ``format``."""
    v = value_of(key)
    if format is None:
        return str(v)
    if format not in FORMATS:
        raise KeyError(f"unknown quote format {format!r}; use one of {sorted(FORMATS)}")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return FORMATS[format](v)


def find_quotes(text: str) -> list[tuple[str, str | None, str]]:
    """Every marked quote in ``text`` as (key, format, shown text)."""
    return [(m["key"], m["format"], m["text"]) for m in QUOTE.finditer(text)]


def quote_problems(text: str, where: str = "") -> list[str]:
    """The marked quotes in ``text`` that disagree with their source, or whose source is missing."""
    out = []
    for key, format, shown in find_quotes(text):
        try:
            expected = quote(key, format)
        except (MissingSource, KeyError) as err:
            out.append(f"{where}: {key}: {err}")
            continue
        if shown.strip() != expected:
            out.append(f"{where}: {key}|{format} shows {shown!r}, the committed source says {expected!r}")
    return out


def quoted_files() -> dict[str, str]:
    """Every text the quote check reads: the notebooks' Markdown cells, ``docs/*.md`` and ``README.md``."""
    texts = {}
    for nb in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts[f"notebooks/{nb.name}"] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for doc in sorted((REPO_ROOT / "docs").glob("*.md")) + [REPO_ROOT / "README.md"]:
        texts[str(doc.relative_to(REPO_ROOT))] = doc.read_text()
    return texts


def fix_quotes(text: str) -> str:
    """``text`` with every marked quote rewritten to its committed value (sources that are missing are left)."""
    def one(m):
        try:
            return f"<!--q:{m['key']}{'|' + m['format'] if m['format'] else ''}-->{quote(m['key'], m['format'])}<!--/q-->"
        except (MissingSource, KeyError):
            return m.group(0)

    return QUOTE.sub(one, text)


def fix_files() -> list[str]:
    """Rewrite the marked quotes of the notebooks and docs in place; return the files changed."""
    import nbformat

    changed = []
    for nb_path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        dirty = False
        for cell in nb.cells:
            if cell.cell_type == "markdown" and QUOTE.search(cell.source):
                fixed = fix_quotes(cell.source)
                dirty |= fixed != cell.source
                cell.source = fixed
        if dirty:
            atomic_write(nb_path, lambda tmp: nbformat.write(nb, tmp))
            changed.append(str(nb_path.relative_to(REPO_ROOT)))
    for doc in sorted((REPO_ROOT / "docs").glob("*.md")) + [REPO_ROOT / "README.md"]:
        text = doc.read_text()
        fixed = fix_quotes(text)
        if fixed != text:
            doc.write_text(fixed)
            changed.append(str(doc.relative_to(REPO_ROOT)))
    return changed


def record_cpu(notebook: str, mode: str, wall: float, cpu: float, load: tuple[float, float],
               path: Path = TIMES_FILE) -> Path:
    """Record one notebook's measured run in the committed times file.

    ``mode`` (``fast``/``full``) maps each notebook to its **CPU seconds** — of the runner and its kernel,
    one thread (``OMP_NUM_THREADS=1``): what it takes on an idle core, and the number the notebooks quote.
    The wall time and the machine's 1-minute load average before and after are kept beside it: the
    project's 2-core machine is shared, so wall times there are longer and vary with the load.
    """
    import os
    import platform

    stems = [p.stem for p in sorted((REPO_ROOT / "notebooks").glob(f"{notebook}*.ipynb"))]
    notebook = stems[0] if len(stems) == 1 else notebook  # "02" -> "02_dying_filters"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(mode, {})[notebook] = round(float(cpu), 1)
    data.setdefault("wall", {}).setdefault(mode, {})[notebook] = round(float(wall), 1)
    data.setdefault("load", {}).setdefault(mode, {})[notebook] = [round(float(x), 1) for x in load]
    data["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), OMP_NUM_THREADS=1"
    data["how"] = ("CRAFT_FAST=1|0 python -m craftlib.notebooks NAME, timed from outside: 'fast'/'full' are the CPU "
                   "seconds of the runner and its kernel (about the wall time on an idle machine); 'wall' and "
                   "'load' are what the shared machine took and how busy it was. Full-mode times of 02-05 reuse "
                   "the runs saved by the notebooks before them.")
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n"))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m craftlib.reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"recompute {REFERENCE_FILE.name} (needs LFW and MobileFaceNet)")
    ap.add_argument("--check", action="store_true", help="check every quoted number in the notebooks and docs")
    ap.add_argument("--fix", action="store_true", help="rewrite every quoted number to its committed value")
    args = ap.parse_args(argv)
    if args.write:
        print(f"wrote {write_facts()}")
    if args.fix:
        print("rewrote:", ", ".join(fix_files()) or "nothing to change")
    if args.check or not (args.write or args.fix):
        problems = [p for where, text in quoted_files().items() for p in quote_problems(text, where)]
        count = sum(len(find_quotes(t)) for t in quoted_files().values())
        print("\n".join(problems) or f"all {count} quoted numbers agree with docs/results/")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
