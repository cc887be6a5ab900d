"""Data-parallel CRAFT: craftlib's ``Trainer`` under ``torchrun`` with DDP, and replicas proven
identical.

The choices (``docs/SCALE.md`` says why):

- one process per GPU (NCCL), or per CPU slot (gloo); ``config.batch_size`` is per rank as in
  arcface_torch, so the global batch is ``batch_size x world_size`` and the learning rate is not
  rescaled for you;
- batches come from torch's ``DistributedSampler`` (shuffled by ``config.seed`` and the epoch, each
  rank its own shard, the remainder dropped);
- the margin head is replicated: backbone and head form one DDP module, so their gradients are
  averaged together (arcface_torch's partial-FC model parallelism, worth it past ~1M identities, is
  out of scope);
- BatchNorm: no per-forward broadcast of rank 0's buffers (arcface_torch's
  ``broadcast_buffers=False``); instead the
  running statistics are averaged over ranks after each step (one small all-reduce), so every
  callback (and the checkpoint) sees identical replicas;
- re-activation: every rank runs the same callback with the same seed on identical weights, so every
  rank detects the same filters and draws the same new ones; ``SyncedReactivation`` averages the
  scores first (an activation score's probe forward may differ in the last bit between GPUs), and
  ``ReplicaCheck`` proves the result.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from craftlib.callbacks import Callback
from craftlib.checkpoints import CheckpointError, load_checkpoint
from craftlib.data import FaceSet, to_input
from craftlib.iresnet import backbone_for, backbone_name
from craftlib.losses import margin_loss
from craftlib.reactivation import ReactivationCallback
from craftlib.runtime import pick_device
from craftlib.training import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    make_optimizer,
    make_schedule,
    parameter_groups,
)

from .facefolders import FaceFolder

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}  # torch >= 2.14 (buffers still synced once at init)
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)
"""DDP without its per-forward broadcast of rank 0's buffers (arcface_torch's
``broadcast_buffers=False``)."""


class ReplicaMismatchError(RuntimeError):
    """Ranks hold different values for a tensor that must be identical on all of them."""


class ScheduleMismatchError(ReplicaMismatchError):
    """Ranks plan different trainings (loop, callbacks, re-activation schedule): they would meet in
    different collectives, which gloo reports as a "collective mismatch" and NCCL does not report at
    all (it hangs)."""


# --------------------------------------------------------------------------------------------
# process group


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def init_distributed(device: str = "auto") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_*``).

    NCCL when this rank trains on CUDA (and its GPU becomes ``LOCAL_RANK``), gloo otherwise. A plain
    ``python`` run (no ``WORLD_SIZE``, or 1) stays a single process with no group.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return rank_and_world()
    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return rank_and_world()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU for gloo."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over ranks, in place, in
    one all-reduce."""
    _, world = rank_and_world()
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if world == 1 or not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers]).to(_comm_device())
    dist.all_reduce(flat)
    flat /= world
    for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
        b.copy_(value.view_as(b))


def average_over_ranks(values: np.ndarray) -> np.ndarray:
    """The element-wise mean of ``values`` over ranks; every rank gets the same bits back."""
    _, world = rank_and_world()
    if world == 1:
        return values
    t = torch.as_tensor(np.asarray(values, dtype=np.float64)).to(_comm_device())
    dist.all_reduce(t)
    return (t / world).cpu().numpy()


# --------------------------------------------------------------------------------------------
# replica check


_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def checksum(t: torch.Tensor) -> torch.Tensor:
    """Sum of the raw bit patterns (int64, wrapping): any change of any element changes it in
    practice.

    Integer sums are exact in any order, so equal tensors give equal checksums on any device and
    kernel.
    """
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.is_floating_point():
        t = t.view(_INT_VIEW[t.element_size()])
    return t.sum(dtype=torch.int64)


def watched_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Everything a replica holds, by name: every parameter and buffer of ``model`` and the whole
    optimizer state.

    DDP broadcasts parameters once, at construction, and afterwards only averages gradients: a
    callback, a seed or a rounding that differs between ranks lets any tensor drift, the embedding
    layer and the margin head as surely as ``conv1``. Optimizer state of a parameter outside
    ``model`` (e.g. a separate head) is named by its place in the optimizer; the groups' numeric
    settings (``lr``, ...) are compared too.
    """
    named = dict(model.state_dict(keep_vars=True))
    param_names = {id(t): n for n, t in named.items() if isinstance(t, nn.Parameter)}
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            where = param_names.get(id(p), f"group {g}, param {i}")
            named.update(
                {
                    f"optimizer[{where}].{k}": v
                    for k, v in optimizer.state.get(p, {}).items()
                    if torch.is_tensor(v)
                }
            )
        named.update(
            {
                f"optimizer.group{g}.{k}": torch.tensor(float(v), dtype=torch.float64)
                for k, v in group.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
    return named


def _gather(local: torch.Tensor) -> torch.Tensor:
    """``world x len(local)`` table of every rank's ``local`` (same shape on every rank)."""
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return torch.stack(parts).cpu()


