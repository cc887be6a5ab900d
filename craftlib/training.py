"""A readable training loop: margin-softmax on LFW identities, with callbacks, history and checkpoints."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoints import load_checkpoint, save_checkpoint
from .data import FaceSet
from .losses import MarginHead, margin_loss
from .models import FaceCNN, ModelConfig


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. ``weight_decay_scope='all'`` decays BatchNorm too, as ``arcface_torch`` does."""

    epochs: int = 12
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" | "adam" (coupled L2) | "adamw" (decoupled)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    weight_decay_scope: str = "all"  # "all" | "no_norm_bias"
    weight_decay_overrides: dict = field(default_factory=dict)  # {"conv1": 0.1, "bn1": 0.0}: name prefix -> wd
    schedule: str = "onecycle"  # "onecycle" | "cosine" | "step" | "constant"
    warmup_fraction: float = 0.1
    flip: bool = True
    head: str = "cosface"
    scale: float = 30.0
    margin: float | None = None
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    model: ModelConfig = ModelConfig()

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["model"] = self.model.to_dict()
        d["weight_decay_overrides"] = dict(self.weight_decay_overrides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d.get("model", {})) if isinstance(d.get("model"), dict) else d.get("model", ModelConfig())
        return cls(**d)

    def but(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (``model__input_size=40`` reaches into the model config)."""
        model_changes = {k.split("__", 1)[1]: v for k, v in changes.items() if k.startswith("model__")}
        rest = {k: v for k, v in changes.items() if not k.startswith("model__")}
        return replace(self, model=replace(self.model, **model_changes), **rest)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a CPU run repeats bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parameter_groups(model: nn.Module, head: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One optimizer group per distinct weight decay, so the decay each tensor gets is explicit."""
    groups: dict[float, list] = {}
    named = [(n, p) for n, p in model.named_parameters()] + [(f"head.{n}", p) for n, p in head.named_parameters()]
    for name, p in named:
        wd = cfg.weight_decay
        if cfg.weight_decay_scope == "no_norm_bias" and (p.ndim <= 1):
            wd = 0.0
        elif cfg.weight_decay_scope not in ("all", "no_norm_bias"):
            raise ValueError(f"weight_decay_scope must be 'all' or 'no_norm_bias', got {cfg.weight_decay_scope!r}")
        for prefix, value in cfg.weight_decay_overrides.items():
            if name.startswith(prefix):
                wd = float(value)
        groups.setdefault(wd, []).append(p)
    return [{"params": ps, "weight_decay": wd} for wd, ps in sorted(groups.items())]


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {cfg.optimizer!r}")


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps,
                                                   pct_start=cfg.warmup_fraction, cycle_momentum=False)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, [int(total_steps * 0.6), int(total_steps * 0.85)], 0.1)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"schedule must be onecycle, cosine, step or constant, got {cfg.schedule!r}")


def conv1_snapshot(model: FaceCNN) -> dict:
    """The first layer's weights and its BatchNorm parameters, as plain lists for the history."""
    snap = {"weight": model.conv1.weight.detach().float().cpu().tolist()}
    if isinstance(model.bn1, nn.BatchNorm2d):
        bn = model.bn1
        snap.update(gamma=bn.weight.detach().cpu().tolist(), beta=bn.bias.detach().cpu().tolist(),
                    running_var=bn.running_var.cpu().tolist(), eps=bn.eps)
    return snap


class Callback:
    """Hook points of the loop; a callback may change the model and the optimizer state in place."""

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...


