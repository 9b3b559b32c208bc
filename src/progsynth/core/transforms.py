"""Gradient transformations, composed with ``>>`` into optimizer lenses (optax's ``chain``).

A gradient transformation maps an update u to a new update, keeping per-parameter buffers and
reading the step count. Composing them gives a :class:`SmoothOptimizer`, an optimizer lens over
the reals with the protocol of ``core.optim`` (``init`` / ``get`` / ``put``)::

    opt = clip(1.0) >> adam_moments(0.9, 0.98) >> warmup_cosine(10, 1000) >> scale(-1e-3)
    state = opt.init(params)
    state, params = opt.put(state, params, p_prime)

The six named optimizers of ``core.optim`` are such chains (``adamw(lr, betas, eps, wd)`` is
``adam_moments(*betas, eps) >> weight_decay(wd) >> scale(-lr)``).

**Sign convention (optax's).** The chain transforms the *gradient*: u starts as u₀ = −p', which is
∇L with the learner's default ``learning_rate(1.0)`` (p' is what the rate lens puts back, −∇L; see
``learner.py``), each transformation maps u to its next value in the order written, and ``put``
returns p + u. So a chain ends with ``scale(-lr)``, lr > 0, and descends, as in optax. Bookkeeping:
every transformation here except ``weight_decay`` is odd (T(−u) = −T(u), buffers linear in u
negated, squares unchanged) and ``weight_decay`` is affine, so the engine runs the chain on p' = −u
itself and subtracts at the end, saving one negation per leaf and step; buffers linear in the
signal (``momentum_buffer``, ``exp_avg``) therefore hold the negatives of torch's and optax's, as
``core.optim`` documents for its state. The parameters are those of the u form (negation is exact in
floating point, tests/core/test_transforms.py checks the two forms agree).

**The transformations** (each reproduces its torch counterpart to 1e-6 over 200 steps):

- ``weight_decay(wd)``: u ← u + wd·p. Where it stands decides what it is: before a moment
  transformation it is coupled L2 decay (torch ``Adam(weight_decay=wd)``: the gradient gains
  wd·p), after it decoupled decay (``AdamW``: the final step gains −lr·wd·p, i.e. p·(1 − lr·wd)).
- ``clip(max_norm)``: u ← u·min(1, max_norm / (‖u‖ + 1e-6)), ‖u‖ the global 2-norm over every
  leaf: ``torch.nn.utils.clip_grad_norm_`` (its 1e-6 included).
- ``momentum_trace(momentum, dampening, nesterov)``: torch ``SGD``'s buffer, buf ← γ·buf +
  (1 − dampening)·u (the first step sets buf ← u), then u ← buf, or u + γ·buf with Nesterov.
- ``adagrad_moments(eps, initial_accumulator_value)``: G ← G + u², u ← u / (√G + eps) (torch
  ``Adagrad``).
- ``adam_moments(b1, b2, eps)``: m ← β1·m + (1 − β1)·u, v ← β2·v + (1 − β2)·u², and
  u ← (m / (1 − β1ᵗ)) / (√v / √(1 − β2ᵗ) + eps) (torch ``Adam``).
- ``scale(factor)``: u ← factor·u.
- Schedules, u ← s(k)·u at the k-th put (k = 0, 1, ...; the state's step count minus one), which is
  torch's ``lr_scheduler`` stepped after each ``optimizer.step()``: ``linear_warmup(steps, start)``
  (s = start + (1 − start)·min(k / steps, 1); ``LinearLR``, and with start 0 the paper's
  ``LambdaLR(lambda k: min(k / steps, 1))``), ``cosine(decay_steps, alpha)`` (from 1 to alpha
  along half a cosine over decay_steps, then alpha: ``CosineAnnealingLR(T_max=decay_steps,
  eta_min=alpha·lr)`` up to T_max, after which torch's rises again and ours stays, as optax's
  ``cosine_decay_schedule``), ``step_decay(step_size, gamma)`` (gamma^⌊k / step_size⌋;
  ``StepLR``), ``warmup_cosine(warmup_steps, decay_steps, alpha, start)`` (linear_warmup, then
  cosine; decay_steps is the whole length, warm-up included, as optax's
  ``warmup_cosine_decay_schedule``) and ``inverse_time(decay)`` (1 / (1 + k·decay); Adagrad's
  ``lr_decay``). A schedule is a factor: the learning rate itself is the final ``scale(-lr)``.

**What composes.** ``>>`` accepts gradient transformations and smooth optimizers (chains) on
either side, and checks two things at once (``LensTypeError``): that every part is a smooth
gradient transformation (the Boolean ``rda()`` acts on bits with error bits as p', and no
transformation here applies to it), and that no two parts keep a state buffer of the same name
(the state is a dict keyed by buffer names, as torch.optim names them, so each buffer has one
owner: two ``adam_moments`` in one chain are refused). Completeness is checked when the chain is
used (``init``, ``put``) or built with :func:`chain` or :func:`parse_chain` (``ConfigError``): a
chain must end with ``scale(c)``, c < 0, because without a final step size its output is in the
units of a gradient, not of a parameter step, and c > 0 would ascend the loss.

**State.** ``{"step": int64 count of puts, buffer name: pytree like the parameters, ...}``, the
buffers in the order of the chain (names as torch.optim's: ``momentum_buffer``, ``sum``,
``exp_avg``, ``exp_avg_sq``), so a named optimizer's state is what it always was.

**Fusion.** ``put`` walks the chain once per step, all leaves per transformation. Multiplicative
transformations (``scale``, schedules, ``clip``) are never applied as passes over the tensors: they
multiply one pending scalar coefficient, which the next per-leaf transformation folds in, and the
trailing ones become the coefficient of the final p + k·u. The last per-leaf transformation is fused
with that final step where it has a fused form (``adam_moments``, ``adagrad_moments``), and a
``weight_decay`` right after it becomes torch's decoupled p·(1 − lr·wd). So a chain spelled like a
named optimizer runs the same kernel, operation for operation, as that optimizer always did (the
Adam kernel stays within 10 % of torch.optim, ``benchmarks/core.py``), and any chain is correct:
the unfused path (``SmoothOptimizer.unfused()``) is tested equal to the fused one.

**Purity, vmap, differentiation.** ``put`` builds new tensors (in-place ops only on tensors it made
in the same call, none whose value autograd saved), never calls ``.item()``, and branches only on
the chain's structure, so a step runs under ``torch.func.vmap`` over seeds and ``torch.func.grad``
differentiates through it.

**Finite check.** With ``check_finite=True`` (the default) ``put`` refuses a p' holding NaN or inf
with ``NonFiniteError`` naming the optimizer and the parameter leaf, at one sum per leaf and one
host sync per step (:func:`finite_probe`); under vmap build with ``check_finite=False`` and check
``finite_probe(p')`` outside (see ``core.optim``).

**From text.** :func:`parse_chain` reads an expression such as
``"clip(1.0) >> adam_moments(0.9, 0.98) >> scale(-1e-3)"`` (the run config's ``optim.chain``): it
is parsed with ``ast``, never evaluated; only the names in :data:`TRANSFORMS`, called with literal
numbers (and true/false) are accepted. ``repr`` of a chain is such an expression, and parses back
to the same chain.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import numbers
from functools import partial
from typing import Any, Callable

import torch
from torch.utils._pytree import keystr, tree_flatten, tree_flatten_with_path, tree_leaves, tree_unflatten

from progsynth.errors import ConfigError, LensTypeError, NonFiniteError

__all__ = [
    "Transform",
    "SmoothOptimizer",
    "chain",
    "parse_chain",
    "TRANSFORMS",
    "weight_decay",
    "clip",
    "momentum_trace",
    "adagrad_moments",
    "adam_moments",
    "scale",
    "linear_warmup",
    "cosine",
    "step_decay",
    "warmup_cosine",
    "inverse_time",
    "finite_probe",
    "nonfinite_leaves",
]


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


# --------------------------------------------------------------------------- argument checks


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


def _integer(opt: str, name: str, value: Any, low: int, note: str = "") -> int:
    """Check one hyper-parameter is an integer ≥ low (a step count: warm-up, decay, step size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{opt}: {name} must be an integer ≥ {low}{note}, got {value!r}")
    return int(value)


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


# --------------------------------------------------------------------------- transformations

# A per-leaf rule, in the engine's p' frame (module docstring): (p, d, buffers, scalars) -> (d, buffers).
LeafUpdate = Callable[
    [torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], tuple[Any, ...]],
    tuple[torch.Tensor, tuple[torch.Tensor, ...]],
]
# A per-leaf rule fused with the final step p + k·u: (p, d, buffers, scalars) -> (new p, buffers).
FinalUpdate = LeafUpdate
# The fused rule's per-step scalars from the step count t and the final coefficient −k.
FinalScalars = Callable[[torch.Tensor, Any], tuple[Any, ...]]


