"""Data-parallel CRAFT: identical replicas after every re-activation, desync detected, torchrun end
to end.

The 2-process tests spawn gloo workers on the CPU (one thread each); with two or more GPUs the same
scenarios also run with NCCL. docs/SCALE.md's commands are run as written, with only the data paths
substituted and a tiny budget appended (argparse keeps the last value of a repeated flag).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from craftlib.callbacks import Callback
from craftlib.checkpoints import CheckpointError, load_embedding_model
from craftlib.data import FaceSet, PairSet, to_input
from craftlib.losses import MarginHead
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import PAPER_READING, CraftSpec, ReactivationCallback
from craftlib.scale.cli import build_parser, main
from craftlib.scale.distributed import (
    DistributedTrainer,
    ReplicaMismatchError,
    SyncedReactivation,
    check_replicas,
    checksum,
    init_distributed,
    planned_events,
    watched_tensors,
)
from craftlib.scale.facebin import consecutive_folds, write_bin
from craftlib.scale.facefolders import FaceFolder
from craftlib.training import TrainConfig

REPO = Path(__file__).resolve().parent.parent
SCALE_MD = REPO / "docs" / "SCALE.md"
SIZE = 16
MODEL = ModelConfig(input_size=SIZE, stem_channels=16, widths=(8, 8, 8), embedding_dim=16)
CONFIG = TrainConfig(
    epochs=2, batch_size=4, lr=0.05, schedule="constant", device="cpu", model=MODEL
)
CRAFT = CraftSpec(
    strategy="contextual",
    score="silent",
    tau=0.9,
    every=1,
    last_epoch=2,
    strong_quantile=0.5,
    downstream="rescale",
    reset_step=True,
)  # tau 0.9: most filters renewed at every step
TINY = [
    "--recipe",
    "fast",
    "--backbone",
    "facecnn",
    "--size",
    str(SIZE),
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--lr",
    "0.05",
    "--device",
    "cpu",
    "--every",
    "1",
    "--tau",
    "0.5",
    "--workers",
    "0",
    "--quiet",
]


def synthetic_faces(identities: int = 8, per_identity: int = 4, seed: int = 0) -> FaceSet:
    rng = np.random.default_rng(seed)
    n = identities * per_identity
    return FaceSet(
        rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
        np.repeat(np.arange(identities, dtype=np.int64), per_identity),
        [f"id{i}" for i in range(identities)],
        [f"f{i}.jpg" for i in range(n)],
    )


def replica_state(trainer) -> dict[str, torch.Tensor]:
    """Everything a replica holds: model and head state (BN buffers included) and the whole
    optimizer state."""
    state = {f"model.{k}": v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    state.update(
        {f"head.{k}": v.detach().cpu().clone() for k, v in trainer.head.state_dict().items()}
    )
    for i, s in trainer.optimizer.state_dict()["state"].items():
        state.update(
            {
                f"optimizer.{i}.{k}": v.detach().cpu().clone()
                for k, v in s.items()
                if torch.is_tensor(v)
            }
        )
    return state


class Snapshots(Callback):
    """The full replica state after every new event (runs before the trainer's ReplicaCheck)."""

    def __init__(self):
        self.states: list[dict] = []

    def on_step_end(self, trainer) -> None:
        if len(trainer.events) > len(self.states):
            self.states.append(replica_state(trainer))


def scale_md_snippet() -> str:
    return re.search(r"```python\n(.*?)```", SCALE_MD.read_text(), re.S).group(1)


# --------------------------------------------------------------------------------------------
# two processes: the worker and its scenarios


def _train(reactivation: ReactivationCallback, device: str) -> dict:
    snapshots = Snapshots()
    trainer = DistributedTrainer(
        synthetic_faces(), CONFIG.but(device=device), [reactivation, snapshots], progress=False
    )
    trainer.sampler.set_epoch(0)
    shard = list(trainer.sampler)
    try:
        trainer.fit()
        error = None
    except ReplicaMismatchError as err:
        error = str(err)
    return {
        "states": snapshots.states,
        "events": trainer.events,
        "error": error,
        "shard": shard,
        "checks": trainer.callbacks[-1].checks,
        "losses": [h["loss"] for h in trainer.history[1:]],
    }


def _plain_ddp_loop(rank: int, device: str) -> dict:
    """docs/SCALE.md's arcface_torch snippet in a hand-written DDP loop (broadcast_buffers=False, as
    there)."""
    snippet = {"cfg": SimpleNamespace(seed=0, num_epoch=3)}
    exec(scale_md_snippet(), snippet)
    where = torch.device("cpu" if device == "cpu" else f"cuda:{torch.cuda.current_device()}")
    torch.manual_seed(0)
    model, head = FaceCNN(MODEL).to(where), MarginHead(16, 8).to(where)
    with torch.no_grad():
        model.conv1.weight[:4] *= 1e-3  # four dead filters for CRAFT to find
    backbone = DistributedDataParallel(model, broadcast_buffers=False)
    margin = DistributedDataParallel(head)
    opt = torch.optim.SGD(
        [*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9, weight_decay=5e-4
    )
    data = synthetic_faces()
    x_all, y_all = (
        to_input(torch.from_numpy(data.images)).to(where),
        torch.from_numpy(data.labels).to(where),
    )
    for epoch in range(2):
        for step in range(2):
            idx = torch.arange(rank + 2 * 4 * step, 32, 2)[
                :4
            ]  # this rank's 4 of the step's 8 faces
            loss = F.cross_entropy(margin(backbone(x_all[idx]), y_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        snippet["craft_after_epoch"](backbone, opt, epoch, snippet["cfg"])
    return {"conv1": model.conv1.weight.detach().cpu(), "bn1": model.bn1.running_var.cpu()}


def _without_buffer_averaging(device: str) -> dict:
    """The control: DDP with broadcast_buffers=False and no averaging lets BatchNorm statistics
    drift apart."""
    import craftlib.scale.distributed as distributed

    average, distributed.average_buffers = distributed.average_buffers, lambda module: None
    try:
        return _train(SyncedReactivation(CRAFT, seed=0), device)
    finally:
        distributed.average_buffers = average


class Diverge(Callback):
    """A rank-local change no event records: rank 1 nudges one tensor after the first step (DDP
    never notices)."""

    def __init__(self, rank: int, module: str, tensor: str = "weight"):
        self.rank, self.module, self.tensor = rank, module, tensor

    def on_step_end(self, trainer) -> None:
        if self.rank == 1 and trainer.step == 1:
            with torch.no_grad():
                getattr(dict(trainer.replica.module.named_modules())[self.module], self.tensor)[
                    0, 0
                ] += 1e-3


def _outcome(run) -> dict:
    """What a scenario ended with: its error's class and message, or ``None``."""
    try:
        return {"error": None, **run()}
    except ReplicaMismatchError as err:
        return {"error": str(err), "kind": type(err).__name__}


def _diverged_head(rank: int, device: str) -> dict:
    trainer = DistributedTrainer(
        synthetic_faces(), CONFIG.but(device=device), [Diverge(rank, "head")], progress=False
    )
    return _outcome(lambda: {"history": trainer.fit()})


def _diverged_embedding_then_save(rank: int, device: str, out: str) -> dict:
    """No ReplicaCheck callback: the check inside ``save`` must still refuse, and write nothing."""
    trainer = DistributedTrainer(
        synthetic_faces(),
        CONFIG.but(device=device),
        [Diverge(rank, "model.head.3")],
        progress=False,
        replica_check=False,
    )
    trainer.train_steps(3)
    embedding = checksum(
        trainer.model.head[3].weight
    ).item()  # two more averaged steps: still apart
    path = Path(out) / "diverged.pt"
    return {
        **_outcome(lambda: {"saved": trainer.save(path)}),
        "embedding": embedding,
        "written": path.exists(),
    }


def _schedule_mismatch(rank: int, device: str) -> dict:
    """Rank 1 stops re-activating an epoch early: without the plan check it would meet rank 0 in
    another collective."""
    callback = SyncedReactivation(CRAFT.but(last_epoch=2 - rank), seed=0)
    trainer = DistributedTrainer(
        synthetic_faces(), CONFIG.but(device=device), [callback], progress=False
    )
    return {**_outcome(lambda: {"history": trainer.fit()}), "steps": trainer.step}


def _worker(rank: int, port: int, out: str, device: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # ReactivationWarnings at tau 0.9 are expected
    assert init_distributed(device) == (rank, 2)
    try:
        result = {
            "synced": _train(SyncedReactivation(CRAFT, seed=0), device),
            "desynced": _train(
                ReactivationCallback(PAPER_READING.but(tau=0.9, every=1, last_epoch=2), seed=rank),
                device,
            ),
            "snippet": _plain_ddp_loop(rank, device),
            "unsynced_buffers": _without_buffer_averaging(device),
            "diverged_head": _diverged_head(rank, device),
            "diverged_embedding": _diverged_embedding_then_save(rank, device, out),
            "schedule": _schedule_mismatch(rank, device),
        }
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out) / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(
    scope="module",
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                torch.cuda.device_count() < 2, reason="NCCL with 2 processes needs 2 GPUs"
            ),
        ),
    ],
)
def two_ranks(request, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp(f"ddp-{request.param}")
    mp.spawn(_worker, args=(free_port(), str(out), request.param), nprocs=2, join=True)
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))


