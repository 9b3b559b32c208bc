"""Gradient transformations composed with >>: against torch (clip_grad_norm_, torch.optim and
lr_scheduler over 200 steps), against a plain optax-style reference in the gradient's sign, the
fused plan against the unfused one, composition and argument errors, the safe expression parser,
purity, vmap and torch.func.grad, and the run config's ``optim.chain``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from progsynth.core.optim import adagrad, adam, adamw, gd, momentum, rda
from progsynth.core.transforms import (
    TRANSFORMS,
    SmoothOptimizer,
    adagrad_moments,
    adam_moments,
    chain,
    clip,
    cosine,
    finite_probe,
    inverse_time,
    linear_warmup,
    momentum_trace,
    parse_chain,
    scale,
    step_decay,
    warmup_cosine,
    weight_decay,
)
from progsynth.errors import ConfigError, LensTypeError, NonFiniteError

from optim_problem import STEPS, assert_put_is_pure, gen
from optim_problem import loss as _loss
from optim_problem import mlp as _mlp
from optim_problem import neg_grad as _neg_grad


def _fresh() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in _mlp().named_parameters()}


# --------------------------------------------------------------------------- against torch

LR = 1e-2
SGD_LR = 0.05


def _seq_warmup_cosine(opt, start, warmup, total, alpha):
    """torch's own composition of a linear warm-up and a cosine (LambdaLR where start is 0, since
    LinearLR refuses a start factor of 0)."""
    lr = opt.param_groups[0]["lr"]
    warm = (torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, total_iters=warmup) if start > 0 else
            torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(k / warmup, 1.0)))
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=alpha * lr)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[warmup])


# (chain, torch optimizer, scheduler or None, clip_grad_norm_'s max_norm or None)
TORCH_CHAINS = [
    pytest.param(clip(0.05) >> adam_moments(0.9, 0.98) >> warmup_cosine(10, STEPS) >> scale(-LR),
                 lambda ps: torch.optim.Adam(ps, lr=LR, betas=(0.9, 0.98)),
                 lambda o: _seq_warmup_cosine(o, 0.0, 10, STEPS, 0.0), 0.05,
                 id="issue-example-clip-adam-warmup_cosine"),
    pytest.param(clip(0.05) >> momentum_trace(0.9, 0.0, True) >> scale(-SGD_LR),
                 lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.9, nesterov=True), None, 0.05,
                 id="clip-nesterov"),
    pytest.param(weight_decay(0.1) >> adam_moments() >> cosine(STEPS, 0.1) >> scale(-LR),
                 lambda ps: torch.optim.Adam(ps, lr=LR, weight_decay=0.1),
                 lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.1 * LR), None,
                 id="coupled-decay-adam-cosine"),
    pytest.param(adam_moments(0.8, 0.95, 1e-6) >> weight_decay(0.5) >> step_decay(50, 0.5) >> scale(-LR),
                 lambda ps: torch.optim.AdamW(ps, lr=LR, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.5),
                 lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=50, gamma=0.5), None, id="adamw-step"),
    pytest.param(adam_moments() >> weight_decay(0.1) >> linear_warmup(30, 0.1) >> scale(-LR),
                 lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=0.1),
                 lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=30), None,
                 id="adamw-linear"),
    pytest.param(weight_decay(0.05) >> momentum_trace(0.8, 0.3) >> warmup_cosine(20, STEPS, 0.05, 0.1)
                 >> scale(-SGD_LR),
                 lambda ps: torch.optim.SGD(ps, lr=SGD_LR, momentum=0.8, dampening=0.3, weight_decay=0.05),
                 lambda o: _seq_warmup_cosine(o, 0.1, 20, STEPS, 0.05), None, id="sgd-warmup_cosine"),
    pytest.param(adagrad_moments(1e-6, 0.1) >> inverse_time(0.01) >> linear_warmup(10) >> scale(-0.1),
                 lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, eps=1e-6, initial_accumulator_value=0.1),
                 lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: min(k / 10, 1.0)), None,
                 id="adagrad-lambda"),
]

# our buffers accumulate p' = −∇L: the sign relating each to torch's state entry of the same name
TORCH_STATE_SIGN = {"momentum_buffer": -1.0, "sum": 1.0, "exp_avg": -1.0, "exp_avg_sq": 1.0}


@pytest.mark.parametrize("opt, make_torch, make_schedule, max_norm", TORCH_CHAINS)
def test_chain_matches_torch_over_200_steps(opt, make_torch, make_schedule, max_norm):
    """Two independent trajectories, each taking gradients at its own parameters; torch clips with
    clip_grad_norm_ before optimizer.step() and steps its scheduler after it."""
    reference = dict(_mlp().named_parameters())
    torch_opt = make_torch(list(reference.values()))
    schedule = make_schedule(torch_opt) if make_schedule else None
    params = _fresh()
    start = {k: v.clone() for k, v in params.items()}
    state = opt.init(params)
    diffs, clipped = [], 0
    for _ in range(STEPS):
        state, params = opt.put(state, params, _neg_grad(opt.get(state, params)))
        torch_opt.zero_grad()
        _loss(reference).backward()
        if max_norm is not None:
            clipped += int(torch.nn.utils.clip_grad_norm_(reference.values(), max_norm) > max_norm)
        torch_opt.step()
        if schedule is not None:
            schedule.step()
        diffs += [(params[k] - p.detach()).abs().max() for k, p in reference.items()]
    assert float(torch.stack(diffs).max()) <= 1e-6
    assert max((params[k] - start[k]).abs().max().item() for k in params) > 1e-2  # it really trained
    assert max_norm is None or 20 <= clipped  # the clip was active
    assert _loss(params) < 0.9 * _loss(start)  # scale(-lr) descends
    for name, p in reference.items():
        for buffer, theirs in torch_opt.state[p].items():
            if buffer in TORCH_STATE_SIGN:
                torch.testing.assert_close(state[buffer][name], TORCH_STATE_SIGN[buffer] * theirs, atol=1e-6, rtol=0)


def test_cosine_stays_at_alpha_after_decay_steps():
    """Up to T_max the same as torch's CosineAnnealingLR (above); after it, alpha (optax's), where
    torch's periodic schedule would rise again."""
    t = torch.arange(1, 40, dtype=torch.float64)
    factor = cosine(10, 0.2).factor(t)
    expected = [0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(k, 10) / 10)) for k in range(39)]
    torch.testing.assert_close(factor, torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)
    both = warmup_cosine(5, 15, 0.2).factor(t)
    assert both[0] == 0 and both[5] == 1 and torch.all(both[15:] == 0.2)


