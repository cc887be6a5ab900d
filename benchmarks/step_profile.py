"""Where does a workshop training step spend its time? Each layer's forward and backward against
same-run sgemm.

    .venv/bin/python benchmarks/step_profile.py           # the measurement (12-25 min on 2 cores):
    results + doc .venv/bin/python benchmarks/step_profile.py --quick   # smoke run (~2 min):
    benchmarks/out/step_profile.json only .venv/bin/python benchmarks/step_profile.py --render
    benchmarks/results.json   # redraw the doc's block

One workshop training step (recipe ``workshop``: batch 64, 40 px, ``FaceCNN``, CosFace head over
1,262 identities, SGD) on one thread, through ``Trainer`` itself: ``Trainer._batches`` (gather,
uint8 -> float, mirror) and ``Trainer.train_step``. Faces are real LFW (``CRAFTLIB_DATA``) or, with
``--random``, random uint8 faces of the same shape (the arithmetic is the same; only the loss values
differ).

Each *cell* is a fresh process; its *modes* are trainers whose steps take turns, so they share every
moment of the machine's load. ``stock`` has craftlib's speed fixes turned off (torch's own PReLU,
glibc's malloc defaults, the former batch code) and runs alone in its cell, since glibc's thresholds
belong to a process; the other cell runs ``craftlib`` (the code as it is) beside
``stock+allocator``, ``craftlib-FIX`` (every fix but one) and
``craftlib+CANDIDATE`` (what was tried and not adopted). In a cell, in this order: single-core sgemm
(``torch.mm``) at every GEMM shape of the step (a convolution as its im2col GEMM: forward, grad
input, grad weight) and at 1024^3; timed steps; steps clocked per layer; steps under
``torch.profiler``; sgemm again. Each round runs both cells, in alternating order, and every number
is a median over rounds.

Times are CPU time, so that waiting for a core on a shared machine is not counted: steps and sgemm
by ``time.process_time``; each layer's forward and backward by the thread CPU clock read in module
hooks and in hooks on the autograd nodes its forward created. Per op, ``torch.profiler``'s wall
times are scaled by the profiled steps' own CPU/wall ratio. FLOPs are analytic: a convolution does
``2 * Cin * Cout * k * k * Hout * Wout`` per image forward and twice that backward (grad input +
grad weight; the first layer has no grad input), a linear layer and the margin head likewise. The
*FLOP share* of a step is its FLOPs per CPU-second over the same cell's 1024^3 sgemm FLOP/s.
Elementwise layers (BatchNorm, PReLU) do no GEMM: they are read against the time of copying their
output tensor once, measured in the same cell.

A full run writes the ``training_profile`` section of ``benchmarks/results.json`` and the
block ``<!-- profile -->`` (``craftlib.pages``) of ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runs from a checkout even without `pip install -e .`

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from benchmarks.report import update_block, write_section  # noqa: E402
from craftlib.losses import MarginHead  # noqa: E402

RESULTS = REPO / "benchmarks" / "results.json"
QUICK_OUT = REPO / "benchmarks" / "out" / "step_profile.json"
DOC = REPO / "docs" / "PERFORMANCE.md"
KEY = "training_profile"
TARGET = 0.5  # a step's FLOP/s over same-run single-core sgemm (issue #25)
PEAK = (1024, 1024, 1024)  # the sgemm every share is read against
SCOPE = "layer::"  # record_function names that open each layer's forward
DATA, STEP = "profile::data", "profile::step"
REST = "loss, accuracy, rest"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the layers and their analytic FLOPs


def layers_of(model: nn.Module, head: nn.Module) -> dict[str, nn.Module]:
    """Every leaf module of the network in forward order, then the margin head: the rows of the
    profile."""
    out = {name: m for name, m in model.named_modules() if not list(m.children())}
    out["margin head"] = head
    return out


def gemm_shape(
    module: nn.Module, inp: torch.Tensor, out: torch.Tensor
) -> tuple[int, int, int] | None:
    """(M, K, N) of the [M x K] @ [K x N] product a layer's forward is (a convolution as its im2col
    GEMM); None for a layer without one (BatchNorm, PReLU, ...)."""
    if isinstance(module, nn.Conv2d):
        k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return out.numel() // module.out_channels, k, module.out_channels
    if isinstance(module, nn.Linear):
        return out.numel() // module.out_features, module.in_features, module.out_features
    if isinstance(module, MarginHead):
        return inp.shape[0], module.weight.shape[1], module.weight.shape[0]
    return None


def gemms(fwd: tuple[int, int, int], grad_input: bool) -> dict[str, list[tuple[int, int, int]]]:
    """The products of a layer's forward and backward: grad input ``dC @ B^T`` (unless its input
    needs no gradient: the first convolution) and grad weight ``A^T @ dC``."""
    m, k, n = fwd
    return {"fwd": [fwd], "bwd": ([(m, n, k)] if grad_input else []) + [(k, m, n)]}


def flops(shapes: list) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def describe_layers(layers: dict[str, nn.Module], run) -> dict[str, dict]:
    """Output shape, GEMMs and analytic FLOPs of each layer, seen during ``run()`` (a forward at
    least).

    A convolution does ``2 * Cin * Cout * k * k * Hout * Wout`` FLOPs per image forward and twice
    that backward, or once where its input needs no gradient; a linear layer likewise.
    """
    seen: dict[str, dict] = {}

    def hook(name):
        def record(module, args, out):
            fwd = gemm_shape(module, args[0], out)
            shapes = gemms(fwd, args[0].requires_grad) if fwd else {"fwd": [], "bwd": []}
            seen.setdefault(
                name,
                {
                    "type": type(module).__name__,
                    "out_shape": list(out.shape),
                    "gemms": shapes,
                    "flops_fwd": flops(shapes["fwd"]),
                    "flops_bwd": flops(shapes["bwd"]),
                    "out_bytes": out.numel() * out.element_size(),
                },
            )

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {name: seen[name] for name in layers if name in seen}


# --------------------------------------------------------------------------------------------
# per layer: thread CPU time from module and autograd-node hooks


def graph_nodes(root, stop: set) -> list:
    """The autograd nodes from ``root`` back to (not into) ``stop`` and the parameters'
    ``AccumulateGrad``."""
    seen, todo, out = set(), [root], []
    while todo:
        node = todo.pop()
        if node is None or node in stop or node in seen or node.name().endswith("AccumulateGrad"):
            continue
        seen.add(node)
        out.append(node)
        todo.extend(fn for fn, _ in node.next_functions)
    return out


class LayerClock:
    """Thread CPU nanoseconds of each layer's forward and backward (``"NAME|fwd"``, ``"NAME|bwd"``).

    Forward: a module's pre- and post-hook. Backward: hooks before and after each autograd node its
    forward created (found from its output's ``grad_fn`` back to its input's). CPU time of this
    thread, so time spent waiting for a core on a busy machine is not counted, unlike a wall-clock
    profiler.
    """

    def __init__(self, layers: dict[str, nn.Module]):
        self.layers, self.ns, self._handles = layers, {}, []

    def __enter__(self) -> "LayerClock":
        for name, m in self.layers.items():
            start = [0]
            self._handles += [
                m.register_forward_pre_hook(self._forward_start(start)),
                m.register_forward_hook(self._forward_end(name, start)),
            ]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def _add(self, key: str, ns: int) -> None:
        self.ns[key] = self.ns.get(key, 0) + ns

    @staticmethod
    def _forward_start(start: list):
        def hook(module, args):
            start[0] = time.thread_time_ns()

        return hook

    def _forward_end(self, name: str, start: list):
        def hook(module, args, out):
            self._add(f"{name}|fwd", time.thread_time_ns() - start[0])
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                stop = {
                    a.grad_fn for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None
                }
                for node in graph_nodes(out.grad_fn, stop):
                    self._time_node(node, f"{name}|bwd")

        return hook

    def _time_node(self, node, key: str) -> None:
        start = [0]  # not the node itself: a hook that held its node would keep the graph alive

        def pre(grad_outputs):
            start[0] = time.thread_time_ns()

        def post(grad_inputs, grad_outputs):
            self._add(key, time.thread_time_ns() - start[0])

        node.register_prehook(pre)
        node.register_hook(post)


def clock_step(trainer, batches) -> dict[str, float]:
    """Thread CPU ms of one step: each layer's forward and backward, the data, the optimizer step
    and the whole step; what no layer, the data or the optimizer took (and the clock's own hooks) is
    ``REST|fwd``."""
    opt = [0, 0]
    pre = trainer.optimizer.register_step_pre_hook(
        lambda *a: opt.__setitem__(0, time.thread_time_ns())
    )
    post = trainer.optimizer.register_step_post_hook(
        lambda *a: opt.__setitem__(1, opt[1] + time.thread_time_ns() - opt[0])
    )
    try:
        with LayerClock(layers_of(trainer.model, trainer.head)) as clock:
            t0 = time.thread_time_ns()
            x, y = next(batches)
            t1 = time.thread_time_ns()
            trainer.train_step(x, y)
            t2 = time.thread_time_ns()
    finally:
        pre.remove()
        post.remove()
    ms = {k: v / 1e6 for k, v in clock.ns.items()}
    ms.update(
        {"data|fwd": (t1 - t0) / 1e6, "optimizer|step": opt[1] / 1e6, "step": (t2 - t0) / 1e6}
    )
    ms[f"{REST}|fwd"] = ms["step"] - sum(v for k, v in ms.items() if k != "step")
    return ms


# --------------------------------------------------------------------------------------------
# per op: torch.profiler, each op given to the layer it ran for


@contextmanager
def layer_scopes(layers: dict[str, nn.Module]):
    """Open ``record_function("layer::NAME")`` around each layer's forward, so the profiler can tell
    them apart."""
    open_scopes: dict[str, record_function] = {}

    def enter(name):
        def pre(module, args):
            open_scopes[name] = record_function(SCOPE + name)
            open_scopes[name].__enter__()

        return pre

    def leave(name):
        def post(module, args, out):
            open_scopes.pop(name).__exit__(None, None, None)

        return post

    handles = [
        h
        for name, m in layers.items()
        for h in (m.register_forward_pre_hook(enter(name)), m.register_forward_hook(leave(name)))
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _owner(event, seq_layer: dict[int, str]) -> tuple[str, str]:
    """(layer, phase) an event belongs to: its nearest enclosing layer scope, backward node,
    optimizer or data."""
    e = event
    while e is not None:
        name = e.name
        if name.startswith(SCOPE):
            return name[len(SCOPE) :], "fwd"
        if name.startswith("autograd::engine::evaluate_function:"):
            if "AccumulateGrad" in name:
                return "optimizer", "bwd"
            return seq_layer.get(e.sequence_nr, REST), "bwd"
        if name.startswith("Optimizer."):
            return "optimizer", "step"
        if name == DATA:
            return "data", "fwd"
        e = e.cpu_parent
    return REST, "fwd"


def attribute(events) -> dict[tuple[str, str, str], float]:
    """Self microseconds per (layer, phase, op).

    A backward node is matched to its layer by the autograd sequence number the forward op recorded
    inside the layer's scope. Time outside every layer, the optimizer and the data goes to ``REST``
    (loss, accuracy, the finiteness check, ``.item()``, the schedule).
    """
    seq_layer: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::"):
            layer, phase = _owner(e, {})
            if phase == "fwd" and layer not in (REST, "data"):
                seq_layer.setdefault(e.sequence_nr, layer)
    op_us: dict[tuple[str, str, str], float] = {}
    for e in events:
        if e.self_cpu_time_total > 0 and e.name != STEP:
            key = (*_owner(e, seq_layer), e.name)
            op_us[key] = op_us.get(key, 0.0) + e.self_cpu_time_total
    return op_us


def profile_steps(trainer, batches, n: int) -> dict:
    """``n`` steps under the profiler: self ms per op and step, scaled from the profiler's wall time
    to CPU time by the profiled steps' own CPU/wall ratio (on a busy machine the waiting is spread
    over the ops)."""
    with (
        layer_scopes(layers_of(trainer.model, trainer.head)),
        profile(activities=[ProfilerActivity.CPU]) as prof,
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            with record_function(STEP):
                with record_function(DATA):
                    x, y = next(batches)
                trainer.train_step(x, y)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scale = cpu / wall / n / 1e3  # wall microseconds over n steps -> CPU milliseconds per step
    return {
        "cpu_over_wall": cpu / wall,
        "ops": {"|".join(k): us * scale for k, us in attribute(prof.events()).items()},
    }


# --------------------------------------------------------------------------------------------
# one cell


def cpu_ms(fn, reps: int) -> list[float]:
    """CPU milliseconds of ``fn()`` per call, ``reps`` times."""
    out = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        out.append(1e3 * (time.process_time() - t))
    return out


def sgemm_gflops(shape: tuple[int, int, int], reps: int = 5) -> float:
    """Median single-thread ``torch.mm`` GFLOP/s for (M, K, N), output preallocated (no page faults
    timed)."""
    m, k, n = shape
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    torch.mm(a, b, out=c)
    return 2 * m * k * n / statistics.median(cpu_ms(lambda: torch.mm(a, b, out=c), reps)) / 1e6


def copy_ms(numel: int, reps: int = 7) -> float:
    """Median CPU ms to copy ``numel`` floats into a preallocated tensor: one read and one write
    pass."""
    a, b = torch.randn(numel), torch.empty(numel)
    b.copy_(a)
    return statistics.median(cpu_ms(lambda: b.copy_(a), reps))


def sgemm_set(shapes: list[tuple[int, int, int]]) -> dict[str, float]:
    return {shape_key(s): sgemm_gflops(s) for s in [PEAK, *shapes]}


def shape_key(shape) -> str:
    return "x".join(map(str, shape))


def stream(trainer):
    """The trainer's own batches, epoch after epoch (the same epoch's order again: speed is all we
    read)."""
    while True:
        yield from trainer._batches()


def measure_cells(trainers: dict, steps: int, clocked: int, profiled: int, warmup: int) -> dict:
    """The steps of several trainers (one per mode) between two sgemm measurements, in one process.

    Timed steps and clocked steps go round the trainers one step each (each round starting one
    trainer later), so the modes of a process share every moment of the machine's load; then each is
    profiled. Returns the layers (of the first trainer: every mode has the same network), the
    same-run sgemm and copy times, and per mode its step CPU ms, page faults per step, median
    per-layer clock and per-op profile.
    """
    import resource

    names = list(trainers)
    batches = {name: stream(t) for name, t in trainers.items()}
    first = trainers[names[0]]
    x, y = next(batches[names[0]])
    layers = describe_layers(layers_of(first.model, first.head), lambda: first.train_step(x, y))
    shapes = sorted(
        {tuple(g) for v in layers.values() for phase in v["gemms"].values() for g in phase}
    )
    for name in names:
        for _ in range(warmup):
            trainers[name].train_step(*next(batches[name]))
    sgemm_before = sgemm_set(shapes)
    times = {name: [] for name in names}
    faults = {name: [] for name in names}
    clocks = {name: [] for name in names}
    for i in range(max(steps, clocked)):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t, b = trainers[name], batches[name]
            if i < steps:
                f0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
                t.train_step(*next(b))
                times[name].append(1e3 * (time.process_time() - c0))
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            if i < clocked:
                clocks[name].append(clock_step(t, b))
    profiles = {name: profile_steps(trainers[name], batches[name], profiled) for name in names}
    sgemm_after = sgemm_set(shapes)
    copies = {
        name: copy_ms(v["out_bytes"] // 4)
        for name, v in layers.items()
        if not v["flops_fwd"] and v["out_bytes"] >= 1 << 18
    }
    modes = {
        name: {
            "step_ms": times[name],
            "page_faults_per_step": statistics.mean(faults[name]),
            "clock_ms": {
                k: statistics.median(c.get(k, 0.0) for c in clocks[name]) for k in clocks[name][0]
            },
            **profiles[name],
        }
        for name in names
    }
    return {
        "threads": torch.get_num_threads(),
        "layers": layers,
        "copy_ms": copies,
        "modes": modes,
        "sgemm": {k: statistics.median([sgemm_before[k], sgemm_after[k]]) for k in sgemm_before},
        "loadavg": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------
# modes: craftlib's speed fixes, each of which a cell can turn off

FIXES = {
    "allocator": "glibc keeps freed memory for the next step (`craftlib.allocator`)",
    "prelu": "PReLU backward as vectorised elementwise ops (`craftlib.models.PReLU`)",
    "batches": "batch gathered by `index_select`, mirrored as uint8 (`Trainer._batches`)",
}
CANDIDATES = {
    "channels_last": "the weights in channels_last memory as well "
    "(`TrainConfig(channels_last=True)`)",
    "foreach": "SGD updates all parameters in one call (`foreach=True`)",
}
"""Tried on top of craftlib's fixes, not adopted unless they pay (each keeps a run's numbers bit for
bit)."""


def parse_mode(mode: str) -> tuple[set[str], str | None]:
    """(fixes on, candidate on) of a mode: ``stock`` (no fix), ``stock+FIX`` (that one alone),
    ``craftlib`` (every fix), ``craftlib-FIX`` (every fix but that one), ``craftlib+CANDIDATE``."""
    for sep in "+-":
        base, _, extra = mode.partition(sep)
        if extra:
            break
    if base == "stock" and (not extra or (sep == "+" and extra in FIXES)):
        return ({extra} if extra else set()), None
    if base == "craftlib" and (not extra or (sep == "-" and extra in FIXES)):
        return set(FIXES) - {extra}, None
    if base == "craftlib" and sep == "+" and extra in CANDIDATES:
        return set(FIXES), extra
    raise ValueError(
        f"mode must be stock, stock+FIX, craftlib, craftlib-FIX (FIX: {', '.join(FIXES)}) or "
        f"craftlib+CANDIDATE ({', '.join(CANDIDATES)}); got {mode!r}"
    )


def make_trainer(mode: str, data):
    """The workshop recipe's ``Trainer`` on one thread on ``data``, with the fixes ``mode`` leaves
    out turned off (the allocator's is the process's: see ``worker``)."""
    from craftlib.recipes import WORKSHOP
    from craftlib.training import Trainer

    fixes, candidate = parse_mode(mode)
    trainer = Trainer(
        data,
        WORKSHOP.train.but(threads=1, channels_last=candidate == "channels_last"),
        progress=False,
    )
    without_fixes(trainer, set(FIXES) - fixes)
    if candidate == "foreach":
        for group in trainer.optimizer.param_groups:
            group["foreach"] = True
    return trainer


def without_fixes(trainer, off: set[str]) -> None:
    """Turn the model's and the data's fixes in ``off`` back to what they replaced, on a built
    trainer."""
    from craftlib.models import PReLU

    if "prelu" in off:
        for m in trainer.model.modules():
            if type(m) is PReLU:
                m.__class__ = nn.PReLU  # torch's own PReLU, same parameters
    if "batches" in off:
        trainer._batches = types.MethodType(stock_batches, trainer)


def stock_batches(self):
    """``Trainer._batches`` before the fix: advanced indexing, then ``torch.where`` over the float
    batch."""
    from craftlib.data import to_input

    g = torch.Generator().manual_seed(self.config.seed * 100_003 + self.epoch)
    order = torch.randperm(len(self.labels), generator=g)
    flips = torch.rand(len(self.labels), generator=g) < 0.5
    for i in range(self.steps_per_epoch):
        idx = order[i * self.config.batch_size : (i + 1) * self.config.batch_size]
        x = to_input(self.images[idx])
        yield torch.where(flips[idx, None, None, None], x.flip(3), x), self.labels[idx]


def faces(size: int, random_faces: bool):
    """The workshop's training set (real LFW), or random uint8 faces of the same shape and identity
    count."""
    import numpy as np

    from craftlib.data import LFW, FaceSet

    if not random_faces:
        return LFW(size=size, download=False).training_set()
    rng = np.random.default_rng(0)
    n, classes = 6968, 1262
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, n - classes)]).astype(
        np.int64
    )
    return FaceSet(
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels,
        [f"id{i}" for i in range(classes)],
        [],
    )


# --------------------------------------------------------------------------------------------
# the run: cells interleaved over rounds, then medians

PROCESSES = {
    "glibc defaults": ["stock"],
    "allocator": [
        "stock+allocator",
        "craftlib",
        *[f"craftlib-{f}" for f in FIXES if f != "allocator"],
        *[f"craftlib+{c}" for c in CANDIDATES],
    ],
}
"""The modes each cell (a fresh process) runs, their steps taking turns. glibc's thresholds belong
to the process, so ``stock`` runs alone (beside other trainers its freed memory would be reused by
theirs); every other fix and candidate is a trainer of the ``allocator`` process, measured step by
step against ``craftlib``."""


def worker(process: str, args) -> dict:
    """One cell: a fresh process with or without craftlib's allocator fix, running its modes side by
    side."""
    import craftlib.training
    from craftlib.recipes import WORKSHOP

    torch.set_num_threads(1)
    if process != "allocator":  # before any Trainer exists: Trainer is what calls keep_freed_memory
        craftlib.training.keep_freed_memory = lambda: False
    data = faces(WORKSHOP.train.model.input_size, args.random)
    trainers = {mode: make_trainer(mode, data) for mode in PROCESSES[process]}
    return measure_cells(trainers, args.steps, args.clocked, args.profiled, args.warmup)


def run_cell(process: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        process,
        "--steps",
        str(args.steps),
        "--clocked",
        str(args.clocked),
        "--profiled",
        str(args.profiled),
        "--warmup",
        str(args.warmup),
    ] + (["--random"] if args.random else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"cell {process} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args) -> list[dict]:
    """Both kinds of process once per round, in alternating order."""
    cells = []
    for r in range(args.rounds):
        for process in list(PROCESSES) if r % 2 == 0 else list(PROCESSES)[::-1]:
            cell = run_cell(process, args)
            cells.append({"process": process, "round": r, **cell})
            log(
                f"round {r + 1}/{args.rounds} {process}: "
                + ", ".join(
                    f"{m} {statistics.median(v['step_ms']):.0f} ms"
                    for m, v in cell["modes"].items()
                )
                + f"; sgemm {cell['sgemm'][peak_key()]:.0f} GFLOP/s, load {cell['loadavg'][0]:.1f}"
            )
    return cells


def peak_key() -> str:
    return shape_key(PEAK)


def step_flops(layers: dict[str, dict]) -> int:
    return sum(v["flops_fwd"] + v["flops_bwd"] for v in layers.values())


def _median_range(xs: list[float]) -> dict | None:
    return {"median": statistics.median(xs), "range": [min(xs), max(xs)]} if xs else None


def speed_ratios(cells: list[dict], mode: str, ref: str) -> list[float]:
    """Per round, how much faster ``mode`` ran than ``ref``: within a cell (both in one process) the
    ratio of their step times; across the round's two cells, of step times in units of each cell's
    sgemm speed."""

    def cost(c, m):
        return statistics.median(c["modes"][m]["step_ms"]) * c["sgemm"][peak_key()]

    out = []
    for r in sorted({c["round"] for c in cells}):
        mine = next((c for c in cells if c["round"] == r and mode in c["modes"]), None)
        theirs = next((c for c in cells if c["round"] == r and ref in c["modes"]), None)
        if mine is not None and theirs is not None:
            out.append(cost(theirs, ref) / cost(mine, mode))
    return out


def summarize_mode(mode: str, cells: list[dict], flops: int, batch: int) -> dict:
    """Medians over rounds of a mode: step time, FLOP share (against its own cell's sgemm), each
    layer's and op's milliseconds, and its speed against ``stock`` and against ``craftlib`` round by
    round."""
    own = [(c, c["modes"][mode]) for c in cells if mode in c["modes"]]
    steps = [statistics.median(o["step_ms"]) for _, o in own]
    shares = [
        flops / (statistics.median(o["step_ms"]) * 1e6) / c["sgemm"][peak_key()] for c, o in own
    ]

    def med(tables: list[dict[str, float]]) -> dict[str, float]:
        return {
            n: statistics.median([t.get(n, 0.0) for t in tables])
            for n in {n for t in tables for n in t}
        }

    return {
        "rounds": len(own),
        "step_ms": statistics.median(steps),
        "step_ms_range": [min(steps), max(steps)],
        "images_per_cpu_s": batch * 1e3 / statistics.median(steps),
        "flop_share": statistics.median(shares),
        "flop_share_range": [min(shares), max(shares)],
        "speed_vs_stock": _median_range(speed_ratios(cells, mode, "stock")),
        "speed_vs_craftlib": _median_range(speed_ratios(cells, mode, "craftlib")),
        "page_faults_per_step": statistics.median(o["page_faults_per_step"] for _, o in own),
        "cpu_over_wall": statistics.median(o["cpu_over_wall"] for _, o in own),
        "layers": med([o["clock_ms"] for _, o in own]),
        "ops": med([o["ops"] for _, o in own]),
    }


def summarize(cells: list[dict]) -> dict:
    """Per mode, the medians and shares; the same-run sgemm; the floor's explanation; the
    verdict."""
    layers = cells[0]["layers"]
    flops, batch = step_flops(layers), next(iter(layers.values()))["out_shape"][0]
    sgemm = {k: statistics.median([c["sgemm"][k] for c in cells]) for k in cells[0]["sgemm"]}
    names = [
        m for process in PROCESSES.values() for m in process if any(m in c["modes"] for c in cells)
    ]
    order = ["stock", "craftlib"] + [m for m in names if m not in ("stock", "craftlib")]
    modes = {m: summarize_mode(m, cells, flops, batch) for m in order if m in names}
    for (
        m,
        x,
    ) in modes.items():  # per op: the two modes the tables show, and only ops that take some time
        x["ops"] = (
            {k: v for k, v in x["ops"].items() if v >= 0.05} if m in ("stock", "craftlib") else {}
        )
    best = modes.get("craftlib") or next(iter(modes.values()))
    return {
        "flops_per_step": flops,
        "batch": batch,
        "layers": layers,
        "sgemm_gflops": sgemm,
        "copy_ms": cells[0]["copy_ms"],
        "modes": modes,
        "floor": floor(layers, best, sgemm, cells[0]["copy_ms"]),
        "verdict": {
            "flop_share": round(best["flop_share"], 3),
            "target": TARGET,
            "holds": best["flop_share"] >= TARGET,
        },
    }


def slim(cell: dict) -> dict:
    """What results.json keeps of a cell (the summary holds the medians of the rest)."""
    return {
        "process": cell["process"],
        "round": cell["round"],
        "loadavg": cell["loadavg"],
        "sgemm_1024": cell["sgemm"][peak_key()],
        "modes": {
            m: {
                "step_ms": [round(t, 2) for t in v["step_ms"]],
                "page_faults_per_step": v["page_faults_per_step"],
            }
            for m, v in cell["modes"].items()
        },
    }


def layer_ms(mode: dict, name: str) -> tuple[float, float]:
    return mode["layers"].get(f"{name}|fwd", 0.0), mode["layers"].get(f"{name}|bwd", 0.0)


def at_sgemm_ms(shapes: list, sgemm: dict[str, float], shape_speed: bool = True) -> float:
    """Milliseconds the products ``shapes`` take at same-run sgemm speed: of each shape, or of
    1024^3."""
    return sum(
        2 * m * k * n / sgemm[shape_key((m, k, n) if shape_speed else PEAK)] / 1e6
        for m, k, n in shapes
    )


def overlap_ceiling(layers: dict[str, dict], mode: dict, threads: int = 2) -> dict:
    """The most ``threads`` threads could gain over one if every kernel stays on one thread — so
    that a seed's sums do not depend on the thread count — and only independent kernels run side
    by side (issue #25's thread bound).

    Off the step's one chain of dependent kernels: the GEMM layers' weight gradients (their FLOP
    share of the layer's backward time), the optimizer, data and the rest (loss, accuracy,
    autograd's own work: counted off the chain, generously). On it: the forward, the input
    gradients and every elementwise layer. An upper bound: hand-offs between threads are free."""
    weight = sum(
        layer_ms(mode, name)[1] * v["flops_fwd"] / v["flops_bwd"]
        for name, v in layers.items()
        if v["flops_bwd"]
    )
    side = weight + sum(
        mode["layers"].get(f"{name}|{p}", 0.0)
        for name in ("data", "optimizer", REST)
        for p in ("fwd", "bwd", "step")
    )
    step = mode["layers"]["step"]
    chain = step - side
    return {
        "weight_gradients_ms": weight,
        "off_chain_ms": side,
        "chain_ms": chain,
        "threads": threads,
        "ceiling": step / max(chain, step / threads),
    }


def floor(
    layers: dict[str, dict], mode: dict, sgemm: dict[str, float], copies: dict[str, float]
) -> dict:
    """Where a clocked step's milliseconds go by kind, and the FLOP share it could reach were its
    GEMM layers as fast as sgemm (at their own shapes: what MKL does with such thin matrices; or at
    1024^3) and everything else as measured. ``largest``: the elementwise layers on the step's
    largest tensors, in copies of one of them."""
    kinds = {"gemm": 0.0, "elementwise": 0.0}
    at_shape = at_peak = 0.0
    for name, v in layers.items():
        fwd, bwd = layer_ms(mode, name)
        shapes = v["gemms"]["fwd"] + v["gemms"]["bwd"]
        kinds["gemm" if shapes else "elementwise"] += fwd + bwd
        at_shape += at_sgemm_ms(shapes, sgemm)
        at_peak += at_sgemm_ms(shapes, sgemm, shape_speed=False)
    for name in ("data", "optimizer", REST):
        kinds[name] = sum(mode["layers"].get(f"{name}|{p}", 0.0) for p in ("fwd", "bwd", "step"))
    total = mode["layers"]["step"]
    other = total - kinds["gemm"]
    size = max(v["out_bytes"] for v in layers.values() if not v["flops_fwd"])
    big = [n for n, v in layers.items() if not v["flops_fwd"] and v["out_bytes"] == size]
    ms = sum(sum(layer_ms(mode, n)) for n in big)
    copy = (
        statistics.median(copies[n] for n in big if n in copies)
        if any(n in copies for n in big)
        else None
    )
    return {
        "ms": kinds,
        "one_thread_kernels": overlap_ceiling(layers, mode),
        "clocked_step_ms": total,
        "gemm_at_shape_ms": at_shape,
        "gemm_at_peak_ms": at_peak,
        "ceiling_gemm_at_shape": at_peak / (at_shape + other),
        "ceiling_gemm_at_peak": at_peak / (at_peak + other),
        "largest": {
            "layers": big,
            "shape": layers[big[0]]["out_shape"],
            "mb": size / 1e6,
            "ms": ms,
            "copy_ms": copy,
            "copies": ms / copy if copy else None,
        },
    }


# --------------------------------------------------------------------------------------------
# reporting


def _pair(a: float, b: float, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(a)} / {fmt.format(b)}"


def layer_table(
    layers: dict[str, dict],
    modes: dict[str, dict],
    sgemm: dict[str, float],
    copies: dict[str, float],
) -> str:
    """Markdown: each layer's FLOPs, its forward / backward CPU ms in each mode, and how the last
    mode ran it.

    GEMM layers: GFLOP/s, and their time at same-run sgemm speed (of their own GEMM shapes; of
    1024^3) as a share of the time they took. Elementwise layers: their time in copies of their
    output tensor (one read + one write).
    """
    names = list(modes)
    last = modes[names[-1]]
    head = (
        ["layer", "output", "MFLOP fwd / bwd"]
        + [f"{m} ms fwd / bwd" for m in names]
        + [
            "GFLOP/s fwd / bwd",
            "sgemm at its shapes ÷ time",
            "1024³ sgemm ÷ time",
            "copies of its output",
        ]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in layers.items():
        fwd, bwd = layer_ms(last, name)
        cells = [
            f"`{name}` {v['type']}",
            "×".join(map(str, v["out_shape"])),
            _pair(v["flops_fwd"] / 1e6, v["flops_bwd"] / 1e6, "{:,.0f}") if v["flops_fwd"] else "",
        ]
        cells += [_pair(*layer_ms(modes[m], name)) for m in names]
        g = v["gemms"]
        if v["flops_fwd"] and fwd and bwd:
            cells += [
                _pair(v["flops_fwd"] / fwd / 1e6, v["flops_bwd"] / bwd / 1e6, "{:.0f}"),
                _pair(
                    at_sgemm_ms(g["fwd"], sgemm) / fwd, at_sgemm_ms(g["bwd"], sgemm) / bwd, "{:.0%}"
                ),
                _pair(
                    at_sgemm_ms(g["fwd"], sgemm, False) / fwd,
                    at_sgemm_ms(g["bwd"], sgemm, False) / bwd,
                    "{:.0%}",
                ),
                "",
            ]
        else:
            copy = copies.get(name)
            cells += ["", "", "", _pair(fwd / copy, bwd / copy, "{:.1f}") if copy else ""]
        lines.append("| " + " | ".join(cells) + " |")
    for name, label in (
        ("data", "data: batch gather, uint8 → float, flip"),
        ("optimizer", "optimizer: SGD step"),
        (REST, REST),
    ):
        ms = [
            sum(modes[m]["layers"].get(f"{name}|{p}", 0.0) for p in ("fwd", "bwd", "step"))
            for m in names
        ]
        lines.append(f"| {label} | | | " + " | ".join(f"{x:.2f}" for x in ms) + " | | | | |")
    lines.append(
        "| **step** | | | "
        + " | ".join(f"**{modes[m]['layers']['step']:.1f}**" for m in names)
        + " | | | | |"
    )
    return "\n".join(lines)


def op_table(modes: dict[str, dict], top: int = 12) -> str:
    """Markdown: the ops with the most self time in any mode, with the layer and phase they ran
    for."""
    names = list(modes)
    keys = sorted(
        {k for m in names for k in modes[m]["ops"]},
        key=lambda k: -max(modes[m]["ops"].get(k, 0.0) for m in names),
    )[:top]
    lines = [
        "| layer | phase | op | " + " | ".join(f"{m} ms" for m in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for k in keys:
        layer, phase, op = k.split("|")
        lines.append(
            f"| `{layer}` | {phase} | `{op}` | "
            + " | ".join(f"{modes[m]['ops'].get(k, 0.0):.2f}" for m in names)
            + " |"
        )
    return "\n".join(lines)


def describe_mode(mode: str, fixes: dict[str, str], candidates: dict[str, str]) -> str:
    if mode == "stock":
        return "torch's own kernels and glibc's malloc settings (before)"
    if mode == "craftlib":
        return "every fix (after: the code as it is)"
    sep, extra = ("+", mode.split("+", 1)[1]) if "+" in mode else ("-", mode.split("-", 1)[1])
    if mode.startswith("stock"):
        return f"only: {fixes[extra]}"
    return f"without: {fixes[extra]}" if sep == "-" else f"tried: {candidates[extra]}"


def one_thread_kernels(c: dict) -> str:
    """The sentence for ``overlap_ceiling``."""
    return (
        f"**{c['threads']} threads with every kernel on one thread: at most "
        f"{c['ceiling']:.2f}× one thread.** Some of torch's kernels sum across threads in an "
        "order set by the thread count (the convolutions' weight gradients, BatchNorm on "
        "channels-last tensors); with every kernel on one thread a seed's numbers no longer "
        "depend on it, and only independent kernels can run side by side. Of the clocked step, "
        "the GEMM "
        f"layers' weight gradients ({c['weight_gradients_ms']:.0f} ms) and the optimizer, data and "
        f"rest (counted off the chain, generously: {c['off_chain_ms']:.0f} ms in all) can leave "
        "the chain; the forward, the input gradients and the elementwise layers "
        f"({c['chain_ms']:.0f} ms) cannot. Hand-offs between threads are taken as free, so this "
        "is an upper bound."
    )


def render(r: dict) -> str:
    s, m = r["summary"], r["machine"]
    modes = s["modes"]
    shown = {k: modes[k] for k in ("stock", "craftlib") if k in modes} or modes
    f, v = s["floor"], s["verdict"]
    cells = ", ".join(f"`{p}`: {', '.join(ms)}" for p, ms in PROCESSES.items())
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), {m['platform']}, torch "
        f"{m['torch']}, one "
        f"thread, commit {m['git_commit']}; {r['rounds']} rounds, each two fresh processes whose "
        f"modes take turns "
        f"step by step ({cells}); per mode and round {r['steps']} timed steps, {r['clocked']} "
        f"clocked per layer, "
        f"{r['profiled']} profiled, between two sgemm measurements; faces: "
        f"{'random' if r['random'] else 'LFW'}; "
        f"load average {r['loadavg_start'][0]:.2f} → {r['loadavg_end'][0]:.2f} (during cells "
        f"{min(r['cell_load']):.1f}–{max(r['cell_load']):.1f}, on {m['cores']} cores); mode: "
        f"{'quick' if r['quick'] else 'full'}; {r['wall_s'] / 60:.0f} min.",
        "",
        f"One step: {s['flops_per_step'] / 1e9:.2f} GFLOP "
        f"({s['flops_per_step'] / s['batch'] / 1e6:.0f} MFLOP "
        f"per image, forward + backward); same-run single-core sgemm (1024³): "
        f"{s['sgemm_gflops'][peak_key()]:.0f} GFLOP/s (median of the cells).",
        "",
        "| mode | what | step, CPU ms (range over rounds) | images / CPU-s | page faults / step "
        "| FLOP share of sgemm (range) | speed vs stock (range) | vs craftlib (range) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def speed(x):
        return (
            f"{x['median']:.2f}× ({x['range'][0]:.2f}–{x['range'][1]:.2f})"
            if x and x["range"] != [1, 1]
            else ""
        )

    for name, x in modes.items():
        lines.append(
            f"| {name} | {describe_mode(name, r['fixes'], r['candidates'])} | {x['step_ms']:.0f} "
            f"({x['step_ms_range'][0]:.0f}–{x['step_ms_range'][1]:.0f}) | "
            f"{x['images_per_cpu_s']:.0f} | "
            f"{x['page_faults_per_step']:,.0f} | {x['flop_share']:.0%} "
            f"({x['flop_share_range'][0]:.0%}–"
            f"{x['flop_share_range'][1]:.0%}) | {speed(x['speed_vs_stock'])} | "
            f"{speed(x['speed_vs_craftlib'])} |"
        )
    g = f["largest"]
    big = (
        f"of which {' and '.join(f'`{n}`' for n in g['layers'])} on the "
        f"{'×'.join(map(str, g['shape']))} "
        f"tensors of {g['mb']:.0f} MB: {g['ms']:.0f} ms"
        + (
            f", the time of {g['copies']:.0f} copies of one, {g['copy_ms']:.1f} ms each"
            if g["copies"]
            else ""
        )
    )
    lines += [
        "",
        f"**FLOP share: {v['flop_share']:.1%}** of same-run sgemm "
        f"({'holds' if v['holds'] else 'misses'} the ≥ {v['target']:.0%} target). Of a clocked "
        f"step's "
        f"{f['clocked_step_ms']:.0f} ms, the GEMM layers take {f['ms']['gemm']:.0f} ms (their "
        f"FLOPs would "
        f"take {f['gemm_at_shape_ms']:.0f} ms at the sgemm speed of their own shapes, "
        f"{f['gemm_at_peak_ms']:.0f} ms at 1024³ speed), the elementwise layers "
        f"{f['ms']['elementwise']:.0f} "
        f"ms ({big}), data {f['ms']['data']:.1f} ms, the optimizer {f['ms']['optimizer']:.1f} ms, "
        f"the rest "
        f"{f['ms'][REST]:.1f} ms. With everything but the GEMMs as measured, the share could reach "
        f"{f['ceiling_gemm_at_shape']:.0%} with the GEMMs at their shapes' sgemm speed and "
        f"{f['ceiling_gemm_at_peak']:.0%} at 1024³ speed.",
        "",
        one_thread_kernels(f["one_thread_kernels"]),
        "",
        "Per layer: thread CPU ms per step from module and autograd-node hooks (median over a "
        "cell's clocked "
        "steps, then over rounds):",
        "",
        layer_table(s["layers"], shown, s["sgemm_gflops"], s["copy_ms"]),
        "",
        "Top ops by self time, from `torch.profiler` (its wall time scaled to CPU time by the "
        "profiled steps' "
        "CPU/wall ratio; ms per step, medians over rounds):",
        "",
        op_table(shown),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, few steps; writes benchmarks/out only",
    )
    ap.add_argument(
        "--rounds", type=int, default=6, help="rounds, each a cell of both processes (default 6)"
    )
    ap.add_argument(
        "--steps", type=int, default=12, help="timed steps per mode in a cell (default 12)"
    )
    ap.add_argument(
        "--clocked", type=int, default=6, help="steps clocked per layer per mode (default 6)"
    )
    ap.add_argument(
        "--profiled", type=int, default=3, help="steps under torch.profiler per mode (default 3)"
    )
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--random", action="store_true", help="random uint8 faces instead of LFW")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/PERFORMANCE.md")
    ap.add_argument(
        "--render",
        metavar="RESULTS",
        help="only redraw the doc's block from a results file's section",
    )
    ap.add_argument("--worker", metavar="PROCESS", choices=list(PROCESSES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render:
        r = json.loads(Path(args.render).read_text())[KEY]
        s = r[
            "summary"
        ]  # the floor is derived from the medians: redrawn with the code's reading of them
        s["floor"] = floor(
            s["layers"],
            s["modes"].get("craftlib") or next(iter(s["modes"].values())),
            s["sgemm_gflops"],
            s["copy_ms"],
        )
        print(render(r))
        if update_block("profile", render(r)):
            print(f"updated the generated block of {DOC.relative_to(REPO)}")
        return
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args)))
        return
    if args.quick:
        args.rounds, args.steps, args.clocked, args.profiled, args.warmup = 1, 3, 2, 2, 1
    from run import machine  # benchmarks/run.py: the same machine record as the other benchmarks

    start = time.perf_counter()
    r = {
        "machine": machine(),
        "quick": args.quick,
        "rounds": args.rounds,
        "steps": args.steps,
        "clocked": args.clocked,
        "profiled": args.profiled,
        "random": args.random,
        "fixes": FIXES,
        "candidates": CANDIDATES,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_start": list(os.getloadavg()),
    }
    cells = measure(args)
    r["cell_load"] = [c["loadavg"][0] for c in cells]
    r["summary"], r["cells"] = summarize(cells), [slim(c) for c in cells]
    r["loadavg_end"], r["wall_s"] = list(os.getloadavg()), time.perf_counter() - start
    out = QUICK_OUT if args.quick else RESULTS
    write_section(KEY, r, out)
    print("\n" + render(r) + f"\n\n{KEY} written to {out}")
    if not args.quick and not args.no_doc and update_block("profile", render(r)):
        print(f"updated the generated block of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