def _no_scalars(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For rules whose update does not depend on the step count."""
    return ()


@dataclasses.dataclass(frozen=True, eq=False)
class Transform:
    """One gradient transformation (build it with the factories of this module).

    ``kind`` is "leaf" (a per-leaf rule with buffers: ``update(p, d, buffers, scalars)``, the
    scalars from ``scalars(t)`` once per step, t = 1, 2, ... a float64 0-dim tensor), "factor"
    (u ← s·u: ``factor`` is a float, or a function of t for a schedule) or "clip" (u ← s·u with s a
    function of the global norm of u: ``factor(norm)``). ``fused(constant)``, where given, returns
    the leaf rule fused with the final step p + k·u, for a constant k (a float) or a step-dependent
    one (a tensor). ``args`` are the validated arguments, in signature order, for ``repr``.
    """

    name: str
    args: tuple[Any, ...]
    kind: str
    buffers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = dataclasses.field(default_factory=dict)
    scalars: Callable[[torch.Tensor], tuple[Any, ...]] = _no_scalars
    update: LeafUpdate | None = None
    fused: Callable[[bool], tuple[FinalScalars, FinalUpdate]] | None = None
    factor: float | Callable[[torch.Tensor], torch.Tensor] | None = None

    def __rshift__(self, other: Any) -> SmoothOptimizer:
        return _compose(self, other)

    def __rrshift__(self, other: Any) -> SmoothOptimizer:
        return _compose(other, self)

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(repr(a) for a in self.args)})"


def weight_decay(wd: float) -> Transform:
    """u ← u + wd·p: coupled L2 decay before a moment transformation, decoupled (AdamW) after one."""
    wd = _number("weight_decay", "wd", wd)

    def update(p, d, buffers, scalars):
        return (d if wd == 0 else torch.add(d, p, alpha=-wd)), ()

    return Transform("weight_decay", (wd,), "leaf", update=update)


def clip(max_norm: float) -> Transform:
    """u ← u·min(1, max_norm / (‖u‖ + 1e-6)) over all leaves: ``torch.nn.utils.clip_grad_norm_``."""
    max_norm = _number("clip", "max_norm", max_norm, open_low=True)

    def factor(norm: torch.Tensor) -> torch.Tensor:
        return torch.clamp(max_norm / (norm + 1e-6), max=1.0)

    return Transform("clip", (max_norm,), "clip", factor=factor)


def momentum_trace(momentum: float = 0.9, dampening: float = 0.0, nesterov: bool = False) -> Transform:
    """torch ``SGD``'s momentum buffer: buf ← γ·buf + (1 − dampening)·u (first step buf ← u), then
    u ← buf, or u + γ·buf with Nesterov (torch's form; see ``core.optim``). γ > 0; Nesterov needs
    dampening 0, as in torch."""
    if not isinstance(nesterov, bool):
        raise ConfigError(f"momentum_trace: nesterov must be True or False, got {nesterov!r}")
    mu = _number("momentum_trace", "momentum", momentum, open_low=True)
    damp = _number("momentum_trace", "dampening", dampening, 0.0, 1.0)
    if nesterov and damp != 0:
        raise ConfigError(f"momentum_trace: dampening must be 0 for Nesterov momentum (as in torch), got {dampening!r}")

    def scalars(t):  # the weight of u in the buffer: 1 on the first step (buf ← u), then 1 − dampening
        return (1.0 - damp * (t > 1).to(t.dtype),)

    def update(p, d, buffers, scalars):
        (buf,), (weight,) = buffers, scalars
        buf = torch.addcmul(buf * mu, d, weight)
        return (torch.add(d, buf, alpha=mu) if nesterov else buf), (buf,)

    return Transform("momentum_trace", (mu, damp, nesterov), "leaf", {"momentum_buffer": torch.zeros_like},
                     scalars, update)


def adagrad_moments(eps: float = 1e-10, initial_accumulator_value: float = 0.0) -> Transform:
    """torch ``Adagrad``'s scaling: G ← G + u², u ← u / (√G + eps)."""
    eps = _number("adagrad_moments", "eps", eps, open_low=True)
    initial = _number("adagrad_moments", "initial_accumulator_value", initial_accumulator_value)

    def update(p, d, buffers, scalars):
        total = torch.addcmul(buffers[0], d, d)
        return d / total.pow(0.5).add_(eps), (total,)

    def fused(constant: bool) -> tuple[FinalScalars, FinalUpdate]:
        def final_scalars(t, neg_k):
            return (neg_k,)

        def final(p, d, buffers, scalars):  # torch's addcdiv(p, d·lr_t, √G + eps)
            total = torch.addcmul(buffers[0], d, d)
            return torch.addcdiv(p, d * scalars[0], total.pow(0.5).add_(eps)), (total,)

        return final_scalars, final

    return Transform("adagrad_moments", (eps, initial), "leaf",
                     {"sum": partial(torch.full_like, fill_value=initial)}, update=update, fused=fused)


def adam_moments(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    """torch ``Adam``'s scaling: m ← β1·m + (1 − β1)·u, v ← β2·v + (1 − β2)·u², and
    u ← (m / (1 − β1ᵗ)) / (√v / √(1 − β2ᵗ) + eps)."""
    b1 = _number("adam_moments", "b1", b1, 0.0, 1.0, open_high=True)
    b2 = _number("adam_moments", "b2", b2, 0.0, 1.0, open_high=True)
    eps = _number("adam_moments", "eps", eps, open_low=True)

    def moments(d, buffers):
        exp_avg = torch.lerp(buffers[0], d, 1.0 - b1)  # torch's lerp form of the moving average
        exp_avg_sq = torch.addcmul(buffers[1] * b2, d, d, value=1.0 - b2)
        return exp_avg, exp_avg_sq

    def scalars(t):  # 1 − β1ᵗ and √(1 − β2ᵗ)
        return 1.0 - b1**t, (1.0 - b2**t).sqrt()

    def update(p, d, buffers, scalars):
        (bias1, bias2_sqrt), (exp_avg, exp_avg_sq) = scalars, moments(d, buffers)
        # x.pow(0.5) is √x bit for bit, and unlike sqrt autograd does not save its output, so the
        # in-place ops on this fresh tensor keep put differentiable.
        denom = exp_avg_sq.pow(0.5).div_(bias2_sqrt).add_(eps).mul_(bias1)
        return exp_avg / denom, (exp_avg, exp_avg_sq)

    def fused(constant: bool) -> tuple[FinalScalars, FinalUpdate]:
        def final_scalars(t, neg_k):  # step size lr_t / (1 − β1ᵗ) and √(1 − β2ᵗ)
            return neg_k / (1.0 - b1**t), (1.0 - b2**t).sqrt()

        def final(p, d, buffers, scalars):
            (step_size, bias2_sqrt), (exp_avg, exp_avg_sq) = scalars, moments(d, buffers)
            # In-place only on tensors made in this call: 4 new full-size tensors per leaf
            # instead of 8, which is what keeps the lens step within 10 % of torch.optim.
            denom = exp_avg_sq.pow(0.5).div_(bias2_sqrt).add_(eps).div_(step_size)
            return torch.addcdiv(p, exp_avg, denom), (exp_avg, exp_avg_sq)

        def final_scheduled(p, d, buffers, scalars):  # written so that a step size 0 divides nothing by 0
            (step_size, bias2_sqrt), (exp_avg, exp_avg_sq) = scalars, moments(d, buffers)
            denom = exp_avg_sq.pow(0.5).div_(bias2_sqrt).add_(eps)
            return torch.addcdiv(p, exp_avg * step_size, denom), (exp_avg, exp_avg_sq)

        return final_scalars, (final if constant else final_scheduled)

    return Transform("adam_moments", (b1, b2, eps), "leaf", {"exp_avg": torch.zeros_like,
                                                             "exp_avg_sq": torch.zeros_like},
                     scalars, update, fused)


def scale(factor: float) -> Transform:
    """u ← factor·u. A chain ends with ``scale(-lr)``: the step size, negative to descend."""
    ok = isinstance(factor, numbers.Real) and not isinstance(factor, bool) and math.isfinite(factor) and factor != 0
    if not ok:
        raise ConfigError(f"scale: factor must be a finite nonzero number (scale(-lr) descends), got {factor!r}")
    return Transform("scale", (float(factor),), "factor", factor=float(factor))


def _schedule(name: str, args: tuple[Any, ...], factor: Callable[[torch.Tensor], torch.Tensor] | float) -> Transform:
    return Transform(name, args, "factor", factor=factor)


def linear_warmup(steps: int, start: float = 0.0) -> Transform:
    """s(k) = start + (1 − start)·min(k / steps, 1): torch ``LinearLR(start_factor=start,
    total_iters=steps)``; with start 0 (the first step has lr 0) ``LambdaLR(lambda k: min(k / steps,
    1))``, the paper's warm-up. steps = 0: no warm-up."""
    steps = _integer("linear_warmup", "steps", steps, 0, " (0: no warm-up)")
    start = _number("linear_warmup", "start", start, 0.0, 1.0)
    if steps == 0:
        return _schedule("linear_warmup", (steps, start), 1.0)

    def factor(t):
        ramp = torch.clamp((t - 1.0) / steps, max=1.0)
        return ramp if start == 0 else start + (1.0 - start) * ramp

    return _schedule("linear_warmup", (steps, start), factor)


def _cosine_factor(k: torch.Tensor, decay_steps: int, alpha: float) -> torch.Tensor:
    """From 1 at k = 0 to alpha at k = decay_steps along half a cosine, then alpha."""
    half = 0.5 * (1.0 + torch.cos(math.pi * torch.clamp(k, 0.0, decay_steps) / decay_steps))
    return half if alpha == 0 else alpha + (1.0 - alpha) * half


def cosine(decay_steps: int, alpha: float = 0.0) -> Transform:
    """s(k) = alpha + (1 − alpha)·(1 + cos(π·min(k, decay_steps) / decay_steps)) / 2: torch
    ``CosineAnnealingLR(T_max=decay_steps, eta_min=alpha·lr)`` for k ≤ T_max; after it ours stays at
    alpha (optax's ``cosine_decay_schedule``) where torch's periodic schedule rises again."""
    decay_steps = _integer("cosine", "decay_steps", decay_steps, 1)
    alpha = _number("cosine", "alpha", alpha, 0.0, 1.0)
    return _schedule("cosine", (decay_steps, alpha), lambda t: _cosine_factor(t - 1.0, decay_steps, alpha))


def step_decay(step_size: int, gamma: float = 0.1) -> Transform:
    """s(k) = gamma^⌊k / step_size⌋: torch ``StepLR(step_size, gamma)``."""
    step_size = _integer("step_decay", "step_size", step_size, 1)
    gamma = _number("step_decay", "gamma", gamma, 0.0, 1.0, open_low=True)
    return _schedule("step_decay", (step_size, gamma), lambda t: gamma ** torch.floor((t - 1.0) / step_size))


def warmup_cosine(warmup_steps: int, decay_steps: int, alpha: float = 0.0, start: float = 0.0) -> Transform:
    """Linear warm-up from start to 1 over warmup_steps, then cosine from 1 to alpha until
    decay_steps, the schedule's whole length (warm-up included, as optax's
    ``warmup_cosine_decay_schedule``), then alpha. torch: ``SequentialLR([LinearLR(start,
    total_iters=warmup_steps), CosineAnnealingLR(decay_steps − warmup_steps, alpha·lr)],
    milestones=[warmup_steps])``."""
    warmup_steps = _integer("warmup_cosine", "warmup_steps", warmup_steps, 0, " (0: no warm-up)")
    decay_steps = _integer("warmup_cosine", "decay_steps", decay_steps, 1)
    if decay_steps <= warmup_steps:
        raise ConfigError(f"warmup_cosine: decay_steps (the whole schedule, warm-up included) must exceed "
                          f"warmup_steps = {warmup_steps}, got {decay_steps}")
    alpha = _number("warmup_cosine", "alpha", alpha, 0.0, 1.0)
    start = _number("warmup_cosine", "start", start, 0.0, 1.0)
    cosine_steps = decay_steps - warmup_steps

    def factor(t):
        k = t - 1.0
        decay = _cosine_factor(k - warmup_steps, cosine_steps, alpha)
        if warmup_steps == 0:
            return decay
        return torch.where(k < warmup_steps, start + (1.0 - start) * (k / warmup_steps), decay)

    return _schedule("warmup_cosine", (warmup_steps, decay_steps, alpha, start), factor)


def inverse_time(decay: float) -> Transform:
    """s(k) = 1 / (1 + k·decay): torch ``Adagrad``'s ``lr_decay``."""
    decay = _number("inverse_time", "decay", decay)
    return _schedule("inverse_time", (decay,), lambda t: 1.0 / (1.0 + (t - 1.0) * decay))


TRANSFORMS: dict[str, Callable[..., Transform]] = {
    f.__name__: f
    for f in (weight_decay, clip, momentum_trace, adagrad_moments, adam_moments, scale, linear_warmup, cosine,
              step_decay, warmup_cosine, inverse_time)
}
"""The transformations by name: what :func:`parse_chain` (and ``optim.chain`` in a run config) accepts."""


# --------------------------------------------------------------------------- the composite lens


def _times(a: Any, b: Any) -> Any:
    """a·b for coefficients that are floats or float64 tensors, skipping a multiplication by 1.0."""
    if isinstance(a, float) and a == 1.0:
        return b
    return a * b


def _cast(values: tuple[Any, ...], dtype: torch.dtype, cache: dict) -> tuple[Any, ...]:
    """``values`` with each tensor in ``dtype`` (floats left as they are), cast once per dtype."""
    if dtype not in cache:
        cache[dtype] = tuple(v.to(dtype) if isinstance(v, torch.Tensor) else v for v in values)
    return cache[dtype]


def _global_norm(leaves: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm over all entries of all leaves, float64 (per-leaf norms in the leaves' dtype)."""
    if not leaves:
        return torch.zeros((), dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d).to(torch.float64) for d in leaves]))


def _generic_final(op: Transform | None, constant: bool) -> tuple[FinalScalars, FinalUpdate]:
    """The final step p + k·u after ``op``'s unfused rule (or after nothing: ``op`` None)."""
    own = op.scalars if op is not None else _no_scalars

    def final_scalars(t, neg_k):
        return (*own(t), neg_k)

    def final(p, d, buffers, scalars):
        if op is not None:
            d, buffers = op.update(p, d, buffers, scalars[:-1])
        if constant:
            return torch.add(p, d, alpha=scalars[-1]), buffers
        return torch.addcmul(p, d, scalars[-1]), buffers

    return final_scalars, final


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How ``put`` runs a chain: the transformations before the final one, the final per-leaf rule
    (fused with p + k·u), the decoupled decay folded into it, and the trailing factors giving k."""

    buffers: tuple[str, ...]
    prefix: tuple[Transform, ...]
    final_op: Transform | None
    final_scalars: FinalScalars
    final: FinalUpdate
    decoupled_decay: float
    tail: tuple[Transform, ...]
    incomplete: str | None


def _compile(transforms: tuple[Transform, ...], fuse: bool) -> _Plan:
    """The plan of the module docstring's "Fusion" (``fuse=False``: every transformation on its own)."""
    owners: dict[str, Transform] = {}
    for op in transforms:
        for buffer in op.buffers:
            if buffer in owners:
                raise LensTypeError(
                    f"{owners[buffer]!r} and {op!r} both keep the state buffer {buffer!r}; a chain's state has one "
                    f"buffer of each name, so use each moment transformation once")
            owners[buffer] = op
    incomplete = None
    last = transforms[-1] if transforms else None
    if last is None or last.name != "scale":
        shown = " >> ".join(map(repr, transforms))
        incomplete = ("a chain must end with scale(-lr), lr > 0, the step size that turns the transformed gradient "
                      "into a parameter step; "
                      + (f"{shown[:200]!r} ends with {last!r}" if shown else "this one is empty"))
    elif last.args[0] > 0:
        incomplete = (f"a chain transforms the gradient and must end with a negative scale(-lr) to descend; "
                      f"{last!r} would ascend the loss (write {scale(-last.args[0])!r})")

    leaf_at = [i for i, op in enumerate(transforms) if op.kind == "leaf"]
    end = leaf_at[-1] if leaf_at else -1  # the last per-leaf rule; only factors after it fold into k
    if not fuse:  # one pass per transformation, then p − u: the reference for the fused plan
        return _Plan(tuple(owners), transforms, None, *_generic_final(None, True), 0.0, (), incomplete)
    if any(op.kind == "clip" for op in transforms[end + 1:]):  # its norm needs the last rule's output
        return _Plan(tuple(owners), transforms, None, *_generic_final(None, False), 0.0, (), incomplete)
    final_at, decay = end, 0.0
    if end >= 1 and transforms[end].name == "weight_decay" and transforms[end - 1].kind == "leaf":
        final_at, decay = end - 1, transforms[end].args[0]  # decoupled: p·(1 − lr_t·wd) (module docstring)
    tail = transforms[end + 1:]
    constant = all(isinstance(op.factor, float) for op in tail)
    op = transforms[final_at] if final_at >= 0 else None
    finals = op.fused(constant) if op is not None and op.fused is not None else _generic_final(op, constant)
    return _Plan(tuple(owners), transforms[:max(final_at, 0)], op, *finals, decay, tail, incomplete)


def _refuse(x: Any) -> LensTypeError:
    """The error for composing something that is not a smooth gradient transformation."""
    if getattr(x, "name", None) == "rda":
        return LensTypeError("rda() is the Boolean optimizer over Z2 (θ ← θ ⊕ p' on bits, p' the error bits); no "
                             "smooth gradient transformation composes with it")
    return LensTypeError((f">> composes smooth gradient transformations (core.transforms) and chains of them; got "
                          f"{type(x).__name__} {x!r}")[:300])


def _operands(x: Any) -> tuple[tuple[Transform, ...], bool]:
    """The transformations of one side of ``>>`` and its check_finite; LensTypeError for anything else."""
    if isinstance(x, Transform):
        return (x,), True
    if isinstance(x, SmoothOptimizer):
        return x.transforms, x.check_finite
    raise _refuse(x)


def _compose(a: Any, b: Any) -> SmoothOptimizer:
    (left, left_check), (right, right_check) = _operands(a), _operands(b)
    return SmoothOptimizer("chain", {}, left + right, left_check and right_check)


def check_put(name: str, state: Any, params: Any, dparams: Any, buffers: Any,
              check_finite: bool) -> tuple[list[torch.Tensor], Any, list[torch.Tensor]]:
    """What every smooth optimizer lens's ``put`` checks first (these chains and ``core.learned``):
    p' has the parameters' tree structure and shapes, the state has the keys ``init`` made ("step"
    and ``buffers``), and, with ``check_finite``, p' holds no NaN or inf (one probe and host sync;
    see ``finite_probe``). Returns (parameter leaves, their tree spec, p' leaves)."""
    leaves, spec = tree_flatten(params)
    d_leaves, d_spec = tree_flatten(dparams)
    if d_spec != spec:
        raise LensTypeError(f"{name}: p' has tree structure {d_spec} but the parameters have {spec}")
    for i, (p, d) in enumerate(zip(leaves, d_leaves)):
        if not isinstance(d, torch.Tensor) or d.shape != p.shape:
            got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise LensTypeError(f"{name}: p' leaf {i} is {got}, expected a tensor of shape {tuple(p.shape)}")
    if not isinstance(state, dict) or state.keys() != {"step", *buffers}:
        raise LensTypeError(
            f"{name}: state must be a dict with keys {['step', *buffers]} (from {name}.init), "
            f"got {list(state) if isinstance(state, dict) else type(state).__name__}"
        )
    if not check_finite:
        return leaves, spec, d_leaves
    probe_is_finite = torch.isfinite(finite_probe(dparams))
    try:
        finite = bool(probe_is_finite)
    except RuntimeError as error:  # bool() of a batched tensor: we are under torch.func.vmap
        raise ConfigError(
            f"{name}: check_finite=True needs a host sync, which torch.func.vmap cannot do; "
            f"build the optimizer with check_finite=False and check finite_probe(p') outside vmap"
        ) from error
    if not finite:
        bad = nonfinite_leaves(dparams)
        if bad:
            raise NonFiniteError(
                f"{name}: p' holds NaN or inf in parameter leaf {', '.join(bad)}; the update was "
                f"not applied (a diverging loss? try a smaller learning rate)"
            )
    return leaves, spec, d_leaves


@dataclasses.dataclass(frozen=True, eq=False)
class SmoothOptimizer:
    """An optimizer lens over the reals: a chain of gradient transformations (module docstring).

    Build it with ``>>``, :func:`chain` or :func:`parse_chain`; the named optimizers of
    ``core.optim`` are chains with a ``name`` and their torch.optim-style ``hyper`` (for display
    and run configs). A chain built here has the name "chain" and ``repr`` its expression.
    ``fuse=False`` runs every transformation on its own (the reference the fused path is tested
    against).
    """

    name: str
    hyper: dict[str, Any]
    transforms: tuple[Transform, ...]
    check_finite: bool = True
    fuse: bool = True
    _plan: _Plan = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        for op in self.transforms:
            if not isinstance(op, Transform):
                raise _refuse(op)
        object.__setattr__(self, "_plan", _compile(self.transforms, self.fuse))

    @property
    def buffers(self) -> tuple[str, ...]:
        """The names of the state's buffers, in chain order."""
        return self._plan.buffers

    @property
    def expression(self) -> str:
        """The chain as text that :func:`parse_chain` reads back (``"clip(1.0) >> ... >> scale(-0.001)"``)."""
        return " >> ".join(map(repr, self.transforms))

    def unfused(self) -> SmoothOptimizer:
        """The same chain with every transformation run on its own (no fused kernels)."""
        return dataclasses.replace(self, fuse=False)

    def check_complete(self) -> None:
        """ConfigError unless the chain ends with scale(-lr), lr > 0 (module docstring)."""
        if self._plan.incomplete is not None:
            raise ConfigError(("" if self.name == "chain" else f"{self.name}: ") + self._plan.incomplete)

    def init(self, params: Any) -> dict[str, Any]:
        """Step count 0 and fresh buffers shaped like ``params``."""
        self.check_complete()
        leaves, spec = _float_leaves(self.name, "parameters", params)
        device = leaves[0].device if leaves else None
        state: dict[str, Any] = {"step": torch.zeros((), dtype=torch.int64, device=device)}
        for op in self.transforms:
            for buffer, make in op.buffers.items():
                state[buffer] = tree_unflatten([make(p) for p in leaves], spec)
        return state

    def get(self, state: dict[str, Any], params: Any) -> Any:
        """The parameters the model uses: ``params`` itself (Nesterov too; see ``core.optim``)."""
        return params

    def put(self, state: dict[str, Any], params: Any, dparams: Any) -> tuple[dict[str, Any], Any]:
        """One update from p' (= −∇L with ``learning_rate(1.0)``); returns (new state, new params)."""
        plan = self._plan
        self.check_complete()
        leaves, spec, d_leaves = check_put(self.name, state, params, dparams, plan.buffers, self.check_finite)

        step = state["step"] + 1
        t = step.to(torch.float64)
        new_state: dict[str, Any] = {"step": step}
        cur, coef = d_leaves, 1.0  # the signal (p' frame) and its pending factor: the update is coef·cur
        for op in plan.prefix:
            if op.kind == "leaf":
                cur, coef = self._leaf(op, state, new_state, spec, leaves, _scaled(cur, coef), t), 1.0
                continue
            if op.kind == "clip":
                coef = _times(coef, op.factor(abs(coef) * _global_norm(cur)))
            else:
                coef = _times(coef, op.factor if isinstance(op.factor, float) else op.factor(t))
            if not self.fuse:
                cur, coef = _scaled(cur, coef), 1.0

        final_op = plan.final_op
        if final_op is not None:
            cur, coef = _scaled(cur, coef), 1.0
        for op in plan.tail:
            coef = _times(coef, op.factor if isinstance(op.factor, float) else op.factor(t))
        neg_k = -coef  # u = coef·(−cur), so p + u = p + (−coef)·cur
        scalars = plan.final_scalars(t, neg_k)
        shrink = 1.0 - neg_k * plan.decoupled_decay if plan.decoupled_decay else None
        names = tuple(final_op.buffers) if final_op is not None else ()
        old = [tree_leaves(state[b]) for b in names]
        by_dtype: dict[torch.dtype, tuple[Any, ...]] = {}
        new_leaves, new_buffers = [], [[] for _ in names]
        for i, (p, d) in enumerate(zip(leaves, cur)):
            cast = _cast((*scalars, shrink), p.dtype, by_dtype)
            if shrink is not None:
                p = p * cast[-1]
            new_p, bufs = plan.final(p, d, tuple(b[i] for b in old), cast[:-1])
            new_leaves.append(new_p)
            for acc, b in zip(new_buffers, bufs):
                acc.append(b)
        for name, buffer_leaves in zip(names, new_buffers):
            new_state[name] = tree_unflatten(buffer_leaves, spec)
        return {"step": step, **{b: new_state[b] for b in plan.buffers}}, tree_unflatten(new_leaves, spec)

    @staticmethod
    def _leaf(op: Transform, state: dict[str, Any], new_state: dict[str, Any], spec: Any, leaves: list,
              cur: list, t: torch.Tensor) -> list[torch.Tensor]:
        """Run one per-leaf transformation on every leaf, recording its buffers in ``new_state``."""
        scalars, by_dtype = op.scalars(t), {}
        old = [tree_leaves(state[b]) for b in op.buffers]
        out, new_buffers = [], [[] for _ in op.buffers]
        for i, (p, d) in enumerate(zip(leaves, cur)):
            d, bufs = op.update(p, d, tuple(b[i] for b in old), _cast(scalars, p.dtype, by_dtype))
            out.append(d)
            for acc, b in zip(new_buffers, bufs):
                acc.append(b)
        for name, buffer_leaves in zip(op.buffers, new_buffers):
            new_state[name] = tree_unflatten(buffer_leaves, spec)
        return out

    def __rshift__(self, other: Any) -> SmoothOptimizer:
        return _compose(self, other)

    def __rrshift__(self, other: Any) -> SmoothOptimizer:
        return _compose(other, self)

    def __repr__(self) -> str:
        if self.name == "chain" and not self.hyper:
            return self.expression
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.hyper.items())})"