# --------------------------------------------------------------------------- an optax-style reference


def _reference_put(parts, state, params, dparams):
    """The chain as optax writes it: u starts as the gradient −p', each part maps it in turn with
    torch-signed buffers, and the new parameters are p + u. One pass per part, plain tensors."""
    t = state["step"] + 1
    u = {k: -d for k, d in dparams.items()}
    new = {"step": t}
    for op in parts:
        name, args = op.name, op.args
        if name == "weight_decay":
            u = {k: u[k] + args[0] * params[k] for k in u}
        elif name == "clip":
            norm = math.sqrt(sum(float((v * v).sum()) for v in u.values()))
            u = {k: v * min(1.0, args[0] / (norm + 1e-6)) for k, v in u.items()}
        elif name == "momentum_trace":
            mu, damp, nesterov = args
            old = state.get("momentum_buffer")
            buf = {k: v.clone() if t == 1 else mu * old[k] + (1 - damp) * v for k, v in u.items()}
            new["momentum_buffer"] = buf
            u = {k: u[k] + mu * buf[k] if nesterov else buf[k] for k in u}
        elif name == "adam_moments":
            b1, b2, eps = args
            m = {k: b1 * state.get("exp_avg", {}).get(k, 0) + (1 - b1) * v for k, v in u.items()}
            v2 = {k: b2 * state.get("exp_avg_sq", {}).get(k, 0) + (1 - b2) * v * v for k, v in u.items()}
            new["exp_avg"], new["exp_avg_sq"] = m, v2
            u = {k: (m[k] / (1 - b1**t)) / (v2[k].sqrt() / math.sqrt(1 - b2**t) + eps) for k in u}
        else:  # scale and the schedules: a factor of the step count
            step = torch.tensor(float(t), dtype=torch.float64)
            factor = op.factor if isinstance(op.factor, float) else float(op.factor(step))
            u = {k: factor * v for k, v in u.items()}
    return new, {k: params[k] + u[k] for k in params}


