"""Which execution mode trains the workshop model fastest on a CPU? (channels_last, torch.compile,
threads, batch)

    .venv/bin/python benchmarks/speed_modes.py                # ~5 min; writes
    benchmarks/speed_modes.json .venv/bin/python benchmarks/speed_modes.py --steps 10     # a quick
    look

Each mode runs the workshop recipe's training step (model, CosFace head, SGD, one-cycle schedule) on
real LFW faces for ``--steps`` steps after a warm-up, modes interleaved over ``--repeats`` rounds so
that a change in machine load hits every mode alike. Speed is reported both as wall-clock images/s
and as images per CPU-second of this process (``time.process_time``), which is much less sensitive
to other jobs sharing the machine. Each mode is also run twice from the same seed to check that it
stays deterministic (identical loss sequence). The result decides what ``TrainConfig`` enables by
default: a mode is adopted only if it is ≥ 1.3x faster and deterministic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from craftlib.data import LFW, to_input  # noqa: E402
from craftlib.losses import MarginHead, margin_loss  # noqa: E402
from craftlib.models import FaceCNN  # noqa: E402
from craftlib.recipes import WORKSHOP  # noqa: E402
from craftlib.runtime import seed_everything  # noqa: E402
from craftlib.training import make_optimizer, make_schedule, parameter_groups  # noqa: E402

MODES = {
    "eager, as Trainer feeds it, 1 thread": dict(threads=1),
    "eager, NCHW forced, 1 thread": dict(threads=1, nchw=True),
    "eager, channels_last weights, 1 thread": dict(threads=1, channels_last=True),
    "torch.compile, 1 thread": dict(threads=1, compile=True),
    "eager, 2 threads": dict(threads=2),
    "eager, 1 thread, batch 128": dict(threads=1, batch=128),
}


def build(mode: dict, images: torch.Tensor, labels: torch.Tensor, steps: int):
    """A fresh model/head/optimizer at seed 0 and a function that runs ``steps`` training steps."""
    cfg = WORKSHOP.train.but(batch_size=mode.get("batch", 64))
    torch.set_num_threads(mode["threads"])
    seed_everything(0)
    model = FaceCNN(cfg.model)
    head = MarginHead(cfg.model.embedding_dim, int(labels.max()) + 1)
    if mode.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if mode.get("compile") else model
    opt = make_optimizer(parameter_groups(model, head, cfg), cfg)
    sched = make_schedule(opt, cfg, 10_000)
    b = cfg.batch_size

    def run() -> list[float]:
        losses = []
        for i in range(steps):
            idx = torch.arange(i * b, (i + 1) * b) % len(labels)
            x = to_input(images[idx])  # channels_last strides, as in Trainer._batches
            x = x.contiguous() if mode.get("nchw") else x
            loss, _ = margin_loss(head, forward(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        return losses

    return run, b


def measure(mode: dict, images, labels, steps: int) -> dict:
    start = time.perf_counter()
    run, batch = build(mode, images, labels, steps)
    run()  # warm-up (compilation happens here)
    setup = time.perf_counter() - start
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "images_per_s": steps * batch / wall,
        "images_per_cpu_s": steps * batch / cpu,
        "setup_s": setup,
    }


def deterministic(mode: dict, images, labels, steps: int) -> bool:
    first = build(mode, images, labels, steps)[0]()
    return first == build(mode, images, labels, steps)[0]()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "speed_modes.json"))
    ap.add_argument(
        "--skip", nargs="*", default=[], help="leave out modes whose name contains this text"
    )
    args = ap.parse_args(argv)
    modes = {k: v for k, v in MODES.items() if not any(s in k for s in args.skip)}
    data = LFW(size=WORKSHOP.train.model.input_size).training_set()
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    rounds = {name: [] for name in modes}
    for r in range(args.repeats):
        for name, mode in modes.items() if r % 2 == 0 else reversed(modes.items()):
            rounds[name].append(measure(mode, images, labels, args.steps))
            print(
                f"round {r + 1} {name:<36} {rounds[name][-1]['images_per_cpu_s']:7.1f} img/CPU-s "
                f"{rounds[name][-1]['images_per_s']:7.1f} img/s",
                flush=True,
            )
    base = statistics.median(m["images_per_cpu_s"] for m in rounds[next(iter(modes))])
    result = {}
    for name, mode in modes.items():
        cpu = statistics.median(m["images_per_cpu_s"] for m in rounds[name])
        result[name] = {
            "images_per_cpu_s": cpu,
            "speedup_per_core": cpu / base,
            "images_per_s": statistics.median(m["images_per_s"] for m in rounds[name]),
            "setup_s": statistics.median(m["setup_s"] for m in rounds[name]),
            "deterministic": deterministic(mode, images, labels, min(args.steps, 10)),
        }
        print(
            f"{name:<36} x{result[name]['speedup_per_core']:.2f} per core, "
            f"deterministic {result[name]['deterministic']}"
        )
    Path(args.out).write_text(
        json.dumps(
            {
                "steps": args.steps,
                "repeats": args.repeats,
                "modes": result,
                "torch": torch.__version__,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
