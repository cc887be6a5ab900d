"""The comparison summary: statistics against known values and scipy, the schema round trip, the
renderers.

Records are synthetic (``make_record`` in conftest: the exact shape ``compare`` writes); the real
records of a real comparison are summarised in ``test_experiments.py`` (resume and merge) and drawn
in ``test_viz.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats

from craftlib import pages
from craftlib.recipes import ARM_LABELS, FAST
from craftlib.study.experiments import fingerprint
from craftlib.study.results import (
    CURVE_SCORES,
    DELTA_STAR,
    METRICS,
    SCHEMA,
    SILENT_TAU,
    TAUS,
    WEIGHT_TAU,
    Arm,
    Paired,
    Summary,
    curve_markdown,
    first_runs,
    fmt,
    fmt_ci,
    headline,
    holm,
    load_summary,
    mde,
    paired,
    power,
    render_html,
    render_markdown,
    render_text,
    summarize,
    summarize_folders,
    survival_markdown,
    table_rows,
    wilcoxon_pvalue,
)
from craftlib.study.survival import survival

# ---------------------------------------------------------------------------------------------
# power and the minimum detectable effect (two-sided paired t-test, alpha 0.05)


def test_power_and_mde_known_values():
    """Issue #9's numbers: paired-difference sd 1.7 points; +0.7 points at 5 seeds; 80% power needs
    ~48 seeds."""
    assert power(0.007, 0.017, 5) == pytest.approx(0.111, abs=0.002)
    assert mde(0.017, 5) == pytest.approx(0.0286, abs=2e-4)
    assert mde(0.017, 48) == pytest.approx(0.0070, abs=1e-4)
    assert power(0.007, 0.017, 48) == pytest.approx(0.80, abs=0.01)
    assert power(0.0, 0.017, 5) == pytest.approx(0.05, abs=1e-6)  # no effect: the test's own alpha
    assert power(-0.007, 0.017, 5) == pytest.approx(power(0.007, 0.017, 5))  # two-sided
    assert power(mde(0.02, 10), 0.02, 10) == pytest.approx(0.8, abs=1e-6)


def test_mde_is_sd_times_the_unit_mde_solved_directly():
    """mde() scales one solve per n; solving at the sd itself gives the same number."""
    for sd, n in [(0.017, 5), (0.004, 30), (2.5, 10)]:
        direct = optimize.brentq(lambda d: power(d, sd, n) - 0.8, 0.0, 4 * sd, xtol=1e-15)
        assert mde(sd, n) == pytest.approx(direct, rel=1e-10)


def test_wilcoxon_pvalue_is_scipys_number_exactly():
    """Ties and zeros at n <= 13 take the fast exact path; it must give scipy's p-value bit for bit
    (the committed summaries' digits), as every other case does by calling scipy."""
    rng = np.random.default_rng(0)
    cases = [np.round(rng.normal(0.2, 1, n), 1) for n in range(2, 17)]  # ties
    cases += [rng.integers(-3, 4, n) / 1000 for n in range(2, 17)]  # zeros and ties
    cases += [rng.normal(0, 1, n) for n in (5, 12, 30)]  # neither: scipy's exact / asymptotic
    for diff in (d for d in cases if np.any(d != 0)):
        assert wilcoxon_pvalue(diff) == float(stats.wilcoxon(diff).pvalue), diff


def test_power_and_mde_undefined_cases():
    assert np.isnan(power(0.01, 0.02, 1)) and np.isnan(power(0.01, 0.0, 5))
    assert np.isnan(mde(0.02, 1)) and np.isnan(mde(0.0, 5))


@pytest.mark.parametrize(
    "delta, sd, n", [(0.007, 0.017, 5), (0.0286, 0.017, 5), (0.007, 0.017, 48), (0.01, 0.03, 12)]
)
def test_power_agrees_with_a_monte_carlo_t_test(delta, sd, n):
    rng = np.random.default_rng(0)
    trials = 40_000
    diffs = rng.normal(delta, sd, (trials, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / np.sqrt(n))
    rejected = np.abs(t) > stats.t.ppf(0.975, n - 1)
    expected = power(delta, sd, n)
    assert rejected.mean() == pytest.approx(
        expected, abs=4 * np.sqrt(expected * (1 - expected) / trials)
    )


# ---------------------------------------------------------------------------------------------
# the paired comparison and Holm


ACC_A = [0.84, 0.83, 0.83, 0.82, 0.84, 0.81]
ACC_B = [0.80, 0.82, 0.81, 0.79, 0.83, 0.80]


def test_paired_matches_scipy():
    p = paired(ACC_A, ACC_B)
    diff = np.subtract(ACC_A, ACC_B)
    t = stats.ttest_rel(ACC_A, ACC_B)
    ci = t.confidence_interval(0.95)
    assert p.n == 6 and p.mean_difference == pytest.approx(diff.mean())
    assert p.sd_difference == pytest.approx(diff.std(ddof=1))
    assert p.t_pvalue == pytest.approx(t.pvalue) and p.wilcoxon_pvalue == pytest.approx(
        stats.wilcoxon(diff).pvalue
    )
    assert p.ci95 == pytest.approx((ci.low, ci.high))
    # by hand: mean ± t(0.975, n-1) sd / sqrt(n)
    half = stats.t.ppf(0.975, 5) * diff.std(ddof=1) / np.sqrt(6)
    assert p.ci95 == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert p.mde == pytest.approx(mde(diff.std(ddof=1), 6))
    assert paired(ACC_B, ACC_A).t_pvalue == pytest.approx(p.t_pvalue)  # two-sided


def test_paired_undefined_cases():
    assert paired([], []) == Paired(0, None, None, None, None, None)
    one = paired([0.9], [0.8])
    assert one.mean_difference == pytest.approx(0.1) and one.t_pvalue is None and one.ci95 is None
    same = paired([0.8, 0.9], [0.8, 0.9])
    assert (
        same.mean_difference == 0
        and same.sd_difference == 0
        and same.t_pvalue is None
        and same.mde is None
    )


@pytest.mark.parametrize(
    "a, b",
    [
        ([3 / 64, 3 / 64], [1 / 64, 1 / 64]),  # exactly the same difference
        ([0.3, 0.4, 0.5], [0.1, 0.2, 0.3]),
    ],
)  # the same up to rounding
def test_a_constant_difference_has_no_t_test(a, b):
    """No spread, no t-test: not p = 0 with a zero-width CI (what scipy returns), and no NaN in the
    JSON."""
    p = paired(a, b)
    assert p.mean_difference == pytest.approx(
        np.mean(a) - np.mean(b)
    ) and p.sd_difference == pytest.approx(0, abs=1e-12)
    assert p.t_pvalue is None and p.ci95 is None and p.mde is None
    # ranks need no spread
    assert p.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(np.subtract(a, b)).pvalue)


def test_holm_by_hand():
    # sorted: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, but never below the previous:
    # 0.06)
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adjusted["d"] is None
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06)
    assert holm({"a": 0.6, "b": 0.9}) == {"a": 1.0, "b": 1.0}  # capped at 1
    assert holm({"only": 0.02}) == {"only": 0.02}
    assert holm({}) == {}


