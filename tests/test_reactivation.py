"""Properties of re-activation that must hold for every strategy, layer shape, dtype and optimizer.

Hypothesis draws conv layers (2-64 filters, 1-4 input channels, 1x1 or 3x3, with or without bias and
a following BatchNorm, float32 or float16), a random mask of filters to re-activate whose weights are
zero, tiny or ordinary, and an optimizer (SGD-momentum, Adam, AdamW) whose state has been populated.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from craftlib.reactivation import (STRATEGIES, ReactivationWarning, clear_optimizer_state, new_filters,
                                   reactivate, reset_batchnorm)

CONTEXT_STRATEGIES = ("contextual", "perturbed", "orthogonal")  # rescaled to the strong filters' median norm
CHANGING = tuple(s for s in STRATEGIES if s != "none")
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# building a layer with a populated optimizer


def make_optimizer(kind: str | None, params: list[torch.Tensor]) -> torch.optim.Optimizer | None:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    return None


def build_layer(out: int, cin: int, k: int, bias: bool, with_bn: bool, dtype: torch.dtype, opt_kind: str | None,
                mask: np.ndarray, dead_scale: float, seed: int, device: str = "cpu"):
    """conv (+BN) in ``dtype`` on ``device``; masked filters scaled by ``dead_scale``; optimizer stepped twice."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(cin, out, k, bias=bias)
    bn = nn.BatchNorm2d(out) if with_bn else None
    modules = [conv] + ([bn] if bn is not None else [])
    for m in modules:
        m.to(device=device, dtype=dtype)
    params = [p for m in modules for p in m.parameters()]
    opt = make_optimizer(opt_kind, params)
    if opt is not None:  # populate momentum / Adam moments with two steps on synthetic gradients
        for _ in range(2):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(device, dtype)
            opt.step()
    with torch.no_grad():  # then set the weights we want: ordinary strong filters, (near-)dead masked ones
        scale = float(torch.empty(1).uniform_(0.05, 1.0, generator=g))
        w = torch.randn(conv.weight.shape, generator=g, dtype=torch.float64) * scale
        w[torch.as_tensor(mask)] *= dead_scale
        conv.weight.copy_(w.to(device, dtype))
        if bias:
            conv.bias.copy_(torch.randn(out, generator=g).to(device, dtype))
        if bn is not None:
            bn.weight.copy_(torch.rand(out, generator=g).to(device, dtype) * 2 - 0.5)
            bn.bias.copy_(torch.randn(out, generator=g).to(device, dtype))
            bn.running_mean.copy_(torch.randn(out, generator=g).to(device, dtype))
            bn.running_var.copy_(torch.rand(out, generator=g).to(device, dtype) + 0.1)
    return conv, bn, opt


def tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, opt) -> dict[str, torch.Tensor]:
    """Every tensor re-activation may touch, cloned, keyed by a readable name."""
    out = {"weight": conv.weight, "bias": conv.bias}
    if bn is not None:
        out.update({"bn.weight": bn.weight, "bn.bias": bn.bias, "bn.running_mean": bn.running_mean,
                    "bn.running_var": bn.running_var, "bn.num_batches_tracked": bn.num_batches_tracked})
    if opt is not None:
        for pname, p in [("weight", conv.weight), ("bias", conv.bias)] + (
                [("bn.weight", bn.weight), ("bn.bias", bn.bias)] if bn is not None else []):
            if p is not None:
                for sname, v in opt.state[p].items():
                    out[f"state[{pname}].{sname}"] = v
    return {k: v.detach().clone() for k, v in out.items() if v is not None}


layer_specs = st.fixed_dictionaries({
    "out": st.integers(2, 64),
    "cin": st.integers(1, 4),
    "k": st.sampled_from([1, 3]),
    "bias": st.booleans(),
    "with_bn": st.booleans(),
    "dtype": st.sampled_from([torch.float32, torch.float16]),
    "opt_kind": st.sampled_from(["sgd", "adam", "adamw", None]),
    "dead_scale": st.sampled_from([0.0, 1e-6, 1e-3, 1.0]),
    "seed": st.integers(0, 2**31 - 1),
}).flatmap(lambda spec: st.lists(st.booleans(), min_size=spec["out"], max_size=spec["out"]).map(
    lambda mask: {**spec, "mask": np.array(mask, dtype=bool)}))


def run_reactivate(spec: dict, strategy: str, device: str = "cpu", seed: int = 1):
    conv, bn, opt = build_layer(spec["out"], spec["cin"], spec["k"], spec["bias"], spec["with_bn"], spec["dtype"],
                                spec["opt_kind"], spec["mask"], spec["dead_scale"], spec["seed"], device)
    before = tensors(conv, bn, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReactivationWarning)  # degenerate masks are tested on their own below
        result = reactivate(conv, spec["mask"], strategy, bn=bn, optimizer=opt,
                            generator=torch.Generator().manual_seed(seed))
    return conv, bn, opt, before, tensors(conv, bn, opt), result


