"""The companion attribute study: per-group verification, paired summaries, records, and a FAST
end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from craftlib.companions.attributes import study as S
from craftlib.companions.attributes.labels import UNKNOWN
from craftlib.data import PairSet

from attribute_data import probe_record


def test_wilson():
    lo, hi = S.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert S.wilson(0, 0) is None
    lo, hi = S.wilson(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2


def synthetic_pairs(seed=0):
    """200 pairs over 120 images in 10 folds; images 0-59 group 1, 60-109 group 0, 110-119
    unlabelled."""
    rng = np.random.default_rng(seed)
    n = 200
    left, right = rng.integers(0, 120, n), rng.integers(0, 120, n)
    same = np.arange(n) % 2 == 0
    folds = np.repeat(np.arange(10), 20)
    groups = np.array([1] * 60 + [0] * 50 + [UNKNOWN] * 10, dtype=np.int8)
    scores = np.where(same, 0.6, 0.3) + 0.2 * rng.standard_normal(n)
    pairs = PairSet(
        np.zeros((120, 4, 4, 3), np.uint8), left, right, same, folds, [f"f{i}" for i in range(120)]
    )
    return scores, pairs, groups


def test_group_verification_counts_and_one_threshold():
    scores, pairs, groups = synthetic_pairs()
    out = S.group_verification(scores, pairs, groups, {1: "men", 0: "women"})
    gl, gr = groups[pairs.left], groups[pairs.right]
    both = (gl != UNKNOWN) & (gr != UNKNOWN)
    for value, name in ((1, "men"), (0, "women")):
        m = both & (gl == value) & (gr == value)
        g = out["groups"][name]
        assert g["pairs"] == m.sum() and g["genuine"] + g["impostor"] == g["pairs"]
        assert g["accuracy"]["n"] == m.sum() and g["fnmr"]["n"] == (m & pairs.same).sum()
        lo, hi = g["accuracy"]["ci95"]
        assert lo <= g["accuracy"]["rate"] <= hi
    mixed = both & (gl != gr)
    assert out["mixed"]["pairs"] == mixed.sum()
    assert out["unlabelled_pairs"] == (~both).sum()
    assert out["groups"]["men"]["pairs"] + out["groups"]["women"]["pairs"] + out["mixed"][
        "pairs"
    ] + out["unlabelled_pairs"] == len(pairs)
    # the per-group decisions use the 10-fold thresholds: pooled over everyone they give the overall
    # accuracy
    from craftlib.verification import evaluate_scores

    report = evaluate_scores(scores, pairs.same, pairs.folds)
    assert out["accuracy"] == pytest.approx(report["accuracy"])
    correct = (scores > np.asarray(report["thresholds"])[pairs.folds]) == pairs.same
    assert correct.mean() == pytest.approx(report["accuracy"])


@pytest.fixture
def records():
    base = [probe_record("none", s) for s in range(5)]
    craft = [probe_record("contextual", s, shift=0.02) for s in range(5)]
    return base + craft + [probe_record(S.REFERENCE_ARM, 0, shift=-0.1)]


def test_footprint_is_paired_with_holm(records):
    fp = S.footprint(records)
    assert fp["seeds"] == [0, 1, 2, 3, 4]
    p = fp["cells"][("black_hair", "stem")]
    assert p.n == 5 and p.mean_difference == pytest.approx(0.02, abs=1e-6)
    assert p.holm_pvalue is None or p.holm_pvalue >= (p.t_pvalue or 0)
    assert fp["primary"]["stem"].mean_difference == pytest.approx(0.02, abs=1e-6)
    assert S.footprint(records, arm="missing")["seeds"] == []
    assert S.footprint(records, seeds=[1, 3, 9])["seeds"] == [1, 3]  # the replication's subset


def test_first_report_and_replication_are_reported_apart():
    records = [
        probe_record(arm, s, shift=0.02 if arm == "contextual" and s >= 5 else 0.0)
        for arm in ("none", "contextual")
        for s in range(8)
    ]
    text = S.footprint_markdown(records)
    first = text[text.index("Primary contrast") : text.index("Replication")]
    again = text[text.index("Replication") :]
    assert "seeds 0–4" in first and "+0.00 pts" in first and "(n = 5)" in first
    assert "seeds 5–7" in again and "+2.00 pts" in again and "(n = 3)" in again
    assert "Replication" not in S.footprint_markdown([r for r in records if r["seed"] < 5])


def test_seeds_are_named_as_ranges_where_asked():
    assert S.seed_ranges(range(30)) == "0–29"
    assert S.seed_ranges([9, 0, 1, 2, 3, 4, 7, 10, 11, 12]) == "0–4, 7, 9–12"
    assert S.seed_ranges([5]) == "5"
    records = [probe_record(arm, s) for arm in ("none", "contextual") for s in range(8)]
    assert "paired over seeds 0–7:" in S.footprint_markdown(records, short_seeds=True)
    # docs/RESULTS.md's committed tables keep the full list
    assert "paired over seeds [0, 1, 2, 3, 4, 5, 6, 7]:" in S.footprint_markdown(records)


def test_fairness_gap(records):
    fr = S.fairness(records)
    assert fr["seeds"] == [0, 1, 2, 3, 4]
    assert fr["arms"]["none"]["men"]["accuracy"] == [0.82] * 5
    assert fr["gap"]["paired"].mean_difference == pytest.approx(0.01)  # (0.84-0.79) - (0.82-0.78)
    assert fr["paired"]["women"]["accuracy"].mean_difference == pytest.approx(0.01)


def test_depth_curves_and_markdown(records):
    curves = S.depth_curves(records)
    assert curves["none"]["mean"].shape == (3, 3) and curves["none"]["seeds"] == [0, 1, 2, 3, 4]
    text = S.render_markdown(records)
    for needle in (
        "**standard**",
        "**CRAFT**",
        "untrained",
        "CRAFT − standard",
        "Primary contrast",
        "DevTest verification by gender",
        "mixed (impostors by construction)",
        "Accuracy gap men − women",
    ):
        assert needle in text, needle
    assert "pts" in text  # the project's formatter writes differences in points


def test_records_refuse_other_settings(tmp_path):
    settings = S.StudySettings()
    S.write_record(tmp_path, "probe", "none", 0, {"probes": {}}, settings, {"source": "x"})
    assert len(S.load_records(tmp_path, settings)) == 1
    with pytest.raises(ValueError, match="other settings"):
        S.load_records(tmp_path, S.FAST_SETTINGS)


def test_find_models_first_folder_wins(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "none-s0.pt").write_bytes(b"")
    (a / "none-s0.pt").write_bytes(b"")
    (b / "contextual-s0.pt").write_bytes(b"")
    found = S.find_models([a, b], ["none", "contextual"], [0, 1])
    assert found == {("none", 0): a / "none-s0.pt", ("contextual", 0): b / "contextual-s0.pt"}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about a minute on an idle 2-core machine
def test_fast_study_end_to_end(tmp_path, lfw_root):
    """FAST settings on real LFW and labels: a FAST run, its records (probes + branching), the
    report."""
    from craftlib.companions.attributes.labels import LabelsNotFoundError, load_labels
    from craftlib.data import LFW
    from craftlib.recipes import FAST
    from craftlib.training import train

    try:
        labels = load_labels(download=False)
    except LabelsNotFoundError as err:
        pytest.skip(str(err))
    settings = S.FAST_SETTINGS
    study = S.prepare(settings, LFW(lfw_root, download=False, size=settings.size), labels)
    from craftlib.companions.attributes.labels import training_identities

    assert not set(study.probe_set.identities) & training_identities(
        LFW(lfw_root, download=False, size=settings.size)
    )
    trainer = train(study.train, FAST.train, progress=False)
    trainer.save(tmp_path / "models" / "none-s0.pt")
    models = S.find_models([tmp_path / "models"], ["none"], [0])
    recs = S.run_study(study, models, tmp_path / "out", branching_seeds=(0,), log=lambda *_: None)
    kinds = sorted((r["kind"], r["arm"]) for r in recs)
    assert kinds == [("branching", "none"), ("probe", "none"), ("probe", S.REFERENCE_ARM)]
    br = next(r for r in recs if r["kind"] == "branching")
    assert set(br["configs"]) == {"control", "embedding", "best"}
    assert br["macs"]["shared"] < br["macs"]["separate_full"]
    before = (tmp_path / "out" / "records" / "probe-none-s0.json").stat().st_mtime_ns
    # resumes: nothing redone
    S.run_study(study, models, tmp_path / "out", branching_seeds=(0,), log=lambda *_: None)
    assert (tmp_path / "out" / "records" / "probe-none-s0.json").stat().st_mtime_ns == before
    cov = json.loads((tmp_path / "out" / "coverage.json").read_text())
    assert cov["coverage"]["images"] >= len(study.probe_set.files)
    text = S.render_markdown(recs)
    assert "Branching, standard seed 0" in text and "MACs per face" in text


def test_results_md_shows_what_the_committed_records_say():
    """docs/RESULTS.md's attribute tables are ``render_markdown`` of the committed records, digit
    for digit."""
    from craftlib.companions.attributes.cli import DEFAULT_OUT
    from craftlib.paths import REPO_ROOT

    records = S.load_records(DEFAULT_OUT, S.StudySettings())
    assert {r["seed"] for r in records if r["kind"] == "probe" and r["arm"] == "contextual"} >= set(
        S.FIRST_SEEDS
    )
    results = (REPO_ROOT / "docs" / "RESULTS.md").read_text()
    assert S.render_markdown(records) in results, (
        "regenerate: python -m craftlib.companions.attributes.cli report, paste summary.md"
    )