# ---------------------------------------------------------------------------------------------
# records -> summary


@pytest.fixture(scope="module")
def summary(synthetic_records) -> Summary:
    return summarize(synthetic_records)


def test_summary_arms_values_and_pairs(summary, synthetic_records):
    assert list(summary.arms) == ["none", "contextual", "random_matched"]  # the baseline first
    assert (
        summary.baseline == "none"
        and summary.primary == "accuracy"
        and summary.delta_star == DELTA_STAR
    )
    assert summary.fingerprint == synthetic_records[0]["fingerprint"] and summary.schema == SCHEMA
    by = {(r["arm"], r["seed"]): r for r in synthetic_records}
    for name, arm in summary.arms.items():
        assert arm.label == ARM_LABELS[name] and arm.seeds == [0, 1, 2, 3, 4]
        assert set(arm.values) == set(METRICS)
        assert arm.values["accuracy"] == [by[name, s]["accuracy"] for s in range(5)]
        assert arm.values["tar@far=0.001"] == [None] * 5  # not estimable on DevTest: kept as None
        silent = [
            float(np.mean(np.asarray(by[name, s]["scores"]["silent"]) < SILENT_TAU))
            for s in range(5)
        ]
        weight = [
            float(np.mean(np.asarray(by[name, s]["scores"]["max"]) < WEIGHT_TAU)) for s in range(5)
        ]
        assert arm.values["silent_fraction"] == silent and arm.values["weight_fraction"] == weight
        assert arm.mean("accuracy") == pytest.approx(np.mean(arm.values["accuracy"]))
        assert arm.std("accuracy") == pytest.approx(np.std(arm.values["accuracy"], ddof=1))
        assert arm.mean("tar@far=0.001") is None and arm.std("tar@far=0.001") is None
    ctx, base = summary.arms["contextual"], summary.arms["none"]
    assert base.vs_baseline == {}
    expected = paired(ctx.values["accuracy"], base.values["accuracy"])
    got = ctx.vs_baseline["accuracy"]
    assert (got.n, got.mean_difference, got.t_pvalue, got.ci95) == (
        expected.n,
        expected.mean_difference,
        expected.t_pvalue,
        expected.ci95,
    )
    # the primary endpoint only
    assert got.power == pytest.approx(power(DELTA_STAR, got.sd_difference, 5))
    assert ctx.vs_baseline["auc"].power is None
    assert ctx.vs_baseline["tar@far=0.001"].n == 0  # nothing to pair