def _scaled(leaves: list[torch.Tensor], coef: Any) -> list[torch.Tensor]:
    """coef·leaf for each leaf (the leaves themselves when coef is 1.0)."""
    if isinstance(coef, float) and coef == 1.0:
        return leaves
    if isinstance(coef, float):
        return [d * coef for d in leaves]
    cache: dict = {}
    return [d * _cast((coef,), d.dtype, cache)[0] for d in leaves]


def chain(*transforms: Transform | SmoothOptimizer, check_finite: bool = True) -> SmoothOptimizer:
    """The composite of ``transforms`` in order (``chain(a, b, c)`` is ``a >> b >> c``), checked
    complete: ConfigError unless it ends with scale(-lr), lr > 0."""
    if not isinstance(check_finite, bool):
        raise ConfigError(f"chain: check_finite must be True or False, got {check_finite!r}")
    parts: tuple[Transform, ...] = ()
    for x in transforms:
        parts += _operands(x)[0]
    opt = SmoothOptimizer("chain", {}, parts, check_finite)
    opt.check_complete()
    return opt


# --------------------------------------------------------------------------- from text

MAX_EXPRESSION = 2000
"""Longest chain expression :func:`parse_chain` reads (characters)."""


def _literal(node: ast.AST, where: str) -> Any:
    """The value of a literal argument: a number (signed) or True/False; ConfigError otherwise."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        return node.value
    raise ConfigError(f"{where}: arguments must be literal numbers (or True/False), got {ast.unparse(node)!r}")


def _calls(tree: ast.AST) -> list[ast.AST]:
    """The operands of a ``>>`` expression, left to right."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            stack += [node.right, node.left]
        else:
            out.append(node)
    return out


