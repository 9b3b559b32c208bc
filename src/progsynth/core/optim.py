"""Optimizers as lenses (S × P, S × P) → (P, P') (REFERENCE §1), in the style of optax.

An optimizer is a lens with state, given by three pure functions:

    init(params)                 -> state
    get(state, params)           -> the parameters the model uses this step
    put(state, params, p')       -> (new state, new params)

p' is what the rate lens puts back through the model (see ``learner.py``): with the default
``learning_rate(1.0)`` it is −∇L, so every rule here moves *along* p'. Like torch.optim, each
smooth optimizer holds its own step size: ``gd(lr)`` puts p + lr·p', and the paper's literal
"p + p'" is ``gd(1.0)`` with ``learning_rate(ε)``.

**Numeric reference.** Each smooth optimizer reproduces the trajectory of its torch.optim
counterpart (SGD, Adagrad, Adam, AdamW), conventions included: SGD's first momentum step copies the
gradient into the buffer, eps is added after the square root, Adam's bias corrections use the step
count, and AdamW decays p by (1 − lr·wd) before the Adam step. tests/core/test_optim.py checks
200-step trajectories against torch.optim to 1e-6.

**Nesterov.** ``get`` returns p for every smooth optimizer, Nesterov included: we use torch's form
(p' is taken at p, the step is p + lr·(p' + γ·buf)). It is the table's look-ahead form
(get = θ + γv, v ← γv + p', θ ← θ + v) under the change of variables p = θ + γv, so both give the
same sequence of evaluation points; torch's form needs no extra parameter copy.

**State.** A dict: ``"step"`` (an int64 0-dim tensor, the number of puts so far, a tensor so that
``torch.func.vmap`` can batch it) and one pytree per buffer, shaped like the parameters and named
as in torch.optim's state: ``momentum_buffer``, ``sum`` (Adagrad), ``exp_avg``, ``exp_avg_sq``.
Buffers accumulate p' (the paper's v ← γv + p'), so ``momentum_buffer`` and ``exp_avg`` are the
*negatives* of torch's (which accumulate ∇L); ``sum`` and ``exp_avg_sq`` equal torch's.

**Weight decay.** Coupled (gd, momentum, adagrad, adam): the loss gains ½·wd·|p|², so
p' ← p' − wd·p (torch's grad + wd·p). Decoupled (adamw): p ← p·(1 − lr·wd) before the step.

**Warm-up.** ``warmup_steps=W > 0`` (every smooth optimizer) ramps the step size linearly: put
number t = 1, 2, ... uses lr_t = lr·min((t − 1)/W, 1) wherever torch.optim reads the group's lr
(AdamW's decoupled decay p·(1 − lr_t·wd) included), so the first step has lr 0 and moves only the
buffers. That is torch.optim with ``LambdaLR(opt, lambda k: min(k / W, 1))`` stepped after each
``opt.step()``, as the paper's grokking code does with W = 10. t is the state's own ``"step"``,
so the ramp is pure, runs under vmap (one count per seed) and resumes exactly from a saved state.
W = 0 (the default) leaves every rule as it was, operation for operation.

**Purity and vmap.** ``put`` only builds new tensors: no in-place ops, no ``.item()``, no
``torch._foreach_*``. So the whole step runs under ``torch.func.vmap`` over a stack of seeds, and
``torch.func.grad`` can differentiate through it.

**Finite check.** With ``check_finite=True`` (the default) ``put`` refuses a p' holding NaN or inf
with ``NonFiniteError`` naming the optimizer and the parameter leaf. The cost is one sum per leaf
and one host sync per step (:func:`finite_probe`); only when the probe is non-finite is the exact,
slower :func:`nonfinite_leaves` run. A host sync cannot happen under vmap, so a multi-seed trainer
builds the optimizer with ``check_finite=False`` (or ``dataclasses.replace(opt,
check_finite=False)``), returns ``finite_probe(p')`` from its vmapped step (one value per seed) and
checks those outside vmap.

**Boolean parameters.** ``rda()`` is Reverse Derivative Ascent over Z2: θ ← θ ⊕ p', stateless.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from functools import partial
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch.utils._pytree import keystr, tree_flatten, tree_flatten_with_path, tree_leaves, tree_unflatten

from progsynth.errors import ConfigError, LensTypeError, NonFiniteError, UnsupportedOptionError

__all__ = [
    "Optimizer",
    "SmoothOptimizer",
    "RDA",
    "gd",
    "momentum",
    "adagrad",
    "adam",
    "adamw",
    "rda",
    "optimizer_from_name",
    "finite_probe",
    "nonfinite_leaves",
    "OPTIMIZER_NAMES",
]


class Optimizer(Protocol):
    """The interface every optimizer lens has (smooth or Boolean)."""

    name: str

    def init(self, params: Any) -> Any: ...

    def get(self, state: Any, params: Any) -> Any: ...

    def put(self, state: Any, params: Any, dparams: Any) -> tuple[Any, Any]: ...


# --------------------------------------------------------------------------- finiteness


def finite_probe(tree: Any) -> torch.Tensor:
    """A 0-dim float64 tensor that is finite whenever every entry of every leaf of ``tree`` is.

    It is the sum of all entries: one cheap reduction per leaf, no host sync, and it runs under
    ``torch.func.vmap`` (giving one probe per seed). A NaN or ±inf anywhere makes it non-finite;
    so can an overflowing sum of huge finite entries, which is why a non-finite probe is confirmed
    with :func:`nonfinite_leaves` before anything is reported.
    """
    sums = [leaf.sum().to(torch.float64) for leaf in tree_leaves(tree)]
    return torch.stack(sums).sum() if sums else torch.zeros((), dtype=torch.float64)


def nonfinite_leaves(tree: Any) -> list[str]:
    """The key paths (``keystr`` form, e.g. ``"[0][1]"`` or ``"['weight']"``) of the leaves of
    ``tree`` holding a NaN or ±inf. Exact, eager (one host sync per leaf): the slow confirmation
    of a non-finite :func:`finite_probe`."""
    return [keystr(path) for path, leaf in tree_flatten_with_path(tree)[0] if not bool(torch.isfinite(leaf).all())]


# --------------------------------------------------------------------------- hyper-parameters


def _number(opt: str, name: str, value: Any, low: float = 0.0, high: float = math.inf, *, open_low: bool = False,
            open_high: bool = False) -> float:
    """Check one hyper-parameter is a finite real in the interval [low, high] (ends opened as asked)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high or high == math.inf else ']'}"
        raise ConfigError(f"{opt}: {name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def _betas(opt: str, betas: Any) -> tuple[float, float]:
    """Check Adam's (β1, β2) is a pair of numbers in [0, 1)."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ConfigError(f"{opt}: betas must be a pair (beta1, beta2), got {betas!r}")
    return tuple(_number(opt, f"betas[{i}]", b, 0.0, 1.0, open_high=True) for i, b in enumerate(betas))


# Options torch.optim has and progsynth does not; each is accepted only at its inert value
# (None or False), so torch code can be ported keyword for keyword.
_TORCH_ONLY_OPTIONS = {
    "amsgrad": "",
    "maximize": " (negate the loss instead)",
    "foreach": "",
    "fused": "",
    "capturable": "",
    "differentiable": "",
    "decoupled_weight_decay": " (use adamw instead)",
}


def _reject_options(opt: str, options: dict[str, Any], hyper: dict[str, Any]) -> None:
    """Raise ``UnsupportedOptionError`` for any option beyond ``hyper`` that would change the result."""
    for option, value in options.items():
        if option not in _TORCH_ONLY_OPTIONS:
            accepted = ", ".join([*(k for k in hyper if k != "warmup_steps"), "warmup_steps", "check_finite"])
            raise UnsupportedOptionError(f"{opt}: unknown option {option!r}; accepted: {accepted}")
        if value is not None and value is not False:
            raise UnsupportedOptionError(
                f"{opt}: torch.optim option {option}={value!r} is not supported; only its inert "
                f"setting (None or False) is accepted{_TORCH_ONLY_OPTIONS[option]}"
            )


# --------------------------------------------------------------------------- shared update pieces


def _l2(dp: torch.Tensor, p: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """Coupled weight decay: the reverse derivative of the loss plus ½·wd·|p|², i.e. p' − wd·p."""
    return dp if weight_decay == 0 else torch.add(dp, p, alpha=-weight_decay)


def _decoupled_decay(p: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
    """Decoupled weight decay (AdamW): shrink p by (1 − lr·wd) outside the gradient statistics."""
    return p if weight_decay == 0 else p * (1.0 - lr * weight_decay)


def _ema(average: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    """Exponential moving average β·average + (1 − β)·x (torch's lerp form)."""
    return torch.lerp(average, x, 1.0 - beta)


def _accumulate_sq(total: torch.Tensor, x: torch.Tensor, decay: float = 1.0, weight: float = 1.0) -> torch.Tensor:
    """decay·total + weight·x²: Adagrad's sum (1, 1) and Adam's second moment (β2, 1 − β2)."""
    return torch.addcmul(total if decay == 1 else total * decay, x, x, value=weight)


def _no_scalars(step: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For rules whose update does not depend on the step count."""
    return ()


def _warmup_steps(opt: str, hyper: dict[str, Any], warmup_steps: Any) -> int:
    """Check the warm-up length (an int ≥ 0) and record it in ``hyper`` when it is not 0."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 0:
        raise ConfigError(f"{opt}: warmup_steps must be an integer ≥ 0 (0: no warm-up), got {warmup_steps!r}")
    if warmup_steps:
        hyper["warmup_steps"] = int(warmup_steps)
    return int(warmup_steps)


def _warm_lr(lr: float, warmup_steps: int, t: torch.Tensor) -> Any:
    """The step size of put number t (float64 0-dim): lr·min((t − 1)/W, 1) as a tensor, or the
    float lr itself without warm-up (W = 0), so a rule without warm-up computes what it always did."""
    if warmup_steps == 0:
        return lr
    return lr * torch.clamp((t - 1.0) / warmup_steps, max=1.0)


# --------------------------------------------------------------------------- smooth optimizers

LeafUpdate = Callable[
    [torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]],
    tuple[torch.Tensor, tuple[torch.Tensor, ...]],
]


def _float_leaves(opt: str, what: str, tree: Any) -> tuple[list[torch.Tensor], Any]:
    """Flatten ``tree``, checking every leaf is a floating-point tensor."""
    leaves, spec = tree_flatten(tree)
    for i, leaf in enumerate(leaves):
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            raise LensTypeError(
                f"{opt} expects {what} as a pytree of floating-point torch tensors; leaf {i} is "
                f"{type(leaf).__name__}" + (f" of dtype {leaf.dtype}" if hasattr(leaf, "dtype") else "")
            )
    return leaves, spec


@dataclasses.dataclass(frozen=True, eq=False)
class SmoothOptimizer:
    """An optimizer lens over the reals, built from one per-leaf rule (like an optax transformation).

    ``buffers`` maps each state buffer's name to its initialiser (leaf → fresh tensor);
    ``scalars(t)`` turns the step count t = 1, 2, ... (a float64 0-dim tensor) into the
    step-dependent coefficients (bias corrections, decayed rates), computed once per step for all
    leaves; ``update(p, p', buffers, scalars)`` returns the new leaf and its new buffers.
    ``hyper`` records the validated hyper-parameters (for display and run configs;
    ``warmup_steps`` only when it is not 0).
    """

    name: str
    hyper: dict[str, Any]
    buffers: dict[str, Callable[[torch.Tensor], torch.Tensor]]
    scalars: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    update: LeafUpdate
    check_finite: bool = True

    def init(self, params: Any) -> dict[str, Any]:
        """Step count 0 and fresh buffers shaped like ``params``."""
        leaves, spec = _float_leaves(self.name, "parameters", params)
        device = leaves[0].device if leaves else None
        state: dict[str, Any] = {"step": torch.zeros((), dtype=torch.int64, device=device)}
        for buffer, make in self.buffers.items():
            state[buffer] = tree_unflatten([make(p) for p in leaves], spec)
        return state

    def get(self, state: dict[str, Any], params: Any) -> Any:
        """The parameters the model uses: ``params`` itself (Nesterov too; see the module docstring)."""
        return params

    def put(self, state: dict[str, Any], params: Any, dparams: Any) -> tuple[dict[str, Any], Any]:
        """One update from p' (= −∇L with ``learning_rate(1.0)``); returns (new state, new params)."""
        leaves, spec = tree_flatten(params)
        d_leaves, d_spec = tree_flatten(dparams)
        if d_spec != spec:
            raise LensTypeError(f"{self.name}: p' has tree structure {d_spec} but the parameters have {spec}")
        for i, (p, d) in enumerate(zip(leaves, d_leaves)):
            if not isinstance(d, torch.Tensor) or d.shape != p.shape:
                got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                raise LensTypeError(f"{self.name}: p' leaf {i} is {got}, expected a tensor of shape {tuple(p.shape)}")
        if not isinstance(state, dict) or state.keys() != {"step", *self.buffers}:
            raise LensTypeError(
                f"{self.name}: state must be a dict with keys {['step', *self.buffers]} (from {self.name}.init), "
                f"got {list(state) if isinstance(state, dict) else type(state).__name__}"
            )
        if self.check_finite:
            self._check_finite(dparams)

        step = state["step"] + 1
        scalars = self.scalars(step.to(torch.float64))
        by_dtype: dict[torch.dtype, tuple[torch.Tensor, ...]] = {}
        old_buffers = [tree_leaves(state[b]) for b in self.buffers]
        new_leaves, new_buffers = [], [[] for _ in self.buffers]
        for i, (p, d) in enumerate(zip(leaves, d_leaves)):
            if p.dtype not in by_dtype:
                by_dtype[p.dtype] = tuple(s.to(p.dtype) for s in scalars)
            new_p, bufs = self.update(p, d, tuple(b[i] for b in old_buffers), by_dtype[p.dtype])
            new_leaves.append(new_p)
            for acc, b in zip(new_buffers, bufs):
                acc.append(b)
        new_state = {"step": step}
        for buffer, buffer_leaves in zip(self.buffers, new_buffers):
            new_state[buffer] = tree_unflatten(buffer_leaves, spec)
        return new_state, tree_unflatten(new_leaves, spec)

    def _check_finite(self, dparams: Any) -> None:
        probe_is_finite = torch.isfinite(finite_probe(dparams))
        try:
            finite = bool(probe_is_finite)
        except RuntimeError as error:  # bool() of a batched tensor: we are under torch.func.vmap
            raise ConfigError(
                f"{self.name}: check_finite=True needs a host sync, which torch.func.vmap cannot do; "
                f"build the optimizer with check_finite=False and check finite_probe(p') outside vmap"
            ) from error
        if not finite:
            bad = nonfinite_leaves(dparams)
            if bad:
                raise NonFiniteError(
                    f"{self.name}: p' holds NaN or inf in parameter leaf {', '.join(bad)}; the update was "
                    f"not applied (a diverging loss? try a smaller learning rate)"
                )

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.hyper.items())})"