def test_holm_is_applied_across_arms_per_metric(summary):
    for metric in METRICS:
        raw = {
            a: summary.arms[a].vs_baseline[metric].t_pvalue
            for a in ("contextual", "random_matched")
        }
        adjusted = holm(raw)
        for a in raw:
            assert summary.arms[a].vs_baseline[metric].holm_pvalue == adjusted[a]


def test_inactive_fraction_curves_and_survival(summary, synthetic_records):
    assert summary.taus == TAUS
    for name, arm in summary.arms.items():
        assert set(arm.curves) == set(CURVE_SCORES)
        runs = [r for r in synthetic_records if r["arm"] == name]
        for score in CURVE_SCORES:
            expected = np.mean(
                [[np.mean(np.asarray(r["scores"][score]) < t) for t in TAUS] for r in runs], axis=0
            )
            np.testing.assert_allclose(arm.curves[score], expected)
            # more filters below a higher τ
            assert list(arm.curves[score]) == sorted(arm.curves[score])
        assert arm.curve_area("silent") == pytest.approx(np.mean(arm.curves["silent"]))
        if name == "none":
            assert arm.survival == [] and arm.renewal == {}  # nothing renewed
        else:
            assert arm.survival[0] is not None and len(arm.survival) == FAST.train.epochs + 1
            ends = [row["alive"][-1] for r in runs for row in survival(r, FAST.train, SILENT_TAU)]
            assert arm.renewal["filters"] == len(ends) and arm.renewal[
                "alive_end"
            ] == pytest.approx(np.mean(ends))
    assert summary.baseline_survival and summary.baseline_survival[0] == 1.0
    assert summary.baseline_renewal["runs"] == len(summary.arms["none"].seeds)
    table = survival_markdown(summary)
    assert "re-activated" in table and "alive at the event epochs" in table
    assert (
        Summary.from_dict(json.loads(summary.to_json())).arms["contextual"].renewal
        == summary.arms["contextual"].renewal
    )


def test_a_memo_of_survival_rows_changes_no_number(synthetic_records):
    """The dashboard keeps each run's survival rows across selections of one pool: a subset
    summarised with the memo of the whole is the subset summarised afresh."""
    memo: dict = {}
    whole = summarize(synthetic_records, memo=memo)
    assert whole.to_json() == summarize(synthetic_records).to_json() and memo
    subset = [
        r for r in synthetic_records if r["seed"] != min(r["seed"] for r in synthetic_records)
    ]
    assert summarize(subset, memo=memo).to_json() == summarize(subset).to_json()


