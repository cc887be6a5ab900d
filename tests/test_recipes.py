"""Recipes and ``CraftSpec``: the one object that defines a CRAFT run and the one place its callback
is built."""

from __future__ import annotations

import ast
import json
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from craftlib.reactivation import PAPER_READING, CraftSpec, ReactivationCallback
from craftlib.recipes import (
    ARM_LABELS,
    ARMS,
    DEFAULT_ARMS,
    FAST,
    PAPER,
    RECIPES,
    WORKSHOP,
    WORKSHOP_EARLY,
    Recipe,
    get_recipe,
    recipe_from_flags,
)
from craftlib.training import TrainConfig

PACKAGE = Path(__file__).resolve().parent.parent / "craftlib"


def test_the_default_spec_is_the_functional_detector_with_the_full_reset():
    spec = CraftSpec()
    assert (spec.strategy, spec.score, spec.tau, spec.reference) == (
        "contextual",
        "silent",
        0.01,
        "max",
    )
    assert spec.strong_quantile == 0.5 and spec.reset_step is True
    assert spec.downstream in (
        "rescale",
        "zero",
        "reinit",
    )  # the next layer is reset (which way: by experiment)
    assert (spec.every, spec.first_epoch, spec.last_epoch) == ("epoch", 1, None)


def test_paper_reading_is_the_first_release():
    assert (PAPER_READING.score, PAPER_READING.tau, PAPER_READING.strong_quantile) == (
        "max",
        0.1,
        0.0,
    )
    assert (PAPER_READING.downstream, PAPER_READING.reset_step, PAPER_READING.strategy) == (
        "keep",
        False,
        "contextual",
    )


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"strategy": "magic"}, "strategy"),
        ({"tau": 1.5}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"score": "loudness"}, "score"),
        ({"downstream": "mute"}, "downstream"),
        ({"strong_quantile": 1.0}, "strong_quantile"),
        ({"strong_quantile": -0.1}, "strong_quantile"),
    ],
)
def test_a_bad_spec_is_refused_when_made(changes, field):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        CraftSpec(**changes)
    with pytest.raises(ValueError, match=field.split("_")[0]):
        CraftSpec().but(**changes)


def test_but_to_dict_from_dict():
    spec = CraftSpec().but(score="max", tau=0.2, every=5)
    # a copy, frozen original
    assert spec.score == "max" and spec.every == 5 and CraftSpec().score == "silent"
    assert CraftSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert [f.name for f in fields(CraftSpec)] == list(spec.to_dict())


def test_stop_epoch_defaults_to_two_thirds_of_the_run():
    assert CraftSpec().stop_epoch(12) == 8 and CraftSpec().stop_epoch(3) == 2
    assert CraftSpec(last_epoch=5).stop_epoch(12) == 5


def test_callback_carries_every_field_of_the_spec():
    spec = CraftSpec(
        strategy="orthogonal",
        score="effective",
        tau=0.05,
        reference=95,
        every=7,
        first_epoch=2,
        last_epoch=4,
        strong_quantile=0.25,
        downstream="zero",
        reset_step=False,
    )
    cb = spec.callback(seed=3, epochs=10)
    assert isinstance(cb, ReactivationCallback)
    assert (cb.strategy, cb.score, cb.tau, cb.reference, cb.every) == (
        "orthogonal",
        "effective",
        0.05,
        95,
        7,
    )
    assert (cb.first_epoch, cb.last_epoch, cb.strong_quantile, cb.downstream, cb.reset_step) == (
        2,
        4,
        0.25,
        "zero",
        False,
    )
    # the spec's default stop, not the class's
    assert CraftSpec().callback(seed=0, epochs=9).last_epoch == 6
    same = CraftSpec().callback(seed=3, epochs=10)
    # seeded by the run's seed
    assert torch.equal(cb.generator.get_state(), same.generator.get_state())
    assert not torch.equal(
        cb.generator.get_state(), CraftSpec().callback(seed=4, epochs=10).generator.get_state()
    )