def check_replicas(model: nn.Module, optimizer: torch.optim.Optimizer, when: str = "") -> int:
    """Compare checksums of ``watched_tensors`` across ranks; raise naming the first tensor that
    differs.

    One int64 per tensor is gathered (a few kB even for an iResNet-100 with its head), after one
    pass over the weights to sum their bits.

    Every rank gathers the same table and so raises the same error: no rank is left waiting in a
    collective. Returns the number of tensors compared (0 outside a process group).
    """
    _, world = rank_and_world()
    if world == 1:
        return 0
    named = watched_tensors(model, optimizer)
    device = _comm_device()
    counts = _gather(torch.tensor([len(named)], device=device))
    if (counts != counts[0]).any():
        raise ReplicaMismatchError(
            f"replicas differ {when}: ranks hold {counts.flatten().tolist()} watched tensors"
        )
    table = _gather(torch.stack([checksum(t).to(device) for t in named.values()]))
    differs = (table != table[0]).any(0).nonzero().flatten().tolist()
    if differs:
        names = list(named)
        ranks = (table[:, differs[0]] != table[0, differs[0]]).nonzero().flatten().tolist()
        raise ReplicaMismatchError(
            f"replicas differ {when}: {names[differs[0]]} on rank(s) {ranks} is not rank 0's "
            f"({len(differs)} tensors differ: "
            f"{', '.join(names[i] for i in differs[:5])}{', ...' if len(differs) > 5 else ''}). "
            "Every rank must run the same callbacks with the same seed; see docs/SCALE.md"
        )
    return len(named)


def planned_events(callback: ReactivationCallback, trainer: Trainer) -> list[tuple[int, int]]:
    """The ``(epoch, step)`` points where ``callback`` will act over the whole run, asked of its own
    hooks.

    The hooks run on a stand-in loop with the callback's action replaced by a note, so the plan is
    the callback's own schedule logic rather than a copy of it. Call it after ``on_train_start``
    (which sets ``last_epoch``).
    """
    plan: list[tuple[int, int]] = []
    loop = SimpleNamespace(epoch=0, step=0, config=trainer.config)
    callback._act = lambda t: plan.append((t.epoch, t.step))
    try:
        for epoch in range(trainer.config.epochs):
            loop.epoch = epoch
            for _ in range(trainer.steps_per_epoch):
                loop.step += 1
                callback.on_step_end(loop)
            loop.epoch = epoch + 1
            callback.on_epoch_end(loop)
    finally:
        del callback._act
    return plan


def _plannable(callback: Callback) -> bool:
    """A re-activation callback that schedules with ``ReactivationCallback``'s own hooks (a subclass
    may not)."""
    return isinstance(callback, ReactivationCallback) and all(
        getattr(type(callback), hook) is getattr(ReactivationCallback, hook)
        for hook in ("on_step_end", "on_epoch_end")
    )


def _fingerprint(value) -> int:
    """63 bits of the SHA-256 of ``value``'s JSON: equal values give equal numbers on every rank."""
    text = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


def check_schedules(trainer: Trainer) -> None:
    """Before the first step, prove that every rank plans the same training; raise naming what
    differs.

    A rank on another re-activation schedule would enter ``SyncedReactivation``'s all-reduce or the
    replica check while the others enter the next step's gradient all-reduce. One all-gather of
    fingerprints (the loop's config and position, the callbacks' classes, every planned event) finds
    it first, on every rank alike.
    """
    _, world = rank_and_world()
    if world == 1:
        return
    plans = [planned_events(cb, trainer) if _plannable(cb) else [] for cb in trainer.callbacks]
    events = sorted(step for plan in plans for _, step in plan)
    parts = {
        "training loop (config, steps per epoch, position)": [
            trainer.config.to_dict(),
            trainer.steps_per_epoch,
            trainer.total_steps,
            trainer.epoch,
            trainer.step,
        ],
        "callbacks (classes, in order)": [type(cb).__qualname__ for cb in trainer.callbacks],
        "re-activation schedule": plans,
    }
    local = [_fingerprint(v) for v in parts.values()] + [
        len(events),
        *(events[:1] or [-1]),
        *(events[-1:] or [-1]),
    ]
    table = _gather(torch.tensor(local, dtype=torch.int64, device=_comm_device()))
    for column, what in enumerate(parts):
        ranks = (table[:, column] != table[0, column]).nonzero().flatten().tolist()
        if ranks:
            plans_by_rank = "; ".join(
                f"rank {r}: {n} events, steps {a}..{b}"
                for r, (n, a, b) in enumerate(table[:, len(parts) :].tolist())
            )
            raise ScheduleMismatchError(
                f"ranks plan different trainings: the {what} on rank(s) {ranks} is not rank 0's "
                f"({plans_by_rank}). "
                "Every rank must get the same config, data and callbacks; see docs/SCALE.md"
            )


