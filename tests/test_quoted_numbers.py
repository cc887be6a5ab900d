"""One source for every number: quoted numbers agree with docs/results/, which agrees with the code
and data.

Numbers in the notebooks' Markdown and in the docs are marked ``<!--q:KEY|FORMAT-->text<!--/q-->``
(``craftlib.workshop.quotes`` explains the keys); this test recomputes each from the committed file
it names and fails when the text differs — or when the file it needs is not committed. Then the
committed files themselves are checked: the FAST comparison against the FAST recipe,
``reference.json`` against the MobileFaceNet and LFW it was computed from, and the notebook times
against the notebooks.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from craftlib import recipes
from craftlib.study import reference
from craftlib.study.results import summarize_folders
from craftlib.workshop import quotes
from craftlib.workshop.notebooks import list_notebooks as _all_notebooks


def list_notebooks():
    """The workshop's notebooks, 00-05 (companion notebooks have their own tests)."""
    return [p for p in _all_notebooks() if p.stem[:2] in {"00", "01", "02", "03", "04", "05"}]


TEXTS = quotes.quoted_files()


@pytest.mark.parametrize("where", sorted(TEXTS))
def test_every_quoted_number_agrees_with_its_committed_source(where):
    problems = quotes.quote_problems(TEXTS[where], where)
    assert not problems, (
        "quoted numbers disagree with docs/results/ (fix the text, or run "
        "`python -m craftlib.workshop.quotes --fix` after a new result):\n" + "\n".join(problems)
    )


def test_the_notebooks_and_the_guide_quote_numbers():
    for nb in list_notebooks():
        assert quotes.find_quotes(TEXTS[f"notebooks/{nb.name}"]), (
            f"{nb.name} quotes no checked number"
        )
    assert len(quotes.find_quotes(TEXTS["docs/WORKSHOP.md"])) >= 12


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_expected_runtimes_are_quoted_from_the_measured_times(path):
    first = next(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"
    )
    runtime = first[first.index("**Expected runtime**") :]
    number = path.stem[:2]
    keys = {k for k, _, _ in quotes.find_quotes(runtime)}
    assert {f"time.full.{number}", f"time.fast.{number}"} <= keys, (
        f"{path.name}: runtimes are not quoted from docs/results/notebook_times.json"
    )


def test_a_drifted_number_is_caught():
    good = (
        "<!--q:mfn.dead-->31 / 64<!--/q--> and "
        "<!--q:recipe.workshop.train.weight_decay|sci-->1e-2<!--/q-->"
    )
    assert quotes.quote_problems(good) == []
    bad = (
        "<!--q:mfn.dead-->30 / 64<!--/q--> <!--q:mfn.largest_dead|pct1-->0.3%<!--/q--> "
        "<!--q:nope.key-->1<!--/q-->"
    )
    problems = quotes.quote_problems(bad, "x.md")
    assert (
        len(problems) == 3
        and "'30 / 64'" in problems[0]
        and "'1.2%'" in problems[1]
        and "unknown" in problems[2]
    )
    assert quotes.fix_quotes(bad).startswith(
        "<!--q:mfn.dead-->31 / 64<!--/q--> <!--q:mfn.largest_dead|pct1-->1.2%"
    )


def test_a_missing_source_is_reported_not_guessed(monkeypatch, tmp_path):
    monkeypatch.setattr(reference, "SUMMARY_FILE", tmp_path / "compare_summary.json")
    problems = quotes.quote_problems("<!--q:study.delta.contextual|pts-->+0.70 pts<!--/q-->")
    assert len(problems) == 1 and "not been committed" in problems[0]


