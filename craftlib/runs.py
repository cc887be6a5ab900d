"""Runs kept on disk and reused: the notebooks resume each other's trainings instead of retraining.

``train_or_load(train, recipe, seed)`` is the notebooks' one way to train: a recipe's run at a seed,
standard training or a re-activation strategy, trained once and loaded after (``train_cached`` finds
it by its config, callback and name). Notebook 05 finds the runs notebooks 01 and 04 made at the
same seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from .callbacks import Callback
from .checkpoints import CheckpointError
from .data import FaceSet
from .paths import runs_dir
from .recipes import Recipe
from .training import TrainConfig, Trainer


def _run_key(data: FaceSet, config: TrainConfig, callbacks) -> str:
    """A short hash of everything that decides a run: config, callbacks' settings and the data (its
    LFW variant too)."""

    def settings(cb) -> dict:
        return {
            k: v
            for k, v in sorted(vars(cb).items())
            if isinstance(v, (str, int, float, bool, type(None)))
        }

    blob = {
        "config": config.to_dict(),
        "callbacks": [[type(cb).__name__, settings(cb)] for cb in callbacks],
        "classes": data.num_classes,
        "images": list(data.images.shape),
        "files": data.files[:3] + data.files[-3:],
        "variant": getattr(data, "variant", "unknown"),
    }  # deep-funneled and funneled runs never share a file
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_cached(
    data: FaceSet,
    config: TrainConfig = TrainConfig(),
    callbacks: list[Callback] = (),
    name: str = "run",
    until: int | None = None,
    keep: tuple[int, ...] = (),
    folder: str | Path | None = None,
    progress: bool = True,
    log=print,
    after_epoch: Callable[[Trainer], None] | None = None,
) -> Trainer:
    """``train`` that keeps its result: the notebooks reuse each other's runs instead of retraining.

    Checkpoints go to ``folder`` (default ``$CRAFTLIB_RUNS`` or ``runs/``) as
    ``<name>-<hash>-e<epoch>.pt``; the hash covers the config, the callbacks' settings and the data,
    including its LFW variant (``FaceSet.variant``), so a run kept on another variant is never
    loaded. Training stops after ``until`` epochs (default: all) and also saves at the epochs in
    ``keep``. A later call resumes from the latest saved epoch not past ``until``, bit for bit as if
    it had never stopped (the checkpoint keeps the random generators, CRAFT's included).
    ``after_epoch(trainer)`` runs after every trained epoch (and once if everything was loaded),
    e.g. ``viz.LiveCurves`` to redraw the curves live.
    """
    until = config.epochs if until is None else min(int(until), config.epochs)
    folder = Path(folder) if folder is not None else runs_dir() / "notebooks"
    stem = f"{name}-{_run_key(data, config, callbacks)}"
    trainer = Trainer(data, config, callbacks, progress)
    saved = sorted(
        (int(p.stem.rsplit("-e", 1)[1]), p)
        for p in folder.glob(f"{stem}-e*.pt")
        if p.stem.rsplit("-e", 1)[1].isdigit()
    )
    for epoch, path in reversed([(e, p) for e, p in saved if e <= until]):
        try:
            trainer.resume(path)
            log(
                f"{name}: loaded epoch {epoch} from {path}"
                + ("" if epoch == until else f"; training on to {until}")
            )
            break
        except CheckpointError as err:
            log(f"{name}: ignoring {path} ({err})")
            trainer = Trainer(data, config, callbacks, progress)
    trained = False
    while trainer.epoch < until:
        trainer.fit(epochs=trainer.epoch + 1)
        trained = True
        if trainer.epoch in keep or trainer.epoch == until:
            trainer.save(folder / f"{stem}-e{trainer.epoch:03d}.pt")
        if after_epoch is not None:
            after_epoch(trainer)
    if after_epoch is not None and not trained:
        after_epoch(trainer)
    return trainer


def train_or_load(
    data: FaceSet,
    recipe: Recipe,
    seed: int,
    strategy: str = "none",
    until: int | None = None,
    keep: tuple[int, ...] = (),
    folder: str | Path | None = None,
    progress: bool = True,
    log=print,
    after_epoch: Callable[[Trainer], None] | None = None,
) -> Trainer:
    """``recipe``'s run at ``seed`` with ``strategy`` (``"none"``: standard training; else a name of
    ``recipes.ARMS``), trained once and then loaded.

    Every run, standard training included, carries the recipe's re-activation callback (``"none"``
    detects and logs only), exactly as the seed study trains it: the notebooks' runs are the study's
    runs.
    """
    config = recipe.train.but(seed=seed)
    return train_cached(
        data,
        config,
        [recipe.callback(seed=seed, arm=strategy)],
        name=strategy,
        until=until,
        keep=keep,
        folder=folder,
        progress=progress,
        log=log,
        after_epoch=after_epoch,
    )
