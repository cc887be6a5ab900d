"""The federated study's readings (craftlib.companions.federated.study): the decay budget of
FedAvg's averaged model, checked on a real run; the death and re-activation tables on records whose
answers are known; and the committed tables of the larger budget in docs/RESULTS.md, which must be
these functions of the committed records."""

from __future__ import annotations

import pytest
import torch

from craftlib import pages
from craftlib.companions.federated import cli as C
from craftlib.companions.federated import federation as F
from craftlib.companions.federated import study as S
from craftlib.companions.federated import widgets as FW
from craftlib.paths import REPO_ROOT
from craftlib.reactivation import CraftSpec
from craftlib.recipes import Recipe
from craftlib.study.survival import decay_curve

FULL = REPO_ROOT / "docs" / "results" / "companion_federated_full"


def test_identical_sites_decay_like_one_model():
    """K sites with the same steps keep identical copies, so the average follows one model's decay
    curve, momentum kept across rounds included; an uneven federation lies between its sites' own
    curves."""
    config = F.FEDERATED.train.but(epochs=10)
    alone = decay_curve(config, 52, 0)[-1]
    assert S.fedavg_decay(config, [52, 52, 52], [100, 200, 300]) == pytest.approx(alone, rel=1e-12)
    mixed = S.fedavg_decay(config, [17, 89], [1, 1])
    assert decay_curve(config, 89, 0)[-1] < mixed < decay_curve(config, 17, 0)[-1]


