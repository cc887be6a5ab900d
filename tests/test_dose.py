"""The dose–response study: its levels, its seed-major schedule, and its analysis on planted
records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from craftlib import pages
from craftlib.recipes import WORKSHOP
from craftlib.study import dose, dose_cli, dose_report
from craftlib.study.experiments import write_record


def test_levels_change_only_the_dose():
    for level, (wd, size) in dose.LEVELS.items():
        r = dose.recipe(level)
        assert r.train.weight_decay == wd and r.train.model.input_size == size
        assert (
            r.train.but(weight_decay=WORKSHOP.train.weight_decay, model__input_size=40)
            == WORKSHOP.train
        )
        assert r.craft == WORKSHOP.craft
    with pytest.raises(ValueError, match="level must be one of"):
        dose.recipe("wd9")


def test_tasks_are_seed_major_and_skip_recorded(tmp_path, make_record):
    levels = ["wd5e-4", "wd1e-2"]
    todo = dose.tasks(tmp_path, [0, 1], levels, ("none", "contextual"))
    assert todo[:6] == [
        ("wd5e-4", 0, "none"),
        ("wd1e-2", 0, "none"),
        ("wd5e-4", 1, "none"),
        ("wd1e-2", 1, "none"),
        ("wd5e-4", 0, "contextual"),
        ("wd1e-2", 0, "contextual"),
    ]
    write_record(tmp_path / "wd1e-2", make_record("none", 0, 0.8), {})
    assert ("wd1e-2", 0, "none") not in dose.tasks(tmp_path, [0, 1], levels, ("none", "contextual"))
    assert len(dose.tasks(tmp_path, [0, 1], levels, ("none", "contextual"))) == 7


def _plant(root, make_record, level, seeds, silent_none, gain, rng):
    """A level whose CRAFT gain is ``gain`` (plus noise) and whose standard training ends
    ``silent_none`` silent."""
    for s in seeds:
        base = 0.80 + rng.normal(0, 0.005)
        for arm, acc, silent in (
            ("none", base, silent_none),
            ("contextual", base + gain + rng.normal(0, 0.002), 0.02),
            ("random_matched", base + rng.normal(0, 0.002), 0.03),
        ):
            write_record(root / level, make_record(arm, s, acc, silent=silent), {})


def test_slope_recovers_a_planted_dose_response(tmp_path, make_record):
    """Gain = 4 pts per 100 pts of silent (plus noise): the slope's CI covers 4 and excludes 0; the
    random arm, with no gain, has a slope CI around 0; the verdict reads growth."""
    rng = np.random.default_rng(0)
    for level, silent in (
        ("wd5e-4", 0.0),
        ("wd2e-3", 0.1),
        ("wd5e-3", 0.3),
        ("wd1e-2", 0.5),
        ("wd2e-2", 0.8),
    ):
        _plant(tmp_path, make_record, level, range(6), silent, 0.04 * silent, rng)
    s = dose_report.summarize(tmp_path, pair_boot=0, slope_boot=500)
    craft = s["slopes"]["contextual"]
    assert craft["n"] == 30 and craft["ci95"][0] < 0.04 < craft["ci95"][1] and craft["ci95"][0] > 0
    rand = s["slopes"]["random_matched"]
    assert rand["ci95"][0] < 0 < rand["ci95"][1]
    # the declared secondary: CRAFT against the random control, dosed by standard training's death
    context = s["slopes"]["contextual vs random_matched"]
    assert context["n"] == 30 and 0 < context["ci95"][0] < 0.04 < context["ci95"][1]
    versus = dose_report.markdown(s, "contextual", "random_matched")
    assert "accuracy, random_matched" in versus and "`wd2e-2`" in versus
    assert s["verdict"] == "the benefit grows with death"
    deadliest = [r for r in s["rows"] if r["level"] == "wd2e-2" and r["arm"] == "contextual"][0]
    assert deadliest["accuracy"]["mean"] == pytest.approx(0.032, abs=0.003)
    assert deadliest["accuracy"]["holm_pvalue"] >= deadliest["accuracy"]["t_pvalue"]
    table = dose_report.markdown(s)
    assert "`wd2e-2`" in table and "Slope of Δ accuracy" in table
    assert "seeds × pairs" not in table  # no pair resampling here: no empty interval columns


def _primary_line(root, make_record, rng):
    for level, silent in (("wd5e-4", 0.0), ("wd5e-3", 0.3), ("wd1e-2", 0.5), ("wd2e-2", 0.8)):
        _plant(root, make_record, level, range(8), silent, 0.04 * silent, rng)


def test_the_second_size_is_read_against_the_primary_line(tmp_path, make_record):
    """A 64-px level whose gain is the planted 40-px line's falls inside its band, and a level with
    one seed pair has no reading; a level far off the line falls outside, and our combined
    interval says so too, while a noisy level on the line is not resolved off it."""
    rng = np.random.default_rng(5)
    on_the_line = type("Quiet", (), {"normal": lambda self, *a: 0.0})()  # no noise: Δ = the line
    _primary_line(tmp_path / "a", make_record, rng)
    _plant(tmp_path / "a", make_record, "wd1e-2-64px", range(8), 0.4, 0.04 * 0.4, on_the_line)
    _plant(tmp_path / "a", make_record, "wd5e-3-64px", range(1), 0.3, 0.012, rng)
    s = dose_report.summarize(tmp_path / "a", pair_boot=0, slope_boot=500)
    read = {r["level"]: r for r in s["second_size"]}
    assert read["wd1e-2-64px"]["inside"] is True
    assert read["wd1e-2-64px"]["predicted"] == pytest.approx(0.016, abs=0.004)
    assert read["wd5e-3-64px"]["seeds"] == 1 and read["wd5e-3-64px"]["inside"] is None
    assert "other input sizes" not in dose_report.report_markdown(s, size=40)

    _primary_line(tmp_path / "b", make_record, rng)
    _plant(tmp_path / "b", make_record, "wd1e-2-64px", range(8), 0.4, 0.04 * 0.4, rng)
    _plant(tmp_path / "b", make_record, "wd5e-3-64px", range(8), 0.3, 0.08, rng)
    s = dose_report.summarize(tmp_path / "b", pair_boot=0, slope_boot=500)
    read = {r["level"]: r for r in s["second_size"]}
    lo, hi = read["wd1e-2-64px"]["off_line_ci95"]
    assert lo < 0 < hi
    assert read["wd5e-3-64px"]["inside"] is False and read["wd5e-3-64px"]["off_line_ci95"][0] > 0
    text = dose_report.report_markdown(s)
    assert "`wd5e-3-64px` | 8 |" in text and "**no**" in text


def test_the_report_rewrites_only_the_results_pages_generated_blocks(tmp_path, make_record, capsys):
    rng = np.random.default_rng(2)
    _primary_line(tmp_path / "r", make_record, rng)
    _plant(tmp_path / "r", make_record, "wd1e-2-64px", range(3), 0.4, 0.016, rng)
    s = dose_report.summarize(tmp_path / "r", pair_boot=0, slope_boot=200)
    page = tmp_path / "RESULTS.md"
    lines = ["Intro: the `<!-- dose:table -->` block below is generated."]  # a marker in prose
    lines += ["<!-- dose:table -->", "old", "<!-- /dose:table -->", "Between."]
    lines += ["<!-- dose:second -->", "<!-- /dose:second -->", "End.\n"]  # an empty block
    page.write_text("\n".join(lines))
    assert pages.update(page, dose_report.results_blocks(s)) == ["dose:table", "dose:second"]
    blocks = dose_report.results_blocks(s)
    assert page.read_text() == "\n".join(
        [lines[0], "<!-- dose:table -->", blocks["dose:table"], "<!-- /dose:table -->", "Between."]
        + ["<!-- dose:second -->", blocks["dose:second"], "<!-- /dose:second -->", "End.\n"]
    )
    stamp = page.stat().st_mtime_ns
    # already current: nothing to reread ...
    assert pages.update(page, dose_report.results_blocks(s)) == []
    assert page.stat().st_mtime_ns == stamp  # ... and the page is left alone
    twice = page.read_text() + "<!-- dose:second -->\nx\n<!-- /dose:second -->\n"
    for broken in (page.read_text().replace("<!-- /dose:second -->", ""), twice):
        page.write_text(broken)
        with pytest.raises(ValueError, match="one <!-- dose:second -->"):
            pages.update(page, dose_report.results_blocks(s))
    with pytest.raises(SystemExit) as stop:  # a page is rewritten only from a fresh report
        dose_cli.main(["--root", str(tmp_path / "r"), "--results", str(page)])
    assert stop.value.code == 2 and "goes with --report" in capsys.readouterr().err


def test_no_gain_reads_no_dose_response(tmp_path, make_record):
    rng = np.random.default_rng(1)
    for level, silent in (("wd5e-4", 0.0), ("wd5e-3", 0.3), ("wd2e-2", 0.8)):
        _plant(tmp_path, make_record, level, range(10), silent, 0.0, rng)
    s = dose_report.summarize(tmp_path, pair_boot=0, slope_boot=500)
    assert s["verdict"].startswith("no dose–response resolved")


def test_two_level_ci_is_wider_than_zero_and_centred_on_a_planted_gap():
    """Arm a's scores separate the pairs better than b's by construction: the interval is above
    zero; with identical scores the interval is exactly [0, 0] (the same resample serves both
    arms)."""
    rng = np.random.default_rng(0)
    n = 400
    same = np.tile([True, False], n // 2)
    folds = np.repeat(np.arange(10), n // 10)
    clusters = np.repeat(np.arange(n // 4), 4)
    a = {s: (same * 1.0 + rng.normal(0, 0.5, n)).tolist() for s in range(4)}
    b = {s: (same * 1.0 + rng.normal(0, 1.5, n)).tolist() for s in range(4)}
    lo, hi = dose_report.two_level_ci(a, b, same, folds, clusters, boot=200)
    assert 0 < lo < hi
    assert dose_report.two_level_ci(a, a, same, folds, clusters, boot=50) == [0.0, 0.0]


def test_two_level_ci_refuses_a_design_too_small_to_resample():
    """Two clusters, one per label: a resample that draws one of them twice leaves every fold's
    training part with one label, so no threshold and no accuracy — a clear error, not a NaN
    interval."""
    same = np.array([True] * 10 + [False] * 10)
    folds = np.tile(np.arange(10), 2)
    clusters = same.astype(int)
    a = {s: (same + 0.1 * s).tolist() for s in range(3)}
    with pytest.raises(ValueError, match="2 clusters are too few"):
        dose_report.two_level_ci(a, a, same, folds, clusters, boot=50)


def _design(n=400):
    same = np.tile([True, False], n // 2)
    return same, np.repeat(np.arange(10), n // 10), np.repeat(np.arange(n // 4), 4)


def _seed_t_width(a, b, same, folds):
    """The width of the seeds' t-interval of Δ on the fixed pair list."""
    from scipy import stats

    whole = np.ones((1, len(same)), dtype=np.int32)
    d = [
        (
            dose_report.cv_accuracy(np.array(a[s]), same, folds, whole)
            - dose_report.cv_accuracy(np.array(b[s]), same, folds, whole)
        )[0]
        for s in a
    ]
    return 2 * stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))


