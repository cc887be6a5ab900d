"""Quoted numbers: every number a notebook's Markdown or a doc quotes is marked where it stands,
``<!--q:KEY|FORMAT-->31 / 64<!--/q-->`` (HTML comments, invisible when rendered), and computed here
from the committed sources that ``craftlib.study.reference`` reads. ``tests/test_quoted_numbers.py``
fails when a marked text differs from ``quote(KEY, FORMAT)``; ``python -m craftlib.workshop.quotes
--fix`` rewrites them all.

Keys: ``mfn.*``, ``pixels.*``, ``lfw.*`` and ``model.*`` (``reference.json``), ``time.fast.NB`` /
``time.full.NB`` (seconds), ``recipe.NAME.a.b`` (a field of a recipe), ``study.*`` (the summary;
``early.*`` the same keys for the ``workshop-early`` summary; ``study.delta.A/B``: arm A − arm B
by seed), ``fast.*`` (the FAST comparison),
``surv.*`` (stratified survival) and ``dose.*`` (the dose–response summary).
Formats: ``pct0``/``pct1``/ ``pct2`` (42% / 42.2% / 42.19%), ``pts`` (signed points,
``results.fmt``), ``upts`` (unsigned points: an sd or MDE), ``f2`` (two decimals), ``p`` (a p-value,
``results.fmt``), ``int``, ``n`` (1,262), ``f0``, ``g``, ``sci`` (1e-2), ``x`` (20×), ``s`` (62 s),
``min`` (2.7 min), ``min0`` (3 min); no format: the value as text.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from craftlib.paths import REPO_ROOT, atomic_write
from craftlib.recipes import RECIPES
from craftlib.study import reference
from craftlib.study.reference import (
    FACTS,
    MissingSource,
    committed_records,
    committed_summary,
    fact,
    read_source,
    source_name,
)
from craftlib.study.results import between, fmt

QUOTE = re.compile(
    r"(?<!`)<!--q:(?P<key>[\w.@\-/=]+)(?:\|(?P<format>\w+))?-->(?P<text>.*?)<!--/q-->", re.S
)


def value_of(key: str):
    """The raw value behind a quote key, from its committed source (``MissingSource`` if not
    committed)."""
    head, _, rest = key.partition(".")
    if head in FACTS:
        return fact(key)
    if head == "time":
        mode, _, notebook = rest.partition(".")
        times = read_source(reference.TIMES_FILE).get(mode)
        if not times:
            raise MissingSource(
                f"{source_name(reference.TIMES_FILE)} holds no {mode}-mode times yet"
            )
        hits = [v for k, v in times.items() if k == notebook or k.startswith(notebook)]
        if len(hits) != 1:
            raise KeyError(
                f"{key}: {len(hits)} notebooks in {reference.TIMES_FILE.name} match {notebook!r}"
            )
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
        return _study_value(
            rest, reference.SUMMARY_FILE if head == "study" else reference.EARLY_FILE
        )
    if head == "fast":
        return _fast_value(rest)
    # surv.<folder>.<path>: e.g. surv.study.all.difference, surv.study.all.ci95.0
    if head == "surv":
        return _walk(read_source(reference.SURVIVAL_FILE), rest.split("."))
    # dose.rows.<level>.<arm>.<baseline>.<path> (one row of the dose summary),
    # dose.slope.<arm>.<baseline>.<path> (one comparison's slope) or dose.<path>:
    # e.g. dose.rows.wd2e-2.contextual.none.accuracy.mean, dose.slope.contextual.none.ci95.1
    if head == "dose":
        try:
            return _dose_value(rest)
        except (StopIteration, TypeError, ValueError, IndexError, KeyError) as e:
            raise KeyError(f"unknown quote key {key!r}") from e
    raise KeyError(f"unknown quote key {key!r}")


def _dose_value(rest: str):
    """``rows.<level>.<arm>.<baseline>.<path>``, ``slope.<arm>.<baseline>.<path>``,
    ``second.<level>.<path>`` (another input size read against the primary line) or ``<path>`` in
    the dose summary."""
    from craftlib.study.dose_report import comparison_name

    node, parts = read_source(reference.DOSE_FILE), rest.split(".")
    if parts[0] == "rows":
        level, arm, baseline, *parts = parts[1:]
        node = next(
            r
            for r in node["rows"]
            if (r["level"], r["arm"], r["baseline"]) == (level, arm, baseline)
        )
    elif parts[0] == "slope":
        arm, baseline, *parts = parts[1:]
        node = node["slopes"][comparison_name(arm, baseline)]
    elif parts[0] == "second":
        level, *parts = parts[1:]
        node = next(r for r in node["second_size"] if r["level"] == level)
    return _walk(node, parts)


def _walk(node, parts: list[str]):
    """Down a committed JSON by a key's parts: list indices, and dict keys that may hold dots
    themselves ("tar@far=0.01": the longest key that exists wins)."""
    while parts:
        if isinstance(node, list):
            node, parts = node[int(parts[0])], parts[1:]
            continue
        n = next((n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in node), 1)
        node, parts = node[".".join(parts[:n])], parts[n:]
    return node


def _study_value(rest: str, path: Path):
    summary, note = committed_summary(path)
    if summary is None:
        raise MissingSource(note)
    what, arm, *metric = rest.split(".")
    arm, _, other = arm.partition("/")  # "contextual/random_matched": one arm against another
    other = other or None
    a = summary.arms[arm]
    metric = metric[0] if metric else summary.primary
    if what == "seeds":
        return len(a.seeds)
    if what == "mean":
        return a.mean(metric)
    # the inactive-vs-τ curve's area for a score (metric = silent / max / effective)
    if what == "area":
        return a.curve_area(metric)
    if what in (
        "renewed",
        "alive_end",
        "alive_low",
        "alive_high",
        "ratio_end",
    ):  # survival (none: its live filters)
        r = summary.baseline_renewal if arm == summary.baseline else a.renewal
        if not r.get("filters"):
            return None
        ci, q = r.get("alive_end_ci95") or (None, None), r.get("ratio_end") or (None, None, None)
        return {
            "renewed": r["filters"],
            "alive_end": r["alive_end"],
            "ratio_end": q[1],
            "alive_low": ci[0],
            "alive_high": ci[1],
        }[what]
    p = a.vs_baseline[metric] if other is None else between(summary, metric, arm, other)
    return {
        "delta": p.mean_difference,
        "ci_low": p.ci95[0] if p.ci95 else None,
        "ci_high": p.ci95[1] if p.ci95 else None,
        "p": p.t_pvalue,
        "holm": p.holm_pvalue,
        "mde": p.mde,
        "power": p.power,
        "n": p.n,
        "sd": p.sd_difference,
    }[what]


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
    "pct0": lambda v: f"{100 * v:.0f}%",
    "pct1": lambda v: f"{100 * v:.1f}%",
    "pct2": lambda v: f"{100 * v:.2f}%",
    "pts": lambda v: fmt("accuracy", v, True),
    "pts1": lambda v: f"{100 * v:+.1f} pts",
    "upts": lambda v: f"{100 * v:.2f} pts",
    "p": lambda v: fmt("p", v),
    "int": lambda v: str(int(round(v))),
    "g": lambda v: f"{v:g}",
    "n": lambda v: f"{int(v):,}",
    "f0": lambda v: f"{v:.0f}",
    "f2": lambda v: f"{v:.2f}",
    "sci": _sci,
    "x": lambda v: f"{v:.0f}×",
    "s": lambda v: f"{v:.0f} s",
    "min": lambda v: f"{v / 60:.1f} min",
    "min0": lambda v: f"{max(1, round(v / 60)):.0f} min",
    "band": lambda v: "inside" if v else "outside",  # a level against the dose study's line
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
            out.append(
                f"{where}: {key}|{format} shows {shown!r}, the committed source says {expected!r}"
            )
    return out


def quoted_files() -> dict[str, str]:
    """Every text the quote check reads: the notebooks' Markdown cells, ``docs/*.md`` and
    ``README.md``."""
    texts = {}
    for nb in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts[f"notebooks/{nb.name}"] = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
        )
    for doc in sorted((REPO_ROOT / "docs").glob("*.md")) + [REPO_ROOT / "README.md"]:
        texts[str(doc.relative_to(REPO_ROOT))] = doc.read_text()
    return texts


def fix_quotes(text: str) -> str:
    """``text`` with every marked quote rewritten to its committed value (sources that are missing
    are left)."""

    def one(m):
        try:
            mark = m["key"] + ("|" + m["format"] if m["format"] else "")
            return f"<!--q:{mark}-->{quote(m['key'], m['format'])}<!--/q-->"
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


def record_cpu(
    notebook: str,
    mode: str,
    wall: float,
    cpu: float,
    load: tuple[float, float],
    path: Path | None = None,
) -> Path:
    """Record one notebook's measured run in the committed times file.

    ``mode`` (``fast``/``full``) maps each notebook to its **CPU seconds** — of the runner and its
    kernel, one thread (``OMP_NUM_THREADS=1``): what it takes on an idle core, and the number the
    notebooks quote. The wall time and the machine's 1-minute load average before and after are kept
    beside it: the project's 2-core machine is shared, so wall times there are longer and vary with
    the load.
    """
    import os
    import platform

    path = path or reference.TIMES_FILE
    stems = [p.stem for p in sorted((REPO_ROOT / "notebooks").glob(f"{notebook}*.ipynb"))]
    notebook = stems[0] if len(stems) == 1 else notebook  # "02" -> "02_dying_filters"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(mode, {})[notebook] = round(float(cpu), 1)
    data.setdefault("wall", {}).setdefault(mode, {})[notebook] = round(float(wall), 1)
    data.setdefault("load", {}).setdefault(mode, {})[notebook] = [round(float(x), 1) for x in load]
    data["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), OMP_NUM_THREADS=1"
    )
    data["how"] = (
        "CRAFT_FAST=1|0 python -m craftlib.workshop.notebooks NAME, timed from outside: "
        "'fast'/'full' are the CPU "
        "seconds of the runner and its kernel (about the wall time on an idle machine); 'wall' and "
        "'load' are what the shared machine took and how busy it was. Full-mode times of 02-05 "
        "reuse "
        "the runs saved by the notebooks before them."
    )
    return atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m craftlib.workshop.quotes", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--write",
        action="store_true",
        help=f"recompute {reference.REFERENCE_FILE.name} (needs LFW and MobileFaceNet)",
    )
    ap.add_argument(
        "--check", action="store_true", help="check every quoted number in the notebooks and docs"
    )
    ap.add_argument(
        "--fix", action="store_true", help="rewrite every quoted number to its committed value"
    )
    args = ap.parse_args(argv)
    if args.write:
        print(f"wrote {reference.write_facts()}")
    if args.fix:
        print("rewrote:", ", ".join(fix_files()) or "nothing to change")
    if args.check or not (args.write or args.fix):
        problems = [
            p for where, text in quoted_files().items() for p in quote_problems(text, where)
        ]
        count = sum(len(find_quotes(t)) for t in quoted_files().values())
        print("\n".join(problems) or f"all {count} quoted numbers agree with docs/results/")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