@pytest.mark.parametrize("opt", [
    clip(0.05) >> adam_moments(0.9, 0.98) >> warmup_cosine(3, 12) >> scale(-LR),
    scale(3.0) >> clip(0.02) >> weight_decay(0.1) >> momentum_trace(0.9, 0.0, True) >> step_decay(4, 0.5)
    >> weight_decay(0.01) >> scale(-SGD_LR),
    adam_moments() >> clip(0.01) >> weight_decay(0.3) >> linear_warmup(3, 0.2) >> scale(-LR),
], ids=["clip-adam-warmup_cosine", "scale-clip-decay-nesterov-step-decay", "adam-then-clip"])
def test_chain_is_optax_semantics_on_the_gradient(opt):
    """The documented convention: the chain acts on u = −p' (∇L) and puts p + u; our p'-frame engine
    (buffers linear in u negated) gives the same parameters."""
    params = ref_params = _fresh()
    state, ref_state = opt.init(params), {"step": 0}
    for _ in range(12):
        dp = _neg_grad(params)
        state, params = opt.put(state, params, dp)
        ref_state, ref_params = _reference_put(opt.transforms, ref_state, ref_params, dp)
        for k in params:
            torch.testing.assert_close(params[k], ref_params[k], atol=1e-13, rtol=1e-12)
    for buffer in opt.buffers:
        for k in params:
            torch.testing.assert_close(state[buffer][k], TORCH_STATE_SIGN[buffer] * ref_state[buffer][k],
                                       atol=1e-13, rtol=1e-12)


# --------------------------------------------------------------------------- fused = unfused

NAMED = [gd(0.1, 0.05), gd(0.1, warmup_steps=3), momentum(0.05, 0.8, 0.3, weight_decay=0.05),
         momentum(0.05, nesterov=True, warmup_steps=3), adagrad(0.1, 0.01, 0.05, 0.1), adagrad(0.1, warmup_steps=3),
         adam(LR, weight_decay=0.1), adam(LR, warmup_steps=3), adamw(LR, weight_decay=0.5),
         adamw(LR, (0.9, 0.98), weight_decay=1.0, warmup_steps=3)]
CHAINS = [
    clip(0.05) >> adam_moments() >> warmup_cosine(3, 12) >> scale(-LR),
    adam_moments() >> clip(0.01) >> scale(-LR),  # a clip after the last rule: no fused final step
    clip(0.05) >> scale(-0.1),  # no per-leaf rule at all
    scale(2.0) >> momentum_trace() >> weight_decay(0.1) >> cosine(5, 0.1) >> scale(-SGD_LR),  # decoupled SGD
    adagrad_moments() >> linear_warmup(2) >> step_decay(3) >> scale(-0.1),
    adam_moments() >> linear_warmup(2) >> weight_decay(0.1) >> scale(-LR),  # decay not right after the rule
]


@pytest.mark.parametrize("opt", NAMED + CHAINS, ids=repr)
def test_fused_plan_equals_every_transformation_on_its_own(opt):
    """The fused kernels (moments fused with the final step, decoupled decay as p·(1 − lr·wd),
    factors folded into one coefficient) against one pass per transformation."""
    fused, plain = opt, opt.unfused()
    a = b = _fresh()
    sa, sb = fused.init(a), plain.init(b)
    for _ in range(12):
        sa, a = fused.put(sa, a, _neg_grad(a))
        sb, b = plain.put(sb, b, _neg_grad(b))
    for x, y in zip(tree_leaves((sa, a)), tree_leaves((sb, b))):
        torch.testing.assert_close(x, y, atol=1e-14, rtol=1e-12)
    assert max((a[k] - _fresh()[k]).abs().max().item() for k in a) > 1e-5  # it moved


