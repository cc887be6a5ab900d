"""CRAFT as a Lightning callback (craftlib.lightning): Lightning's own Trainer on the CPU, a small
face CNN on real LFW faces; a filter silenced mid-run is renewed and its optimizer state reset, the
other filters keep theirs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip(
    "craftlib.lightning", reason="the optional extra: pip install 'craftlib[lightning]'"
)
pl = lightning.pl

from craftlib.data import to_input  # noqa: E402
from craftlib.losses import MarginHead, margin_loss  # noqa: E402
from craftlib.models import FaceCNN, ModelConfig  # noqa: E402
from craftlib.reactivation import CraftSpec  # noqa: E402

TINY = ModelConfig(input_size=32, stem_channels=8, widths=(4, 8, 8), embedding_dim=8)
SILENCED = [0, 1, 2]


class FaceModule(pl.LightningModule):
    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = FaceCNN(TINY)
        self.head = MarginHead(TINY.embedding_dim, classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return margin_loss(self.head, self.backbone(x), y)[0]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def momentum(trainer, param: torch.Tensor) -> torch.Tensor:
    return trainer.optimizers[0].state[param]["momentum_buffer"].clone()


class Silence(pl.Callback):
    """Before CRAFT at the end of epoch 1: filters 0-2 stop answering (weights zeroed), their
    momentum left as is."""

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 0:
            with torch.no_grad():
                module.backbone.conv1.weight[SILENCED] = 0.0
            self.momentum = momentum(trainer, module.backbone.conv1.weight)


class Look(pl.Callback):
    """After CRAFT at the end of epoch 1: what the renewed and the other filters hold."""

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 0:
            net = module.backbone
            self.conv1 = net.conv1.weight.detach().clone()
            self.gamma = net.bn1.weight.detach().clone()
            self.momentum = {
                name: momentum(trainer, p)
                for name, p in (
                    ("conv1", net.conv1.weight),
                    ("bn1", net.bn1.weight),
                    ("next", net.stem_consumers()[0].weight),
                )
            }


@pytest.fixture(scope="module")
def fitted(tiny_faces, tmp_path_factory):
    images, labels = (
        to_input(torch.from_numpy(tiny_faces.images)),
        torch.from_numpy(tiny_faces.labels),
    )
    silence, craft, look = (
        Silence(),
        lightning.CraftCallback(CraftSpec(), seed=0, backbone="backbone"),
        Look(),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        callbacks=[silence, craft, look],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path_factory.mktemp("lightning")),
    )
    trainer.fit(
        FaceModule(tiny_faces.num_classes), DataLoader(TensorDataset(images, labels), batch_size=32)
    )
    return silence, craft, look, trainer


@pytest.mark.slow
def test_lightning_runs_crafts_schedule_on_the_cpu(fitted):
    _, craft, _, trainer = fitted
    assert [e["epoch"] for e in craft.events] == [
        1,
        2,
    ]  # the end of epochs 1 .. 2/3 of 3 (the study's schedule)
    assert [e["step"] for e in craft.events] == [
        trainer.global_step // 3,
        2 * trainer.global_step // 3,
    ]
    assert craft.craft.state.probe.shape[0] == 32  # the first batch's images (of at most 256)


@pytest.mark.slow
def test_a_silenced_filter_is_renewed_and_its_optimizer_state_reset(fitted):
    silence, craft, look, _ = fitted
    renewed = craft.events[0]["filters"]
    assert set(SILENCED) <= set(renewed) and len(renewed) < TINY.stem_channels
    kept = [i for i in range(TINY.stem_channels) if i not in renewed]
    assert silence.momentum[SILENCED].abs().sum() > 0  # there was momentum to reset
    assert look.conv1[SILENCED].abs().sum() > 0 and torch.all(look.gamma[renewed] == 1.0)
    assert torch.all(look.momentum["conv1"][renewed] == 0) and torch.all(
        look.momentum["bn1"][renewed] == 0
    )
    # downstream="zero": the next layer's input slices
    assert torch.all(look.momentum["next"][:, renewed] == 0)
    # the others keep theirs
    assert torch.equal(look.momentum["conv1"][kept], silence.momentum[kept])
    assert all(look.momentum["conv1"][i].abs().sum() > 0 for i in kept)
