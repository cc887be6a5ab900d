"""The experiment harness: paired statistics on hand-made runs, then ``compare`` and the CLI for real (tiny)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from craftlib import cli
from craftlib.experiments import METRICS, compare, format_table, paired_tests, summarize
from craftlib.reactivation import STRATEGY_LABELS
from craftlib.recipes import FAST

ACC = {"none": [0.80, 0.82, 0.81, 0.79, 0.83], "random": [0.81, 0.82, 0.83, 0.80, 0.83],
       "contextual": [0.84, 0.85, 0.83, 0.82, 0.86]}
INACTIVE = {"none": [0.70, 0.72, 0.68, 0.75, 0.71], "random": [0.20, 0.25, 0.22, 0.18, 0.21],
            "contextual": [0.10, 0.12, 0.15, 0.11, 0.09]}


def hand_made_runs(shuffle: bool = True) -> list[dict]:
    runs = []
    for strategy in ACC:
        for seed in range(5):
            runs.append({"strategy": strategy, "seed": seed, "accuracy": ACC[strategy][seed],
                         "inactive_fraction": INACTIVE[strategy][seed], "auc": 0.9 + seed / 100,
                         "tar@far=0.01": 0.5, "tar@far=0.001": 0.2 + 0.01 * seed})
    if shuffle:  # the order runs finish in must not matter: pairing is by seed
        runs = [runs[i] for i in np.random.default_rng(0).permutation(len(runs))]
    return runs


def test_paired_tests_equal_scipy():
    a, b = ACC["contextual"], ACC["none"]
    out = paired_tests(a, b)
    assert out["mean_difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert out["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert paired_tests(b, a)["t_pvalue"] == pytest.approx(out["t_pvalue"])  # two-sided


def test_paired_tests_undefined_cases():
    same = paired_tests([0.8, 0.9], [0.8, 0.9])  # identical: no test to run
    assert same == {"mean_difference": 0.0, "t_pvalue": None, "wilcoxon_pvalue": None}
    single = paired_tests([0.9], [0.8])  # one seed: a difference but no p-value
    assert single["mean_difference"] == pytest.approx(0.1) and single["t_pvalue"] is None


def test_summarize_means_stds_and_pvalues():
    summary = summarize(hand_made_runs())
    assert summary["baseline"] == "none" and set(summary["arms"]) == {"none", "random", "contextual"}
    for strategy, arm in summary["arms"].items():
        assert arm["label"] == STRATEGY_LABELS[strategy]
        assert arm["seeds"] == [0, 1, 2, 3, 4]
        assert arm["accuracy"] == ACC[strategy] and arm["inactive_fraction"] == INACTIVE[strategy]
        assert arm["accuracy_mean"] == pytest.approx(np.mean(ACC[strategy]))
        assert arm["accuracy_std"] == pytest.approx(np.std(ACC[strategy], ddof=1))  # sample std over seeds
        assert arm["inactive_fraction_mean"] == pytest.approx(np.mean(INACTIVE[strategy]))
        for m in METRICS:
            assert f"{m}_mean" in arm and f"{m}_std" in arm
        if strategy == "none":
            assert "accuracy_pvalue_t" not in arm
            continue
        assert arm["accuracy_pvalue_t"] == pytest.approx(stats.ttest_rel(ACC[strategy], ACC["none"]).pvalue)
        assert arm["accuracy_pvalue_wilcoxon"] == pytest.approx(stats.wilcoxon(ACC[strategy], ACC["none"]).pvalue)
        assert arm["inactive_fraction_pvalue_t"] == pytest.approx(
            stats.ttest_rel(INACTIVE[strategy], INACTIVE["none"]).pvalue)
        assert arm["vs_none"]["accuracy"]["mean_difference"] == pytest.approx(
            np.mean(ACC[strategy]) - np.mean(ACC["none"]))
        assert arm["vs_none"]["tar@far=0.01"]["t_pvalue"] is None  # equal in every seed


def test_summarize_pairs_only_common_seeds():
    """A baseline cut off after three seeds: the test pairs those three seeds, not positions."""
    runs = [r for r in hand_made_runs() if not (r["strategy"] == "none" and r["seed"] >= 3)]
    arm = summarize(runs)["arms"]["contextual"]
    assert arm["accuracy_pvalue_t"] == pytest.approx(stats.ttest_rel(ACC["contextual"][:3], ACC["none"][:3]).pvalue)


def test_summarize_without_baseline_or_with_one_seed():
    runs = [r for r in hand_made_runs() if r["strategy"] != "none"]
    summary = summarize(runs)
    assert "accuracy_pvalue_t" not in summary["arms"]["contextual"]
    one = summarize([r for r in hand_made_runs() if r["seed"] == 0])
    assert one["arms"]["none"]["accuracy_std"] == 0.0 and one["arms"]["contextual"]["accuracy_pvalue_t"] is None


def test_format_table_lists_every_arm():
    summary = summarize(hand_made_runs())
    table = format_table(summary)
    for strategy in ACC:
        assert STRATEGY_LABELS[strategy] in table
    assert f"{np.mean(ACC['contextual']):.2%}" in table
    assert f"{stats.ttest_rel(ACC['contextual'], ACC['none']).pvalue:.3f}" in table
    assert len(table.splitlines()) == 1 + len(ACC)


# ---------------------------------------------------------------------------------------------
# for real, tiny


def check_summary(summary: dict, seeds: list[int]) -> None:
    assert set(summary["arms"]) == {"none", "random", "contextual"}
    for name, arm in summary["arms"].items():
        assert arm["seeds"] == seeds
        for m in ("inactive_fraction", "accuracy"):
            assert isinstance(arm[m], list) and len(arm[m]) == len(seeds)
            assert all(0.0 <= v <= 1.0 for v in arm[m])
            assert arm[f"{m}_mean"] == pytest.approx(np.mean(arm[m]))
            assert arm[f"{m}_std"] == pytest.approx(np.std(arm[m], ddof=1))
        if name != "none":
            for key in ("accuracy_pvalue_t", "accuracy_pvalue_wilcoxon"):
                assert key in arm and (arm[key] is None or 0.0 <= arm[key] <= 1.0)


def test_compare_writes_summary(lfw, tmp_path):
    recipe = replace(FAST, train=FAST.train.but(epochs=2), max_identities=60, reactivate_last_epoch=1)
    out = tmp_path / "compare"
    summary = compare(recipe, seeds=[0, 1], arms=("none", "random", "contextual"), lfw=lfw, out=out,
                      progress=False, log=lambda *_: None)
    on_disk = json.loads((out / "summary.json").read_text())
    check_summary(on_disk, [0, 1])
    assert on_disk["arms"] == json.loads(json.dumps(summary["arms"]))
    assert on_disk["recipe"] == "fast" and on_disk["tau"] == FAST.tau and on_disk["reactivate_last_epoch"] == 1
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 6 and [(r["seed"], r["strategy"]) for r in runs][:3] == [(0, "none"), (0, "random"),
                                                                                  (0, "contextual")]
    for r in runs:  # every arm carries the same bookkeeping: one detection event at the end of epoch 1
        assert [e["epoch"] for e in r["events"]] == [1] and len(r["history"]) == 3
    for strategy in ("none", "random", "contextual"):
        assert STRATEGY_LABELS[strategy] in format_table(on_disk)


def test_cli_compare(lfw_root, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(["compare", "--recipe", "fast", "--seeds", "2", "--max-identities", "60", "--epochs", "1",
                     "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    check_summary(summary, [0, 1])
    assert summary["train_config"]["epochs"] == 1
    printed = capsys.readouterr().out
    assert STRATEGY_LABELS["contextual"] in printed and STRATEGY_LABELS["none"] in printed