def test_study_keys_read_the_summary_and_its_survival_table(monkeypatch, tmp_path):
    summary = summarize_folders([reference.FAST_DIR])
    for name in ("compare_summary.json", "early_summary.json"):
        (tmp_path / name).write_text(summary.to_json())
    monkeypatch.setattr(reference, "SUMMARY_FILE", tmp_path / "compare_summary.json")
    monkeypatch.setattr(reference, "EARLY_FILE", tmp_path / "early_summary.json")
    ctx = summary.arms["contextual"]
    for head in ("study", "early"):
        assert quotes.value_of(f"{head}.seeds.contextual") == len(ctx.seeds)
        assert quotes.value_of(f"{head}.sd.contextual") == ctx.vs_baseline["accuracy"].sd_difference
        assert quotes.value_of(f"{head}.area.contextual.max") == ctx.curve_area("max")
        assert quotes.value_of(f"{head}.renewed.contextual") == ctx.renewal["filters"] > 0
        assert quotes.value_of(f"{head}.alive_end.contextual") == ctx.renewal["alive_end"]
        assert quotes.value_of(f"{head}.alive_low.contextual") == ctx.renewal["alive_end_ci95"][0]
        assert quotes.value_of(f"{head}.ratio_end.contextual") == ctx.renewal["ratio_end"][1]
        assert quotes.value_of(f"{head}.alive_end.none") == summary.baseline_renewal["alive_end"]
    monkeypatch.setattr(reference, "EARLY_FILE", tmp_path / "missing.json")
    assert (
        "not been committed"
        in quotes.quote_problems("<!--q:early.alive_end.none|pct0-->9%<!--/q-->")[0]
    )


def test_formats():
    f = quotes.FORMATS
    assert (
        f["pct0"](0.484),
        f["pct1"](0.01176),
        f["pct2"](0.602),
        f["sci"](0.01),
        f["sci"](5e-4),
        f["x"](20.0),
        f["s"](61.6),
        f["min"](161.0),
        f["min0"](20),
    ) == ("48%", "1.2%", "60.20%", "1e-2", "5e-4", "20×", "62 s", "2.7 min", "1 min")
    assert f["pts"](0.007) == "+0.70 pts" and f["p"](0.0002) == "< 0.001"
    assert f["upts"](0.0115) == "1.15 pts" and f["f2"](3.9249) == "3.92"


def test_checkpoints_print_a_mark_and_return_it(monkeypatch, tmp_path):
    lines = []
    assert (
        reference.expect(True, "two ways agree", "max difference 0.0e+00", log=lines.append) is True
    )
    assert reference.expect(False, "two ways agree", log=lines.append) is False
    assert lines == [
        "✓ you should see: two ways agree; yours: max difference 0.0e+00",
        "✗ you should see: two ways agree",
    ]
    monkeypatch.setattr(reference, "RESULTS_DIR", tmp_path)  # nothing committed: no range, no guess
    lines.clear()
    assert reference.you_should_see("accuracy", 0.6, recipes.FAST, log=lines.append) is None
    assert lines[0].startswith("– you should see:") and "nothing to check against" in lines[0]


def test_the_fast_range_accepts_its_own_seeds_and_rejects_chance():
    records, _, _ = reference.committed_records(recipes.FAST)
    values = [r["accuracy"] for r in records if r["arm"] == "none"]
    expected, note = reference.expected_range("accuracy", recipes.FAST, "none")
    assert expected is not None, note
    assert all(v in expected for v in values) and 0.5 - 0.05 not in expected
    silent = [0.0, 0.0, 0.5, 0.9]
    mask, note = reference.work_mask(silent, 0.3, recipes.FAST, k=1)
    assert mask.tolist() == [True, True, False, False] and note == ""
    mask, note = reference.work_mask([0.5, 0.4, 0.9], 0.3, recipes.FAST, k=1)
    assert mask.tolist() == [False, True, False] and "quietest" in note
    assert reference.work_mask([0.5, 0.4], 0.3, recipes.WORKSHOP)[0].tolist() == [False, False]


# ---------------------------------------------------------------------------------------------
# the committed sources themselves


def test_the_fast_comparison_was_made_with_todays_fast_recipe():
    records, folder, note = reference.committed_records(recipes.FAST)
    assert records, (
        f"docs/results/fast does not match recipes.FAST ({note}): regenerate it with "
        "`python -m craftlib compare --recipe fast --seeds 8 --out docs/results/fast`"
    )
    seeds = {r["seed"] for r in records}
    assert 0 in seeds and len(seeds) >= 5, (
        "the notebooks run seed 0: the FAST reference must include it"
    )
    assert {r["arm"] for r in records} == set(recipes.DEFAULT_ARMS)


def test_each_recipe_reads_its_own_study_not_a_companion_that_reuses_the_recipe():
    """The sparsity companion reuses the workshop recipe with its own arms (CReLU, Top-K): the
    notebooks' checks and MDE must still read the 30-seed study."""
    expected = [
        (recipes.WORKSHOP, "study"),
        (recipes.WORKSHOP_EARLY, "study-early"),
        (recipes.FAST, "fast"),
    ]
    for recipe, name in expected:
        records, folder, note = reference.committed_records(recipe)
        assert folder is not None and folder.name == name, (recipe.name, folder, note)
        assert set(recipes.DEFAULT_ARMS) <= {r["arm"] for r in records}
    sd, source = reference.paired_sd(recipes.WORKSHOP)
    assert "30 committed seeds" in source and "study" in source


