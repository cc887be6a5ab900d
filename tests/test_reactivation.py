"""Re-activation: properties for every strategy, what each strategy draws, and everything around a
new filter.

Hypothesis draws conv layers (2-64 filters, 1-4 input channels, 1x1 or 3x3, with or without bias and
a following BatchNorm, float32 or float16), a random mask of filters to re-activate whose weights
are zero, tiny or ordinary, and an optimizer (SGD-momentum, Adam, AdamW) whose state has been
populated. Then each strategy's draw (``orthogonal``: RePr-like, orthonormal and orthogonal to the
strong filters' principal directions), the downstream modes on a FaceCNN (next conv's input weights,
PReLU slope, BN, every optimizer state, Adam's step) and the detector helpers. The callback inside
training is in ``test_reactivation_callback.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from craftlib.activity import max_cosine
from craftlib.models import FaceCNN, ModelConfig
from craftlib.reactivation import (
    DOWNSTREAM,
    PAPER_READING,
    PRELU_INIT,
    STRATEGIES,
    Reactivation,
    ReactivationWarning,
    check_strategy,
    clear_optimizer_state,
    context_gaussian,
    event_record,
    new_filters,
    principal_directions,
    reactivate,
    reactivate_model,
    reset_activation,
    reset_batchnorm,
    reset_downstream,
    stem_consumers,
    stem_parts,
    strong_mask,
    surroundings,
)

RESCALED = (
    "contextual",
    "perturbed",
    "orthogonal",
    "random_matched",
)  # to the strong filters' median norm
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


def build_layer(
    out: int,
    cin: int,
    k: int,
    bias: bool,
    with_bn: bool,
    dtype: torch.dtype,
    opt_kind: str | None,
    mask: np.ndarray,
    dead_scale: float,
    seed: int,
    device: str = "cpu",
):
    """conv (+BN) in ``dtype`` on ``device``; masked filters scaled by ``dead_scale``; optimizer
    stepped twice."""
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
    # then set the weights we want: ordinary strong filters, (near-)dead masked ones
    with torch.no_grad():
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
        out.update(
            {
                "bn.weight": bn.weight,
                "bn.bias": bn.bias,
                "bn.running_mean": bn.running_mean,
                "bn.running_var": bn.running_var,
                "bn.num_batches_tracked": bn.num_batches_tracked,
            }
        )
    if opt is not None:
        for pname, p in [("weight", conv.weight), ("bias", conv.bias)] + (
            [("bn.weight", bn.weight), ("bn.bias", bn.bias)] if bn is not None else []
        ):
            if p is not None:
                for sname, v in opt.state[p].items():
                    out[f"state[{pname}].{sname}"] = v
    return {k: v.detach().clone() for k, v in out.items() if v is not None}


layer_specs = st.fixed_dictionaries(
    {
        "out": st.integers(2, 64),
        "cin": st.integers(1, 4),
        "k": st.sampled_from([1, 3]),
        "bias": st.booleans(),
        "with_bn": st.booleans(),
        "dtype": st.sampled_from([torch.float32, torch.float16]),
        "opt_kind": st.sampled_from(["sgd", "adam", "adamw", None]),
        "dead_scale": st.sampled_from([0.0, 1e-6, 1e-3, 1.0]),
        "seed": st.integers(0, 2**31 - 1),
    }
).flatmap(
    lambda spec: st.lists(st.booleans(), min_size=spec["out"], max_size=spec["out"]).map(
        lambda mask: {**spec, "mask": np.array(mask, dtype=bool)}
    )
)


def run_reactivate(spec: dict, strategy: str, device: str = "cpu", seed: int = 1):
    conv, bn, opt = build_layer(
        spec["out"],
        spec["cin"],
        spec["k"],
        spec["bias"],
        spec["with_bn"],
        spec["dtype"],
        spec["opt_kind"],
        spec["mask"],
        spec["dead_scale"],
        spec["seed"],
        device,
    )
    before = tensors(conv, bn, opt)
    with warnings.catch_warnings():
        # degenerate masks are tested on their own below
        warnings.simplefilter("ignore", ReactivationWarning)
        result = reactivate(
            conv,
            spec["mask"],
            strategy,
            bn=bn,
            optimizer=opt,
            generator=torch.Generator().manual_seed(seed),
        )
    return conv, bn, opt, before, tensors(conv, bn, opt), result


def check_properties(spec: dict, strategy: str, device: str = "cpu") -> None:
    """Everything a re-activation must guarantee, for one layer and one strategy."""
    conv, bn, opt, before, after, result = run_reactivate(spec, strategy, device)
    mask = torch.as_tensor(spec["mask"], device=device)
    rows = mask.nonzero().flatten()
    assert result.filters == rows.tolist() and result.total == spec["out"]

    for name in before:  # shapes, dtypes and finiteness of everything
        assert (
            after[name].shape == before[name].shape and after[name].dtype == before[name].dtype
        ), name
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
        assert not torch.equal(w_new[i], w_old[i]), (
            f"filter {rows[i].item()} was not re-initialised"
        )

    strong = before["weight"][~mask].double().flatten(1).cpu()
    new = w_new.double().flatten(1).cpu()
    if strategy in RESCALED and len(strong) > 0 and strong.norm(dim=1).median() > 0:
        target = float(np.median(strong.norm(dim=1).numpy()))
        rtol = 3e-3 if spec["dtype"] == torch.float16 else 1e-4
        np.testing.assert_allclose(new.norm(dim=1).numpy(), target, rtol=rtol)
    if strategy == "orthogonal" and len(strong) > 0 and len(rows) <= strong.shape[1]:
        unit = new / new.norm(dim=1, keepdim=True)
        # the cast to the weight's dtype rounds
        tol = 2e-3 if spec["dtype"] == torch.float16 else 1e-4
        # none when n = d: then the result says so in a note
        q = principal_directions(strong, len(rows))
        # orthogonal to them
        assert q.shape[1] == 0 and result.notes or (unit @ q).abs().max() < tol
        # and to each other
        np.testing.assert_allclose((unit @ unit.T).numpy(), np.eye(len(rows)), atol=tol)

    if spec["bias"]:
        assert torch.all(after["bias"][mask] == 0)
    if bn is not None:  # the channel starts over: gamma 1, beta 0, running statistics of a fresh BN
        assert torch.all(after["bn.weight"][mask] == 1) and torch.all(after["bn.bias"][mask] == 0)
        assert torch.all(after["bn.running_mean"][mask] == 0) and torch.all(
            after["bn.running_var"][mask] == 1
        )
    for name in after:  # momentum_buffer / exp_avg / exp_avg_sq of the re-activated rows are zero
        if name.startswith("state[") and after[name].ndim >= 1:
            assert torch.all(after[name][mask] == 0), name
    if opt is not None:
        expected = {
            "sgd": {"momentum_buffer"},
            "adam": {"exp_avg", "exp_avg_sq"},
            "adamw": {"exp_avg", "exp_avg_sq"},
        }
        assert expected[spec["opt_kind"]] <= {
            n.split(".", 1)[1] for n in after if n.startswith("state[weight]")
        }


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
    spec = {
        "out": 16,
        "cin": 3,
        "k": 3,
        "bias": False,
        "with_bn": True,
        "dtype": torch.float32,
        "opt_kind": "sgd",
        "dead_scale": 1e-3,
        "seed": 0,
        "mask": np.arange(16) < 5,
    }
    a, b = run_reactivate(spec, strategy, seed=1)[4], run_reactivate(spec, strategy, seed=2)[4]
    assert not torch.equal(a["weight"], b["weight"])


@pytest.mark.parametrize("strategy", CHANGING)
@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 40),
    d=st.sampled_from([3, 12, 27]),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**31 - 1),
)
def test_new_filters_shape_dtype_finite(strategy, k, d, n, seed):
    strong = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReactivationWarning)
        new, notes = new_filters(strategy, strong, n, torch.Generator().manual_seed(seed))
    assert new.shape == (n, d) and new.dtype == torch.float64 and torch.isfinite(new).all()
    assert isinstance(notes, list) and all(isinstance(note, str) for note in notes)


# ---------------------------------------------------------------------------------------------
# what each strategy draws


def strong_filters(k: int = 40, d: int = 27, seed: int = 0) -> torch.Tensor:
    """Correlated filters with a non-zero mean, like a trained first layer's."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    mean = torch.linspace(-0.5, 0.5, d, dtype=torch.float64)
    return mean + torch.randn(k, d, generator=g, dtype=torch.float64) @ mixing


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_context_gaussian_is_the_strong_filters_mean_and_shrunk_covariance():
    strong = strong_filters()
    mean, cov = context_gaussian(strong)
    assert torch.allclose(mean, strong.mean(0))
    sample_cov = torch.cov(strong.T)  # shrunk 10% toward its mean variance (k < d needs that)
    expected = 0.9 * sample_cov + 0.1 * sample_cov.diagonal().mean() * torch.eye(
        27, dtype=torch.float64
    )
    assert torch.allclose(cov, expected) and torch.allclose(cov, cov.T)
    # k < d: still full rank
    assert torch.linalg.eigvalsh(context_gaussian(strong[:5])[1]).min() > 0
    one_mean, one_cov = context_gaussian(strong[:1])
    assert torch.equal(one_mean, strong[0]) and torch.allclose(
        one_cov, one_cov.diagonal()[0] * torch.eye(27, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="no strong filters"):
        context_gaussian(torch.empty(0, 27))


def test_contextual_draws_from_the_context_gaussian_at_the_strong_scale():
    strong = strong_filters()
    new, notes = new_filters("contextual", strong, 6, torch.Generator().manual_seed(3))
    mean, cov = context_gaussian(strong)
    z = torch.randn(6, 27, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    drawn = mean + z @ torch.linalg.cholesky(cov).T
    target = torch.quantile(strong.norm(dim=1), 0.5)
    assert notes == []
    # the Gaussian's direction, the strong filters' median norm
    assert torch.allclose(new, unit(drawn) * target)


def test_contextual_is_not_random_at_the_same_scale():
    """The ablation's point: at one and the same scale, contextual filters point like the strong
    ones."""
    strong = strong_filters()
    ctx, _ = new_filters("contextual", strong, 500, torch.Generator().manual_seed(0))
    matched, _ = new_filters("random_matched", strong, 500, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(ctx.norm(dim=1).numpy(), matched.norm(dim=1).numpy(), rtol=1e-12)
    mean_dir = strong.mean(0) / strong.mean(0).norm()
    along_ctx, along_matched = (
        unit(ctx) @ mean_dir,
        unit(matched) @ mean_dir,
    )  # cosines to the mean filter
    assert abs(along_matched.mean()) < 0.03  # random directions: no lean toward the strong filters
    assert along_ctx.mean() > 0.3 and along_ctx.mean() > 2 * along_matched.abs().mean()


def test_random_matched_is_isotropic_at_the_median_strong_norm():
    strong = strong_filters()
    new, notes = new_filters("random_matched", strong, 4000, torch.Generator().manual_seed(1))
    assert notes == []
    np.testing.assert_allclose(
        new.norm(dim=1).numpy(), np.median(strong.norm(dim=1).numpy()), rtol=1e-12
    )
    directions = unit(new)
    # no preferred direction (1/sqrt(4000 * 27) ~ 0.003 per weight)
    assert directions.mean(0).abs().max() < 0.05
    second_moment = directions.T @ directions / len(directions)  # isotropic: I / d
    assert torch.allclose(second_moment, torch.eye(27, dtype=torch.float64) / 27, atol=0.01)


def test_random_is_kaiming_normal():
    d = 27
    new, _ = new_filters("random", strong_filters(d=d), 4000, torch.Generator().manual_seed(0))
    assert abs(new.mean().item()) < 0.01
    assert new.std().item() == pytest.approx((2 / d) ** 0.5, rel=0.02)


def test_perturbed_copies_point_like_a_strong_filter():
    strong = strong_filters(k=10)
    new, _ = new_filters("perturbed", strong, 200, torch.Generator().manual_seed(0))
    matched, _ = new_filters("random_matched", strong, 200, torch.Generator().manual_seed(0))
    near = torch.as_tensor(max_cosine(new, strong))
    assert (
        near.median() > 0.85
        and near.median() > 2 * torch.as_tensor(max_cosine(matched, strong)).median()
    )


# ---------------------------------------------------------------------------------------------
# orthogonal: RePr-like, never a silent fallback


def test_principal_directions_hold_90_percent_of_the_energy():
    strong = strong_filters(k=40)
    q = principal_directions(strong, 0)
    _, s, vh = torch.linalg.svd(strong, full_matrices=False)
    energy = torch.cumsum(s**2, 0) / (s**2).sum()
    r = q.shape[1]
    assert energy[r - 1] >= 0.9 > energy[r - 2]  # the fewest leading directions reaching 90%
    assert torch.allclose(q.T @ q, torch.eye(r, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q.abs(), vh[:r].T.abs())
    # capped at d - n: room for n new filters
    assert principal_directions(strong, 27 - 3).shape[1] == min(r, 3)
    assert principal_directions(strong, 27).shape[1] == 0


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 60), n=st.integers(1, 27), seed=st.integers(0, 2**31 - 1))
def test_orthogonal_is_orthonormal_and_orthogonal_to_the_principal_directions(k, n, seed):
    """Also with 27 or more strong filters, where the first release fell back to random without a
    word."""
    strong = strong_filters(k=k, seed=seed % 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReactivationWarning)
        new, notes = new_filters("orthogonal", strong, n, torch.Generator().manual_seed(seed))
    u = unit(new)
    q = principal_directions(strong, n)
    if q.shape[1]:
        assert (u @ q).abs().max() < 1e-10
    assert torch.allclose(u @ u.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    np.testing.assert_allclose(
        new.norm(dim=1).numpy(), np.median(strong.norm(dim=1).numpy()), rtol=1e-9
    )
    full = principal_directions(strong, 0).shape[1]
    assert bool(notes) == (q.shape[1] < full)  # a note exactly when fewer directions had to be kept
    assert [
        str(w.message) for w in caught
    ] == notes  # and every note is also a warning: never silent
    if notes:
        assert f"kept {q.shape[1]} principal directions" in notes[0]


def test_orthogonal_with_many_strong_filters_is_not_a_random_draw():
    strong = strong_filters(k=40)
    new, notes = new_filters("orthogonal", strong, 5, torch.Generator().manual_seed(0))
    rnd, _ = new_filters("random_matched", strong, 5, torch.Generator().manual_seed(0))
    q = principal_directions(strong, 5)
    assert (unit(new) @ q).abs().max() < 1e-10 < (unit(rnd) @ q).abs().max()
    assert not torch.allclose(new, rnd)


def test_orthogonal_warns_and_notes_when_more_filters_than_dimensions():
    strong = strong_filters(k=10, d=4)
    with pytest.warns(ReactivationWarning, match="only 4 dimensions") as caught:
        new, notes = new_filters("orthogonal", strong, 9, torch.Generator().manual_seed(0))
    assert len(notes) == 1 and "9 new filters but only 4 dimensions" in notes[0]
    assert str(caught[0].message) == notes[0]
    u = unit(new)
    for start in (0, 4, 8):  # orthonormal within each group of d = 4
        block = u[start : start + 4]
        assert torch.allclose(
            block @ block.T, torch.eye(len(block), dtype=torch.float64), atol=1e-10
        )
    np.testing.assert_allclose(
        new.norm(dim=1).numpy(), np.median(strong.norm(dim=1).numpy()), rtol=1e-9
    )


def test_reactivate_reports_the_orthogonal_note_too():
    conv = nn.Conv2d(1, 6, 1, bias=False)  # d = 1: two renewed filters cannot be orthogonal
    with pytest.warns(ReactivationWarning, match="only 1 dimensions"):
        result = reactivate(
            conv, np.arange(6) < 2, "orthogonal", generator=torch.Generator().manual_seed(0)
        )
    assert result.notes and "2 new filters but only 1 dimensions" in result.notes[0]


def test_rescale_uses_the_ordinary_median():
    """With an even number of strong filters the target is the mean of the two middle norms
    (np.median)."""
    strong = torch.zeros(4, 4, dtype=torch.float64)
    strong[:, 0] = torch.tensor([1.0, 2.0, 3.0, 10.0])
    for strategy in RESCALED:
        new, _ = new_filters(strategy, strong, 3, torch.Generator().manual_seed(0))
        np.testing.assert_allclose(new.norm(dim=1).numpy(), 2.5, rtol=1e-12)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="draws no filters"):
        new_filters("none", torch.randn(4, 27), 2)
    with pytest.raises(ValueError, match="strategy must be one of"):
        new_filters("craft", torch.randn(4, 27), 2)
    assert check_strategy("random_matched") == "random_matched"
    with pytest.raises(ValueError, match="strategy must be one of"):
        check_strategy("Contextual")


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


@pytest.mark.parametrize("strategy", RESCALED)
def test_all_inactive_warns_and_falls_back_to_kaiming(strategy):
    conv, bn, opt = simple_layer()
    with torch.no_grad():
        conv.weight.mul_(1e-4)
    with pytest.warns(ReactivationWarning, match="no strong filters"):
        result = reactivate(
            conv,
            np.ones(8, bool),
            strategy,
            bn=bn,
            optimizer=opt,
            generator=torch.Generator().manual_seed(3),
        )
    assert result.notes and torch.isfinite(conv.weight).all()
    kaiming, _, _ = simple_layer()
    reactivate(kaiming, np.ones(8, bool), "random", generator=torch.Generator().manual_seed(3))
    # exactly the Kaiming draw of the random baseline
    assert torch.equal(conv.weight, kaiming.weight)


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
    np.testing.assert_allclose(
        conv.weight.detach().flatten(1).norm(dim=1).numpy(), keep.norm().item(), rtol=1e-5
    )


def test_orthogonal_with_one_strong_filter_is_orthogonal_to_it():
    conv, bn, opt = simple_layer()
    mask = np.arange(8) != 2
    reactivate(conv, mask, "orthogonal", bn=bn, optimizer=opt)
    w = conv.weight.detach().double().flatten(1)
    cos = torch.nn.functional.cosine_similarity(w[mask], w[2:3])
    assert cos.abs().max() < 1e-4


@pytest.mark.parametrize(
    "bad", [np.ones(7, bool), np.ones(9, bool), np.ones((8, 1), bool), np.ones((2, 4), bool)]
)
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


@pytest.mark.parametrize("strategy", RESCALED)
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
    """No optimizer, a parameter the optimizer never saw, or no BatchNorm: nothing to reset, no
    error."""
    conv, bn, opt = simple_layer()
    other = nn.Parameter(torch.ones(8))
    clear_optimizer_state(None, conv.weight, torch.tensor([0]))
    clear_optimizer_state(opt, other, torch.tensor([0]))
    reset_batchnorm(None, torch.tensor([0]))
    reset_batchnorm(nn.Identity(), torch.tensor([0]))
    assert torch.equal(other, torch.ones(8))


# ---------------------------------------------------------------------------------------------
# downstream of a renewed channel: next conv's input weights, PReLU slope, BN and every optimizer
# state


RENEWED = [1, 5, 6, 20, 41, 63]


def face_model_with_state(opt_kind: str, seed: int = 0):
    """A FaceCNN (16 px) and an optimizer after two real steps, PReLU slopes moved away from
    0.25."""
    torch.manual_seed(seed)
    model = FaceCNN(ModelConfig(input_size=16))
    params = list(model.parameters())
    opt = (
        torch.optim.SGD(params, lr=0.01, momentum=0.9)
        if opt_kind == "sgd"
        else torch.optim.Adam(params, lr=1e-3)
    )
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 3, 16, 16)).pow(2).mean().backward()
        opt.step()
    with torch.no_grad():
        model.act1.weight.uniform_(0.05, 0.6)
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
    return model, opt


