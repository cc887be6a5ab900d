"""The companion comparison: arm recipes, its records' extra block, the paired summary and its
tables."""

from __future__ import annotations

import numpy as np
import pytest

from craftlib import pages
from craftlib.companions.sparsity import study as companion
from craftlib.recipes import WORKSHOP


def test_arm_recipes_change_only_the_model():
    base = WORKSHOP.train
    assert companion.arm_recipe(WORKSHOP, "none").train == base
    crelu = companion.arm_recipe(WORKSHOP, "crelu").train
    assert crelu.model.stem_act == "crelu" and crelu.but(model__stem_act="prelu") == base
    topk = companion.arm_recipe(WORKSHOP, "topk").train.model
    assert (topk.topk, topk.topk_after) == (0.2, (2,))
    with pytest.raises(ValueError):
        companion.arm_recipe(WORKSHOP, "dropout")


def test_folder_fingerprint_names_the_arms():
    meta = companion.folder_fingerprint(WORKSHOP, "deepfunneled")
    assert meta["recipe"]["name"] == "workshop" and set(meta["companion_arms"]) == set(
        companion.COMPANION_ARMS
    )


def _with_extra(record, seed, arm):
    rng = np.random.default_rng([seed, sum(map(ord, arm))])
    shift = {"none": 0.0, "contextual": 0.02, "crelu": 0.2, "topk": 0.1}[arm]
    record["companion"] = {
        "params": 708320 if arm != "crelu" else 707328,
        "macs": 21606400,
        "pairing": {
            "mean": -0.6 + shift + rng.normal(0, 0.01),
            "paired_fraction": 0.5 - shift,
            "cos": [-0.6] * 64,
            "matched": {"paired_fraction": 0.1},
        },
        "shapebias": {
            "clean": record["accuracy"],
            "low_pass": 0.7,
            "edge_map": 0.6,
            "patch_shuffle": 0.6,
            "index": 0.6 + shift / 2 + rng.normal(0, 0.01),
            "index_edges": 0.5,
            "shape_retention": 0.6 + rng.normal(0, 0.01),
            "texture_retention": shift,
        },
    }
    return record


@pytest.fixture
def records(make_record):
    acc = {"none": 0.80, "contextual": 0.81, "crelu": 0.79, "topk": 0.78}
    out = []
    for arm in acc:
        for s in range(5):
            # trained as that CRAFT arm
            record = make_record(companion.COMPANION_ARMS[arm]["craft"], s, acc[arm] + 0.005 * s)
            out.append(_with_extra({**record, "arm": arm}, s, arm))
    return out


def test_summary_pairs_every_metric_against_standard(records):
    s = companion.summary(records)
    assert list(s["main"].arms)[0] == "none"
    assert s["main"].arms["crelu"].label.startswith("CReLU")
    p = s["extra"]["crelu"]["vs_baseline"]["pair_mean"]
    assert (
        p.n == 5 and p.mean_difference == pytest.approx(0.2, abs=0.02) and p.holm_pvalue is not None
    )
    assert s["main"].arms["topk"].vs_baseline["accuracy"].mean_difference == pytest.approx(-0.02)
    table = companion.render_markdown(s)
    assert table.count("\n") == 1 + len(companion.COMPANION_ARMS)
    assert "CReLU stem" in table and "707,328" in table and "21.6 M" in table
    shape = companion.render_shape_table(s)
    assert (
        shape.count("\n") == 1 + len(companion.COMPANION_ARMS)
        and "| standard training | 80.0% ± 0.0% |" not in shape
    )
    assert "70.0% ± 0.0%" in shape  # the blurred accuracy of every run
    texture = s["extra"]["crelu"]["vs_baseline"]["texture_retention"]
    assert texture.mean_difference == pytest.approx(0.2) and "+0.20" in shape.splitlines()[4]
    assert s["extra"]["none"]["values"]["shape_retention"][0] == pytest.approx(0.6, abs=0.05)