@pytest.mark.slow
def test_replicas_identical_after_every_reactivation(two_ranks):
    r0, r1 = (r["synced"] for r in two_ranks)
    assert r0["error"] is None and r1["error"] is None
    assert (
        set(r0["shard"]).isdisjoint(r1["shard"]) and len(r0["shard"]) == len(r1["shard"]) == 16
    )  # real sharding
    assert (
        len(r0["events"]) == 8 and r0["events"] == r1["events"]
    )  # every step, the same filters everywhere
    assert sum(len(e["filters"]) for e in r0["events"]) > 8
    assert (
        r0["checks"] == r1["checks"] == 1 + 8
    )  # ReplicaCheck ran at the start and after every event
    for s0, s1 in zip(r0["states"], r1["states"], strict=True):
        assert s0.keys() == s1.keys() and any(k.startswith("optimizer.") for k in s0)
        for key in s0:
            assert torch.equal(s0[key], s1[key]), (
                key
            )  # conv1, BN parameters and buffers, optimizer state: all of it
    assert not torch.equal(
        r0["states"][-1]["model.bn1.running_mean"], torch.zeros(16)
    )  # the buffers did move
    assert r0["losses"] == r1["losses"]  # the global batch's loss, logged alike everywhere


@pytest.mark.slow
def test_desynchronised_reinit_is_detected(two_ranks):
    r0, r1 = (r["desynced"] for r in two_ranks)
    for r in (r0, r1):  # every rank raises, at the first event, naming the tensor and the rank
        assert "conv1.weight on rank(s) [1] is not rank 0's" in r["error"]
        assert len(r["events"]) == 1
    assert not torch.equal(
        r0["states"][0]["model.conv1.weight"], r1["states"][0]["model.conv1.weight"]
    )