def test_notebook_times_cover_every_notebook_in_both_modes():
    times = json.loads(reference.TIMES_FILE.read_text())
    for mode in ("fast", "full"):
        missing = {p.stem for p in list_notebooks()} - set(times.get(mode, {}))
        assert not missing, (
            f"{mode}-mode times missing for {sorted(missing)}: measure them (PERFORMANCE.md says "
            f"how)"
        )
        assert all(v > 0 for v in times[mode].values())
        assert set(times["wall"][mode]) == set(times[mode]) == set(times["load"][mode])


@pytest.mark.slow
def test_reference_json_is_what_the_model_and_data_give(lfw_root, monkeypatch):
    monkeypatch.setenv("CRAFTLIB_DATA", str(lfw_root))
    committed = json.loads(reference.REFERENCE_FILE.read_text())
    fresh = reference.compute_facts()
    assert fresh["mobilefacenet"] == pytest.approx(committed["mobilefacenet"])
    assert fresh["pixels"] == pytest.approx(committed["pixels"])


# ---------------------------------------------------------------------------------------------
# the instructor guide's cell references


GUIDE = (reference.REPO_ROOT / "docs" / "WORKSHOP.md").read_text()
CELL_REF = re.compile(r"`(\d\d):([A-Za-z0-9_-]+)`")


def test_every_cell_reference_in_the_guide_resolves():
    notebooks = {p.stem[:2]: nbformat.read(p, as_version=4) for p in list_notebooks()}
    refs = CELL_REF.findall(GUIDE)
    assert len(refs) >= 15, "the guide should point at cells, to the cell"
    missing = [f"{nb}:{cid}" for nb, cid in refs if cid not in {c.id for c in notebooks[nb].cells}]
    assert not missing, f"docs/WORKSHOP.md points at cells that do not exist: {missing}"


def test_the_guide_has_minutes_and_answer_notes_for_every_notebook():
    table = [line for line in GUIDE.splitlines() if re.match(r"\| `0\d_", line)]
    assert len(table) == len(list_notebooks()) and all(
        re.search(r"\| \d+ min \| \d+ min \|", line) for line in table
    )
    discussions = GUIDE.count("*Discussion:")
    # plus the companion question
    assert discussions >= 6 and GUIDE.count("Answer notes") >= discussions + 1
    for topic in ("Small weights = dead", "model not found", "re-run the cell", "Prerequisites"):
        assert topic.lower() in GUIDE.lower(), topic


def test_results_md_early_tables_are_the_committed_early_summary():
    """The workshop-early tables in docs/RESULTS.md are the renderers' output on early_summary.json,
    10 seeds per arm."""
    from craftlib.study.results import curve_markdown, render_markdown, survival_markdown

    summary, note = reference.committed_summary(reference.EARLY_FILE)
    assert summary is not None, note
    assert all(a.seeds == list(range(10)) for a in summary.arms.values()), (
        "STUDY.md fixes seeds 0-9"
    )
    text = (reference.REPO_ROOT / "docs" / "RESULTS.md").read_text()
    section = text[
        text.index("### Where dying again is possible") : text.index("## Companion: CReLU stem")
    ]
    tables = [render_markdown(summary, m) for m in ("accuracy", "silent_fraction")]
    for table in tables + [curve_markdown(summary), survival_markdown(summary)]:
        assert table in section, f"regenerate with `make study-report` and paste:\n{table}"


def test_results_md_tables_are_the_committed_summary():
    """The study's tables in docs/RESULTS.md are the renderers' output on compare_summary.json,
    digit for digit."""
    from craftlib.study.results import curve_markdown, render_markdown, survival_markdown

    summary, note = reference.committed_summary()
    assert summary is not None, note
    assert all(len(a.seeds) >= 30 for a in summary.arms.values()), "the protocol fixes n = 30"
    text = (reference.REPO_ROOT / "docs" / "RESULTS.md").read_text()
    tables = [
        render_markdown(summary, m) for m in ("accuracy", "silent_fraction", "weight_fraction")
    ]
    for table in tables + [curve_markdown(summary), survival_markdown(summary)]:
        assert table in text, f"regenerate with `make study-report` and paste:\n{table}"