def check_properties(spec: dict, strategy: str, device: str = "cpu") -> None:
    """Everything a re-activation must guarantee, for one layer and one strategy."""
    conv, bn, opt, before, after, result = run_reactivate(spec, strategy, device)
    mask = torch.as_tensor(spec["mask"], device=device)
    rows = mask.nonzero().flatten()
    assert result.filters == rows.tolist() and result.total == spec["out"]

    for name in before:  # shapes, dtypes and finiteness of everything
        assert after[name].shape == before[name].shape and after[name].dtype == before[name].dtype, name
        if after[name].is_floating_point():
            assert torch.isfinite(after[name]).all(), name

    if strategy == "none" or len(rows) == 0:  # detect-and-log only: not one bit changes anywhere
        for name in before:
            assert torch.equal(after[name], before[name]), name
        return

    # strong filters (and their bias / BN channels / optimizer rows) are untouched bit for bit
    for name in before:
        if before[name].ndim >= 1 and before[name].shape[0] == spec["out"]:
            assert torch.equal(after[name][~mask], before[name][~mask]), name
        else:  # scalars such as Adam's step count and BN's num_batches_tracked
            assert torch.equal(after[name], before[name]), name

    w_new, w_old = after["weight"][mask], before["weight"][mask]
    for i in range(len(rows)):
        assert not torch.equal(w_new[i], w_old[i]), f"filter {rows[i].item()} was not re-initialised"

    strong = before["weight"][~mask].double().flatten(1).cpu()
    new = w_new.double().flatten(1).cpu()
    if strategy in CONTEXT_STRATEGIES and len(strong) > 0:
        target = float(np.median(strong.norm(dim=1).numpy()))
        rtol = 3e-3 if spec["dtype"] == torch.float16 else 1e-4
        np.testing.assert_allclose(new.norm(dim=1).numpy(), target, rtol=rtol)
    if strategy == "orthogonal" and 0 < len(strong) < strong.shape[1]:
        cos = (new / new.norm(dim=1, keepdim=True)) @ (strong / strong.norm(dim=1, keepdim=True)).T
        tol = 2e-3 if spec["dtype"] == torch.float16 else 1e-4  # the cast to the weight's dtype rounds
        assert cos.abs().max() < tol

    if spec["bias"]:
        assert torch.all(after["bias"][mask] == 0)
    if bn is not None:  # the channel starts over: gamma 1, beta 0, running statistics of a fresh BN
        assert torch.all(after["bn.weight"][mask] == 1) and torch.all(after["bn.bias"][mask] == 0)
        assert torch.all(after["bn.running_mean"][mask] == 0) and torch.all(after["bn.running_var"][mask] == 1)
    for name in after:  # momentum_buffer / exp_avg / exp_avg_sq of the re-activated rows are zero
        if name.startswith("state[") and after[name].ndim >= 1:
            assert torch.all(after[name][mask] == 0), name
    if opt is not None:
        expected = {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq"}, "adamw": {"exp_avg", "exp_avg_sq"}}
        assert expected[spec["opt_kind"]] <= {n.split(".", 1)[1] for n in after if n.startswith("state[weight]")}


# ---------------------------------------------------------------------------------------------
# the properties, for every strategy


@pytest.mark.parametrize("strategy", STRATEGIES)
@PROPERTY
@given(spec=layer_specs)
def test_reactivate_properties(strategy, spec):
    check_properties(spec, strategy)


@pytest.mark.parametrize("strategy", CHANGING)
@PROPERTY
@given(spec=layer_specs)
def test_same_seed_same_filters(strategy, spec):
    """Determinism: the same generator seed gives bit-identical new filters, whatever the layer."""
    first = run_reactivate(spec, strategy, seed=7)[4]
    second = run_reactivate(spec, strategy, seed=7)[4]
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("strategy", CHANGING)
def test_different_seed_different_filters(strategy):
    spec = {"out": 16, "cin": 3, "k": 3, "bias": False, "with_bn": True, "dtype": torch.float32,
            "opt_kind": "sgd", "dead_scale": 1e-3, "seed": 0, "mask": np.arange(16) < 5}
    a, b = run_reactivate(spec, strategy, seed=1)[4], run_reactivate(spec, strategy, seed=2)[4]
    assert not torch.equal(a["weight"], b["weight"])


@pytest.mark.parametrize("strategy", CHANGING)
@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 40), d=st.sampled_from([3, 12, 27]), n=st.integers(1, 20), seed=st.integers(0, 2**31 - 1))
def test_new_filters_shape_dtype_finite(strategy, k, d, n, seed):
    strong = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReactivationWarning)
        new = new_filters(strategy, strong, n, torch.Generator().manual_seed(seed))
    assert new.shape == (n, d) and new.dtype == torch.float64 and torch.isfinite(new).all()


