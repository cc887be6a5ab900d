"""The plain-loop drop-in (craftlib.dropin): the recipe in docs/DROPIN.md runs, built from one CraftSpec."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from craftlib.data import probe_batch, to_input
from craftlib.dropin import Craft
from craftlib.losses import MarginHead
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import ReactivationCallback
from craftlib.recipes import CraftSpec

REPO = Path(__file__).resolve().parent.parent
TINY = ModelConfig(input_size=32, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)


def plain_loop_block() -> str:
    """The first Python block of docs/DROPIN.md: the ten-line recipe as a reader copies it."""
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "DROPIN.md").read_text(), re.S)[0]


def test_the_documented_plain_loop_runs_crafts_schedule(tiny_faces):
    torch.manual_seed(0)
    model = FaceCNN(TINY)
    head = MarginHead(TINY.embedding_dim, tiny_faces.num_classes)
    images, labels = to_input(torch.from_numpy(tiny_faces.images)), torch.from_numpy(tiny_faces.labels)
    namespace = {"model": model, "epochs": 3, "probe": probe_batch(tiny_faces.images),
                 "optimizer": torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9),
                 "loader": DataLoader(TensorDataset(images, labels), batch_size=32),
                 "loss_fn": lambda emb, y: torch.nn.functional.cross_entropy(head(emb, y), y)}
    exec(compile(plain_loop_block(), "docs/DROPIN.md", "exec"), namespace)
    craft = namespace["craft"]
    assert [e["epoch"] for e in craft.events] == [1, 2]  # the end of epochs 1 .. 2/3 of a 3-epoch run
    assert craft.state.step == 3 * len(namespace["loader"]) and all(e["strategy"] == "contextual" for e in craft.events)


def test_the_callback_is_the_one_craftspec_builds():
    model = FaceCNN(TINY)
    spec = CraftSpec().but(tau=0.05)
    craft = Craft(model, torch.optim.SGD(model.parameters(), lr=0.1), 12, spec, seed=3, probe=torch.zeros(4, 3, 32, 32))
    built = spec.callback(3, 12)
    assert type(craft.callback) is ReactivationCallback
    assert vars(craft.callback).keys() == vars(built).keys()
    assert {k: v for k, v in vars(craft.callback).items() if k != "generator"} == \
           {k: v for k, v in vars(built).items() if k != "generator"}
    assert craft.callback.last_epoch == spec.stop_epoch(12) == 8


def test_bad_models_and_a_missing_probe_are_refused_with_the_way_out():
    linear = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="no conv1"):
        Craft(linear, torch.optim.SGD(linear.parameters(), lr=0.1), 3)
    model = FaceCNN(TINY)
    with pytest.raises(ValueError, match="pass probe="):
        Craft(model, torch.optim.SGD(model.parameters(), lr=0.1), 3)
    assert Craft(model, torch.optim.SGD(model.parameters(), lr=0.1), 3, CraftSpec(score="max", tau=0.1)).events == []