def gd(lr: float, weight_decay: float = 0.0, *, warmup_steps: int = 0, check_finite: bool = True,
       **torch_options: Any) -> SmoothOptimizer:
    """Gradient descent p ← p + lr·(p' − wd·p): ``torch.optim.SGD`` without momentum."""
    hyper = {"lr": _number("gd", "lr", lr, open_low=True),
             "weight_decay": _number("gd", "weight_decay", weight_decay)}
    warmup = _warmup_steps("gd", hyper, warmup_steps)
    _reject_options("gd", torch_options, hyper)
    lr, wd = hyper["lr"], hyper["weight_decay"]

    if warmup == 0:
        def update(p, dp, buffers, scalars):
            return torch.add(p, _l2(dp, p, wd), alpha=lr), ()

        return SmoothOptimizer("gd", hyper, {}, _no_scalars, update, check_finite)

    def warm_scalars(t):
        return (_warm_lr(lr, warmup, t),)

    def warm_update(p, dp, buffers, scalars):
        return torch.addcmul(p, _l2(dp, p, wd), scalars[0]), ()

    return SmoothOptimizer("gd", hyper, {}, warm_scalars, warm_update, check_finite)


def momentum(
    lr: float,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    *,
    warmup_steps: int = 0,
    check_finite: bool = True,
    **torch_options: Any,
) -> SmoothOptimizer:
    """Heavy-ball or Nesterov momentum with ``torch.optim.SGD``'s conventions.

    buf ← γ·buf + (1 − dampening)·p' (the first step sets buf ← p'), then p ← p + lr·buf, or
    p ← p + lr·(p' + γ·buf) with ``nesterov=True`` (torch's form; see the module docstring).
    γ must be positive (for γ = 0 use ``gd``); Nesterov needs dampening 0, as in torch.
    """
    name = "nesterov" if nesterov else "momentum"
    if not isinstance(nesterov, bool):
        raise ConfigError(f"{name}: nesterov must be True or False, got {nesterov!r}")
    hyper = {
        "lr": _number(name, "lr", lr, open_low=True),
        "momentum": _number(name, "momentum", momentum, open_low=True),
        "dampening": _number(name, "dampening", dampening, 0.0, 1.0),
        "nesterov": nesterov,
        "weight_decay": _number(name, "weight_decay", weight_decay),
    }
    if nesterov and hyper["dampening"] != 0:
        raise ConfigError(f"nesterov: dampening must be 0 for Nesterov momentum (as in torch), got {dampening!r}")
    warmup = _warmup_steps(name, hyper, warmup_steps)
    _reject_options(name, torch_options, hyper)
    lr, mu, damp, wd = hyper["lr"], hyper["momentum"], hyper["dampening"], hyper["weight_decay"]

    def scalars(t):  # the weight of p' in the buffer: 1 on the first step (buf ← p'), then 1 − dampening
        weight = (1.0 - damp * (t > 1).to(t.dtype),)
        return weight if warmup == 0 else weight + (_warm_lr(lr, warmup, t),)

    def update(p, dp, buffers, scalars):
        (buf,), (weight, *warm_lr) = buffers, scalars
        dp = _l2(dp, p, wd)
        buf = torch.addcmul(buf * mu, dp, weight)
        direction = torch.add(dp, buf, alpha=mu) if nesterov else buf
        if warm_lr:
            return torch.addcmul(p, direction, warm_lr[0]), (buf,)
        return torch.add(p, direction, alpha=lr), (buf,)

    return SmoothOptimizer(name, hyper, {"momentum_buffer": torch.zeros_like}, scalars, update, check_finite)


