"""The training-speed fixes of issue #25 change no number: craftlib's PReLU, the batch code, glibc's
thresholds.

``benchmarks/step_profile.py`` measures what they gain (docs/PERFORMANCE.md); these tests hold them
to giving the same numbers as what they replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from craftlib.allocator import keep_freed_memory
from craftlib.models import FaceCNN, ModelConfig, PReLU

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def _prelu_grads(
    module: nn.Module, x: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad, module.weight.grad


@pytest.mark.parametrize(
    "shape, memory_format",
    [((8, 6, 5, 5), torch.channels_last), ((8, 6, 5, 5), torch.contiguous_format), ((16, 6), None)],
)
def test_prelu_gives_torch_s_outputs_and_gradients_bit_for_bit(shape, memory_format):
    torch.manual_seed(0)
    x = torch.randn(shape)
    x.view(-1)[::7] = 0.0  # exact zeros take the weight's branch, as in torch
    grad = torch.randn(shape)
    if memory_format is not None:
        x, grad = (
            x.contiguous(memory_format=memory_format),
            grad.contiguous(memory_format=memory_format),
        )
    ours, theirs = PReLU(shape[1]), nn.PReLU(shape[1])
    with torch.no_grad():
        ours.weight.copy_(torch.linspace(-0.5, 0.75, shape[1]))  # negative slopes too
        theirs.weight.copy_(ours.weight)
    for a, b in zip(_prelu_grads(ours, x, grad), _prelu_grads(theirs, x, grad)):
        assert torch.equal(a, b)
        assert a.stride() == b.stride()
    with torch.no_grad():  # evaluation takes torch's own function
        assert torch.equal(ours(x), theirs(x))


def test_prelu_is_a_drop_in_for_torch_s():
    model = FaceCNN(ModelConfig(input_size=16, stem_channels=8, widths=(4, 8, 8), embedding_dim=8))
    acts = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(acts) == 6 and all(type(m) is PReLU for m in acts)  # the stem's and each block's
    plain = {k: v.shape for k, v in nn.PReLU(8).state_dict().items()}
    assert {
        k: v.shape for k, v in model.act1.state_dict().items()
    } == plain  # checkpoints read as before
    assert repr(model.act1) == repr(nn.PReLU(8))


def test_keep_freed_memory_keeps_a_user_s_malloc_settings():
    assert keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False
    assert keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}) is False


FAULTS = """
import json, resource, statistics, sys, torch
from craftlib.allocator import keep_freed_memory
from craftlib.models import FaceCNN, ModelConfig
torch.set_num_threads(1)
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
model = FaceCNN(ModelConfig(input_size=40))  # the workshop model and batch: 26 MB stem activations
x = torch.randn(64, 3, 40, 40).contiguous(memory_format=torch.channels_last)
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x).square().mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": statistics.median(faults[3:])}))
"""


@pytest.mark.slow
def test_keep_freed_memory_stops_each_step_faulting_in_fresh_pages():
    def faults(arg: str) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
        }
        out = subprocess.run(
            [sys.executable, "-c", FAULTS, arg],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    kept, default = faults("keep"), faults("default")
    if not kept["applied"]:
        pytest.skip("not glibc: keep_freed_memory does nothing here")
    # glibc's default: freed activations go back to the system, then fault in again
    assert default["faults"] > 2_000
    assert kept["faults"] < default["faults"] / 10


@pytest.mark.slow
def test_a_fast_run_is_bit_identical_with_and_without_the_fixes(faces):
    """FAST-recipe CRAFT run on real LFW: craftlib's PReLU and batch code against what they
    replaced."""
    from step_profile import without_fixes

    from craftlib.recipes import FAST
    from craftlib.training import Trainer

    def run(off: set[str]) -> Trainer:
        config = FAST.train.but(threads=1)  # 32 px, as the faces
        trainer = Trainer(faces, config, [FAST.callback()], progress=False)
        without_fixes(trainer, off)
        trainer.fit()
        return trainer

    ours, before = run(set()), run({"prelu", "batches"})
    assert type(before.model.act1) is nn.PReLU and type(ours.model.act1) is PReLU
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ours.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in before.history]
    assert ours.events and ours.events == before.events  # re-activation acted, alike
    theirs = before.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.model.state_dict().items())
    assert torch.equal(ours.head.weight, before.head.weight)
