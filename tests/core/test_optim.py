"""Optimizer lenses against torch.optim, their validation, finiteness checks, RDA, purity and vmap."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_leaves, tree_map

from progsynth.core.optim import (
    OPTIMIZER_NAMES,
    RDA,
    SmoothOptimizer,
    adagrad,
    adam,
    adamw,
    finite_probe,
    gd,
    momentum,
    nonfinite_leaves,
    optimizer_from_name,
    rda,
)
from progsynth.errors import ConfigError, LensTypeError, NonFiniteError, UnsupportedOptionError

from optim_problem import STEPS, assert_put_is_pure, gen
from optim_problem import loss as _loss
from optim_problem import mlp as _mlp
from optim_problem import neg_grad as _neg_grad


# (lens factory, torch.optim class, keyword arguments both take with the same meaning)
TORCH_CASES = [
    (gd, torch.optim.SGD, dict(lr=0.1)),
    (gd, torch.optim.SGD, dict(lr=0.1, weight_decay=0.05)),
    (momentum, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (momentum, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.05)),
    (momentum, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (momentum, torch.optim.SGD, dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.1)),
    (adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    (adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-6,
                                        weight_decay=0.05)),
    (adam, torch.optim.Adam, dict(lr=1e-2)),
    (adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    (adamw, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.0)),
    (adamw, torch.optim.AdamW, dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6)),  # default weight_decay 0.01
    (adamw, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.5)),
]

# torch.optim's state entries and the sign relating ours to theirs (our buffers accumulate p' = −∇L)
TORCH_STATE_SIGN = {"momentum_buffer": -1.0, "sum": 1.0, "exp_avg": -1.0, "exp_avg_sq": 1.0}


@pytest.mark.parametrize("warmup", [0, 10, 7])
@pytest.mark.parametrize("factory, torch_cls, kwargs", TORCH_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_trajectory_matches_torch_optim(factory, torch_cls, kwargs, warmup):
    """Two independent 200-step trajectories, each taking gradients at its own parameters. With
    warmup_steps=W, torch.optim runs under LambdaLR(lambda k: min(k / W, 1)) stepped after each
    step (the paper's schedule with W = 10), and our first step (lr 0) leaves the parameters exactly
    where they were."""
    reference = dict(_mlp().named_parameters())
    torch_opt = torch_cls(reference.values(), **kwargs)
    schedule = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda k: min(k / warmup, 1)) if warmup else None
    opt = factory(**kwargs, warmup_steps=warmup) if warmup else factory(**kwargs)
    params = {k: v.detach().clone() for k, v in reference.items()}
    start = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    worst = torch.zeros((), dtype=torch.float64)
    for step in range(STEPS):
        state, params = opt.put(state, params, _neg_grad(opt.get(state, params)))
        if warmup and step == 0:
            assert all(torch.equal(params[k], start[k]) for k in params)
        torch_opt.zero_grad()
        _loss(reference).backward()
        torch_opt.step()
        if schedule is not None:
            schedule.step()
        worst = torch.stack([worst, *((params[k] - p.detach()).abs().max() for k, p in reference.items())]).max()
    assert float(worst) <= 1e-6
    assert max((params[k] - start[k]).abs().max().item() for k in params) > 1e-2  # it really trained
    assert int(state["step"]) == STEPS
    for name, p in reference.items():  # the documented relation to torch's state
        for buffer, theirs in torch_opt.state[p].items():
            if buffer in TORCH_STATE_SIGN:
                torch.testing.assert_close(state[buffer][name], TORCH_STATE_SIGN[buffer] * theirs, atol=1e-6, rtol=0)


def test_nesterov_torch_form_equals_lookahead_table_form():
    """Table form: get = θ + γv, v ← γv + p', θ ← θ + v (p' = −lr∇L at the look-ahead point).
    Our (torch) form evaluates at p and is the same sequence under p = θ + γv."""
    lr, mu = 0.05, 0.9
    params = {k: v.detach().clone() for k, v in _mlp(1).named_parameters()}
    theta, v = dict(params), {k: torch.zeros_like(t) for k, t in params.items()}
    opt = momentum(lr, mu, nesterov=True)
    state = opt.init(params)
    for _ in range(100):
        assert opt.get(state, params) is params
        state, params = opt.put(state, params, _neg_grad(params))
        lookahead = {k: theta[k] + mu * v[k] for k in theta}
        dp = {k: lr * g for k, g in _neg_grad(lookahead).items()}
        v = {k: mu * v[k] + dp[k] for k in v}
        theta = {k: theta[k] + v[k] for k in theta}
        for k in params:
            torch.testing.assert_close(params[k], theta[k] + mu * v[k], atol=1e-10, rtol=0)


def test_paper_form_gd_one_with_scaled_signal_equals_gd_lr():
    """The paper's p + p' with learning_rate(ε) is gd(1.0) fed ε·(−∇L); it equals gd(ε) fed −∇L."""
    params = (torch.randn(4, 3, dtype=torch.float64, generator=gen),)
    dp = (torch.randn(4, 3, dtype=torch.float64, generator=gen),)
    _, literal = gd(1.0).put(gd(1.0).init(params), params, (0.01 * dp[0],))
    _, ours = gd(0.01).put(gd(0.01).init(params), params, dp)
    torch.testing.assert_close(literal, ours, atol=1e-15, rtol=0)


# --------------------------------------------------------------------------- validation

BAD_HYPER = [
    (gd, dict(lr=0), "lr", "0"),
    (gd, dict(lr=-0.1), "lr", "-0.1"),
    (gd, dict(lr=math.nan), "lr", "nan"),
    (gd, dict(lr=math.inf), "lr", "inf"),
    (gd, dict(lr="0.1"), "lr", "'0.1'"),
    (gd, dict(lr=True), "lr", "True"),
    (gd, dict(lr=0.1, weight_decay=-0.001), "weight_decay", "-0.001"),
    (momentum, dict(lr=0.1, momentum=0), "momentum", "0"),
    (momentum, dict(lr=0.1, nesterov="yes"), "nesterov", "'yes'"),
    (momentum, dict(lr=0.1, momentum=-0.5), "momentum", "-0.5"),
    (momentum, dict(lr=0.1, dampening=1.5), "dampening", "1.5"),
    (momentum, dict(lr=0.1, dampening=math.nan), "dampening", "nan"),
    (momentum, dict(lr=0.1, nesterov=True, dampening=0.3), "dampening", "0.3"),
    (momentum, dict(lr=0.1, nesterov=True, momentum=0.0), "momentum", "0.0"),
    (adagrad, dict(lr=0.1, lr_decay=-1), "lr_decay", "-1"),
    (adagrad, dict(lr=0.1, initial_accumulator_value=-0.1), "initial_accumulator_value", "-0.1"),
    (adagrad, dict(lr=0.1, eps=0.0), "eps", "0.0"),
    (adagrad, dict(lr=0.1, weight_decay=math.nan), "weight_decay", "nan"),
    (adam, dict(lr=1e-3, betas=(1.0, 0.999)), "betas[0]", "1.0"),
    (adam, dict(lr=1e-3, betas=(0.9, -0.1)), "betas[1]", "-0.1"),
    (adam, dict(lr=1e-3, betas=(0.9,)), "betas", "(0.9,)"),
    (adam, dict(lr=1e-3, eps=-1e-8), "eps", "-1e-08"),
    (adam, dict(lr=-1e-3), "lr", "-0.001"),
    (adamw, dict(lr=1e-3, weight_decay=-0.01), "weight_decay", "-0.01"),
    (adamw, dict(lr=1e-3, betas=(0.9, math.nan)), "betas[1]", "nan"),
]


@pytest.mark.parametrize("factory, kwargs, name, shown", BAD_HYPER)
def test_bad_hyper_parameter_raises_config_error_naming_it(factory, kwargs, name, shown):
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)
    assert f"{name} must be" in str(info.value) and f"got {shown}" in str(info.value)


TORCH_ONLY = ["amsgrad", "maximize", "foreach", "fused", "capturable", "differentiable"]
SMOOTH = [gd, momentum, adagrad, adam, adamw]


@pytest.mark.parametrize("factory", SMOOTH, ids=lambda f: f.__name__)
@pytest.mark.parametrize("option", TORCH_ONLY)
def test_torch_only_options_are_refused_unless_inert(factory, option):
    with pytest.raises(UnsupportedOptionError, match=f"{option}=True"):
        factory(lr=0.1, **{option: True})
    factory(lr=0.1, **{option: None if option in ("foreach", "fused") else False})  # torch's default: fine


def test_option_hints_and_unknown_options():
    with pytest.raises(UnsupportedOptionError, match="use adamw"):
        adam(1e-3, decoupled_weight_decay=True)
    with pytest.raises(UnsupportedOptionError, match=r"unknown option 'momentum'; accepted: lr, betas, eps"):
        adam(1e-3, momentum=0.9)


def test_optimizer_from_name():
    assert optimizer_from_name("gd", lr=0.1).name == "gd"
    assert optimizer_from_name("sgd", lr=0.1).name == "gd"  # torch.optim.SGD's default momentum 0
    assert optimizer_from_name("sgd", lr=0.1, momentum=0.9, dampening=0.1).hyper["dampening"] == 0.1
    assert optimizer_from_name("sgd", lr=0.1, momentum=0.9, nesterov=True).name == "nesterov"
    assert optimizer_from_name("momentum", lr=0.1).hyper == dict(
        lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0
    )
    assert optimizer_from_name("nesterov", lr=0.1, momentum=0.5).hyper["nesterov"] is True
    assert optimizer_from_name("adagrad", lr=0.1).name == "adagrad"
    assert optimizer_from_name("adam", lr=1e-3, betas=(0.8, 0.9)).hyper["betas"] == (0.8, 0.9)
    assert optimizer_from_name("adamw", lr=1e-3).hyper["weight_decay"] == 0.01
    assert isinstance(optimizer_from_name("rda"), RDA)
    with pytest.raises(UnsupportedOptionError) as info:
        optimizer_from_name("rmsprop", lr=0.1)
    assert "'rmsprop'" in str(info.value) and all(name in str(info.value) for name in OPTIMIZER_NAMES)
    with pytest.raises(ConfigError, match="'adam'.*lr"):
        optimizer_from_name("adam")
    with pytest.raises(ConfigError, match="'rda'"):
        optimizer_from_name("rda", lr=0.1)
    with pytest.raises(ConfigError, match="momentum must be"):
        optimizer_from_name("sgd", lr=0.1, momentum=0.0, nesterov=True)


# --------------------------------------------------------------------------- finiteness

ALL_SMOOTH = [gd(0.1), momentum(0.1), momentum(0.1, nesterov=True), adagrad(0.1), adam(1e-3), adamw(1e-3)]


def _params() -> dict[str, torch.Tensor]:
    return {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(3, generator=gen)}


@pytest.mark.parametrize("opt", ALL_SMOOTH, ids=repr)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_signal_raises_naming_optimizer_and_leaf(opt, bad):
    params = _params()
    dp = tree_map(torch.zeros_like, params)
    dp["b"][1] = bad
    with pytest.raises(NonFiniteError) as info:
        opt.put(opt.init(params), params, dp)
    assert str(info.value).startswith(f"{opt.name}:") and "['b']" in str(info.value) and "['w']" not in str(info.value)
    unchecked = dataclasses.replace(opt, check_finite=False)  # the multi-seed trainer's switch
    _, new = unchecked.put(unchecked.init(params), params, dp)
    assert not torch.isfinite(new["b"]).all()


def test_overflowing_probe_of_finite_values_is_not_an_error():
    params = {"w": torch.zeros(8)}
    dp = {"w": torch.full((8,), 3e38)}  # finite in float32, but their sum overflows
    assert not torch.isfinite(finite_probe(dp))
    assert nonfinite_leaves(dp) == []
    _, new = gd(1e-38).put(gd(1e-38).init(params), params, dp)
    assert torch.isfinite(new["w"]).all()


def test_finite_probe_and_nonfinite_leaves():
    assert float(finite_probe(())) == 0.0
    tree = ([torch.ones(2), torch.tensor([1.0, math.nan])], {"k": torch.tensor([math.inf])})
    assert not torch.isfinite(finite_probe(tree))
    assert nonfinite_leaves(tree) == ["[0][1]", "[1]['k']"]
    assert torch.isfinite(finite_probe([torch.ones(3), torch.ones(2, dtype=torch.float64)]))


# --------------------------------------------------------------------------- structure checks


def test_smooth_optimizers_reject_mismatched_inputs():
    params = _params()
    opt = adam(1e-3)
    state = opt.init(params)
    with pytest.raises(LensTypeError, match="tree structure"):
        opt.put(state, params, {"w": params["w"]})
    with pytest.raises(LensTypeError, match=r"leaf 1 is \(4,\), expected a tensor of shape \(3,\)"):
        opt.put(state, params, {"w": torch.zeros(3, 4), "b": torch.zeros(4)})
    with pytest.raises(LensTypeError, match="exp_avg"):
        opt.put(momentum(0.1).init(params), params, params)
    with pytest.raises(LensTypeError, match="leaf 1 is ndarray"):
        opt.init((torch.zeros(2), np.zeros(2)))
    with pytest.raises(LensTypeError, match="dtype torch.int64"):
        opt.init((torch.zeros(2, dtype=torch.int64),))


# --------------------------------------------------------------------------- RDA


def test_rda_is_xor_on_bool_uint8_and_packed_words():
    opt = rda()
    theta = {"t": np.array([True, False, True, False]), "u": np.array([[1, 0], [0, 1]], dtype=np.uint8),
             "packed": np.array([0b1100, 2**63], dtype=np.uint64)}
    dp = {"t": np.array([True, True, False, False]), "u": np.array([[1, 1], [0, 0]], dtype=np.uint8),
          "packed": np.array([0b1010, 2**63 + 1], dtype=np.uint64)}
    theta_copy, dp_copy = copy.deepcopy(theta), copy.deepcopy(dp)
    state = opt.init(theta)
    assert state == () and opt.get(state, theta) is theta
    state, new = opt.put(state, theta, dp)
    np.testing.assert_array_equal(new["t"], [False, True, True, False])
    np.testing.assert_array_equal(new["u"], [[0, 1], [0, 1]])
    np.testing.assert_array_equal(new["packed"], np.array([0b0110, 1], dtype=np.uint64))
    assert {k: v.dtype for k, v in new.items()} == {k: v.dtype for k, v in theta.items()}
    for k in theta:  # pure: inputs untouched; applying the same p' twice is the identity (⊕ is its own inverse)
        np.testing.assert_array_equal(theta[k], theta_copy[k])
        np.testing.assert_array_equal(dp[k], dp_copy[k])
        np.testing.assert_array_equal(opt.put(state, new, dp)[1][k], theta[k])


def test_rda_rejects_wrong_types():
    opt = rda()
    bits = (np.zeros(3, dtype=bool),)
    with pytest.raises(LensTypeError, match="dtype int8"):
        opt.init((np.zeros(3, dtype=np.int8),))
    with pytest.raises(LensTypeError, match="leaf 0 is Tensor"):
        opt.init((torch.zeros(3),))
    with pytest.raises(LensTypeError, match=r"p' leaf 0 is uint8\[3\], expected bool\[3\]"):
        opt.put((), bits, (np.zeros(3, dtype=np.uint8),))
    with pytest.raises(LensTypeError, match=r"expected bool\[3\]"):
        opt.put((), bits, (np.zeros(4, dtype=bool),))
    with pytest.raises(LensTypeError, match="tree structure"):
        opt.put((), bits, [np.zeros(3, dtype=bool)])


# --------------------------------------------------------------------------- purity and vmap


@pytest.mark.parametrize("opt", ALL_SMOOTH, ids=repr)
def test_put_is_pure(opt):
    params, new_params = assert_put_is_pure(opt, _params)
    assert not torch.equal(new_params["w"], params["w"])


@pytest.mark.parametrize("factory", SMOOTH, ids=lambda f: f.__name__)
def test_vmap_over_seeds_equals_separate_calls(factory):
    seeds, steps = 4, 3
    opt = factory(lr=0.01, weight_decay=0.1, check_finite=False)
    params = [{"w": torch.randn(3, 5, generator=gen, dtype=torch.float64),
               "b": torch.randn(3, generator=gen, dtype=torch.float64)} for _ in range(seeds)]
    signals = [[tree_map(lambda t: torch.randn(t.shape, generator=gen, dtype=t.dtype), p) for p in params]
               for _ in range(steps)]
    stack = lambda trees: tree_map(lambda *leaves: torch.stack(leaves), *trees)  # noqa: E731

    separate = [(opt.init(p), p) for p in params]
    batched = (torch.func.vmap(opt.init)(stack(params)), stack(params))
    for dps in signals:
        separate = [opt.put(s, p, dp) for (s, p), dp in zip(separate, dps)]
        batched = torch.func.vmap(opt.put)(*batched, stack(dps))
    for got, want in zip(tree_leaves(batched), tree_leaves(stack([list(pair) for pair in separate]))):
        torch.testing.assert_close(got, want, atol=1e-14, rtol=1e-12)
    assert batched[0]["step"].tolist() == [steps] * seeds


def test_vmap_needs_check_finite_off_and_probe_reports_per_seed():
    opt = adam(1e-3)
    params = {"w": torch.zeros(4, 3)}
    dp = {"w": torch.ones(4, 3)}
    dp["w"][2, 1] = math.nan
    with pytest.raises(ConfigError, match="check_finite=False"):
        torch.func.vmap(opt.put)(torch.func.vmap(opt.init)(params), params, dp)
    probes = torch.func.vmap(finite_probe)(dp)
    assert torch.isfinite(probes).tolist() == [True, True, False, True]


def test_repr_and_hyper_are_recorded():
    opt = adamw(1e-3, betas=(0.9, 0.98), weight_decay=1.0)
    assert isinstance(opt, SmoothOptimizer)
    assert repr(opt) == "adamw(lr=0.001, betas=(0.9, 0.98), eps=1e-08, weight_decay=1.0)"
    assert repr(rda()) == "rda()"


# --------------------------------------------------------------------------- learning-rate warm-up

@pytest.mark.parametrize("factory", SMOOTH, ids=lambda f: f.__name__)
def test_warmup_zero_is_the_rule_without_warmup_bit_for_bit(factory):
    params = {k: v.detach().clone() for k, v in _mlp(2).named_parameters()}
    plain, zero = factory(lr=0.01, weight_decay=0.1), factory(lr=0.01, weight_decay=0.1, warmup_steps=0)
    assert zero.hyper == plain.hyper and "warmup_steps" not in plain.hyper and repr(zero) == repr(plain)
    a = b = params
    sa, sb = plain.init(params), zero.init(params)
    for _ in range(5):
        sa, a = plain.put(sa, a, _neg_grad(a))
        sb, b = zero.put(sb, b, _neg_grad(b))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warmup_is_recorded_validated_and_reached_by_name():
    opt = adamw(1e-3, betas=(0.9, 0.98), weight_decay=1.0, warmup_steps=10)
    assert opt.hyper["warmup_steps"] == 10
    assert repr(opt) == "adamw(lr=0.001, betas=(0.9, 0.98), eps=1e-08, weight_decay=1.0, warmup_steps=10)"
    assert optimizer_from_name("adamw", lr=1e-3, warmup_steps=10).hyper["warmup_steps"] == 10
    assert optimizer_from_name("sgd", lr=0.1, momentum=0.9, warmup_steps=3).hyper["warmup_steps"] == 3
    for factory in SMOOTH:
        for bad in (-1, 2.5, True, "10"):
            with pytest.raises(ConfigError, match=rf"{factory.__name__}: warmup_steps must be an integer ≥ 0.*got"):
                factory(lr=0.1, warmup_steps=bad)


@pytest.mark.parametrize("factory", SMOOTH, ids=lambda f: f.__name__)
def test_warmup_under_vmap_follows_each_seeds_own_step_count(factory):
    """The ramp reads the state's own step, per seed under vmap (seeds here start at different
    counts, inside and past the warm-up), as separate calls do."""
    opt = factory(lr=0.01, weight_decay=0.1, warmup_steps=10, check_finite=False)
    starts = [0, 3, 9, 15]
    params = [{"w": torch.randn(3, 5, generator=gen, dtype=torch.float64)} for _ in starts]
    stack = lambda trees: tree_map(lambda *leaves: torch.stack(leaves), *trees)  # noqa: E731
    separate = []
    for p, start in zip(params, starts):
        state = opt.init(p)
        separate.append(({**state, "step": torch.tensor(start)}, p))
    batched = (stack([s for s, _ in separate]), stack(params))
    for _ in range(3):
        dps = [{"w": torch.randn(3, 5, generator=gen, dtype=torch.float64)} for _ in starts]
        separate = [opt.put(s, p, dp) for (s, p), dp in zip(separate, dps)]
        batched = torch.func.vmap(opt.put)(*batched, stack(dps))
    for got, want in zip(tree_leaves(batched), tree_leaves(stack([list(pair) for pair in separate]))):
        torch.testing.assert_close(got, want, atol=1e-14, rtol=1e-12)
    assert batched[0]["step"].tolist() == [s + 3 for s in starts]
