"""Branching attribute heads: the shared trunk computes once for all heads; MACs; joint fine-tuning
runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craftlib.companions.attributes import branching as B
from craftlib.data import FaceSet
from craftlib.losses import MarginHead
from craftlib.models import count_macs

from attribute_data import TOY, toy_model

BRANCHES = {
    "black_hair": "stem",
    "blond_hair": "block1",
    "smiling": "block3",
    "mouth_open": "block3",
    "male": "embedding",
    "senior": "block5",
    "young": "block4",
}


def count_calls(model):
    """Forward calls per trunk stage (and per conv1), counted with forward hooks."""
    calls = {}
    mods = {**B.stage_modules(model), "conv1": model.conv1}
    handles = [
        m.register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
        for n, m in mods.items()
    ]
    return calls, handles


def test_shared_trunk_computes_once_for_all_heads():
    trunk = toy_model()
    net = B.BranchingNet(trunk, BRANCHES).eval()
    calls, handles = count_calls(trunk)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        emb, logits = net(x)
    for h in handles:
        h.remove()
    assert calls == {name: 1 for name in ("conv1", *B.STAGES)}, calls
    assert set(logits) == set(BRANCHES) and all(v.shape == (5,) for v in logits.values())
    with torch.no_grad():
        torch.testing.assert_close(emb, trunk(x))  # the unrolled trunk is the trunk


def test_trunk_stops_at_the_deepest_branch():
    trunk = toy_model()
    net = B.BranchingNet(trunk, {"a": "stem", "b": "block2"}).eval()
    calls, handles = count_calls(trunk)
    with torch.no_grad():
        emb, logits = net(torch.randn(2, 3, 16, 16), embedding=False)
    for h in handles:
        h.remove()
    assert emb is None and set(logits) == {"a", "b"}
    assert calls == {"conv1": 1, "stem": 1, "block1": 1, "block2": 1}


def test_bad_stage_and_empty_branches():
    with pytest.raises(ValueError, match="stage must be one of"):
        B.BranchingNet(toy_model(), {"a": "block7"})
    with pytest.raises(ValueError, match="at least one"):
        B.BranchingNet(toy_model(), {})


def test_macs_shared_vs_separate():
    trunk = toy_model()
    m = B.macs_table(trunk, BRANCHES)
    full = count_macs(trunk, 16)
    assert m["trunk"] == full
    assert m["trunk_to_stage"]["embedding"] == full
    assert m["trunk_to_stage"]["stem"] < m["trunk_to_stage"]["block3"] < full
    heads = sum(m["heads"].values())
    assert m["shared"] == full + heads  # one trunk, every head once
    assert m["separate_full"] == full * (1 + len(BRANCHES)) + heads
    assert m["shared"] < m["separate_truncated"] < m["separate_full"]


def toy_data(n_people=6, per=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_people), per)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    files = [f"P{k}/P{k}_{i:04d}.jpg" for i, k in enumerate(labels)]
    return FaceSet(images, labels, [f"P{k}" for k in range(n_people)], files)


def test_finetune_trains_heads_and_trunk_and_skips_unknown_labels():
    data = toy_data()
    trunk = toy_model()
    net = B.BranchingNet(trunk, {"bright": "stem", "coin": "embedding"})
    y = np.stack(
        [
            (data.images.mean((1, 2, 3)) > 127.5),
            np.random.default_rng(0).random(len(data.labels)) < 0.5,
        ],
        1,
    )
    y = y.astype(np.int8)
    y[::5, 1] = -1
    head = MarginHead(TOY.embedding_dim, data.num_classes)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history = B.finetune(
        net, head, data, y, B.FinetuneConfig(epochs=2, batch_size=16, lr=0.05, head_lr=0.1)
    )
    assert [h["epoch"] for h in history] == [1, 2] and all(
        np.isfinite(h["attribute_loss"]) for h in history
    )
    assert not net.training
    changed = [
        k
        for k, v in net.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert any(k.startswith("trunk.conv1") for k in changed) and any(
        k.startswith("heads.coin") for k in changed
    )
    out = B.predict(net, data.images)
    assert set(out) == {"bright", "coin"} and out["bright"].shape == (len(data.labels),)
    with pytest.raises(ValueError, match="expected"):
        B.finetune(net, head, data, y[:, :1])


def test_finetune_max_steps_and_control():
    data = toy_data()
    net = B.BranchingNet(toy_model(), {"a": "block1"})
    y = np.zeros((len(data.labels), 1), dtype=np.int8)
    before = {k: v.clone() for k, v in net.heads.state_dict().items()}
    history = B.finetune(
        net,
        MarginHead(TOY.embedding_dim, data.num_classes),
        data,
        y,
        B.FinetuneConfig(epochs=3, batch_size=16, max_steps=2, attribute_weight=0.0),
    )
    assert history[-1]["step"] == 2
    after = net.heads.state_dict()  # weight 0: the heads get no gradient (BN running stats aside)
    assert torch.equal(before["a.linear.weight"], after["a.linear.weight"])


def test_margin_head_from_checkpoint(tmp_path, toy_faces, toy_config):
    from craftlib.checkpoints import load_model
    from craftlib.training import Trainer

    t = Trainer(toy_faces, toy_config.but(epochs=1), progress=False)
    t.fit()
    t.save(tmp_path / "c.pt")
    _, ckpt = load_model(tmp_path / "c.pt")
    head = B.margin_head_from(ckpt)
    torch.testing.assert_close(head.weight, t.head.weight)