def replica_module(trainer: Trainer) -> nn.Module:
    """What one rank holds: ``DistributedTrainer``'s backbone and head (unwrapped from DDP), else
    the model."""
    replica = getattr(trainer, "replica", trainer.model)
    return replica.module if isinstance(replica, DistributedDataParallel) else replica


class ReplicaCheck(Callback):
    """Prove the ranks agree: their plans at the start, every tensor at the start, after each event
    another callback records (each re-activation) and at the end of each epoch not already checked.

    Put it after the callbacks it watches (``DistributedTrainer`` appends one last by default).
    """

    def __init__(self):
        self.seen = 0  # events already checked
        self.checks = 0
        self._checked_step: int | None = None

    def _check(self, trainer: Trainer, when: str) -> None:
        check_replicas(replica_module(trainer), trainer.optimizer, when)
        self.checks += 1
        self._checked_step = trainer.step

    def on_train_start(self, trainer: Trainer) -> None:
        check_schedules(trainer)
        self._check(trainer, "at the start of training")

    def on_step_end(self, trainer: Trainer) -> None:
        if len(trainer.events) > self.seen:
            self.seen = len(trainer.events)
            self._check(trainer, f"after the event at epoch {trainer.epoch}, step {trainer.step}")

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.on_step_end(trainer)
        if self._checked_step != trainer.step:
            self._check(trainer, f"at the end of epoch {trainer.epoch}")


class SyncedReactivation(ReactivationCallback):
    """``ReactivationCallback`` for data parallelism: filter scores are averaged over ranks before
    thresholding.

    Weight scores are already identical on identical replicas. A probe score (``silent``,
    ``activation``) runs a forward pass whose last bits may differ between GPUs (cuDNN picks kernels
    per process), and one filter on the threshold would then split the ranks; the average is the
    same on all of them. With one process it behaves exactly as ``ReactivationCallback``.
    """

    def scores(self, trainer: Trainer) -> np.ndarray:
        return average_over_ranks(super().scores(trainer))


# --------------------------------------------------------------------------------------------
# the trainer