@pytest.mark.parametrize("opt", NAMED, ids=repr)
def test_named_optimizer_is_its_expression_bit_for_bit(opt):
    """A named optimizer and its chain written out (what optim.chain in a config holds) give
    identical bits: same plan, same kernel."""
    spelled = parse_chain(opt.expression)
    assert spelled.buffers == opt.buffers and repr(spelled) == opt.expression
    a = b = _fresh()
    sa, sb = opt.init(a), spelled.init(b)
    for _ in range(6):
        sa, a = opt.put(sa, a, _neg_grad(a))
        sb, b = spelled.put(sb, b, _neg_grad(b))
    assert all(torch.equal(x, y) for x, y in zip(tree_leaves((sa, a)), tree_leaves((sb, b))))


def test_named_composites_and_extending_them():
    assert adamw(1e-3, (0.9, 0.98), weight_decay=1.0, warmup_steps=10).expression == (
        "adam_moments(0.9, 0.98, 1e-08) >> weight_decay(1.0) >> linear_warmup(10, 0.0) >> scale(-0.001)")
    assert adam(1e-3, weight_decay=0.1).expression == (
        "weight_decay(0.1) >> adam_moments(0.9, 0.999, 1e-08) >> scale(-0.001)")
    assert gd(0.1).expression == "scale(-0.1)"
    extended = clip(1.0) >> adamw(1e-3)
    assert isinstance(extended, SmoothOptimizer) and extended.name == "chain"
    assert repr(extended) == "clip(1.0) >> adam_moments(0.9, 0.999, 1e-08) >> weight_decay(0.01) >> scale(-0.001)"
    assert chain(clip(1.0), adamw(1e-3)).expression == extended.expression


# --------------------------------------------------------------------------- composition errors


def test_composing_with_the_boolean_optimizer_or_non_transformations_is_a_lens_type_error():
    for compose in (lambda: rda() >> scale(-1.0), lambda: scale(-1.0) >> rda(), lambda: adam(1e-3) >> rda(),
                    lambda: rda() >> adam(1e-3), lambda: rda() >> rda(), lambda: chain(clip(1.0), rda())):
        with pytest.raises(LensTypeError, match=r"rda\(\) is the Boolean optimizer over Z2"):
            compose()
    for other in (3, "scale(-1)", nn.Linear(2, 2)):
        with pytest.raises(LensTypeError, match=">> composes smooth gradient transformations"):
            clip(1.0) >> other
        with pytest.raises(LensTypeError, match=">> composes smooth gradient transformations"):
            other >> clip(1.0)
    with pytest.raises(LensTypeError, match="composes smooth"):
        SmoothOptimizer("mine", {}, (scale(-1.0), object()))


def test_two_owners_of_one_state_buffer_are_refused():
    for compose, buffer in ((lambda: adam_moments() >> adam_moments(), "exp_avg"),
                            (lambda: momentum(0.1) >> momentum_trace(), "momentum_buffer"),
                            (lambda: adagrad_moments() >> scale(-1.0) >> adagrad(0.1), "sum")):
        with pytest.raises(LensTypeError, match=f"both keep the state buffer '{buffer}'"):
            compose()
    adam_moments() >> momentum_trace() >> scale(-1.0)  # different buffers: fine (if unusual)


