"""``runs.train_cached``: runs kept on disk, reloaded, resumed, and keyed on everything that decides
them."""

from __future__ import annotations

import torch

from craftlib.reactivation import CraftSpec
from craftlib.runs import _run_key, train_cached
from craftlib.training import Trainer

QUIET = dict(progress=False, log=lambda *a: None)


def test_saves_reloads_and_resumes(toy_faces, toy_config, tmp_path):
    seen, logged = [], []
    first = train_cached(
        toy_faces,
        toy_config,
        name="toy",
        keep=(1,),
        folder=tmp_path,
        progress=False,
        log=lambda *a: None,
        after_epoch=lambda t: seen.append(t.epoch),
    )
    assert seen == [1, 2, 3]
    assert sorted(p.name.rsplit("-", 1)[1] for p in tmp_path.glob("toy-*.pt")) == [
        "e001.pt",
        "e003.pt",
    ]
    again = train_cached(
        toy_faces,
        toy_config,
        name="toy",
        folder=tmp_path,
        progress=False,
        log=logged.append,
        after_epoch=lambda t: seen.append(("loaded", t.epoch)),
    )
    assert seen[-1] == ("loaded", 3) and again.epoch == 3 and "loaded epoch 3" in logged[0]
    assert torch.equal(again.model.conv1.weight, first.model.conv1.weight)
    # stopping early loads the kept epoch; a fresh run to epoch 1 gives the same weights
    early = train_cached(toy_faces, toy_config, name="toy", until=1, folder=tmp_path, **QUIET)
    fresh = Trainer(toy_faces, toy_config, progress=False)
    fresh.fit(epochs=1)
    assert early.epoch == 1 and torch.equal(early.model.conv1.weight, fresh.model.conv1.weight)


def test_resumes_a_shorter_run_bit_for_bit(toy_faces, toy_config, tmp_path):
    train_cached(toy_faces, toy_config, name="toy", until=2, folder=tmp_path, **QUIET)
    resumed = train_cached(toy_faces, toy_config, name="toy", folder=tmp_path, **QUIET)
    straight = Trainer(toy_faces, toy_config, progress=False)
    straight.fit()
    assert resumed.epoch == 3
    assert torch.equal(resumed.model.conv1.weight, straight.model.conv1.weight)


def test_a_damaged_checkpoint_is_ignored_and_retrained(toy_faces, toy_config, tmp_path):
    trained = train_cached(toy_faces, toy_config, name="toy", folder=tmp_path, **QUIET)
    (path,) = tmp_path.glob("toy-*-e003.pt")
    path.write_bytes(b"not a checkpoint")
    logged = []
    again = train_cached(
        toy_faces, toy_config, name="toy", folder=tmp_path, progress=False, log=logged.append
    )
    assert any("ignoring" in line for line in logged)
    assert torch.equal(again.model.conv1.weight, trained.model.conv1.weight)  # retrained, same seed


def test_keyed_on_config_callbacks_and_data(toy_faces, toy_config, tmp_path):
    train_cached(toy_faces, toy_config, name="run", folder=tmp_path, **QUIET)
    train_cached(toy_faces, toy_config.but(weight_decay=1e-2), name="run", folder=tmp_path, **QUIET)
    spec = CraftSpec(score="max", tau=0.5, last_epoch=2)
    crafted = train_cached(
        toy_faces,
        toy_config,
        [spec.callback(0, toy_config.epochs)],
        name="run",
        folder=tmp_path,
        **QUIET,
    )
    assert len(list(tmp_path.glob("run-*-e003.pt"))) == 3
    assert crafted.events, "the callback ran"
    key = _run_key(toy_faces, toy_config, [])
    assert key == _run_key(toy_faces, toy_config, [])
    assert key != _run_key(toy_faces, toy_config, [spec.callback(0, 3)])
    assert _run_key(toy_faces, toy_config, [spec.callback(0, 3)]) != _run_key(
        toy_faces, toy_config, [spec.but(tau=0.4).callback(0, 3)]
    )
    assert key != _run_key(toy_faces, toy_config.but(seed=1), [])


def test_callbacks_start_after_resume(toy_faces, toy_config, tmp_path):
    """on_train_start must run for a resumed trainer too (ReactivationCallback fills its defaults
    there)."""
    from craftlib.reactivation import ReactivationCallback

    t = Trainer(toy_faces, toy_config, progress=False)
    t.fit(epochs=1)
    path = t.save(tmp_path / "ck.pt")
    spec = CraftSpec(tau=0.6, score="max")
    cb = ReactivationCallback(spec)  # no epochs, no last_epoch: set in on_train_start
    resumed = Trainer(toy_faces, toy_config, [cb], progress=False).resume(path)
    resumed.fit()
    assert cb.last_epoch == spec.stop_epoch(toy_config.epochs) and resumed.events