def adagrad(
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    warmup_steps: int = 0,
    check_finite: bool = True,
    **torch_options: Any,
) -> SmoothOptimizer:
    """Adagrad with ``torch.optim.Adagrad``'s conventions: G ← G + p'², and
    p ← p + lr_t·p'/(√G + eps) with lr_t = lr / (1 + (t − 1)·lr_decay)."""
    hyper = {
        "lr": _number("adagrad", "lr", lr, open_low=True),
        "lr_decay": _number("adagrad", "lr_decay", lr_decay),
        "weight_decay": _number("adagrad", "weight_decay", weight_decay),
        "initial_accumulator_value": _number("adagrad", "initial_accumulator_value", initial_accumulator_value),
        "eps": _number("adagrad", "eps", eps, open_low=True),
    }
    warmup = _warmup_steps("adagrad", hyper, warmup_steps)
    _reject_options("adagrad", torch_options, hyper)
    lr, decay, wd, eps = hyper["lr"], hyper["lr_decay"], hyper["weight_decay"], hyper["eps"]

    def scalars(t):
        return (_warm_lr(lr, warmup, t) / (1.0 + (t - 1.0) * decay),)

    def update(p, dp, buffers, scalars):
        (total,), (step_lr,) = buffers, scalars
        dp = _l2(dp, p, wd)
        total = _accumulate_sq(total, dp)
        return torch.addcdiv(p, dp * step_lr, total.sqrt() + eps), (total,)

    buffers = {"sum": partial(torch.full_like, fill_value=hyper["initial_accumulator_value"])}
    return SmoothOptimizer("adagrad", hyper, buffers, scalars, update, check_finite)