def test_a_chain_without_a_final_descending_scale_is_refused_when_used():
    params = _fresh()
    partial_chain = clip(1.0) >> adam_moments()  # fine to hold, as a part of a longer chain
    for use in (lambda: partial_chain.init(params),
                lambda: partial_chain.put({"step": torch.tensor(0)}, params, params),
                lambda: chain(clip(1.0), adam_moments())):
        with pytest.raises(ConfigError, match=r"must end with scale\(-lr\).*ends with adam_moments"):
            use()
    with pytest.raises(ConfigError, match="this one is empty"):
        chain()
    with pytest.raises(ConfigError, match=r"scale\(0.001\) would ascend the loss \(write scale\(-0.001\)\)"):
        (adam_moments() >> scale(1e-3)).init(params)
    assert (partial_chain >> scale(-1e-3)).init(params).keys() == {"step", "exp_avg", "exp_avg_sq"}


BAD_ARGS = [
    (lambda: linear_warmup(-1), "linear_warmup: steps must be an integer ≥ 0", "-1"),
    (lambda: linear_warmup(2.5), "linear_warmup: steps must be an integer", "2.5"),
    (lambda: linear_warmup(True), "linear_warmup: steps must be an integer", "True"),
    (lambda: linear_warmup(10, math.nan), "linear_warmup: start must be", "nan"),
    (lambda: cosine(0), "cosine: decay_steps must be an integer ≥ 1", "0"),
    (lambda: cosine(-5), "cosine: decay_steps must be an integer ≥ 1", "-5"),
    (lambda: cosine(math.nan), "cosine: decay_steps must be an integer", "nan"),
    (lambda: cosine(10, -0.1), "cosine: alpha must be", "-0.1"),
    (lambda: cosine(10, math.nan), "cosine: alpha must be", "nan"),
    (lambda: step_decay(0), "step_decay: step_size must be an integer ≥ 1", "0"),
    (lambda: step_decay(10, 0.0), "step_decay: gamma must be", "0.0"),
    (lambda: step_decay(10, math.nan), "step_decay: gamma must be", "nan"),
    (lambda: warmup_cosine(-1, 10), "warmup_cosine: warmup_steps must be an integer ≥ 0", "-1"),
    (lambda: warmup_cosine(10, 10), "warmup_cosine: decay_steps .* must exceed warmup_steps = 10", "10"),
    (lambda: warmup_cosine(5, math.nan), "warmup_cosine: decay_steps must be an integer", "nan"),
    (lambda: warmup_cosine(5, 50, -1.0), "warmup_cosine: alpha must be", "-1.0"),
    (lambda: inverse_time(-0.1), "inverse_time: decay must be", "-0.1"),
    (lambda: inverse_time(math.nan), "inverse_time: decay must be", "nan"),
    (lambda: scale(math.nan), "scale: factor must be a finite nonzero number", "nan"),
    (lambda: scale(-math.inf), "scale: factor must be a finite nonzero number", "-inf"),
    (lambda: scale(0), "scale: factor must be a finite nonzero number", "0"),
    (lambda: clip(0.0), "clip: max_norm must be", "0.0"),
    (lambda: clip(math.nan), "clip: max_norm must be", "nan"),
    (lambda: weight_decay(-1e-3), "weight_decay: wd must be", "-0.001"),
    (lambda: weight_decay(math.inf), "weight_decay: wd must be", "inf"),
    (lambda: adam_moments(1.0), "adam_moments: b1 must be", "1.0"),
    (lambda: adam_moments(0.9, math.nan), "adam_moments: b2 must be", "nan"),
    (lambda: adam_moments(eps=0), "adam_moments: eps must be", "0"),
    (lambda: adagrad_moments(eps=-1.0), "adagrad_moments: eps must be", "-1.0"),
    (lambda: adagrad_moments(initial_accumulator_value=-1), "adagrad_moments: initial_accumulator_value", "-1"),
    (lambda: momentum_trace(0.0), "momentum_trace: momentum must be", "0.0"),
    (lambda: momentum_trace(0.9, 1.5), "momentum_trace: dampening must be", "1.5"),
    (lambda: momentum_trace(nesterov=1), "momentum_trace: nesterov must be True or False", "1"),
    (lambda: momentum_trace(0.9, 0.1, True), "momentum_trace: dampening must be 0 for Nesterov", "0.1"),
]


