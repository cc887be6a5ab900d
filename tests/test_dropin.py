"""The plain-loop drop-in (craftlib.dropin): the recipe in docs/DROPIN.md runs, built from one
CraftSpec."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from craftlib.data import probe_batch, to_input
from craftlib.dropin import Craft
from craftlib.losses import MarginHead
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import CraftSpec, ReactivationCallback

from lab_browser import free_port

REPO = Path(__file__).resolve().parent.parent
TINY = ModelConfig(input_size=32, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)


def python_blocks() -> list[str]:
    """docs/DROPIN.md's Python blocks as a reader copies them: plain loop, Lightning,
    arcface_torch."""
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "DROPIN.md").read_text(), re.S)


def plain_loop_block() -> str:
    return python_blocks()[0]


def test_the_documented_plain_loop_runs_crafts_schedule(tiny_faces):
    torch.manual_seed(0)
    model = FaceCNN(TINY)
    head = MarginHead(TINY.embedding_dim, tiny_faces.num_classes)
    images, labels = (
        to_input(torch.from_numpy(tiny_faces.images)),
        torch.from_numpy(tiny_faces.labels),
    )
    namespace = {
        "model": model,
        "epochs": 3,
        "probe": probe_batch(tiny_faces.images),
        "optimizer": torch.optim.SGD(
            [*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9
        ),
        "loader": DataLoader(TensorDataset(images, labels), batch_size=32),
        "loss_fn": lambda emb, y: torch.nn.functional.cross_entropy(head(emb, y), y),
    }
    exec(compile(plain_loop_block(), "docs/DROPIN.md", "exec"), namespace)
    craft = namespace["craft"]
    assert [e["epoch"] for e in craft.events] == [
        1,
        2,
    ]  # the end of epochs 1 .. 2/3 of a 3-epoch run
    assert craft.state.step == 3 * len(namespace["loader"]) and all(
        e["strategy"] == "contextual" for e in craft.events
    )


def test_the_callback_is_the_one_craftspec_builds():
    model = FaceCNN(TINY)
    spec = CraftSpec().but(tau=0.05)
    craft = Craft(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        12,
        spec,
        seed=3,
        probe=torch.zeros(4, 3, 32, 32),
    )
    built = spec.callback(3, 12)
    assert type(craft.callback) is ReactivationCallback
    assert vars(craft.callback).keys() == vars(built).keys()
    assert {k: v for k, v in vars(craft.callback).items() if k != "generator"} == {
        k: v for k, v in vars(built).items() if k != "generator"
    }
    assert craft.callback.last_epoch == spec.stop_epoch(12) == 8


def test_bad_models_and_a_missing_probe_are_refused_with_the_way_out():
    linear = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="no conv1"):
        Craft(linear, torch.optim.SGD(linear.parameters(), lr=0.1), 3)
    model = FaceCNN(TINY)
    with pytest.raises(ValueError, match="pass probe="):
        Craft(model, torch.optim.SGD(model.parameters(), lr=0.1), 3)
    assert (
        Craft(
            model, torch.optim.SGD(model.parameters(), lr=0.1), 3, CraftSpec(score="max", tau=0.1)
        ).events
        == []
    )


def _arcface_block_worker(rank: int, port: int, out: str, images, labels) -> None:
    """docs/DROPIN.md's arcface_torch block on one of two gloo ranks: a small FaceCNN in DDP stands
    in for the iResNet-50 (the block's one `backbone = ...` line), trained on this rank's half of
    each batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        setup, per_epoch = python_blocks()[2].split("# at the end of each epoch, on every rank:\n")
        setup = "\n".join(line for line in setup.splitlines() if not line.startswith("backbone = "))
        torch.manual_seed(0)
        model, head = FaceCNN(TINY), MarginHead(TINY.embedding_dim, int(labels.max()) + 1)
        backbone = DistributedDataParallel(model, broadcast_buffers=False)
        margin = DistributedDataParallel(head)
        opt = torch.optim.SGD(
            [*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9, weight_decay=5e-4
        )
        x, y = to_input(torch.from_numpy(images)), torch.from_numpy(labels)
        ns = {
            "backbone": backbone,
            "opt": opt,
            "probe": x[:64],
            "cfg": SimpleNamespace(seed=0, num_epoch=3),
        }
        exec(setup, ns)
        for epoch in range(2):
            for step in range(3):
                # this rank's 16 of the step's 32 faces
                idx = torch.arange(32 * step + rank, 32 * (step + 1), 2)
                loss = F.cross_entropy(margin(backbone(x[idx]), y[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if epoch == 0:
                with torch.no_grad():
                    model.conv1.weight[:4] = (
                        0.0  # four filters fall silent on both ranks, for CRAFT to find
                    )
            # check_replicas in it raises if the ranks differ
            exec(per_epoch, {**ns, "epoch": epoch})
        torch.save(
            {"conv1": model.conv1.weight.detach(), "events": ns["craft"].events},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_documented_arcface_torch_block_keeps_two_ranks_identical(tiny_faces, tmp_path):
    mp.spawn(
        _arcface_block_worker,
        args=(free_port(), str(tmp_path), tiny_faces.images, tiny_faces.labels),
        nprocs=2,
        join=True,
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert torch.equal(r0["conv1"], r1["conv1"]) and r0["events"] == r1["events"]
    assert [e["epoch"] for e in r0["events"]] == [1, 2] and {0, 1, 2, 3} <= set(
        r0["events"][0]["filters"]
    )
    assert (r0["conv1"][:4].abs().amax(dim=(1, 2, 3)) > 1e-3).all()  # the dead filters were renewed