def _adam_family(name: str, lr: Any, betas: Any, eps: Any, weight_decay: Any, decoupled: bool, check_finite: bool,
                 torch_options: dict[str, Any], warmup_steps: Any = 0) -> SmoothOptimizer:
    """Adam (L2 decay coupled into p') or AdamW (decoupled decay): torch.optim's single-tensor form.

    m ← β1·m + (1 − β1)·p', v ← β2·v + (1 − β2)·p'², and
    p ← p + (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + eps).

    With warm-up, lr is lr_t (module docstring), and the step is written
    p + (lr_t / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + eps) so that lr_t = 0 divides nothing by zero.
    """
    hyper = {
        "lr": _number(name, "lr", lr, open_low=True),
        "betas": _betas(name, betas),
        "eps": _number(name, "eps", eps, open_low=True),
        "weight_decay": _number(name, "weight_decay", weight_decay),
    }
    warmup = _warmup_steps(name, hyper, warmup_steps)
    _reject_options(name, torch_options, hyper)
    lr, (beta1, beta2), eps, wd = hyper["lr"], hyper["betas"], hyper["eps"], hyper["weight_decay"]

    def scalars(t):  # step size lr / (1 − β1ᵗ) and √(1 − β2ᵗ)
        return lr / (1.0 - beta1**t), (1.0 - beta2**t).sqrt()

    def warm_scalars(t):  # as scalars with lr_t, and AdamW's decay factor 1 − lr_t·wd (torch's, in float64)
        step_lr = _warm_lr(lr, warmup, t)
        return step_lr / (1.0 - beta1**t), (1.0 - beta2**t).sqrt(), 1.0 - step_lr * wd

    def warm_update(p, dp, buffers, scalars):
        (exp_avg, exp_avg_sq), (step_size, bias2_sqrt, shrink) = buffers, scalars
        if decoupled:
            p = p if wd == 0 else p * shrink
        else:
            dp = _l2(dp, p, wd)
        exp_avg = _ema(exp_avg, dp, beta1)
        exp_avg_sq = _accumulate_sq(exp_avg_sq, dp, beta2, 1.0 - beta2)
        denom = exp_avg_sq.sqrt().div_(bias2_sqrt).add_(eps)
        return torch.addcdiv(p, exp_avg * step_size, denom), (exp_avg, exp_avg_sq)

    def update(p, dp, buffers, scalars):
        (exp_avg, exp_avg_sq), (step_size, bias2_sqrt) = buffers, scalars
        if decoupled:
            p = _decoupled_decay(p, lr, wd)
        else:
            dp = _l2(dp, p, wd)
        exp_avg = _ema(exp_avg, dp, beta1)
        exp_avg_sq = _accumulate_sq(exp_avg_sq, dp, beta2, 1.0 - beta2)
        # In-place only on tensors made in this call (put stays pure): 4 new full-size tensors
        # per leaf instead of 8, which is what keeps the lens step within 10 % of torch.optim.
        denom = exp_avg_sq.sqrt().div_(bias2_sqrt).add_(eps).div_(step_size)
        return torch.addcdiv(p, exp_avg, denom), (exp_avg, exp_avg_sq)

    buffers = {"exp_avg": torch.zeros_like, "exp_avg_sq": torch.zeros_like}
    if warmup:
        return SmoothOptimizer(name, hyper, buffers, warm_scalars, warm_update, check_finite)
    return SmoothOptimizer(name, hyper, buffers, scalars, update, check_finite)