@pytest.mark.parametrize("build, message, shown", BAD_ARGS, ids=[m for _, m, _ in BAD_ARGS])
def test_bad_arguments_are_one_line_config_errors_naming_the_value(build, message, shown):
    with pytest.raises(ConfigError, match=message) as info:
        build()
    assert str(info.value).endswith(f"got {shown}") and "\n" not in str(info.value)


# --------------------------------------------------------------------------- the expression parser

EVERY_TRANSFORM = ("clip(1.0) >> weight_decay(0.1) >> momentum_trace(0.9, 0.0, True) >> adagrad_moments() >> "
                   "adam_moments(b1=0.8, b2=0.9) >> inverse_time(0.01) >> linear_warmup(10, start=0.1) >> "
                   "cosine(100) >> step_decay(30, 0.5) >> warmup_cosine(5, 60, 0.1) >> scale(-1e-3)")


def test_parse_chain_reads_every_transformation_and_round_trips():
    opt = parse_chain(EVERY_TRANSFORM)
    assert [op.name for op in opt.transforms] == ["clip", "weight_decay", "momentum_trace", "adagrad_moments",
                                                 "adam_moments", "inverse_time", "linear_warmup", "cosine",
                                                 "step_decay", "warmup_cosine", "scale"]
    assert {op.name for op in opt.transforms} == set(TRANSFORMS)
    assert opt.transforms[4].args == (0.8, 0.9, 1e-8) and opt.transforms[-1].args == (-1e-3,)
    again = parse_chain(repr(opt))
    assert repr(again) == repr(opt) and opt.buffers == again.buffers
    assert parse_chain("(adam_moments()) >> (weight_decay(1) >> scale(-1e-3))").expression == (
        "adam_moments(0.9, 0.999, 1e-08) >> weight_decay(1.0) >> scale(-0.001)")
    assert parse_chain("scale(-0.1)", check_finite=False).check_finite is False


BAD_EXPRESSIONS = [
    ("", "must be an expression"),
    ("   ", "must be an expression"),
    (None, "must be an expression"),
    ("adam_moments( >> scale(-1)", "is not an expression of transformations joined by >>"),
    ("x" * 3000, "at most 2000 characters"),
    ("rmsprop(0.9) >> scale(-1)", "unknown transformation 'rmsprop'; expected one of weight_decay, clip"),
    ("rda() >> scale(-1)", "unknown transformation 'rda'"),
    ("adam_moments >> scale(-1)", r"write adam_moments\(...\) with its arguments"),
    ("__import__('os').system('true') >> scale(-1)", "expected transformations such as clip"),
    ("os.system('true')", "expected transformations such as clip"),
    ("(lambda: scale(-1))()", "expected transformations such as clip"),
    ("scale(-1) + scale(-1)", "expected transformations such as clip"),
    ("scale(-lr)", "scale: arguments must be literal numbers"),
    ("scale(print(1))", "scale: arguments must be literal numbers"),
    ("scale('-1')", "scale: arguments must be literal numbers"),
    ("scale(-1 * 3)", "scale: arguments must be literal numbers"),
    ("scale(*[1])", r"takes literal arguments, not \*args"),
    ("cosine(**{'decay_steps': 3}) >> scale(-1)", r"takes literal arguments, not \*args or \*\*kwargs"),
    ("adam_moments(1, 2, 3, 4) >> scale(-1)", r"adam_moments\(b1=0.9, b2=0.999, eps=1e-08\): too many positional"),
    ("adam_moments(beta1=0.9) >> scale(-1)", "unexpected keyword argument 'beta1'"),
    ("cosine() >> scale(-1)", "missing a required argument: 'decay_steps'"),
    ("cosine(-5) >> scale(-1)", "cosine: decay_steps must be an integer ≥ 1, got -5"),
    ("scale(-1e999)", "scale: factor must be a finite nonzero number"),
    ("adam_moments(0.9, 0.98)", r"must end with scale\(-lr\)"),
    ("adam_moments() >> scale(1e-3)", "would ascend the loss"),
    ("adam_moments() >> adam_moments() >> scale(-1)", "both keep the state buffer 'exp_avg'"),
]