@pytest.mark.slow
def test_batchnorm_drift_is_detected_without_averaging(two_ranks):
    for r in two_ranks:
        assert re.search(
            r"bn1\.running_(mean|var) on rank\(s\) \[1\]", r["unsynced_buffers"]["error"]
        )


@pytest.mark.slow
def test_diverged_margin_head_is_caught_at_the_epoch_end(two_ranks):
    for r in (
        r["diverged_head"] for r in two_ranks
    ):  # no event in this run: the epoch-end check caught it
        assert r["kind"] == "ReplicaMismatchError"
        assert r["error"].startswith(
            "replicas differ at the end of epoch 1: head.weight on rank(s) [1] is not rank 0's"
        )


@pytest.mark.slow
def test_diverged_embedding_layer_is_refused_before_rank_0_saves(two_ranks):
    r0, r1 = (r["diverged_embedding"] for r in two_ranks)
    assert (
        r0["embedding"] != r1["embedding"]
    )  # DDP broadcast the parameters once; it did not heal the difference
    for r in (r0, r1):
        assert "before saving" in r["error"] and "model.head.3.weight on rank(s) [1]" in r["error"]
        assert not r["written"]


@pytest.mark.slow
def test_schedule_mismatch_is_craftlibs_own_error_before_any_step(two_ranks):
    for r in (r["schedule"] for r in two_ranks):
        assert r["kind"] == "ScheduleMismatchError" and r["steps"] == 0
        assert "the re-activation schedule on rank(s) [1] is not rank 0's" in r["error"]
        assert "rank 0: 8 events, steps 1..8; rank 1: 4 events, steps 1..4" in r["error"]


@pytest.mark.slow
def test_scale_md_snippet_keeps_a_plain_ddp_loop_in_sync(two_ranks):
    r0, r1 = (r["snippet"] for r in two_ranks)  # check_replicas inside the snippet raised nothing
    assert torch.equal(r0["conv1"], r1["conv1"]) and torch.equal(r0["bn1"], r1["bn1"])
    assert (
        r0["conv1"][:4].abs().amax(dim=(1, 2, 3)) > 1e-2
    ).all()  # the four dead filters were renewed


# --------------------------------------------------------------------------------------------
# one process


def test_synced_reactivation_is_the_plain_callback_in_one_process():
    """SyncedReactivation re-does ReactivationCallback's detection; alone it must match it bit for
    bit."""
    runs = []
    for cls in (ReactivationCallback, SyncedReactivation):
        trainer = DistributedTrainer(
            synthetic_faces(), CONFIG, [cls(CRAFT, seed=0)], progress=False
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit()
        runs.append(trainer)
    plain, synced = runs
    assert plain.events == synced.events and len(plain.events) == 16
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.model.state_dict().values(), synced.model.state_dict().values())
    )