def adam(
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    warmup_steps: int = 0,
    check_finite: bool = True,
    **torch_options: Any,
) -> SmoothOptimizer:
    """Adam with ``torch.optim.Adam``'s conventions; weight decay is L2 added to the gradient."""
    return _adam_family("adam", lr, betas, eps, weight_decay, False, check_finite, torch_options, warmup_steps)


def adamw(
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    *,
    warmup_steps: int = 0,
    check_finite: bool = True,
    **torch_options: Any,
) -> SmoothOptimizer:
    """AdamW with ``torch.optim.AdamW``'s conventions: p ← p·(1 − lr·wd), then the Adam step."""
    return _adam_family("adamw", lr, betas, eps, weight_decay, True, check_finite, torch_options, warmup_steps)


# --------------------------------------------------------------------------- Boolean optimizer


def _bit_leaves(what: str, tree: Any) -> tuple[list[np.ndarray], Any]:
    """Flatten ``tree``, checking every leaf is a numpy bool or unsigned-integer array."""
    leaves, spec = tree_flatten(tree)
    for i, leaf in enumerate(leaves):
        if not (isinstance(leaf, np.ndarray) and (leaf.dtype == np.bool_ or leaf.dtype.kind == "u")):
            raise LensTypeError(
                f"rda expects {what} as a pytree of numpy bool or unsigned-integer arrays; leaf {i} is "
                f"{type(leaf).__name__}" + (f" of dtype {leaf.dtype}" if hasattr(leaf, "dtype") else "")
            )
    return leaves, spec