@pytest.mark.parametrize("text, message", BAD_EXPRESSIONS, ids=[m for _, m in BAD_EXPRESSIONS])
def test_bad_expressions_are_one_line_errors(text, message, capsys):
    with pytest.raises((ConfigError, LensTypeError), match=message) as info:
        parse_chain(text)
    assert "\n" not in str(info.value)
    assert capsys.readouterr().out == ""  # nothing was evaluated: print(1) never ran


# --------------------------------------------------------------------------- purity, vmap, differentiation


def _small(seed_gen=gen):
    return {"w": torch.randn(3, 4, generator=seed_gen, dtype=torch.float64),
            "b": torch.randn(3, generator=seed_gen, dtype=torch.float64)}


@pytest.mark.parametrize("opt", CHAINS[:2] + [adamw(LR, weight_decay=0.1, warmup_steps=3)], ids=repr)
def test_put_is_pure(opt):
    assert_put_is_pure(opt, _small)


def test_vmap_over_seeds_with_their_own_step_counts_equals_separate_calls():
    """Clip norms, schedules and the fused Adam step per seed under vmap, seeds at different steps."""
    opt = dataclasses.replace(clip(0.5) >> adam_moments() >> weight_decay(0.1) >> warmup_cosine(4, 12)
                              >> scale(-LR), check_finite=False)
    starts = [0, 3, 9]
    params = [_small() for _ in starts]
    stack = lambda trees: tree_map(lambda *leaves: torch.stack(leaves), *trees)  # noqa: E731
    separate = [({**opt.init(p), "step": torch.tensor(s)}, p) for p, s in zip(params, starts)]
    batched = (stack([s for s, _ in separate]), stack(params))
    for _ in range(3):
        dps = [_small() for _ in starts]
        separate = [opt.put(s, p, dp) for (s, p), dp in zip(separate, dps)]
        batched = torch.func.vmap(opt.put)(*batched, stack(dps))
    for got, want in zip(tree_leaves(batched), tree_leaves(stack([list(pair) for pair in separate]))):
        torch.testing.assert_close(got, want, atol=1e-14, rtol=1e-12)
    assert batched[0]["step"].tolist() == [s + 3 for s in starts]


@pytest.mark.parametrize("opt", [adam(LR), adamw(LR, weight_decay=0.1, warmup_steps=2),
                                 clip(0.5) >> adam_moments() >> warmup_cosine(2, 8) >> scale(-LR),
                                 adagrad(0.1), momentum(0.1, nesterov=True)], ids=repr)
def test_torch_func_grad_differentiates_through_the_steps(opt):
    """d(final loss)/d(initial parameters) through 3 puts, by torch.func.grad, equals autograd's
    and passes a finite-difference check (the fused kernels' in-place ops are autograd-safe)."""
    opt = dataclasses.replace(opt, check_finite=False)

    def final_loss(w: torch.Tensor) -> torch.Tensor:
        params = {"w": w}
        state = opt.init(params)
        for _ in range(3):
            state, params = opt.put(state, params, {"w": torch.sin(params["w"]) - params["w"]})
        return (params["w"] ** 2).sum()

    w = torch.randn(5, generator=gen, dtype=torch.float64) + 2.0
    by_func = torch.func.grad(final_loss)(w)
    leaf = w.clone().requires_grad_()
    (by_autograd,) = torch.autograd.grad(final_loss(leaf), leaf)
    torch.testing.assert_close(by_func, by_autograd, atol=1e-12, rtol=1e-10)
    assert torch.autograd.gradcheck(final_loss, (leaf,))