def model_state(model: nn.Module, opt) -> dict[str, torch.Tensor]:
    """Every parameter, buffer and optimizer state tensor, cloned, by a readable name."""
    out = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters()}
    out.update({f"buffer:{n}": b.clone() for n, b in model.named_buffers()})
    for n, p in model.named_parameters():
        for key, value in opt.state[p].items():
            out[f"state:{n}.{key}"] = (
                value.clone() if torch.is_tensor(value) else torch.tensor(value)
            )
    return out


def renew(model, opt, downstream: str, reset_step: bool, strategy: str = "contextual"):
    mask = np.isin(np.arange(64), RENEWED)
    return reactivate(
        model.conv1,
        mask,
        strategy,
        bn=model.bn1,
        optimizer=opt,
        generator=torch.Generator().manual_seed(0),
        act=model.act1,
        consumers=model.stem_consumers(),
        downstream=downstream,
        reset_step=reset_step,
    )


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("reset_step", [False, True])
@pytest.mark.parametrize("downstream", DOWNSTREAM)
def test_reactivate_resets_exactly_what_is_documented(downstream, reset_step, opt_kind):
    model, opt = face_model_with_state(opt_kind)
    before = model_state(model, opt)
    result = renew(model, opt, downstream, reset_step)
    after = model_state(model, opt)
    rows = torch.tensor(RENEWED)
    live = torch.tensor([c for c in range(64) if c not in RENEWED])
    touches_downstream = downstream != "keep"
    consumer = "body.0.0.weight"
    assert result.filters == RENEWED and result.strategy == "contextual"

    # the renewed channel: new filter, fresh BatchNorm, PReLU slope back to 0.25 (not for "keep")
    assert not torch.equal(after["param:conv1.weight"][rows], before["param:conv1.weight"][rows])
    assert torch.all(after["param:bn1.weight"][rows] == 1) and torch.all(
        after["param:bn1.bias"][rows] == 0
    )
    assert torch.all(after["buffer:bn1.running_mean"][rows] == 0)
    assert torch.all(after["buffer:bn1.running_var"][rows] == 1)
    slope = after["param:act1.weight"][rows]
    assert (
        torch.all(slope == PRELU_INIT)
        if touches_downstream
        else torch.equal(slope, before["param:act1.weight"][rows])
    )

    # the next conv's input slices for those channels
    w_before, w_after = before[f"param:{consumer}"], after[f"param:{consumer}"]
    if downstream == "keep":
        assert torch.equal(w_after, w_before)
    elif downstream == "zero":
        assert torch.all(w_after[:, rows] == 0)
    elif downstream == "rescale":
        live_norms = w_before[:, live].transpose(0, 1).flatten(1).norm(dim=1)
        renewed_norms = w_after[:, rows].transpose(0, 1).flatten(1).norm(dim=1)
        np.testing.assert_allclose(renewed_norms.numpy(), np.median(live_norms.numpy()), rtol=1e-5)
        for r in RENEWED:  # rescaled, not redrawn: one factor per input slice
            factor = (w_after[:, r] / w_before[:, r]).flatten()
            assert torch.allclose(factor, factor[:1].expand_as(factor), rtol=1e-4)
    else:  # reinit: fresh Kaiming weights (fan-in 64 x 3 x 3)
        fresh = w_after[:, rows]
        assert not torch.any(fresh == w_before[:, rows]) and torch.isfinite(fresh).all()
        assert fresh.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)

    # every optimizer state of what was reset is zero for those rows / input slices
    moments = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}[opt_kind]
    for key in moments:
        for name in ("conv1.weight", "bn1.weight", "bn1.bias"):
            assert torch.all(after[f"state:{name}.{key}"][rows] == 0), (name, key)
        slope_state = after[f"state:act1.weight.{key}"][rows]
        consumer_state = after[f"state:{consumer}.{key}"][:, rows]
        if touches_downstream:
            assert torch.all(slope_state == 0) and torch.all(consumer_state == 0), key
        else:
            assert torch.equal(slope_state, before[f"state:act1.weight.{key}"][rows])
            assert torch.equal(consumer_state, before[f"state:{consumer}.{key}"][:, rows])
        # there was something to clear
        assert before[f"state:conv1.weight.{key}"][rows].abs().sum() > 0

    # Adam's per-tensor step: back to 0 for every reset tensor with reset_step, untouched otherwise
    reset_tensors = {"conv1.weight", "bn1.weight", "bn1.bias"} | (
        {"act1.weight", consumer} if touches_downstream else set()
    )
    for name in [k for k in before if k.endswith(".step")]:
        tensor = name[len("state:") : -len(".step")]
        if reset_step and tensor in reset_tensors:
            assert after[name].item() == 0, name
        else:
            assert torch.equal(after[name], before[name]), name

    # everything else bit for bit: other rows, other input slices, every other tensor and its state
    for name, value in before.items():
        if name.endswith(".step"):
            continue
        tensor = (
            name.split(":", 1)[1].rsplit(".", 1)[0]
            if name.startswith("state:")
            else name.split(":", 1)[1]
        )
        if tensor in (
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "act1.weight",
        ):
            assert torch.equal(after[name][live], value[live]), name
        elif tensor == consumer:
            assert torch.equal(after[name][:, live], value[:, live]), name
        else:
            assert torch.equal(after[name], value), name