@pytest.mark.slow
def test_the_callback_is_built_in_exactly_one_place_in_craftlib():
    """Issue #8: CLI, experiments, notebooks and DDP all go through ``CraftSpec.callback``.

    No module calls ``ReactivationCallback`` (or a subclass, e.g. DDP's) itself;
    ``CraftSpec.callback`` builds it, taking the class as an argument, from the spec alone (issue
    23: one signature).
    """
    trees = {path.name: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}
    family = {"ReactivationCallback"}
    for tree in trees.values():  # subclasses, however deep
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", None)) in family for b in node.bases
            ):
                family.add(node.name)
    direct = [
        (name, node.lineno)
        for name, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) in family
    ]
    assert direct == []
    spec = next(
        n
        for n in ast.walk(trees["reactivation.py"])
        if isinstance(n, ast.ClassDef) and n.name == "CraftSpec"
    )
    build = next(n for n in spec.body if isinstance(n, ast.FunctionDef) and n.name == "callback")
    (call,) = [n for n in ast.walk(build) if isinstance(n, ast.Call)]
    assert ast.unparse(call) == "(cls or ReactivationCallback)(self, seed=seed, epochs=epochs)"
    assert build.args.args[-1].arg == "cls"


# ---------------------------------------------------------------------------------------------
# recipes and arms


def test_recipe_properties_and_arms():
    assert WORKSHOP.tau == WORKSHOP.craft.tau == 0.01 and WORKSHOP.last_epoch == 6
    # every arm detects
    assert WORKSHOP.arm("none").strategy == "none" and WORKSHOP.arm("none").score == "silent"
    assert WORKSHOP.arm("random_matched") == WORKSHOP.craft.but(strategy="random_matched")
    assert WORKSHOP.arm("contextual_weight") == PAPER_READING.but(
        last_epoch=WORKSHOP.craft.last_epoch
    )
    with pytest.raises(ValueError, match="arm must be one of"):
        WORKSHOP.arm("craft")


@pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=list(RECIPES))
def test_every_arm_keeps_the_recipe_schedule(recipe):
    """Arms differ in what they do to inactive filters, never in when they act (the paper-reading
    arm included)."""
    for name in ARMS:
        spec = recipe.arm(name)
        assert (spec.every, spec.first_epoch, spec.last_epoch) == (
            recipe.craft.every,
            recipe.craft.first_epoch,
            recipe.craft.last_epoch,
        ), name
        assert recipe.callback(arm=name).last_epoch == recipe.last_epoch, name
    weight = recipe.arm("contextual_weight")
    assert (weight.score, weight.tau, weight.downstream, weight.strong_quantile) == (
        "max",
        0.1,
        "keep",
        0.0,
    )


def test_every_arm_is_valid_and_labelled():
    assert DEFAULT_ARMS == ("none", "contextual", "random_matched")
    assert set(DEFAULT_ARMS) <= set(ARMS) and set(ARM_LABELS) == set(ARMS)
    for name in ARMS:
        assert isinstance(FAST.arm(name), CraftSpec)
    assert len({ARM_LABELS[a] for a in ARMS}) == len(ARMS)  # no two arms look alike in a table


def test_recipe_callback_uses_the_run_seed_and_the_arm():
    cb = WORKSHOP.callback()
    assert cb.strategy == "contextual" and cb.last_epoch == 6
    assert torch.equal(
        cb.generator.get_state(), torch.Generator().manual_seed(WORKSHOP.train.seed).get_state()
    )
    assert WORKSHOP.callback(seed=5, arm="none").strategy == "none"
    assert torch.equal(
        WORKSHOP.callback(seed=5).generator.get_state(),
        torch.Generator().manual_seed(5).get_state(),
    )


