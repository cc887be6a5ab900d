"""A readable training loop: margin-softmax on LFW identities, with callbacks, history and
checkpoints."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .activity import activation_scores, stem_response
from .allocator import keep_freed_memory
from .callbacks import Callback
from .checkpoints import load_checkpoint, save_checkpoint
from .data import FaceSet, probe_batch, to_input
from .losses import MarginHead, margin_loss
from .models import FaceCNN, ModelConfig
from .runtime import pick_device, rng_state, seed_everything, set_rng_state
from .validation import check


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. ``weight_decay_scope='all'`` decays BatchNorm too, as ``arcface_torch``
    does."""

    epochs: int = 12
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" | "adam" (coupled L2) | "adamw" (decoupled)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    weight_decay_scope: str = "all"  # "all" | "no_norm_bias"
    # {"conv1": 0.1, "bn1": 0.0}: name prefix -> wd
    weight_decay_overrides: dict = field(default_factory=dict)
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
    channels_last: bool = (
        False  # NHWC activations: faster convolutions on CPU (docs/PERFORMANCE.md)
    )
    compile: bool = False  # torch.compile the model (inductor); pays a one-off compile per process
    model: ModelConfig = ModelConfig()

    def __post_init__(self):
        """Refuse an impossible number when the config is made (``validation.RANGES``), not deep in
        a run."""
        for name in (
            "epochs",
            "batch_size",
            "lr",
            "momentum",
            "weight_decay",
            "warmup_fraction",
            "scale",
            "seed",
        ):
            check(name, getattr(self, name))
        for name in ("margin", "grad_clip", "threads"):
            check(name, getattr(self, name), optional=True)
        for value in self.weight_decay_overrides.values():
            check("weight_decay", value)

    def to_dict(self) -> dict:
        return {**asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{**d, "model": ModelConfig.from_dict(d.get("model", {}))})

    def but(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (``model__input_size=40`` reaches into the model
        config)."""
        model_changes = {
            k.split("__", 1)[1]: v for k, v in changes.items() if k.startswith("model__")
        }
        rest = {k: v for k, v in changes.items() if not k.startswith("model__")}
        return replace(self, model=replace(self.model, **model_changes), **rest)


def parameter_groups(model: nn.Module, head: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One optimizer group per distinct weight decay, so the decay each tensor gets is explicit."""
    groups: dict[float, list] = {}
    named = [(n, p) for n, p in model.named_parameters()] + [
        (f"head.{n}", p) for n, p in head.named_parameters()
    ]
    for name, p in named:
        wd = cfg.weight_decay
        if cfg.weight_decay_scope == "no_norm_bias" and (p.ndim <= 1):
            wd = 0.0
        elif cfg.weight_decay_scope not in ("all", "no_norm_bias"):
            raise ValueError(
                f"weight_decay_scope must be 'all' or 'no_norm_bias', got "
                f"{cfg.weight_decay_scope!r}"
            )
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
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=cfg.lr,
            total_steps=total_steps,
            pct_start=cfg.warmup_fraction,
            cycle_momentum=False,
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            opt, [int(total_steps * 0.6), int(total_steps * 0.85)], 0.1
        )
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"schedule must be onecycle, cosine, step or constant, got {cfg.schedule!r}")


def conv1_snapshot(model: FaceCNN, probe: torch.Tensor | None = None) -> dict:
    """The first layer as plain lists for the history: weights, BatchNorm, PReLU slopes, and what it
    says.

    With a ``probe`` batch, ``output_std`` is each channel's output spread on it (the *silent*
    score), measured in eval mode so that recording changes nothing in training.
    """
    snap = {"weight": model.conv1.weight.detach().float().cpu().tolist()}
    if isinstance(model.bn1, nn.BatchNorm2d):
        bn = model.bn1
        snap.update(
            gamma=bn.weight.detach().cpu().tolist(),
            beta=bn.bias.detach().cpu().tolist(),
            running_var=bn.running_var.cpu().tolist(),
            eps=bn.eps,
        )
    if isinstance(model.act1, nn.PReLU):
        snap["slope"] = model.act1.weight.detach().cpu().tolist()
    if probe is not None:
        snap["output_std"] = activation_scores(stem_response(model), probe, model, "std").tolist()
    return snap