def test_checksum_sees_a_single_bit():
    t = torch.randn(100)
    flipped = t.clone()
    flipped.view(torch.int32)[37] ^= 1  # the lowest mantissa bit of one element
    assert checksum(t) == checksum(t.clone()) and checksum(t) != checksum(flipped)
    for other in (t.to(torch.bfloat16), t > 0, torch.arange(5)):
        assert checksum(other).dtype == torch.int64


def test_watched_tensors_cover_every_parameter_buffer_and_optimizer_state():
    trainer = DistributedTrainer(synthetic_faces(), CONFIG, progress=False)
    trainer.train_steps(1)
    replica = trainer.replica  # backbone and margin head, as one module
    names = watched_tensors(replica, trainer.optimizer)
    assert set(replica.state_dict()) <= set(
        names
    )  # every parameter and buffer, num_batches_tracked included
    moments = {
        f"optimizer[{n}].momentum_buffer" for n, p in replica.named_parameters() if p.requires_grad
    }
    assert moments <= set(names) and {
        "model.head.3.weight",
        "head.weight",
        "optimizer.group0.lr",
    } <= set(names)
    alone = watched_tensors(
        trainer.model, trainer.optimizer
    )  # a head outside the module: its state still counts
    last = (
        len(trainer.optimizer.param_groups[0]["params"]) - 1
    )  # the margin head's weight comes last
    assert (
        f"optimizer[group 0, param {last}].momentum_buffer" in alone and "head.weight" not in alone
    )
    assert (
        check_replicas(replica, trainer.optimizer) == 0
    )  # nothing to compare without a process group


def test_planned_events_are_the_callbacks_own_schedule():
    """The plan asked of the hooks equals what a real run does, for step- and epoch-scheduled
    re-activation."""
    for craft in (
        CRAFT,
        CRAFT.but(every="epoch", last_epoch=1),
        CRAFT.but(first_epoch=2, last_epoch=2),
    ):
        callback = ReactivationCallback(craft, seed=0)
        trainer = DistributedTrainer(synthetic_faces(), CONFIG, [callback], progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit()
        assert planned_events(callback, trainer) == [
            (e["epoch"], e["step"]) for e in trainer.events
        ]
        assert not hasattr(callback, "__dict__") or "_act" not in vars(
            callback
        )  # the stand-in action is gone


@pytest.mark.slow
def test_iresnet_trains_saves_and_reloads(tmp_path):
    faces = synthetic_faces()
    trainer = DistributedTrainer(
        faces, CONFIG.but(epochs=1, model__embedding_dim=32), progress=False, backbone="iresnet18"
    )
    trainer.train_steps(2)
    assert len(trainer.history[0]["conv1"]["weight"]) == 64
    path = trainer.save(tmp_path / "checkpoint.pt")
    model = load_embedding_model(path)
    x = to_input(torch.from_numpy(faces.images[:4]))
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model.eval()(x))
    with pytest.raises(CheckpointError, match="its backbone is iresnet18, this run builds facecnn"):
        DistributedTrainer(faces, CONFIG.but(model__embedding_dim=32), progress=False).resume(path)