def test_reactivate_model_reaches_the_next_layer_of_a_facecnn():
    model, opt = face_model_with_state("sgd")
    with torch.no_grad():
        model.conv1.weight[RENEWED] *= 1e-4
    consumer = model.body[0][0]
    result = reactivate_model(
        model, PAPER_READING.but(downstream="zero"), opt, generator=torch.Generator().manual_seed(0)
    )
    assert result.filters == RENEWED
    assert torch.all(consumer.weight[:, RENEWED] == 0) and torch.all(
        model.act1.weight[RENEWED] == PRELU_INIT
    )
    assert stem_consumers(model) == [consumer]


def test_surroundings_are_what_reactivate_clears():
    """The one list of what surrounds a renewed filter: exactly the optimizer state ``reactivate``
    clears."""
    for downstream in DOWNSTREAM:
        model, opt = face_model_with_state("sgd")
        names = {id(p): n for n, p in model.named_parameters()}
        around = {(names[id(p)], dim) for p, dim in surroundings(*stem_parts(model), downstream)}
        mine = {("conv1.weight", 0), ("bn1.weight", 0), ("bn1.bias", 0)}
        assert around == (
            mine if downstream == "keep" else mine | {("act1.weight", 0), ("body.0.0.weight", 1)}
        )
        before = model_state(model, opt)
        renew(model, opt, downstream, reset_step=False)
        after = model_state(model, opt)
        cleared = {
            name.split(":")[1].rsplit(".", 1)[0]
            for name, value in before.items()
            if name.startswith("state:") and not torch.equal(after[name], value)
        }
        assert cleared == {name for name, _ in around}, downstream