# ---------------------------------------------------------------------------------------------
# what each strategy draws


def strong_filters(k: int = 40, d: int = 27, seed: int = 0) -> torch.Tensor:
    """Correlated filters with a non-zero mean, like a trained first layer's."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    mean = torch.linspace(-0.5, 0.5, d, dtype=torch.float64)
    return mean + torch.randn(k, d, generator=g, dtype=torch.float64) @ mixing


def test_contextual_samples_the_strong_filters_gaussian():
    strong = strong_filters()
    new = new_filters("contextual", strong, 2000, torch.Generator().manual_seed(0), match_scale=False)
    # its mean is the strong filters' mean, within 5 standard errors per weight
    spread = strong.var(0).sqrt()
    assert torch.all((new.mean(0) - strong.mean(0)).abs() < 5 * spread / 2000**0.5)
    # its covariance is the strong filters' one, shrunk 10% toward the identity (k < d needs that)
    cov = torch.cov(strong.T)
    expected = 0.9 * cov + 0.1 * cov.diagonal().mean() * torch.eye(27, dtype=torch.float64)
    sample = torch.cov(new.T)
    assert torch.allclose(sample.diagonal(), expected.diagonal(), rtol=0.2)
    off = ~torch.eye(27, dtype=torch.bool)
    assert np.corrcoef(sample[off].numpy(), expected[off].numpy())[0, 1] > 0.9


def test_contextual_is_not_random():
    """The ablation's point: contextual filters look like the strong ones, Kaiming filters do not."""
    strong = strong_filters()
    g = torch.Generator().manual_seed(0)
    ctx = new_filters("contextual", strong, 500, g, match_scale=False)
    rnd = new_filters("random", strong, 500, g)
    mean_dir = strong.mean(0) / strong.mean(0).norm()
    assert (ctx @ mean_dir).mean() > 5 * (rnd @ mean_dir).abs().mean()


def test_random_is_kaiming_normal():
    d = 27
    new = new_filters("random", strong_filters(d=d), 4000, torch.Generator().manual_seed(0))
    assert abs(new.mean().item()) < 0.01
    assert new.std().item() == pytest.approx((2 / d) ** 0.5, rel=0.02)