def test_summary_pairs_only_common_seeds(synthetic_records):
    records = [r for r in synthetic_records if not (r["arm"] == "none" and r["seed"] >= 3)]
    ctx = summarize(records).arms["contextual"]
    assert ctx.seeds == [0, 1, 2, 3, 4] and ctx.vs_baseline["accuracy"].n == 3
    a = ctx.values["accuracy"][:3]
    b = [r["accuracy"] for r in synthetic_records if r["arm"] == "none" and r["seed"] < 3]
    assert ctx.vs_baseline["accuracy"].t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_summary_without_the_baseline(synthetic_records):
    s = summarize([r for r in synthetic_records if r["arm"] != "none"])
    assert all(a.vs_baseline == {} for a in s.arms.values()) and s.baseline_survival == []
    assert "needs the arms" in headline(s)
    other = summarize(synthetic_records, baseline="random_matched")
    assert list(other.arms)[0] == "random_matched" and "accuracy" in other.arms["none"].vs_baseline


def test_summarize_refuses_mismatched_fingerprints(synthetic_records, make_record):
    for meta, field in (
        (fingerprint(FAST.but(lr=0.05), "deepfunneled"), "recipe.train.lr"),
        (fingerprint(FAST, "funneled"), "data_variant"),
        ({**fingerprint(FAST, "deepfunneled"), "code": "0.0.1"}, "code"),
        (fingerprint(FAST.but(craft={"tau": 0.2}), "deepfunneled"), "recipe.craft.tau"),
    ):
        odd = make_record("contextual", 9, 0.8, fingerprint=meta)
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            summarize(synthetic_records + [odd])


def test_summarize_refuses_duplicate_seeds_and_nothing(synthetic_records):
    with pytest.raises(ValueError, match="contextual seed 2 appears twice"):
        summarize(
            synthetic_records
            + [r for r in synthetic_records if r["arm"] == "contextual" and r["seed"] == 2]
        )
    with pytest.raises(ValueError, match="no run records"):
        summarize([])


def test_summarize_folders_pools_and_refuses(records_dir, tmp_path, synthetic_records, summary):
    assert summarize_folders([records_dir]) == summary
    with pytest.raises(ValueError, match="no run records"):
        summarize_folders([tmp_path / "empty"])
    with pytest.raises(ValueError, match="appears twice"):
        summarize_folders([records_dir, records_dir])


def test_first_runs_takes_the_lowest_seed_per_arm(synthetic_records):
    chosen = first_runs(list(reversed(synthetic_records)))
    assert {a: r["seed"] for a, r in chosen.items()} == {
        "none": 0,
        "contextual": 0,
        "random_matched": 0,
    }
    assert first_runs([r for r in synthetic_records if r["seed"] > 2])["none"]["seed"] == 3


# ---------------------------------------------------------------------------------------------
# schema: one loader, version-checked


def test_summary_json_round_trip(summary, tmp_path):
    text = summary.to_json()
    assert json.loads(text)["schema"] == SCHEMA
    assert Summary.from_dict(json.loads(text)) == summary
    (tmp_path / "summary.json").write_text(text)
    assert load_summary(tmp_path) == summary == load_summary(tmp_path / "summary.json")