def test_a_spec_is_required_and_a_bad_mode_writes_nothing():
    model, opt = face_model_with_state("sgd")
    with pytest.raises(TypeError, match="expected a CraftSpec"):
        reactivate_model(model, 0.1)
    before = model_state(model, opt)
    with pytest.raises(ValueError, match="downstream must be one of"):
        renew(model, opt, "mute", reset_step=False)
    assert all(torch.equal(value, model_state(model, opt)[name]) for name, value in before.items())


def test_downstream_needs_a_model_that_names_its_consumers():
    class BareStem(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.act1 = (
                nn.Conv2d(3, 8, 3, bias=False),
                nn.BatchNorm2d(8),
                nn.PReLU(8),
            )

        def stem(self, x):
            return self.act1(self.bn1(self.conv1(x)))

    bare = BareStem()
    assert stem_consumers(bare) == []
    with pytest.raises(ValueError, match="stem_consumers"):
        reactivate_model(bare, PAPER_READING.but(tau=0.5, downstream="rescale"))
    with pytest.warns(ReactivationWarning, match="only one strong filter"):
        # downstream "keep" needs no consumer
        result = reactivate_model(bare, PAPER_READING.but(tau=1.0))
    assert len(result.filters) == 7  # everything below the strongest


def test_reset_helpers_on_their_own():
    conv = nn.Conv2d(4, 3, 1, bias=False)
    before = conv.weight.detach().clone()
    with pytest.raises(ValueError, match="downstream must be one of"):
        reset_downstream([conv], torch.tensor([1]), "shrink")
    # nothing renewed: nothing to do
    reset_downstream([conv], torch.tensor([], dtype=torch.long), "zero")
    assert torch.equal(conv.weight, before)
    reset_downstream([conv], torch.tensor([1]), "zero")
    assert torch.all(conv.weight[:, 1] == 0) and torch.equal(
        conv.weight[:, [0, 2, 3]], before[:, [0, 2, 3]]
    )
    shared, relu = (
        nn.PReLU(),
        nn.ReLU(),
    )  # one slope for all channels, or no slope at all: nothing per channel
    reset_activation(shared, torch.tensor([0]))
    reset_activation(relu, torch.tensor([0]))
    assert shared.weight.item() == pytest.approx(0.25)
    slopes = nn.PReLU(4)
    with torch.no_grad():
        slopes.weight.fill_(0.7)
    reset_activation(slopes, torch.tensor([2]))
    assert slopes.weight.tolist() == pytest.approx([0.7, 0.7, 0.25, 0.7])


def test_clear_optimizer_state_along_a_dimension_and_the_step():
    w = nn.Parameter(torch.ones(2, 3))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(2, 3)
    opt.step()
    opt.step()
    clear_optimizer_state(opt, w, [1], dim=1)
    assert (
        opt.state[w]["exp_avg"][:, 1].abs().sum() == 0
        and opt.state[w]["exp_avg"][:, [0, 2]].abs().min() > 0
    )
    assert opt.state[w]["step"].item() == 2
    clear_optimizer_state(opt, w, [0], reset_step=True)
    assert opt.state[w]["step"].item() == 0 and opt.state[w]["exp_avg_sq"][0].abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# the detector's helpers


def test_strong_mask_takes_a_top_quantile_of_the_live_filters():
    scores = np.array([0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0, 0.3])
    inactive = scores < 0.1
    # quantile 0: everything above τ
    assert strong_mask(scores, inactive).tolist() == (~inactive).tolist()
    assert np.flatnonzero(strong_mask(scores, inactive, 0.5)).tolist() == [
        3,
        4,
        5,
        6,
    ]  # the stronger half
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="quantile"):
            strong_mask(scores, inactive, bad)