def test_perturbed_copies_are_near_a_strong_filter():
    strong = strong_filters(k=10)
    new = new_filters("perturbed", strong, 200, torch.Generator().manual_seed(0), match_scale=False)
    nearest = torch.cdist(new, strong).min(1).values
    typical = torch.cdist(strong, strong)[~torch.eye(10, dtype=torch.bool)].median()
    assert nearest.median() < 0.75 * typical


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 26), n=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_orthogonal_in_float64(k, n, seed):
    strong = torch.randn(k, 27, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    new = new_filters("orthogonal", strong, n, torch.Generator().manual_seed(seed + 1))
    cos = (new / new.norm(dim=1, keepdim=True)) @ (strong / strong.norm(dim=1, keepdim=True)).T
    assert cos.abs().max() < 1e-4
    np.testing.assert_allclose(new.norm(dim=1).numpy(), np.median(strong.norm(dim=1).numpy()), rtol=1e-9)


def test_rescale_uses_the_ordinary_median():
    """With an even number of strong filters the target is the mean of the two middle norms (np.median)."""
    strong = torch.zeros(4, 4, dtype=torch.float64)
    strong[:, 0] = torch.tensor([1.0, 2.0, 3.0, 10.0])
    new = new_filters("contextual", strong, 3, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(new.norm(dim=1).numpy(), 2.5, rtol=1e-12)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy"):
        new_filters("none", torch.randn(4, 27), 2)
    with pytest.raises(ValueError, match="strategy"):
        new_filters("craft", torch.randn(4, 27), 2)


# ---------------------------------------------------------------------------------------------
# degenerate inputs


def simple_layer(out: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    conv, bn = nn.Conv2d(3, out, 3, bias=False), nn.BatchNorm2d(out)
    opt = torch.optim.SGD(list(conv.parameters()) + list(bn.parameters()), lr=0.1, momentum=0.9)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)
    opt.step()
    return conv, bn, opt


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_inactive_filter_is_a_noop(strategy):
    conv, bn, opt = simple_layer()
    before = tensors(conv, bn, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about either
        result = reactivate(conv, np.zeros(8, bool), strategy, bn=bn, optimizer=opt)
    assert result.filters == [] and result.notes == []
    for name, value in tensors(conv, bn, opt).items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("strategy", CONTEXT_STRATEGIES)
def test_all_inactive_warns_and_falls_back_to_kaiming(strategy):
    conv, bn, opt = simple_layer()
    with torch.no_grad():
        conv.weight.mul_(1e-4)
    with pytest.warns(ReactivationWarning, match="no strong filters"):
        result = reactivate(conv, np.ones(8, bool), strategy, bn=bn, optimizer=opt,
                            generator=torch.Generator().manual_seed(3))
    assert result.notes and torch.isfinite(conv.weight).all()
    kaiming, _, _ = simple_layer()
    reactivate(kaiming, np.ones(8, bool), "random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(conv.weight, kaiming.weight)  # exactly the Kaiming draw of the random baseline


@pytest.mark.parametrize("strategy", ["contextual", "perturbed"])
def test_one_strong_filter_warns(strategy):
    conv, bn, opt = simple_layer()
    mask = np.ones(8, bool)
    mask[5] = False
    keep = conv.weight[5].detach().clone()
    with pytest.warns(ReactivationWarning, match="one strong filter"):
        result = reactivate(conv, mask, strategy, bn=bn, optimizer=opt)
    assert result.notes and torch.isfinite(conv.weight).all()
    assert torch.equal(conv.weight[5], keep)
    np.testing.assert_allclose(conv.weight.detach().flatten(1).norm(dim=1).numpy(), keep.norm().item(), rtol=1e-5)


def test_orthogonal_with_one_strong_filter_is_orthogonal_to_it():
    conv, bn, opt = simple_layer()
    mask = np.arange(8) != 2
    reactivate(conv, mask, "orthogonal", bn=bn, optimizer=opt)
    w = conv.weight.detach().double().flatten(1)
    cos = torch.nn.functional.cosine_similarity(w[mask], w[2:3])
    assert cos.abs().max() < 1e-4


def test_orthogonal_with_a_full_span_warns():
    """27-d filters: 27 strong ones span everything, so there is no orthogonal direction left."""
    conv, bn, opt = simple_layer(out=32)
    mask = np.arange(32) >= 27
    with pytest.warns(ReactivationWarning, match="whole space"):
        reactivate(conv, mask, "orthogonal", bn=bn, optimizer=opt)
    assert torch.isfinite(conv.weight).all()


@pytest.mark.parametrize("bad", [np.ones(7, bool), np.ones(9, bool), np.ones((8, 1), bool), np.ones((2, 4), bool)])
def test_mask_of_wrong_shape(bad):
    conv, bn, opt = simple_layer()
    with pytest.raises(ValueError, match="one entry per filter"):
        reactivate(conv, bad, "contextual", bn=bn, optimizer=opt)


def test_mask_as_tensor_or_list():
    a, _, _ = simple_layer()
    b, _, _ = simple_layer()
    mask = [True, False] * 4
    reactivate(a, mask, "contextual")
    reactivate(b, torch.tensor(mask), "contextual")
    assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("strategy", CONTEXT_STRATEGIES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_strong_filters_are_refused(strategy, bad):
    """Context taken from a NaN filter would poison the model: refuse, and leave it as it was."""
    conv, bn, opt = simple_layer()
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = bad
    before = conv.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        reactivate(conv, np.arange(8) >= 4, strategy, bn=bn, optimizer=opt)
    assert torch.equal(conv.weight[1:], before[1:])


def test_helpers_ignore_missing_pieces():
    """No optimizer, a parameter the optimizer never saw, or no BatchNorm: nothing to reset, no error."""
    conv, bn, opt = simple_layer()
    other = nn.Parameter(torch.ones(8))
    clear_optimizer_state(None, conv.weight, torch.tensor([0]))
    clear_optimizer_state(opt, other, torch.tensor([0]))
    reset_batchnorm(None, torch.tensor([0]))
    reset_batchnorm(nn.Identity(), torch.tensor([0]))
    assert torch.equal(other, torch.ones(8))


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reactivate_on_gpu(strategy, dtype):
    mask = np.arange(32) % 3 == 0
    spec = {"out": 32, "cin": 3, "k": 3, "bias": True, "with_bn": True, "dtype": dtype, "opt_kind": "adam",
            "dead_scale": 1e-4, "seed": 0, "mask": mask}
    check_properties(spec, strategy, device="cuda")
    conv, _, _ = build_layer(32, 3, 3, False, False, dtype, None, mask, 1e-4, 0, "cuda")
    reactivate(conv, torch.as_tensor(mask, device="cuda"), strategy)  # a mask living on the GPU works too
    assert conv.weight.device.type == "cuda" and torch.isfinite(conv.weight).all()