def test_recipe_but_changes_training_and_spec_fields():
    r = FAST.but(craft={"tau": 0.2, "downstream": "keep"}, lr=0.05, model__input_size=40)
    assert (
        r.train.lr == 0.05
        and r.train.model.input_size == 40
        and r.tau == 0.2
        and r.craft.downstream == "keep"
    )
    assert r.name == FAST.name and r.max_identities == FAST.max_identities
    assert FAST.train.lr == 0.1 and FAST.tau == 0.3  # the original is unchanged
    assert FAST.but(epochs=6).last_epoch == 2  # FAST's spec fixes its last epoch


def test_recipe_to_dict_is_json_and_rebuilds_its_parts():
    d = json.loads(json.dumps(WORKSHOP.to_dict()))
    assert set(d) == {"name", "train", "craft", "max_identities"}
    assert TrainConfig.from_dict(d["train"]) == WORKSHOP.train
    assert CraftSpec.from_dict(d["craft"]) == WORKSHOP.craft


def test_the_named_recipes():
    assert {"workshop", "workshop-early", "paper", "fast"} <= set(RECIPES)
    assert all(name == r.name for name, r in RECIPES.items())
    assert get_recipe("fast") is FAST
    with pytest.raises(ValueError, match="recipe must be one of"):
        get_recipe("huge")
    w = WORKSHOP.train
    assert (w.epochs, w.lr, w.weight_decay, w.weight_decay_scope, w.schedule) == (
        10,
        0.1,
        1e-2,
        "all",
        "onecycle",
    )
    assert w.model.input_size == 40 and WORKSHOP.max_identities is None
    assert WORKSHOP_EARLY.train == WORKSHOP.train and WORKSHOP_EARLY.last_epoch == 3
    assert WORKSHOP_EARLY.craft == WORKSHOP.craft.but(last_epoch=3)
    assert FAST.craft.tau == 0.3 and FAST.last_epoch == 2 and FAST.max_identities == 150
    assert FAST.train.model.input_size == 32 and FAST.train.epochs == 3
    assert PAPER.train.weight_decay == 5e-4 and PAPER.train.schedule == "cosine"
    assert all(isinstance(r, Recipe) and r.description for r in RECIPES.values())


def test_both_command_lines_build_their_recipe_with_one_function():
    """``python -m craftlib train`` and ``python -m craftlib.scale.cli train`` share
    ``recipe_from_flags``: a flag one parser lacks is simply not applied."""
    from craftlib.scale.cli import build_parser as scale_flags
    from craftlib.workshop.cli import build_parser as craftlib_flags

    scaled = recipe_from_flags(
        scale_flags().parse_args(
            [
                "train",
                "--data",
                "faces",
                "--recipe",
                "gpu",
                "--size",
                "64",
                "--embedding-dim",
                "128",
                "--grad-clip",
                "2",
                "--tau",
                "0.05",
                "--every",
                "10",
                "--max-identities",
                "40",
            ]
        )
    )
    assert (
        scaled.train.model.input_size,
        scaled.train.model.embedding_dim,
        scaled.train.grad_clip,
    ) == (64, 128, 2.0)
    assert (scaled.craft.tau, scaled.craft.every, scaled.max_identities) == (0.05, 10, 40)
    assert scaled.but(
        craft={"tau": 0.01, "every": "epoch"},
        model__input_size=112,
        model__embedding_dim=512,
        grad_clip=5.0,
    ) == replace(RECIPES["gpu"], max_identities=40)
    local = recipe_from_flags(
        craftlib_flags().parse_args(
            [
                "train",
                "--recipe",
                "fast",
                "--weight-decay-scope",
                "no_norm_bias",
                "--downstream",
                "keep",
            ]
        )
    )
    assert (local.train.weight_decay_scope, local.craft.downstream, local.train.grad_clip) == (
        "no_norm_bias",
        "keep",
        FAST.train.grad_clip,
    )