class BackboneWithHead(nn.Module):
    """Backbone and margin head as one module, so one DDP wrapper averages the gradients of both.

    The backbone runs under autocast when asked; the head and the loss stay in fp32 (as
    arcface_torch computes its margin in fp32: a cosine rounded to 1 in fp16 would give ArcFace's
    ``acos`` an infinite gradient).
    """

    def __init__(self, model: nn.Module, head: nn.Module, amp_dtype: torch.dtype | None = None):
        super().__init__()
        self.model, self.head, self.amp_dtype = model, head, amp_dtype

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(
            x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            emb = self.model(x)
        return margin_loss(self.head, emb.float(), y)


class DistributedTrainer(Trainer):
    """``Trainer`` for one or many processes: any backbone, sharded batches, DDP, optional mixed
    precision.

    ``data`` is a ``FaceSet`` (in memory) or a ``FaceFolder`` (decoded on the fly by ``workers``
    processes; an evenly spread ``probe_size`` of its faces stands in for ``trainer.images``, e.g.
    for activation probes). ``amp``: ``None``, ``"bf16"`` (CUDA or CPU) or ``"fp16"`` (CUDA, with a
    ``GradScaler``). Without a process group it is a single-device trainer; under ``torchrun`` call
    ``init_distributed`` first. ``replica_check`` appends a ``ReplicaCheck`` (plans compared before
    the first step, every tensor after each event and epoch); ``save`` checks the replicas in any
    case.
    """

    def __init__(
        self,
        data: FaceSet | FaceFolder,
        config: TrainConfig = TrainConfig(),
        callbacks: list[Callback] | tuple = (),
        progress: bool = True,
        backbone: str = "facecnn",
        amp: str | None = None,
        workers: int = 0,
        replica_check: bool = True,
        probe_size: int = 256,
    ):
        self.rank, self.world = rank_and_world()
        self.backbone = backbone
        faces = data if isinstance(data, FaceSet) else data.faces(probe_size)
        super().__init__(faces, config, callbacks, progress and self.rank == 0)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        dataset = TensorDataset(self.images, self.labels) if isinstance(data, FaceSet) else data
        self.sampler = DistributedSampler(
            dataset, self.world, self.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        self.loader = DataLoader(
            dataset,
            config.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(dataset)} faces over {self.world} ranks make no batch of "
                f"{config.batch_size}; "
                "lower batch_size or use fewer ranks"
            )
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = make_optimizer(parameter_groups(self.model, self.head, config), config)
        self.scheduler = make_schedule(self.optimizer, config, self.total_steps)
        self.amp_dtype = self._amp_dtype(amp)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        replica = BackboneWithHead(self.model, self.head, self.amp_dtype)
        self.replica = (
            replica
            if self.world == 1
            else DistributedDataParallel(
                replica,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **NO_FORWARD_BUFFER_SYNC,
            )
        )
        if replica_check:
            self.callbacks.append(ReplicaCheck())
        self.history = [self._record(loss=math.nan, acc=math.nan, seconds=0.0)]

    def build_model(self, config: TrainConfig) -> nn.Module:
        return backbone_for(self.backbone, config.model)

    def _amp_dtype(self, amp: str | None) -> torch.dtype | None:
        if amp in (None, "none"):
            return None
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        if amp == "fp16" and self.device.type != "cuda":
            raise ValueError(
                f"fp16 autocast needs a CUDA device (this run uses {self.device}); use amp='bf16'"
            )
        return AMP_DTYPES[amp]

    def _batches(self):
        """This rank's shard of the epoch (``DistributedSampler``), flipped by a generator seeded
        per epoch and rank."""
        self.sampler.set_epoch(self.epoch)
        g = torch.Generator().manual_seed(
            (self.config.seed * 100_003 + self.epoch) * 1_009 + self.rank
        )
        for images, labels in self.loader:
            x = to_input(images.to(self.device, non_blocking=True))
            if self.config.flip:
                flips = (torch.rand(len(x), generator=g) < 0.5).to(self.device)
                x = torch.where(flips[:, None, None, None], x.flip(3), x)
            yield x, labels.to(self.device, non_blocking=True)

    def _global_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            values = values.to(_comm_device())
            dist.all_reduce(values)
            values /= self.world
        return values.cpu()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One step of the global batch; returns its mean loss and accuracy (the same numbers on
        every rank)."""
        loss, acc = self.replica(x, y)
        mean_loss, mean_acc = self._global_mean(torch.stack([loss.detach(), acc]).float()).tolist()
        if not math.isfinite(mean_loss):  # decided on the global loss, so every rank stops together
            raise NonFiniteLossError(
                f"loss became {mean_loss} at epoch {self.epoch + 1}, step {self.step}: lower the "
                f"learning rate (now {self.optimizer.param_groups[0]['lr']:.3g}), set grad_clip "
                f"(arcface_torch uses 5), or train in fp32/bf16 instead of fp16"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.replica.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        average_buffers(self.replica)
        if self.step < self.total_steps:
            self.scheduler.step()
        self.step += 1
        return mean_loss, mean_acc

    def save(self, path: str | Path) -> Path:
        """Rank 0 writes once the replicas are proven identical; every rank waits, so the file
        exists on return.

        The check raises on every rank alike, before anything is written: no checkpoint of a model
        the ranks disagree on.
        """
        check_replicas(replica_module(self), self.optimizer, f"before saving {path}")
        if self.rank == 0:
            super().save(path)
        if self.world > 1:
            dist.barrier()
        return Path(path)

    def resume(self, path: str | Path) -> "DistributedTrainer":
        """Continue from a checkpoint of the same backbone (every rank reads the same file).

        An fp16 ``GradScaler`` restarts from its initial scale, as in arcface_torch; it settles
        within ~100 steps.
        """
        saved = backbone_name(load_checkpoint(path)["model"])
        if saved != self.backbone:
            raise CheckpointError(
                f"{path}: its backbone is {saved}, this run builds {self.backbone}"
            )
        return super().resume(path)
