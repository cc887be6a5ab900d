"""Checkpoints: round trip, atomic writes, ``weights_only`` loading and clear refusals."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from craftlib.checkpoints import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from craftlib.models import ModelConfig
from craftlib.paths import atomic_write
from craftlib.recipes import FAST
from craftlib.training import Trainer
from craftlib.verification import embed

CFG = FAST.train.but(batch_size=32, epochs=1)


@pytest.fixture(scope="module")
def trained(tiny_faces, tmp_path_factory):
    """A trainer after a few steps (so BatchNorm statistics are not the defaults) and its
    checkpoint."""
    trainer = Trainer(tiny_faces, CFG, progress=False)
    trainer.train_steps(2)
    path = trainer.save(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")
    return trainer, path


def test_round_trip_gives_identical_embeddings(trained, tiny_faces):
    trainer, path = trained
    model, ckpt = load_model(path)
    assert not model.training
    assert model.config == trainer.config.model
    assert ckpt["num_classes"] == tiny_faces.num_classes and ckpt["step"] == 2
    images = tiny_faces.images[:16]
    np.testing.assert_array_equal(embed(model, images), embed(trainer.model, images))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_checkpoint_is_plain_data_for_weights_only(trained):
    _, path = trained
    ckpt = torch.load(path, weights_only=True)  # raises on anything but tensors and plain values
    assert ckpt["format"] == FORMAT
    assert {
        "config",
        "model",
        "head",
        "optimizer",
        "scheduler",
        "history",
        "epoch",
        "step",
        "classes",
    } <= set(ckpt)


def test_checkpoint_names_its_training_identities(trained, tiny_faces):
    """``evaluate`` checks these against the pairs of a protocol (leakage), so they must be
    stored."""
    _, path = trained
    ckpt = load_checkpoint(path)
    assert (
        ckpt["classes"] == list(tiny_faces.classes)
        and ckpt["num_classes"] == len(ckpt["classes"]) == 30
    )


def test_save_leaves_no_temporary_files(trained):
    _, path = trained
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"x": 1})

    def crash(tmp):
        tmp.write_bytes(b"half a checkp")
        raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert torch.load(path, weights_only=True)["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_different_model_config_is_refused(trained):
    _, path = trained
    with pytest.raises(CheckpointError, match="model does not match") as err:
        load_checkpoint(path, expect_model=ModelConfig(input_size=48))
    assert "input_size" in str(err.value)


def test_different_number_of_classes_is_refused(trained, faces):
    _, path = trained
    with pytest.raises(CheckpointError, match="identities"):
        load_checkpoint(path, expect_classes=999)
    # a trainer on 100 identities cannot resume it
    with pytest.raises(CheckpointError, match="30 identities"):
        Trainer(faces, CFG, progress=False).resume(path)


def test_resume_with_a_different_architecture_is_refused(trained, tiny_faces):
    _, path = trained
    with pytest.raises(CheckpointError, match="stem_bn"):
        Trainer(tiny_faces, CFG.but(model__stem_bn=False), progress=False).resume(path)


def test_random_file_is_refused(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_model(path)


def test_truncated_file_is_refused(trained, tmp_path):
    _, path = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(cut)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "state_dict.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match=FORMAT):
        load_model(path)


def test_pickled_object_is_not_executed(tmp_path, capsys):
    class Sneaky:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "sneaky.pt"
    path.write_bytes(pickle.dumps({"format": FORMAT, "x": Sneaky()}, protocol=2))
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_are_refused(trained, tmp_path):
    _, path = trained
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["conv1.weight"] = torch.zeros(32, 3, 3, 3)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(bad)