def test_the_crossed_interval_keeps_the_test_sets_own_error():
    """Ten seeds with the very same scores: all of the test set's error is shared. Drawing a pair
    resample per seed averages it over ten copies (nested, the declared interval); the crossed
    interval keeps it whole — about √10 wider."""
    rng = np.random.default_rng(1)
    same, folds, clusters = _design()
    one_a, one_b = same + rng.normal(0, 0.8, 400), same + rng.normal(0, 0.8, 400)
    a = {s: one_a.tolist() for s in range(10)}
    b = {s: one_b.tolist() for s in range(10)}
    nested = dose_report.two_level_ci(a, b, same, folds, clusters, boot=300)
    crossed = dose_report.crossed_ci(a, b, same, folds, clusters, boot=300)
    assert crossed["seed_se"] == 0 and crossed["shared_se"] > 0
    assert np.diff(crossed["ci95"])[0] > 2 * np.diff(nested)[0]


def test_the_crossed_interval_does_not_count_a_seeds_own_pair_noise_twice():
    """Each seed draws its own noise on every pair and nothing is shared: which pairs a seed flips
    is all of the seeds' spread, so the crossed interval is the seed interval (the shared part
    estimates near 0), where resampling seeds and pairs at once would be about √2 wider. With a
    planted shared part — one set of pair effects that favours arm a on every seed — it widens."""
    rng = np.random.default_rng(2)
    same, folds, clusters = _design()
    a = {s: (same + rng.normal(0, 0.8, 400)).tolist() for s in range(10)}
    b = {s: (same + rng.normal(0, 0.8, 400)).tolist() for s in range(10)}
    own = dose_report.crossed_ci(a, b, same, folds, clusters, boot=400)
    seed_only = _seed_t_width(a, b, same, folds)
    assert np.diff(own["ci95"])[0] < 1.1 * seed_only
    assert own["shared_se"] < own["seed_se"] / 2
    tilt = rng.normal(0, 1.0, 400)  # the same pair effects for every seed of arm a
    shared = {s: (np.array(v) + tilt).tolist() for s, v in a.items()}
    more = dose_report.crossed_ci(shared, b, same, folds, clusters, boot=400)
    assert more["shared_se"] > own["shared_se"]
    assert np.diff(more["ci95"])[0] > 1.3 * _seed_t_width(shared, b, same, folds)