def to_input(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC faces -> float NCHW in [-1, 1], the normalisation ``arcface_torch`` uses."""
    return batch_uint8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class Trainer:
    """Holds model, head, optimizer and schedule; ``fit`` runs the epochs and records a history."""

    def __init__(self, data: FaceSet, config: TrainConfig = TrainConfig(), callbacks: list[Callback] = (),
                 progress: bool = True):
        if config.model.input_size != data.images.shape[1]:
            raise ValueError(f"model expects {config.model.input_size}px faces, data has {data.images.shape[1]}px; "
                             f"build LFW(size={config.model.input_size}) or change model.input_size")
        self.config, self.data, self.callbacks, self.progress = config, data, list(callbacks), progress
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = pick_device(config.device)
        seed_everything(config.seed)
        self.model = FaceCNN(config.model).to(self.device)
        self.head = MarginHead(config.model.embedding_dim, data.num_classes, config.head, config.scale,
                               config.margin).to(self.device)
        self.images = torch.from_numpy(data.images)
        self.labels = torch.from_numpy(data.labels)
        self.steps_per_epoch = max(1, len(self.labels) // config.batch_size)
        self.optimizer = make_optimizer(parameter_groups(self.model, self.head, config), config)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.scheduler = make_schedule(self.optimizer, config, self.total_steps)
        self._stream = None  # batches of the current epoch, for train_steps
        self._started = False  # callbacks' on_train_start has run
        self.epoch, self.step = 0, 0
        self.history: list[dict] = [self._record(loss=math.nan, acc=math.nan, seconds=0.0)]
        self.events: list[dict] = []  # callbacks append what they did (e.g. re-activations)

    # -- bookkeeping -------------------------------------------------------------------------
    def _record(self, loss: float, acc: float, seconds: float) -> dict:
        return {"epoch": self.epoch, "step": self.step, "loss": loss, "train_acc": acc,
                "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
                "conv1": conv1_snapshot(self.model)}

    def _batches(self):
        """Shuffled batches (last partial batch dropped), from a generator seeded by (seed, epoch)."""
        g = torch.Generator().manual_seed(self.config.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.labels), generator=g)
        flips = torch.rand(len(self.labels), generator=g) < 0.5
        for i in range(self.steps_per_epoch):
            idx = order[i * self.config.batch_size:(i + 1) * self.config.batch_size]
            x = to_input(self.images[idx])
            if self.config.flip:
                x = torch.where(flips[idx, None, None, None], x.flip(3), x)
            yield x.to(self.device, non_blocking=True), self.labels[idx].to(self.device, non_blocking=True)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        loss, acc = margin_loss(self.head, self.model(x), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step}: lower the learning rate "
                f"(now {self.optimizer.param_groups[0]['lr']:.3g}) or the weight decay ({self.config.weight_decay}), "
                f"set grad_clip (e.g. 5.0), or use a smaller margin/scale ({self.config.head}, s={self.config.scale})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.head.parameters()), self.config.grad_clip)
        self.optimizer.step()
        if self.step < self.total_steps:  # interactive extra steps run on at the final learning rate
            self.scheduler.step()
        self.step += 1
        return loss.item(), acc.item()

    def _end_epoch(self, losses: list[float], accs: list[float], start: float) -> None:
        self.epoch += 1
        for cb in self.callbacks:  # before the record, so the snapshot shows what callbacks did
            cb.on_epoch_end(self)
        self.history.append(self._record(float(np.mean(losses)) if losses else math.nan,
                                         float(np.mean(accs)) if accs else math.nan, time.perf_counter() - start))

    def _run(self, batches, losses: list[float], accs: list[float], bar=None) -> None:
        for x, y in batches:
            loss, acc = self.train_step(x, y)
            losses.append(loss)
            accs.append(acc)
            for cb in self.callbacks:
                cb.on_step_end(self)
            if bar is not None and self.step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")

    def _start(self) -> None:
        if not self._started:  # once per Trainer, also after resume() (callbacks set defaults and probes here)
            self._started = True
            for cb in self.callbacks:
                cb.on_train_start(self)
        self.model.train()
        self.head.train()

    def fit(self, epochs: int | None = None) -> list[dict]:
        """Train until ``epochs`` (default: the config's) and return the per-epoch history."""
        from tqdm.auto import tqdm

        end = self.config.epochs if epochs is None else min(epochs, self.config.epochs)
        self._start()
        while self.epoch < end:
            start, losses, accs = time.perf_counter(), [], []
            bar = tqdm(self._batches(), total=self.steps_per_epoch, disable=not self.progress, leave=False,
                       desc=f"epoch {self.epoch + 1}/{self.config.epochs}")
            self._run(bar, losses, accs, bar if self.progress else None)
            self._end_epoch(losses, accs, start)
        return self.history

    def train_steps(self, n: int) -> list[float]:
        """Run ``n`` more optimisation steps, crossing epoch ends as needed (for interactive widgets).

        Returns the losses of those steps. Past the configured epochs the schedule stays at its last lr.
        """
        self._start()
        losses: list[float] = []
        while len(losses) < n:
            if self._stream is None:
                self._stream, self._stream_log = iter(self._batches()), ([], [], time.perf_counter())
            step_losses, step_accs, start = self._stream_log
            before = len(step_losses)
            self._run(_take(self._stream, n - len(losses)), step_losses, step_accs)
            losses.extend(step_losses[before:])
            if len(step_losses) == self.steps_per_epoch:  # the epoch's batches are used up
                self._end_epoch(step_losses, step_accs, start)
                self._stream = None
        return losses

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an atomic, ``weights_only``-loadable checkpoint with everything needed to resume."""
        return save_checkpoint(path, {
            "config": self.config.to_dict(), "epoch": self.epoch, "step": self.step,
            "model": self.model.state_dict(), "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "history": self.history, "events": self.events, "num_classes": self.data.num_classes,
        })

    def resume(self, path: str | Path) -> "Trainer":
        """Load a checkpoint written by ``save`` and continue from its epoch; refuses a mismatch."""
        ckpt = load_checkpoint(path, expect_model=self.config.model, expect_classes=self.data.num_classes)
        self.model.load_state_dict(ckpt["model"])
        self.head.load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.history, self.events = ckpt["history"], ckpt.get("events", [])
        return self


def _take(iterator, n: int):
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


def train(data: FaceSet, config: TrainConfig = TrainConfig(), callbacks: list[Callback] = (),
          progress: bool = True, resume_from: str | Path | None = None) -> Trainer:
    """Train a face CNN on ``data`` and return the trainer (model, head, history, events)."""
    trainer = Trainer(data, config, callbacks, progress)
    if resume_from is not None:
        trainer.resume(resume_from)
    trainer.fit()
    return trainer


def _run_key(data: FaceSet, config: TrainConfig, callbacks) -> str:
    """A short hash of everything that decides a run: config, callbacks' settings and the data."""
    import hashlib
    import json

    def settings(cb) -> dict:
        return {k: v for k, v in sorted(vars(cb).items()) if isinstance(v, (str, int, float, bool, type(None)))}

    blob = {"config": config.to_dict(), "callbacks": [[type(cb).__name__, settings(cb)] for cb in callbacks],
            "classes": data.num_classes, "images": list(data.images.shape), "files": data.files[:3] + data.files[-3:]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_cached(data: FaceSet, config: TrainConfig = TrainConfig(), callbacks: list[Callback] = (),
                 name: str = "run", until: int | None = None, keep: tuple[int, ...] = (),
                 folder: str | Path | None = None, progress: bool = True, log=print,
                 after_epoch: Callable[[Trainer], None] | None = None) -> Trainer:
    """``train`` that keeps its result: the notebooks reuse each other's runs instead of retraining.

    Checkpoints go to ``folder`` (default ``$CRAFTLIB_RUNS`` or ``runs/``) as
    ``<name>-<hash>-e<epoch>.pt``; the hash covers the config, the callbacks' settings and the data.
    Training stops after ``until`` epochs (default: all) and also saves at the epochs in ``keep``.
    A later call resumes from the latest saved epoch not past ``until`` (identical for callback-free
    runs; a callback's random generator restarts, so a resumed CRAFT run is a valid but different run).
    ``after_epoch(trainer)`` runs after every trained epoch (and once if everything was loaded), e.g.
    ``viz.LiveCurves`` to redraw the curves live.
    """
    from .checkpoints import CheckpointError
    from .paths import runs_dir

    until = config.epochs if until is None else min(int(until), config.epochs)
    folder = Path(folder) if folder is not None else runs_dir() / "notebooks"
    stem = f"{name}-{_run_key(data, config, callbacks)}"
    trainer = Trainer(data, config, callbacks, progress)
    saved = sorted((int(p.stem.rsplit("-e", 1)[1]), p) for p in folder.glob(f"{stem}-e*.pt")
                   if p.stem.rsplit("-e", 1)[1].isdigit())
    for epoch, path in reversed([(e, p) for e, p in saved if e <= until]):
        try:
            trainer.resume(path)
            log(f"{name}: loaded epoch {epoch} from {path}" + ("" if epoch == until else f"; training on to {until}"))
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