def test_mixed_precision_choices():
    faces = synthetic_faces()
    trainer = DistributedTrainer(
        faces, CONFIG, progress=False, amp="bf16"
    )  # bf16 autocast works on the CPU
    assert all(np.isfinite(trainer.train_steps(2)))
    assert not trainer.scaler.is_enabled()
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        DistributedTrainer(faces, CONFIG, progress=False, amp="fp16")
    with pytest.raises(ValueError, match="amp must be"):
        DistributedTrainer(faces, CONFIG, progress=False, amp="fp8")
    with pytest.raises(ValueError, match="make no batch of 64"):
        DistributedTrainer(faces, CONFIG.but(batch_size=64), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_mixed_precision_with_reactivation(amp):
    trainer = DistributedTrainer(
        synthetic_faces(),
        CONFIG.but(device="cuda"),
        [SyncedReactivation(CRAFT, seed=0)],
        progress=False,
        backbone="iresnet18",
        amp=amp,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = trainer.train_steps(4)
    assert all(np.isfinite(losses)) and trainer.scaler.is_enabled() == (amp == "fp16")
    assert trainer.model.conv1.weight.device.type == "cuda" and trainer.events


def test_lazy_face_folder_trains(tmp_path):
    root = _face_folder(tmp_path / "faces")
    trainer = DistributedTrainer(FaceFolder(root, SIZE), CONFIG, progress=False, probe_size=8)
    assert trainer.images.shape[0] == 8 and trainer.steps_per_epoch == 8
    assert all(np.isfinite(trainer.train_steps(3)))


# --------------------------------------------------------------------------------------------
# docs/SCALE.md's commands


def _face_folder(root: Path, identities: int = 8, per_identity: int = 4) -> Path:
    faces = synthetic_faces(identities, per_identity)
    for image, label, name in zip(faces.images, faces.labels, faces.files):
        (root / f"id{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"id{label}" / name)
    return root


def _bins(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    left = np.arange(0, 40, 2)
    for name in ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"):
        images = rng.integers(0, 256, (40, SIZE, SIZE, 3), dtype=np.uint8)
        write_bin(
            folder / f"{name}.bin",
            PairSet(
                images,
                left,
                left + 1,
                np.arange(20) % 2 == 0,
                consecutive_folds(20),
                [str(i) for i in range(40)],
            ),
        )
    return folder


def documented(start: str, **values: str) -> list[str]:
    """The docs/SCALE.md command that starts with ``start``, with ``$NAME`` replaced by
    ``values``."""
    blocks = re.findall(r"```bash\n(.*?)```", SCALE_MD.read_text(), re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.startswith(start)]
    assert len(commands) == 1, (
        f"expected one command starting {start!r} in {SCALE_MD}, found {commands}"
    )
    command = commands[0]
    for name, value in values.items():
        command = command.replace(f"${name}", value)
    return shlex.split(command)


def test_every_documented_command_is_valid():
    from torch.distributed.run import get_args_parser

    blocks = re.findall(r"```bash\n(.*?)```", SCALE_MD.read_text(), re.S)
    commands = [
        shlex.split(line)
        for block in blocks
        for line in block.splitlines()
        if line and line[0] != "#" and "craftlib.scale.cli" in line
    ]  # the Flower commands: tests/test_flower.py
    assert len(commands) == 4
    for tokens in commands:
        cli = tokens.index("craftlib.scale.cli")
        if tokens[0] == "torchrun":
            get_args_parser().parse_args(tokens[1:])
        build_parser().parse_args(tokens[cli + 1 :])


@pytest.mark.slow
def test_one_gpu_command_then_evaluate_bin_command(tmp_path, monkeypatch, capsys):
    """SCALE.md's one-GPU training and its .bin evaluation, run as written (CPU, tiny data, tiny
    budget)."""
    data, bins = _face_folder(tmp_path / "casia"), _bins(tmp_path / "bins")
    monkeypatch.chdir(tmp_path)
    train = documented("python -m craftlib.scale.cli train", DATA=str(data))
    assert main(train[3:] + TINY) == 0
    assert "8 identities, 1 process(es)" in capsys.readouterr().out
    evaluate = documented("python -m craftlib.scale.cli evaluate-bin", BINS=str(bins))
    assert main(evaluate[3:] + ["--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert all(
        f"{name}: accuracy" in out for name in ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")
    )
    assert (tmp_path / "runs" / "r50-craft" / "bin_metrics.json").is_file()


def _run_torchrun(commands: list[list[str]], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
    ]  # what the torchrun script runs, from this venv
    procs = [
        subprocess.Popen(
            [*torchrun, *c[1:]] + TINY,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in commands
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_torchrun_command_two_processes(tmp_path):
    data = _face_folder(tmp_path / "casia")
    command = documented("torchrun --standalone", DATA=str(data))
    command[command.index("--nproc-per-node") + 1] = "2"
    _run_torchrun([command], tmp_path)
    ckpt = torch.load(tmp_path / "runs" / "r50-craft" / "checkpoint.pt", weights_only=True)
    history = (tmp_path / "runs" / "r50-craft" / "history.json").read_text()
    assert (
        ckpt["step"] == 8 and '"world_size": 2' in history
    )  # 32 faces / 2 ranks / batch 4 = 4 steps x 2 epochs


@pytest.mark.slow
def test_torchrun_command_two_nodes(tmp_path):
    """The multi-node form as two "nodes" of one process each on this machine."""
    data, port = _face_folder(tmp_path / "casia"), str(free_port())
    commands = []
    for node in ("0", "1"):
        command = documented("torchrun --nnodes", DATA=str(data), MASTER="127.0.0.1")
        for flag, value in (
            ("--nproc-per-node", "1"),
            ("--node-rank", node),
            ("--master-port", port),
        ):
            command[command.index(flag) + 1] = value
        commands.append(command)
    _run_torchrun(commands, tmp_path)
    assert '"world_size": 2' in (tmp_path / "runs" / "r100-craft" / "history.json").read_text()