@pytest.mark.slow
def test_runs_write_records_that_summarize(tiny_faces, devtest_subset, lfw, tmp_path):
    """Two arms of a FAST-budget run on 30 identities: a CReLU model with its companion block,
    resumable."""
    from craftlib.recipes import FAST
    from craftlib.study.experiments import load_records, write_record

    recipe = FAST.but(epochs=2, batch_size=32, craft={"last_epoch": 1})
    meta = companion.folder_fingerprint(recipe, lfw.variant)
    for arm in ("none", "crelu", "topk"):
        record = companion.run_one(
            tiny_faces, devtest_subset, recipe, arm, 0, models=tmp_path / "models"
        )
        write_record(tmp_path / "out", record, meta)
    records = load_records(tmp_path / "out")
    crelu = next(r for r in records if r["arm"] == "crelu")
    assert crelu["model"]["stem_act"] == "crelu" and len(crelu["scores"]["silent"]) == 32
    c = crelu["companion"]
    standard = next(r for r in records if r["arm"] == "none")
    assert c["pairing"]["n"] == 32 and len(c["pairing"]["cos"]) == 32
    assert (
        c["params"] < standard["companion"]["params"] and c["macs"] < standard["companion"]["macs"]
    )
    assert {"clean", "low_pass", "edge_map", "patch_shuffle", "index"} <= set(c["shapebias"])
    assert c["shapebias"]["clean"] == crelu["accuracy"]
    again = companion.run_one(
        tiny_faces, devtest_subset, recipe, "crelu", 0, models=tmp_path / "models"
    )
    assert again["accuracy"] == crelu["accuracy"]  # loaded from its checkpoint, not retrained
    s = companion.summary(records)
    assert set(s["main"].arms) == {
        "none",
        "crelu",
        "topk",
    } and "CReLU" in companion.render_markdown(s)
    twins = companion.twins(tmp_path / "out", tmp_path / "models", lfw=lfw)
    assert list(twins["seeds"]) == ["0"] and twins["probe_faces"] == 256
    assert all(t["cos"] < -0.97 and t["gap"] >= 0 for t in twins["seeds"]["0"])
    assert twins["verdict"] in companion.render_twins(twins)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        companion.twins(tmp_path / "out", tmp_path / "elsewhere", lfw=lfw)


def test_results_md_shows_what_the_committed_records_say():
    """docs/RESULTS.md's companion tables are the renderers' output on the committed records, digit
    for digit."""
    from craftlib.paths import REPO_ROOT
    from craftlib.study.experiments import load_records

    records = load_records(REPO_ROOT / companion.DEFAULT_OUT)
    assert len(records) >= 20 and {r["seed"] for r in records} >= set(range(5))
    s = companion.summary(records)
    results = (REPO_ROOT / "docs" / "RESULTS.md").read_text()
    for table in (companion.render_markdown(s), companion.render_shape_table(s)):
        assert table in results, (
            "regenerate: python -m craftlib.companions.sparsity.cli --report, then paste summary.md"
        )


def test_results_md_twins_block_is_the_committed_measurement():
    """The twins table and verdict in docs/RESULTS.md are ``render_twins`` of the committed
    twins.json, and the verdict is the declared rule applied to its gaps."""
    import json

    from craftlib.companions.sparsity.pairing import twin_verdict
    from craftlib.paths import REPO_ROOT

    blob = json.loads((REPO_ROOT / companion.DEFAULT_OUT / "twins.json").read_text())
    assert set(blob["seeds"]) == {str(s) for s in range(5)}
    assert blob["verdict"] == twin_verdict(
        [t["gap"] for pairs in blob["seeds"].values() for t in pairs]
    )
    block = pages.read_block(REPO_ROOT / "docs" / "RESULTS.md", "twins:result")
    assert block == companion.render_twins(blob), (
        "regenerate: python -m craftlib.companions.sparsity.cli --twins"
    )