class Trainer:
    """Holds model, head, optimizer and schedule; ``fit`` runs the epochs and records a history."""

    def __init__(
        self,
        data: FaceSet,
        config: TrainConfig = TrainConfig(),
        callbacks: list[Callback] = (),
        progress: bool = True,
    ):
        if config.model.input_size != data.images.shape[1]:
            raise ValueError(
                f"model expects {config.model.input_size}px faces, data has "
                f"{data.images.shape[1]}px; "
                f"build LFW(size={config.model.input_size}) or change model.input_size"
            )
        self.config, self.data, self.callbacks, self.progress = (
            config,
            data,
            list(callbacks),
            progress,
        )
        if config.threads:
            torch.set_num_threads(config.threads)
        # each step reuses the last one's memory instead of faulting in fresh pages
        keep_freed_memory()
        self.device = pick_device(config.device)
        seed_everything(config.seed)
        self.model = self.build_model(config).to(self.device)
        if config.channels_last:  # the weights too (the inputs already are: see _batches)
            self.model = self.model.to(memory_format=torch.channels_last)
        # same parameters
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.head = MarginHead(
            config.model.embedding_dim, data.num_classes, config.head, config.scale, config.margin
        ).to(self.device)
        self.images = torch.from_numpy(data.images)
        self.labels = torch.from_numpy(data.labels)
        # fixed faces the silent score listens on
        self.probe = probe_batch(data.images).to(self.device)
        self.steps_per_epoch = max(1, len(self.labels) // config.batch_size)
        self.optimizer = make_optimizer(parameter_groups(self.model, self.head, config), config)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.scheduler = make_schedule(self.optimizer, config, self.total_steps)
        self._stream = None  # batches of the current epoch, for train_steps
        self._started = False  # callbacks' on_train_start has run
        self.epoch, self.step = 0, 0
        self.history: list[dict] = [self._record(loss=math.nan, acc=math.nan, seconds=0.0)]
        self.events: list[dict] = []  # callbacks append what they did (e.g. re-activations)
        self.stamp: dict = {}  # extra entries every checkpoint carries (the CLI's run fingerprint)

    def build_model(self, config: TrainConfig) -> nn.Module:
        """The embedding network, built right after seeding (a subclass may build another
        backbone)."""
        return FaceCNN(config.model)

    # -- bookkeeping -------------------------------------------------------------------------
    def _record(self, loss: float, acc: float, seconds: float) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "loss": loss,
            "train_acc": acc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "conv1": conv1_snapshot(self.model, self.probe),
        }

    def _batches(self):
        """Shuffled batches (last partial batch dropped), from a generator seeded by (seed,
        epoch)."""
        g = torch.Generator().manual_seed(self.config.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.labels), generator=g)
        flips = torch.rand(len(self.labels), generator=g) < 0.5
        for i in range(self.steps_per_epoch):
            idx = order[i * self.config.batch_size : (i + 1) * self.config.batch_size]
            # row copies: several times faster than images[idx]
            faces = self.images.index_select(0, idx)
            # mirrored while still uint8: the same numbers as flipping the floats, far cheaper
            if self.config.flip:
                turn = flips[idx].nonzero().squeeze(1)
                faces.index_copy_(0, turn, faces.index_select(0, turn).flip(2))
            x = to_input(faces)  # a view of NHWC memory: already channels_last strides
            yield (
                x.to(self.device, non_blocking=True),
                self.labels[idx].to(self.device, non_blocking=True),
            )

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One step of plain PyTorch: forward, margin loss, backward, optimizer and schedule."""
        loss, acc = margin_loss(self.head, self.forward(x), y)
        if not torch.isfinite(loss):
            raise self._non_finite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            parameters = list(self.model.parameters()) + list(self.head.parameters())
            nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        self.optimizer.step()
        if self.step < self.total_steps:  # extra interactive steps keep the final learning rate
            self.scheduler.step()
        self.step += 1
        return loss.item(), acc.item()

    def _non_finite(self, loss: torch.Tensor) -> NonFiniteLossError:
        """The error a NaN or infinite loss stops training with, and what to change."""
        c = self.config
        return NonFiniteLossError(
            f"loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step}: lower the "
            f"learning rate (now {self.optimizer.param_groups[0]['lr']:.3g}) or the weight decay "
            f"({c.weight_decay}), set grad_clip (e.g. 5.0), or use a smaller margin/scale "
            f"({c.head}, s={c.scale})"
        )

    def _end_epoch(self, losses: list[float], accs: list[float], start: float) -> None:
        self.epoch += 1
        for cb in self.callbacks:  # before the record, so the snapshot shows what callbacks did
            cb.on_epoch_end(self)
        self.history.append(
            self._record(
                float(np.mean(losses)) if losses else math.nan,
                float(np.mean(accs)) if accs else math.nan,
                time.perf_counter() - start,
            )
        )

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
        # once per Trainer, also after resume() (callbacks set defaults and probes here)
        if not self._started:
            self._started = True
            for cb in self.callbacks:
                cb.on_train_start(self)
        self.model.train()
        self.head.train()

    def fit(self, epochs: int | None = None, checkpoint: str | Path | None = None) -> list[dict]:
        """Train until ``epochs`` (default: the config's) and return the per-epoch history.

        With ``checkpoint``, ``save`` there at the end of every epoch: a run stopped by a signal, a
        NaN loss or a crash loses at most the epoch under way, and ``resume`` continues it to the
        uninterrupted result. A ``checkpoint`` naming ``{epoch}`` (``"run-e{epoch}.pt"``) keeps one
        file per epoch, so another run can start from any of them.
        """
        from .progress import progress_bar

        end = self.config.epochs if epochs is None else min(epochs, self.config.epochs)
        self._start()
        while self.epoch < end:
            start, losses, accs = time.perf_counter(), [], []
            bar = progress_bar(
                self._batches(),
                total=self.steps_per_epoch,
                disable=not self.progress,
                leave=False,
                desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            )
            self._run(bar, losses, accs, bar if self.progress else None)
            self._end_epoch(losses, accs, start)
            if checkpoint is not None:
                self.save(str(checkpoint).format(epoch=self.epoch))
        return self.history

    def train_steps(self, n: int) -> list[float]:
        """Run ``n`` more optimisation steps, crossing epoch ends as needed (for interactive
        widgets).

        Returns the losses of those steps. Past the configured epochs the schedule stays at its last
        lr.
        """
        self._start()
        losses: list[float] = []
        while len(losses) < n:
            if self._stream is None:
                self._stream, self._stream_log = (
                    iter(self._batches()),
                    ([], [], time.perf_counter()),
                )
            step_losses, step_accs, start = self._stream_log
            before = len(step_losses)
            self._run(islice(self._stream, n - len(losses)), step_losses, step_accs)
            losses.extend(step_losses[before:])
            if len(step_losses) == self.steps_per_epoch:  # the epoch's batches are used up
                self._end_epoch(step_losses, step_accs, start)
                self._stream = None
        return losses

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an atomic, ``weights_only``-loadable checkpoint with everything needed to resume
        bit for bit.

        Weights, optimizer, schedule, history, the global random generators and each callback's
        state (CRAFT's generator); the data order needs nothing more, as each epoch's shuffle is
        drawn from (seed, epoch).
        """
        return save_checkpoint(
            path,
            {
                "config": self.config.to_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "model": self.model.state_dict(),
                "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "history": self.history,
                "events": self.events,
                "num_classes": self.data.num_classes,
                "classes": list(self.data.classes),
                "data_variant": getattr(self.data, "variant", "unknown"),
                "rng": rng_state(),
                "callbacks": [
                    {"type": type(cb).__name__, "state": cb.state_dict()} for cb in self.callbacks
                ],
                **self.stamp,
            },
        )

    def resume(self, path: str | Path) -> "Trainer":
        """Load a checkpoint written by ``save`` and continue from its epoch; refuses a checkpoint
        of another architecture, other identities or another LFW variant."""
        ckpt = load_checkpoint(
            path,
            expect_model=self.config.model,
            expect_classes=self.data.num_classes,
            expect_names=list(self.data.classes),
            expect_variant=getattr(self.data, "variant", None),
        )
        self.model.load_state_dict(ckpt["model"])
        self.head.load_state_dict(ckpt["head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.history, self.events = ckpt["history"], ckpt.get("events", [])
        if "rng" in ckpt:  # older checkpoints: the generators go on from this trainer's seeding
            set_rng_state(ckpt["rng"])
        for cb, saved in zip(self.callbacks, ckpt.get("callbacks", [])):
            if saved["type"] == type(cb).__name__:
                cb.load_state_dict(saved["state"])
        return self


def train(
    data: FaceSet,
    config: TrainConfig = TrainConfig(),
    callbacks: list[Callback] = (),
    progress: bool = True,
    resume_from: str | Path | None = None,
    checkpoint: str | Path | None = None,
    stamp: dict | None = None,
) -> Trainer:
    """Train a face CNN on ``data`` and return the trainer (model, head, history, events).

    ``checkpoint``: saved there after every epoch (see ``Trainer.fit``); ``stamp``: extra entries
    every checkpoint carries (what run it is, for whoever continues it).
    """
    trainer = Trainer(data, config, callbacks, progress)
    trainer.stamp = dict(stamp or {})
    if resume_from is not None:
        trainer.resume(resume_from)
    trainer.fit(checkpoint=checkpoint)
    return trainer
