"""Optimizers as lenses (S × P, S × P) → (P, P') (REFERENCE §1), in the style of optax.

An optimizer is a lens with state, given by three pure functions:

    init(params)                 -> state
    get(state, params)           -> the parameters the model uses this step
    put(state, params, p')       -> (new state, new params)

p' is what the rate lens puts back through the model (see ``learner.py``): with the default
``learning_rate(1.0)`` it is −∇L, so every rule here moves *along* p'. Like torch.optim, each
smooth optimizer holds its own step size: ``gd(lr)`` puts p + lr·p', and the paper's literal
"p + p'" is ``gd(1.0)`` with ``learning_rate(ε)``.

**Named composites.** Every smooth optimizer here is a chain of gradient transformations from
``core.transforms`` (optax's ``chain``, written with ``>>``) with a name and torch.optim's
hyper-parameters: gd is ``weight_decay(wd) >> scale(-lr)``, momentum and nesterov
``weight_decay(wd) >> momentum_trace(γ, dampening, nesterov) >> scale(-lr)``, adagrad
``weight_decay(wd) >> adagrad_moments(eps, G₀) >> inverse_time(lr_decay) >> scale(-lr)``, adam
``weight_decay(wd) >> adam_moments(β1, β2, eps) >> scale(-lr)`` and adamw
``adam_moments(β1, β2, eps) >> weight_decay(wd) >> scale(-lr)`` (parts with wd = 0 or lr_decay = 0
left out; warm-up adds ``linear_warmup(W)`` before the scale). ``opt.expression`` shows the chain,
and ``clip(1.0) >> adamw(1e-3)`` extends one. A chain transforms the gradient −p', as optax's
does, hence ``scale(-lr)``; the named optimizers move along p' as before (``core.transforms``).

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
W = 0 (the default) leaves every rule as it was, operation for operation. It is the chain's
``linear_warmup(W)``; other schedules (cosine, step, warmup_cosine) are chains of ``core.transforms``.

**Purity and vmap.** ``put`` only builds new tensors (in-place ops only on tensors it made in the same
call, none that autograd saved), no ``.item()``, no ``torch._foreach_*``. So the whole step runs
under ``torch.func.vmap`` over a stack of seeds, and ``torch.func.grad`` can differentiate through it.

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

import inspect
from functools import partial
from typing import Any, Callable, Protocol

import numpy as np
from torch.utils._pytree import tree_flatten, tree_unflatten

from progsynth.core import transforms as T
from progsynth.core.transforms import (  # noqa: F401  (re-exported; _float_leaves is shared with core.learned)
    SmoothOptimizer,
    _float_leaves,
    _integer,
    _number,
    finite_probe,
    nonfinite_leaves,
)
from progsynth.errors import ConfigError, LensTypeError, UnsupportedOptionError

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


# --------------------------------------------------------------------------- hyper-parameters


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


# --------------------------------------------------------------------------- named composites


def _warmup_steps(opt: str, hyper: dict[str, Any], warmup_steps: Any) -> int:
    """Check the warm-up length (an int ≥ 0) and record it in ``hyper`` when it is not 0."""
    warmup_steps = _integer(opt, "warmup_steps", warmup_steps, 0, " (0: no warm-up)")
    if warmup_steps:
        hyper["warmup_steps"] = warmup_steps
    return warmup_steps


def _named(name: str, hyper: dict[str, Any], body: list[T.Transform], warmup: int, check_finite: bool,
           schedules: tuple[T.Transform, ...] = ()) -> SmoothOptimizer:
    """The chain body >> schedules >> [linear_warmup(W)] >> scale(−lr), named and with its hyper."""
    warm = [T.linear_warmup(warmup)] if warmup else []
    return SmoothOptimizer(name, hyper, (*body, *schedules, *warm, T.scale(-hyper["lr"])), check_finite)


def gd(lr: float, weight_decay: float = 0.0, *, warmup_steps: int = 0, check_finite: bool = True,
       **torch_options: Any) -> SmoothOptimizer:
    """Gradient descent p ← p + lr·(p' − wd·p): ``torch.optim.SGD`` without momentum.
    The chain ``weight_decay(wd) >> scale(-lr)``."""
    hyper = {"lr": _number("gd", "lr", lr, open_low=True),
             "weight_decay": _number("gd", "weight_decay", weight_decay)}
    warmup = _warmup_steps("gd", hyper, warmup_steps)
    _reject_options("gd", torch_options, hyper)
    wd = hyper["weight_decay"]
    return _named("gd", hyper, [T.weight_decay(wd)] if wd else [], warmup, check_finite)


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
    The chain ``weight_decay(wd) >> momentum_trace(γ, dampening, nesterov) >> scale(-lr)``.
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
    wd = hyper["weight_decay"]
    body = [T.weight_decay(wd)] if wd else []
    body.append(T.momentum_trace(hyper["momentum"], hyper["dampening"], nesterov))
    return _named(name, hyper, body, warmup, check_finite)


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
    p ← p + lr_t·p'/(√G + eps) with lr_t = lr / (1 + (t − 1)·lr_decay). The chain
    ``weight_decay(wd) >> adagrad_moments(eps, initial_accumulator_value) >> inverse_time(lr_decay)
    >> scale(-lr)``."""
    hyper = {
        "lr": _number("adagrad", "lr", lr, open_low=True),
        "lr_decay": _number("adagrad", "lr_decay", lr_decay),
        "weight_decay": _number("adagrad", "weight_decay", weight_decay),
        "initial_accumulator_value": _number("adagrad", "initial_accumulator_value", initial_accumulator_value),
        "eps": _number("adagrad", "eps", eps, open_low=True),
    }
    warmup = _warmup_steps("adagrad", hyper, warmup_steps)
    _reject_options("adagrad", torch_options, hyper)
    wd, decay = hyper["weight_decay"], hyper["lr_decay"]
    body = [T.weight_decay(wd)] if wd else []
    body.append(T.adagrad_moments(hyper["eps"], hyper["initial_accumulator_value"]))
    return _named("adagrad", hyper, body, warmup, check_finite, (T.inverse_time(decay),) if decay else ())


def _adam_family(name: str, lr: Any, betas: Any, eps: Any, weight_decay: Any, decoupled: bool, check_finite: bool,
                 torch_options: dict[str, Any], warmup_steps: Any = 0) -> SmoothOptimizer:
    """Adam (L2 decay coupled into p') or AdamW (decoupled decay): torch.optim's single-tensor form.

    m ← β1·m + (1 − β1)·p', v ← β2·v + (1 − β2)·p'², and
    p ← p + (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + eps).

    Adam is the chain ``weight_decay(wd) >> adam_moments(β1, β2, eps) >> scale(-lr)``, AdamW
    ``adam_moments(β1, β2, eps) >> weight_decay(wd) >> scale(-lr)``: decay after the moments is
    decoupled, p·(1 − lr·wd) (``core.transforms`` runs it fused, in torch's order).
    """
    hyper = {
        "lr": _number(name, "lr", lr, open_low=True),
        "betas": _betas(name, betas),
        "eps": _number(name, "eps", eps, open_low=True),
        "weight_decay": _number(name, "weight_decay", weight_decay),
    }
    warmup = _warmup_steps(name, hyper, warmup_steps)
    _reject_options(name, torch_options, hyper)
    wd = hyper["weight_decay"]
    decay = [T.weight_decay(wd)] if wd else []
    moments = [T.adam_moments(*hyper["betas"], hyper["eps"])]
    return _named(name, hyper, moments + decay if decoupled else decay + moments, warmup, check_finite)


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

    def __rshift__(self, other: Any) -> Any:
        """Refused: RDA acts on bits, and no gradient transformation applies to it (LensTypeError)."""
        raise T._refuse(self)

    __rrshift__ = __rshift__

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