def test_a_wrong_schema_is_refused(summary, tmp_path):
    old = {**json.loads(summary.to_json()), "schema": "craftlib-summary-1"}
    with pytest.raises(ValueError, match="craftlib-summary-1.*report"):
        Summary.from_dict(old)
    legacy = {
        "arms": {"none": {"accuracy": [0.8]}},
        "baseline": "none",
    }  # the first release's summary.json
    (tmp_path / "summary.json").write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match="schema None"):
        load_summary(tmp_path)
    with pytest.raises(FileNotFoundError, match="compare"):
        load_summary(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# one formatter, three renderers


@pytest.mark.parametrize(
    "metric, value, signed, text",
    [
        ("accuracy", 0.83456, False, "83.46%"),
        ("accuracy", 0.007, True, "+0.70 pts"),
        ("eer", -0.0123, True, "-1.23 pts"),
        ("auc", 0.91234, False, "0.9123"),
        ("auc", 0.01, True, "+0.0100"),
        ("p", 0.0004, False, "< 0.001"),
        ("p", 0.0042, False, "0.0042"),
        ("p", 0.04321, False, "0.043"),
        ("p", 0.5, False, "0.500"),
        ("accuracy", None, False, "n/a"),
        ("p", float("nan"), False, "n/a"),
    ],
)
def test_fmt(metric, value, signed, text):
    assert fmt(metric, value, signed) == text


def test_fmt_ci():
    assert fmt_ci("accuracy", (-0.014, 0.028)) == "[-1.40 pts, +2.80 pts]"
    assert fmt_ci("auc", None) == "n/a"


def test_the_three_renderers_draw_one_table(summary):
    head, rows = table_rows(summary, "accuracy")
    assert len(head) == 9 and len(rows) == 3 and rows[0][0] == ARM_LABELS["none"]
    assert rows[0][3:] == ["—"] * 6  # the baseline has nothing to compare with
    ctx = summary.arms["contextual"].vs_baseline["accuracy"]
    assert rows[1][3] == fmt("accuracy", ctx.mean_difference, True) and rows[1][4] == fmt_ci(
        "accuracy", ctx.ci95
    )
    assert rows[1][5] == fmt("p", ctx.t_pvalue) and rows[1][6] == fmt("p", ctx.holm_pvalue)
    text, md, html = render_text(summary), render_markdown(summary), render_html(summary)
    for row in rows:
        for cell in row:
            assert cell in text and cell in md
    assert (
        len(text.splitlines()) == 4
        and len(md.splitlines()) == 5
        and md.splitlines()[1].startswith("|---|")
    )
    assert html.count("<tr>") == 4 and "95% CI of Δ" in html and "± " in html
    assert "DevTest accuracy" in render_text(summary) and "silent conv1" in render_text(
        summary, "silent_fraction"
    )


def test_html_escapes_labels():
    arm = Arm("x", "<b>x</b> & y", [0], {m: [0.5] for m in METRICS})
    html = render_html(Summary("none", {"x": arm}, {}))
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>" not in html


def test_curve_markdown_and_headline(summary):
    md = curve_markdown(summary)
    lines = md.splitlines()
    assert len(lines) == 2 + len(summary.arms) and "τ = 0.01" in lines[0] and "area" in lines[0]
    ctx = summary.arms["contextual"]
    assert (
        f"{100 * ctx.curves['silent'][TAUS.index(0.01)]:.1f}%" in lines[3]
        and f"{ctx.curve_area('silent'):.3f}" in lines[3]
    )
    text = headline(summary)
    p = ctx.vs_baseline["accuracy"]
    assert fmt_ci("accuracy", p.ci95) in text and "5 paired seeds" in text and "MDE" in text


def test_results_md_endpoint_table_is_the_committed_summary():
    """Every declared endpoint, with both corrections, is rendered from compare_summary.json."""

    from craftlib.paths import REPO_ROOT
    from craftlib.study.results import endpoints_markdown, load_summary

    block = pages.read_block(REPO_ROOT / "docs/RESULTS.md", "endpoints:study")
    assert (
        block.strip()
        == endpoints_markdown(load_summary(REPO_ROOT / "docs/results/compare_summary.json")).strip()
    )


def test_endpoint_family_correction_is_holm_over_every_secondary_test(synthetic_records):
    from craftlib.study.results import SECONDARY, endpoints_markdown, holm, summarize

    s = summarize(synthetic_records)
    family = holm(
        {
            (m, a): s.arms[a].vs_baseline[m].t_pvalue
            for m in SECONDARY
            for a in ("contextual", "random_matched")
        }
    )
    table = endpoints_markdown(s)
    # 4 endpoints
    assert table.count("| descriptive | descriptive |") == 4 and table.count("| primary |") == 2
    row = [line for line in table.splitlines() if line.startswith("| EER | CRAFT")][0]
    assert row.split("|")[-2].strip() == fmt_p(family[("eer", "contextual")])


def fmt_p(v):
    from craftlib.study.results import fmt

    return fmt("p", v)