@pytest.mark.slow  # three toy federated rounds
def test_a_gradient_free_filter_of_fedavg_follows_fedavg_decay(toy_faces, toy_config, monkeypatch):
    """On a real FedAvg run with uneven sites, a conv1 filter that gets no gradient on any site ends
    exactly where ``fedavg_decay`` says, and ``decay_factors`` reads the same number off the run's
    record."""
    frozen = 3
    real = F.client_trainer

    def without_gradient(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.model.conv1.weight.register_hook(
            lambda g: g.index_fill(0, torch.tensor([frozen]), 0.0)
        )
        return trainer

    monkeypatch.setattr(F, "client_trainer", without_gradient)
    recipe = Recipe(
        "toy", toy_config.but(batch_size=8, epochs=3, weight_decay=0.05, lr=0.2), CraftSpec()
    )
    pool = F.subset(toy_faces, range(3))
    fedn = F.Federation(
        [F.subset(pool, [0, 1]), F.subset(pool, [2])], F.subset(toy_faces, [3]), None, pool
    )
    fed = F.FedConfig(strategy="fedavg", clients=2, rounds=3)
    start = F.global_model(recipe, 0).conv1.weight[frozen].norm().item()
    final = {}
    record = F.run(recipe, fed, fedn, on_round=lambda rec, model: final.update(model=model))
    assert record["steps"] == [12, 6]  # 32 and 16 faces at batch 8, 3 rounds
    ratio = final["model"].conv1.weight[frozen].norm().item() / start
    expected = S.fedavg_decay(recipe.train, [4, 2], [32, 16])
    assert ratio == pytest.approx(expected, rel=1e-5)
    assert S.decay_factors(record) == [pytest.approx(expected, rel=1e-12)]
    averaged_at_the_end = (
        2 * decay_curve(recipe.train, 4, 0)[-1] + decay_curve(recipe.train, 2, 0)[-1]
    ) / 3
    # the per-round simulation matters
    assert abs(expected - averaged_at_the_end) > 20 * 1e-5 * expected


def record(
    strategy: str,
    split: str,
    craft: str,
    seed: int,
    silent: float,
    steps: list[int],
    renewed: int = 0,
    sites: list[float] | None = None,
) -> dict:
    """A study record with only what the readings use (the federated recipe, 10 rounds of 1
    epoch)."""
    clients = [{"faces": 32 * n // 10} for n in steps] if strategy not in F.CENTRAL else []
    rounds = [
        {
            "server_renewed": list(range(renewed)) if r == 0 else [],
            "clients": [],
            "global_silent_fraction": silent,
        }
        for r in range(10)
    ]
    final = {"silent_fraction": silent, "accuracy": 0.8}
    if strategy not in F.CENTRAL:
        final["client_silent_fraction"] = sites or [silent] * len(steps)
    return {
        "strategy": strategy,
        "split": split,
        "craft": craft,
        "seed": seed,
        "steps": steps,
        "clients": clients,
        "fed": {"rounds": 10, "local_epochs": 1},
        "recipe": F.FEDERATED.to_dict(),
        "rounds": rounds,
        "final": final,
    }


@pytest.fixture(scope="module")
def known():
    out = []
    for seed, (c, cs, loc, fa) in enumerate(
        [(0.50, 0.10, 0.20, 0.00), (0.60, 0.05, 0.15, 0.05), (0.55, 0.08, 0.25, 0.03)]
    ):
        out += [
            record("central", "iid", "none", seed, c, [2080]),
            record("central_steps", "iid", "none", seed, cs, [520]),
            record("central", "iid", "server", seed, 0.02, [2080], renewed=30 + seed),
            record(
                "local",
                "iid",
                "none",
                seed,
                loc,
                [430, 480, 520, 720],
                sites=[0.1, 0.15, 0.2, 0.3 + seed / 100],
            ),
            record("fedavg", "iid", "none", seed, fa, [430, 480, 520, 720]),
        ]
    return out


def test_death_table_pairs_every_arm_with_the_step_matched_control(known):
    table = S.death_table(known)
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in table.splitlines()
        if line.startswith("| ")
    }
    assert "| 2,080 | 1.2e-05× | 55% [50–60] (3) | +47.33 pts [" in rows["centralised (ceiling)"]
    assert (
        "| 520 | 0.06× | 8% [5–10] (3) | — |"
        in rows["centralised, one site's step count (control)"]
    )
    assert "| 430–720 |" in rows["local only"] and "(each site)" in rows["local only"]
    assert (
        "(the average)" in rows["FedAvg (private heads)"]
        and "-5.00 pts [" in rows["FedAvg (private heads)"]
    )
    assert "AdaFedFR" not in table  # arms without records are left out, not drawn empty
    assert (
        "Spearman ρ = 0.99 between a site's SGD steps and its silent fraction (12 sites: every "
        "local-only run, both splits)" in table
    )


def test_reactivation_table_counts_what_was_renewed(known):
    table = S.reactivation_table(known)
    assert table.count("\n| ") == 1  # one CRAFT arm, one row
    assert (
        "| centralised (ceiling) | — | server | 31 [30–32] (3) | — | 2% [2–2] (3) | -53.00 pts ["
        in table
    )
    assert S.renewed_count(record("fedavg", "iid", "server", 0, 0.0, [10], renewed=4)) == 4
    per_client = record("fedavg", "iid", "client", 0, 0.0, [10, 10, 10])
    per_client["rounds"][2]["clients"] = [
        {"renewed": [1, 5]},
        {"renewed": [5, 7]},
        {"renewed": [5, 1]},
    ]
    per_client["rounds"][3]["clients"] = [{"renewed": [2]}, {"renewed": [3]}, {"renewed": []}]
    # 1 and 5 in round 3
    assert S.renewed_count(per_client) == 8 and S.blended_count(per_client) == 2


def test_death_figure_draws_both_panels(known):
    fig = FW.death_figure(known)
    over_rounds, against_steps = fig.axes
    assert len(over_rounds.get_lines()) == 4  # central, control, local, FedAvg (iid only here)
    assert against_steps.get_xscale() == "log" and len(against_steps.collections) == 4


# ---------------------------------------------------------------------------------------------
# the committed larger budget


def block(name: str) -> str:
    return pages.read_block(REPO_ROOT / "docs" / "RESULTS.md", name)


def test_report_writes_the_tables_and_the_figure(tmp_path):
    """``--report`` on a copy of the committed records: summary.md holds the three tables, death.png
    is a picture."""
    import shutil

    shutil.copytree(FULL / "records", tmp_path / "records")
    C.main(["--out", str(tmp_path), "--report"])
    records = S.load_study(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert (
        S.study_table(records) in text
        and S.death_table(records) in text
        and S.reactivation_table(records) in text
    )
    assert (tmp_path / "death.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no records"):
        C.report(tmp_path / "empty")


def test_results_md_larger_budget_is_the_committed_records():
    """The declared design, complete: every arm seeds 0-2, the extension's four arms seeds 0-9; one
    design in the folder; and RESULTS.md's three tables are exactly the readings of these
    records."""
    records = S.load_study(FULL)
    extension = {"central-all-none", "central_steps-all-none", "fedavg-iid-none", "local-iid-none"}
    seeds = {}
    for r in records:
        seeds.setdefault(r["name"].rsplit("-s", 1)[0], set()).add(r["seed"])
    assert set(seeds) == set(S.arm_names()) and len(records) == 17 * 3 + 4 * 7
    assert all(s == set(range(10 if arm in extension else 3)) for arm, s in seeds.items())
    S.check_study_folder(FULL, F.FedConfig(identities=1202, rounds=10), F.FEDERATED)
    assert block("federated-full:table") == S.study_table(records)
    assert block("federated-full:death") == S.death_table(records)
    assert block("federated-full:reactivation") == S.reactivation_table(records)