def test_pairs_linked_by_any_person_share_a_cluster():
    """People are nodes, pairs edges: a chain a-b, b-c is one cluster even though its pairs' first
    people differ; a one-person pair joins its person's cluster."""
    left = np.array(["a", "b", "d", "e", "c", "f"])
    right = np.array(["b", "c", "d", "f", "c", "g"])
    labels = dose_report.people_clusters(left, right)
    same = labels[:, None] == labels[None, :]
    assert same.tolist() == [
        [i in (0, 1, 4) and j in (0, 1, 4) or i == j or {i, j} == {3, 5} for j in range(6)]
        for i in range(6)
    ]


def test_linked_pairs_widen_the_interval_when_the_second_person_carries_the_gap():
    """Planted: every mismatched pair has its own first person, and its second person is one of
    ten; arm a beats b on the pairs of five of those ten and loses on the other five's. Clustered
    by the first person only, those 200 pairs look independent; clustered by the people that link
    them, the ten draw as the units they are, and the interval widens."""
    rng = np.random.default_rng(3)
    n = 400
    same = np.tile([True, False], n // 2)
    folds = np.repeat(np.arange(10), n // 10)
    first = np.arange(n)  # every pair its own first person
    second = np.where(same, first, n + np.arange(n) // 2 % 10)  # ten second persons, 20 pairs each
    helped = same | (second % 2 == 0)  # a is right where b errs, on five persons' pairs ...
    base = same + rng.normal(0, 0.3, n)
    a_scores = np.where(helped, base, base + 0.9 * ~same)  # ... and wrong on the other five's
    b_scores = np.where(helped, base + 0.9 * ~same, base)
    a = {s: a_scores.tolist() for s in range(3)}
    b = {s: b_scores.tolist() for s in range(3)}
    one = dose_report.crossed_ci(a, b, same, folds, first, boot=300)["ci95"]
    linked = dose_report.people_clusters(first, second)
    both = dose_report.crossed_ci(a, b, same, folds, linked, boot=300)["ci95"]
    assert np.diff(both)[0] > 2 * np.diff(one)[0]


def _one_resample(scores, same, folds):
    """The protocol written out for one resampled pair list: the reference for ``cv_accuracy``."""
    from craftlib.verification import best_threshold

    accs = []
    for k in np.unique(folds):
        test = folds == k
        if test.any() and same[~test].any() and (~same[~test]).any():
            t = best_threshold(scores[~test], same[~test])
            accs.append(np.mean((scores[test] > t) == same[test]))
    return float(np.mean(accs)) if accs else float("nan")


def test_cv_accuracy_matches_the_protocol():
    from craftlib.verification import evaluate_scores

    rng = np.random.default_rng(3)
    same = rng.random(300) < 0.5
    scores = same + rng.normal(0, 1, 300)
    folds = np.repeat(np.arange(10), 30)
    once = np.ones((1, 300), dtype=np.int32)
    assert dose_report.cv_accuracy(scores, same, folds, once)[0] == pytest.approx(
        evaluate_scores(scores, same, folds)["accuracy"]
    )


@pytest.mark.parametrize(
    "n, share_same, draw",
    [
        (200, 0.5, 1.0),  # ties, pairs drawn twice
        (60, 0.9, 0.6),  # nearly all genuine: the best cut is often below every score
        (60, 0.1, 0.6),  # nearly all impostors: often above every score
        (30, 0.2, 0.3),  # sparse draws: training parts with one label only, folds left out
    ],
)
def test_cv_accuracy_of_many_resamples_equals_each_resample_evaluated_alone(n, share_same, draw):
    """Bit for bit, with tied scores, pairs drawn twice, folds left empty by the draw, and the cuts
    below and above every score."""
    from craftlib.verification import best_threshold

    rng = np.random.default_rng(4)
    same = rng.random(n) < share_same
    scores = np.round(same + rng.normal(0, 1, n), 1)  # rounding makes ties
    folds = np.repeat(np.arange(10), n // 10)
    counts = rng.poisson(draw, (60, n)).astype(np.int32)
    counts[:5, folds == 3] = 0  # a fold with no test pairs in five resamples
    got = dose_report.cv_accuracy(scores, same, folds, counts)
    edges = set()
    for row, value in zip(counts, got):
        idx = np.repeat(np.arange(n), row)
        reference = _one_resample(scores[idx], same[idx], folds[idx])  # nan: every fold left out
        assert value == reference or (np.isnan(value) and np.isnan(reference))
        train = idx[folds[idx] != 0]
        if same[train].any() and (~same[train]).any():
            t = best_threshold(scores[train], same[train])
            edges.add(
                "below" if t < scores[train].min() else "above" if t > scores[train].max() else ""
            )
    if share_same != 0.5:
        assert edges & {"below", "above"}, "the case meant to reach an edge cut reached none"


def test_report_writes_table_json_and_figure(tmp_path, make_record):
    rng = np.random.default_rng(2)
    for level, silent in (("wd5e-4", 0.0), ("wd1e-2", 0.4), ("wd1e-2-64px", 0.3)):
        _plant(tmp_path, make_record, level, range(3), silent, 0.0, rng)
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- dose:table -->\n<!-- /dose:table -->\n<!-- dose:second -->\n<!-- /dose:second -->\n"
    )
    text = dose_report.write_report(tmp_path, log=lambda *_: None, results=page)
    assert (tmp_path / "dose.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "summary.json").read_text())
    # the page was written from this summary
    assert pages.update(page, dose_report.results_blocks(saved)) == []
    assert saved["verdict"] in text and {r["level"] for r in saved["rows"]} == {
        "wd5e-4",
        "wd1e-2",
        "wd1e-2-64px",
    }
    assert saved["slopes"]["contextual"]["n"] == 6  # the 64-px level does not enter the slope


def test_a_study_under_way_reads_and_draws(tmp_path, make_record):
    """Only standard training recorded yet (the pilot): the table, verdict and figure still
    render."""
    write_record(tmp_path / "wd5e-4", make_record("none", 0, 0.81, silent=0.0), {})
    write_record(tmp_path / "wd1e-2", make_record("none", 0, 0.82, silent=0.3), {})
    summary, why = dose_report.committed(tmp_path)
    assert "2 committed runs at 2 levels" in why and summary["verdict"].startswith(
        "not yet estimable"
    )
    assert "`wd1e-2`" in dose_report.markdown(summary)
    assert dose_report.dose_figure(summary) is not None
    assert dose_report.committed(tmp_path / "empty")[0] is None


def test_study_md_pilot_table_is_the_committed_records():
    """The pilot table in docs/STUDY.md is what the committed seed-0 standard-training records
    give."""

    from craftlib.paths import REPO_ROOT

    text = (REPO_ROOT / "docs/STUDY.md").read_text()
    block = pages.block(text, "dose:pilot")
    committed = dose_report.pilot_markdown(REPO_ROOT / dose.DEFAULT_ROOT).splitlines()
    # 64-px rows may arrive after the table
    assert block.splitlines() == committed[: len(block.splitlines())]


def test_results_md_dose_tables_are_the_committed_records(tmp_path):
    """RESULTS.md's dose blocks are ``results_blocks`` of the committed summary, and that
    summary is what the committed records it names give (every field; the two pair intervals,
    2,000 resamples each, rechecked on one row). Records committed after the summary are left
    out."""
    import shutil

    from craftlib.paths import REPO_ROOT

    root = REPO_ROOT / dose.DEFAULT_ROOT
    saved = json.loads((root / "summary.json").read_text())
    text = (REPO_ROOT / "docs/RESULTS.md").read_text()
    for name, body in dose_report.results_blocks(saved).items():
        stale = f"RESULTS.md's {name} block is stale: run `make dose-report`"
        assert pages.block(text, name) == body, stale
    for level, names in saved["records"].items():
        (tmp_path / level / "records").mkdir(parents=True)
        for name in names:
            shutil.copy(root / level / "records" / f"{name}.json", tmp_path / level / "records")
    fresh = json.loads(json.dumps(dose_report.summarize(tmp_path, pair_boot=0)))
    unboot = {"two_level_ci95": None, "crossed_ci95": None, "pair_shared_se": None}
    assert [{**r, **unboot} for r in saved["rows"]] == fresh["rows"]
    assert {k: v for k, v in saved.items() if k != "rows"} == {
        k: v for k, v in fresh.items() if k != "rows"
    }
    design = dose_report.devtest_design()
    if design is None:
        pytest.skip("the pair intervals need LFW's pairsDevTest.txt (set CRAFTLIB_DATA)")
    row = next(r for r in saved["rows"] if r["level"] == "wd2e-2" and r["arm"] == "contextual")
    records = dose_report.load(tmp_path)["wd2e-2"]
    fresh = dose_report._pair_intervals(
        records, "contextual", "none", design, dose_report.PAIR_BOOT
    )
    assert {k: row[k] for k in fresh} == fresh
    # RESULTS: "the crossed interval is at most about a quarter wider than the seed interval"
    widths = [
        np.diff(r["crossed_ci95"])[0] / np.diff(r["accuracy"]["ci95"])[0]
        for r in saved["rows"]
        if r["accuracy"]["ci95"]
    ]
    assert 1 <= max(widths) <= 1.25
    # RESULTS: the shared part's SE "is 0 to" wd2e-2's CRAFT − random "across the levels"
    shared = {(r["level"], r["arm"], r["baseline"]): r["pair_shared_se"] for r in saved["rows"]}
    assert min(shared.values()) == 0
    assert max(shared.values()) == shared[("wd2e-2", "contextual", "random_matched")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "craft, fork_epoch",
    [
        # the detector first looks (and finds) at epoch 2: the arm continues standard training's
        # epoch-1 checkpoint
        (dict(first_epoch=2, tau=0.3), 1),
        # it never finds a filter (scores stay above 0.04 on these faces): the arm *is* standard
        # training, its record standard training's final model with the arm's own event log
        (dict(tau=0.01), 3),
    ],
)
def test_an_arm_started_from_standard_trainings_past_is_the_run_from_scratch(
    tmp_path, monkeypatch, tiny_faces, tiny_recipe, devtest_subset, craft, fork_epoch
):
    monkeypatch.setitem(dose.LEVELS, "tiny", (tiny_recipe.train.weight_decay, 32))
    monkeypatch.setattr(dose, "recipe", lambda level: tiny_recipe.but(craft=craft))
    root, models = tmp_path / "records", tmp_path / "models"

    def run(arm, fork, models):
        return dose.run_forked(tiny_faces, devtest_subset, "tiny", arm, 0, fork, models)

    write_record(root / "tiny", run("none", None, models), {})
    assert {"none-s0-e1.pt", "none-s0.pt"} <= {p.name for p in (models / "tiny").iterdir()}
    for arm in ("contextual", "random_matched"):
        fork = dose.fork_point(root, models, "tiny", 0, arm)
        assert fork is not None and fork[1] == fork_epoch
        forked, scratch = run(arm, fork, models), run(arm, None, None)
        assert forked.pop("forked_from") == {"arm": "none", "epoch": fork_epoch}
        forked.pop("train_seconds"), scratch.pop("train_seconds")
        # scores, events, timeline: the record written is the same to the last digit (as JSON,
        # where the NaN loss before the first step equals itself)
        assert json.dumps(forked, sort_keys=True) == json.dumps(scratch, sort_keys=True)
        assert (models / "tiny" / f"{arm}-s0.pt").is_file()  # the ablation's checkpoint too
    assert dose.fork_point(root, models, "tiny", 0, "none") is None
    assert dose.fork_point(root, tmp_path / "elsewhere", "tiny", 0, "contextual") is None


@pytest.mark.slow
def test_a_stopped_run_continues_from_its_last_epoch(
    tmp_path, monkeypatch, tiny_faces, tiny_recipe, devtest_subset
):
    """An arm that forked from standard training's epoch 1 and was stopped after epoch 2 (its
    later checkpoint unreadable) continues from epoch 2 to the record it would have written, still
    saying where it forked; another recipe's checkpoint, or a finished run's, is not continued; once
    recorded, an arm's epoch checkpoints go and standard training's stay."""
    from craftlib.checkpoints import save_checkpoint

    monkeypatch.setitem(dose.LEVELS, "tiny", (tiny_recipe.train.weight_decay, 32))
    craft = tiny_recipe.but(craft=dict(first_epoch=2, tau=0.3))  # fires at epoch 2: forks at 1
    monkeypatch.setattr(dose, "recipe", lambda level: craft)
    root, models, folder = tmp_path / "records", tmp_path / "models", tmp_path / "models" / "tiny"

    def run(arm, models, fork=None):
        return dose.run_forked(tiny_faces, devtest_subset, "tiny", arm, 0, fork, models)

    write_record(root / "tiny", run("none", models), {})
    fork = dose.fork_point(root, models, "tiny", 0, "contextual")
    assert fork[1] == 1
    scratch = run("contextual", None)
    run("contextual", models, fork)  # leaves contextual-s0-e2, -e3 and the final checkpoint
    for name in ("contextual-s0.pt", "contextual-s0-e3.pt"):  # as if stopped in epoch 3 ...
        (folder / name).unlink()
    (folder / "contextual-s0-e3.pt").write_bytes(b"cut off")  # ... while writing it
    past = dose.own_past(models, "tiny", "contextual", 0, "unknown")
    assert past == (folder / "contextual-s0-e2.pt", 2, 1)
    resumed = run("contextual", models, fork)
    assert resumed.pop("resumed_from") == {"epoch": 2}
    assert resumed.pop("forked_from") == {"arm": "none", "epoch": 1}
    resumed.pop("train_seconds"), scratch.pop("train_seconds")
    assert json.dumps(resumed, sort_keys=True) == json.dumps(scratch, sort_keys=True)

    assert dose.own_past(models, "tiny", "contextual", 0, "unknown") is None  # finished: a redo
    (folder / "contextual-s0.pt").unlink()
    assert dose.own_past(models, "tiny", "contextual", 0, "deep-funneled") is None  # other data
    # an unstamped leftover (another run's, or older code's) is passed over for this run's epoch 2
    save_checkpoint(folder / "contextual-s0-e3.pt", {"config": craft.train.to_dict()})
    assert dose.own_past(models, "tiny", "contextual", 0, "unknown")[1] == 2
    other = craft.but(weight_decay=2 * craft.train.weight_decay)
    monkeypatch.setattr(dose, "recipe", lambda level: other)
    assert dose.own_past(models, "tiny", "contextual", 0, "unknown") is None  # another recipe
    monkeypatch.setattr(dose, "recipe", lambda level: craft)
    for arm in ("contextual", "none"):
        dose.drop_past(models, "tiny", arm, 0)
    left = {p.name for p in folder.iterdir()}
    assert not any(n.startswith("contextual-s0-e") for n in left)
    assert {"none-s0-e1.pt", "none-s0-e3.pt", "none-s0.pt"} <= left


def test_the_other_arms_of_a_seed_follow_standard_training_of_the_next(tmp_path):
    levels = ["wd5e-4", "wd1e-2", "wd1e-2-64px"]
    todo = dose.tasks(tmp_path, [0, 1, 2], levels, ("none", "contextual"))
    at = {t: i for i, t in enumerate(todo)}
    for lv in levels:
        for s in (0, 1):  # standard training of s + 1 is scheduled before the arms of s
            assert at[(lv, s + 1, "none")] < at[(lv, s, "contextual")]
    assert max(at[t] for t in todo if t[0] != "wd1e-2-64px") < min(
        at[t] for t in todo if t[0] == "wd1e-2-64px"
    )  # the 40-px levels (the primary analysis) first


def test_status_counts_what_is_left_and_what_a_restart_continues(tmp_path, make_record):
    """Two of four seeds recorded (1,000 s for 10 epochs: 100 s each); standard training of seed 2
    stopped after epoch 3 with its stamp (continued), seed 3's leftover has none (started again)."""
    from craftlib.checkpoints import save_checkpoint
    from craftlib.study import dose_status

    level, root, models = "wd1e-2-64px", tmp_path / "records", tmp_path / "models"
    for seed in range(2):
        for arm in ("none", "contextual", "random_matched"):
            record = {**make_record(arm, seed, 0.8), "train_seconds": 1000.0}
            write_record(root / level, record, {})
    config = dose.recipe(level).train
    stamp = {"run": dose.run_stamp(level, "none", 2, "deepfunneled"), "forked_from": None}
    save_checkpoint(
        models / level / "none-s2-e3.pt", {"config": config.to_dict(), "dose_run": stamp}
    )
    save_checkpoint(models / level / "none-s3-e5.pt", {"config": config.to_dict()})
    assert dose.own_past(models, level, "none", 2, None)[1] == 3  # the run's own data variant
    assert dose.own_past(models, level, "none", 3, None) is None
    text = dose_status.status(root, models, range(4), [level], jobs=2)
    assert f"| `{level}` | 2/4 | 2/4 | 2/4 | 100 | {7 + 5 * 10} |" in text
    assert (
        f"Under way (a restart continues them): `{level}` none seed 2 (epoch 3 of 10 saved)."
        in text
    )
    assert f"6 run(s) to do: about {57 * 100 / 2 / 3600:.1f} h of training at 2 at once" in text


def test_time_left_is_timed_on_this_machines_records_where_it_has_any(tmp_path, make_record):
    """A study that outlives a session changes machines: three runs at 100 s per epoch elsewhere,
    one at 50 s here — here's pace counts; a machine with no records of its own uses them all."""
    from craftlib.study import dose_status

    level = "wd1e-2-64px"
    for seed, (machine, seconds) in enumerate([("old", 1000.0)] * 3 + [("new", 500.0)]):
        record = {**make_record("none", seed, 0.8), "train_seconds": seconds, "machine": machine}
        write_record(tmp_path / level, record, {})
    assert dose_status.seconds_per_epoch(tmp_path, 64, machine="new") == 50
    assert dose_status.seconds_per_epoch(tmp_path, 64, machine="unseen") == 100
    assert dose_status.seconds_per_epoch(tmp_path, 40, machine="new") is None


def test_an_arm_waits_for_standard_trainings_record_while_it_is_being_written(tmp_path):
    """Standard training saved its final model; its record lands 0.3 s later: the arm waits for
    it (and so can fork from it). Without a final model there is nothing to wait for."""
    import threading
    import time

    level, root, models = "wd1e-2", tmp_path / "records", tmp_path / "models"
    (models / level).mkdir(parents=True)
    start = time.monotonic()
    dose.await_standard(root, models, level, 0, wait=5)
    assert time.monotonic() - start < 0.5  # nothing trained yet: no wait
    (models / level / "none-s0.pt").write_bytes(b"final")
    record = dose.record_path(root / level, "none", 0)

    def land():
        time.sleep(0.3)
        record.parent.mkdir(parents=True)
        record.write_text("{}")

    threading.Thread(target=land).start()
    dose.await_standard(root, models, level, 0, wait=5)
    assert record.is_file() and time.monotonic() - start < 4