def parse_chain(text: str, *, check_finite: bool = True) -> SmoothOptimizer:
    """The chain written in ``text``, e.g. ``"clip(1.0) >> adam_moments(0.9, 0.98) >> scale(-1e-3)"``.

    Safe: ``text`` is parsed with ``ast`` and never evaluated; each operand must be a call of a
    name in :data:`TRANSFORMS` with literal numbers (or True/False) as positional or keyword
    arguments. Every mistake (syntax, unknown name, bad argument, composition, no final
    scale(-lr)) is one ``ConfigError`` or ``LensTypeError`` naming it.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a chain must be an expression such as 'adam_moments() >> scale(-1e-3)', got {text!r}")
    if len(text) > MAX_EXPRESSION:
        raise ConfigError(f"a chain expression may have at most {MAX_EXPRESSION} characters, got {len(text)}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        reason = getattr(error, "msg", None) or str(error) or type(error).__name__
        raise ConfigError(f"chain {text!r} is not an expression of transformations joined by >>: {reason}") from None
    names = ", ".join(TRANSFORMS)
    parts = []
    for node in _calls(tree):
        if isinstance(node, ast.Name) and node.id in TRANSFORMS:
            raise ConfigError(f"write {node.id}(...) with its arguments in parentheses, got {node.id!r}")
        name = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
        if name is None:
            raise ConfigError(f"expected transformations such as clip(1.0) joined by >>, got "
                              f"{ast.unparse(node)[:80]!r}")
        if name not in TRANSFORMS:
            raise ConfigError(f"unknown transformation {name!r}; expected one of {names}")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise ConfigError(f"{name}(...) takes literal arguments, not *args or **kwargs")
        args = [_literal(a, name) for a in node.args]
        kwargs = {k.arg: _literal(k.value, name) for k in node.keywords}
        factory = TRANSFORMS[name]
        signature = inspect.signature(factory)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            usage = ", ".join(k if v.default is v.empty else f"{k}={v.default!r}"
                              for k, v in signature.parameters.items())
            raise ConfigError(f"{name}({usage}): {error}") from None
        parts.append(factory(*args, **kwargs))
    return chain(*parts, check_finite=check_finite)