class RDA:
    """Reverse Derivative Ascent over Z2 (Wilson & Zanasi 2021): θ ← θ ⊕ p'. Stateless.

    Parameters are numpy arrays of bool, of uint8 0/1 values, or bit-packed unsigned words (one
    wire per bit, as in ``boolean.py``): XOR acts bitwise, so each representation stays closed.
    p' (the error bits pulled back through R[f] by ``error_rate``) must match θ in dtype and shape.
    """

    name = "rda"

    def init(self, params: Any) -> tuple:
        """No state: checks the parameters are bit arrays and returns ``()``."""
        _bit_leaves("parameters", params)
        return ()

    def get(self, state: tuple, params: Any) -> Any:
        """The parameters the circuit uses: θ itself."""
        return params

    def put(self, state: tuple, params: Any, dparams: Any) -> tuple[tuple, Any]:
        """θ ⊕ p', as new arrays."""
        leaves, spec = _bit_leaves("parameters", params)
        d_leaves, d_spec = _bit_leaves("p'", dparams)
        if d_spec != spec:
            raise LensTypeError(f"rda: p' has tree structure {d_spec} but the parameters have {spec}")
        for i, (p, d) in enumerate(zip(leaves, d_leaves)):
            if p.dtype != d.dtype or p.shape != d.shape:
                raise LensTypeError(
                    f"rda: p' leaf {i} is {d.dtype}{list(d.shape)}, expected {p.dtype}{list(p.shape)} like θ"
                )
        return (), tree_unflatten([np.bitwise_xor(p, d) for p, d in zip(leaves, d_leaves)], spec)

    def __repr__(self) -> str:
        return "rda()"