def test_strong_quantile_reaches_the_context():
    """With the top 1% as context only the strongest filter is left: contextual says so."""
    model = FaceCNN(ModelConfig(input_size=16))
    with torch.no_grad():
        model.conv1.weight[:4] *= 1e-4
    with pytest.warns(ReactivationWarning, match="only one strong filter"):
        result = reactivate_model(model, PAPER_READING.but(strong_quantile=0.99))
    assert result.filters == [0, 1, 2, 3] and result.notes


def test_event_record_appends_what_happened():
    class Run:
        epoch, step, events = 2, 17, []

    run = Run()
    event = event_record(
        run, Reactivation("orthogonal", [3, 4], 64, ["a note"]), score="silent", source="lab"
    )
    assert run.events == [event]
    assert event == {
        "epoch": 2,
        "step": 17,
        "strategy": "orthogonal",
        "filters": [3, 4],
        "total": 64,
        "notes": ["a note"],
        "score": "silent",
        "source": "lab",
    }


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reactivate_on_gpu(strategy, dtype):
    mask = np.arange(32) % 3 == 0
    spec = {
        "out": 32,
        "cin": 3,
        "k": 3,
        "bias": True,
        "with_bn": True,
        "dtype": dtype,
        "opt_kind": "adam",
        "dead_scale": 1e-4,
        "seed": 0,
        "mask": mask,
    }
    check_properties(spec, strategy, device="cuda")
    conv, _, _ = build_layer(32, 3, 3, False, False, dtype, None, mask, 1e-4, 0, "cuda")
    # a mask living on the GPU works too
    reactivate(conv, torch.as_tensor(mask, device="cuda"), strategy)
    assert conv.weight.device.type == "cuda" and torch.isfinite(conv.weight).all()