def test_finite_check_names_the_chain_and_the_leaf():
    opt = clip(1.0) >> adam_moments() >> scale(-LR)
    params = _small()
    dp = tree_map(torch.zeros_like, params)
    dp["b"][1] = math.nan
    with pytest.raises(NonFiniteError, match=r"^chain: p' holds NaN or inf in parameter leaf \['b'\]"):
        opt.put(opt.init(params), params, dp)
    unchecked = dataclasses.replace(opt, check_finite=False)
    assert not torch.isfinite(unchecked.put(unchecked.init(params), params, dp)[1]["b"]).all()
    assert not torch.isfinite(finite_probe(dp))
    with pytest.raises(LensTypeError, match=r"state must be a dict with keys \['step', 'exp_avg', 'exp_avg_sq'\]"):
        opt.put(momentum(0.1).init(params), params, dp)


# --------------------------------------------------------------------------- the run config's optim.chain

EXPRESSION = "clip(1.0) >> adam_moments(0.9, 0.98) >> weight_decay(1.0) >> warmup_cosine(3, 24) >> scale(-1e-2)"


def _tiny_config(**optim):
    from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
    from progsynth.tasks import make_task

    return RunConfig(task=make_task("modular", p=7, train_fraction=0.6), model=ModelConfig(name="gromov", d_mlp=16),
                     optim=OptimConfig(**optim), loss="mse", epochs=24, metrics_every=4, max_checkpoints=4)


def test_config_chain_is_validated_recorded_and_built():
    from progsynth.runs.config import RunConfig
    from progsynth.runs.experiment import Experiment

    config = _tiny_config(chain=EXPRESSION)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # what config.json holds
    assert repr(Experiment(config).learner.optimizer) == parse_chain(EXPRESSION).expression
    named = _tiny_config(lr=1e-2, weight_decay=1.0, beta2=0.98)
    spelled = _tiny_config(chain="adam_moments(0.9, 0.98) >> weight_decay(1.0) >> scale(-1e-2)")
    assert Experiment(named).learner.optimizer.expression == Experiment(spelled).learner.optimizer.expression
    for optim, message in (({"chain": "adam_moments() >> scale(1e-3)"}, "optim.chain: .*would ascend the loss"),
                           ({"chain": "evil(1) >> scale(-1)"}, "optim.chain: unknown transformation 'evil'"),
                           ({"chain": "scale(-1e-3)", "lr": 0.1}, "optim.lr = 0.1 is not used with optim.chain"),
                           ({"chain": "scale(-1e-3)", "warmup_steps": 10}, "optim.warmup_steps = 10 is not used"),
                           ({"chain": 3}, "optim.chain must be a chain expression")):
        with pytest.raises(ConfigError, match=message):
            _tiny_config(**optim).validate()
    with pytest.raises(ConfigError, match="optim.chain: cosine: decay_steps must be an integer ≥ 1, got -1"):
        config.override(**{"optim.chain": "cosine(-1) >> scale(-1)"})  # sweeps' --set and --grid


def test_train_with_a_chain_from_the_cli_and_resume_bit_for_bit(tmp_path):
    """``progsynth train --config FILE`` with optim.chain; a run stopped at step 10 and resumed ends
    with the same bits as one run straight through (the chain, its schedule and state all resume)."""
    from typer.testing import CliRunner

    from progsynth.cli import app
    from progsynth.runs.store import RunStore
    from progsynth.runs.train import resume, train

    config = _tiny_config(chain=EXPRESSION)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / "cli"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["optim"]["chain"] == EXPRESSION
    train(config, tmp_path / "stopped", should_stop=lambda step: step == 10)
    resume(tmp_path / "stopped")
    ends = [RunStore.open(tmp_path / name).load_checkpoint(config.epochs) for name in ("cli", "stopped")]
    assert ends[0].tensors.keys() == ends[1].tensors.keys()
    assert all(torch.equal(ends[0].tensors[k], ends[1].tensors[k]) for k in ends[0].tensors)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**config.to_dict(), "optim": {"chain": "adam_moments() >> scale(1e-3)"}}))
    result = CliRunner().invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "would ascend the loss" in result.output and "Traceback" not in result.output