def rda() -> RDA:
    """The Reverse Derivative Ascent optimizer lens over Z2."""
    return RDA()


# --------------------------------------------------------------------------- by name


def _sgd(lr: float, **hyper: Any) -> SmoothOptimizer:
    """``torch.optim.SGD``'s keywords: ``gd`` when momentum is 0 (its default; dampening then has
    no effect, as in torch), the ``momentum`` lens otherwise."""
    if hyper.get("momentum", 0.0) == 0 and not hyper.get("nesterov", False):
        for unused in ("momentum", "dampening", "nesterov"):
            hyper.pop(unused, None)
        return gd(lr, **hyper)
    return momentum(lr, **hyper)


_FACTORIES: dict[str, Callable[..., Optimizer]] = {
    "gd": gd,
    "sgd": _sgd,
    "momentum": momentum,
    "nesterov": partial(momentum, nesterov=True),
    "adagrad": adagrad,
    "adam": adam,
    "adamw": adamw,
    "rda": rda,
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(_FACTORIES)
"""The names :func:`optimizer_from_name` accepts."""


def optimizer_from_name(name: str, **hyper: Any) -> Optimizer:
    """Build an optimizer from its name (``OPTIMIZER_NAMES``) and hyper-parameters, as a config does.

    ``"sgd"`` takes ``torch.optim.SGD``'s keywords; ``"nesterov"`` is ``momentum(nesterov=True)``.
    """
    factory = _FACTORIES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise UnsupportedOptionError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}")
    try:
        inspect.signature(factory).bind(**hyper)
    except TypeError as error:
        raise ConfigError(f"optimizer {name!r}: {error}") from None
    return factory(**hyper)
