"""A learned optimizer: an optimizer lens whose update rule has meta-parameters φ.

It is an optimizer lens like those of ``optim.py`` (init / get / put, pure, p' = −∇L), except
that its hyper-parameters are tensors φ (a dict name → tensor) rather than numbers, and ``put``
is differentiable in φ. So the meta-gradient of a loss reached after T inner steps is the
gradient, through T puts of the supervised step (``learner.py``), with respect to φ:
``torch.func.grad`` of the unrolled training, nothing more (``runs.meta`` does the meta-training;
this module knows nothing of tasks).

Two kinds (``LEARNED_KINDS``):

``"momentum"`` — learnable per-tensor step size and momentum. For parameter leaf i (in pytree
leaf order) with lr_i = exp(φ.log_lr[i]) and β_i = sigmoid(φ.logit_momentum[i]):

    buf ← β_i·buf + p'            (buf starts at 0, so the first step sets buf ← p')
    p   ← p + lr_i·buf

which is ``torch.optim.SGD(lr=lr_i, momentum=β_i)`` on that leaf (dampening 0; buf is the
negative of torch's ``momentum_buffer``, as in ``optim.momentum``). φ has one entry per parameter
tensor, so the optimizer applies to parameter trees with exactly that many leaves.

``"mlp"`` — a small MLP applied to every coordinate (Andrychowicz et al. 2016; Metz et al. 2020):
with Adam-style moving averages of p' at two timescales and of p'² (bias-corrected, step t),

    m_a ← β_a·m_a + (1 − β_a)·p',   m_b ← β_b·m_b + (1 − β_b)·p',   v ← β2·v + (1 − β2)·p'²
    f   = (p', m_a/(1 − β_aᵗ), m_b/(1 − β_bᵗ)) / (√(v/(1 − β2ᵗ)) + eps)          (3 features)
    u   = f·φ.linear + tanh(f·φ.w1 + φ.b1)·φ.w2
    p   ← p + exp(φ.log_lr)·u

The features are normalised by the second moment, so the rule is invariant to the scale of the
loss, and φ does not depend on the parameters' shapes: one φ applies to any model. With
φ.linear = (0, 1, 0) and φ.w2 = 0 it is exactly Adam(lr, betas=(β_a, β2), eps), the point
``init_phi`` starts meta-training from.

**Purity, vmap, finite check.** As in ``optim.py``: ``put`` builds new tensors only, the step
count is a tensor, and ``check_finite`` (default True) refuses a non-finite p' with
``NonFiniteError``; a multi-seed trainer makes the lens with ``dataclasses.replace(opt,
check_finite=False)``.

**Validation.** :func:`learned_optimizer` checks kind, hyper-parameters and φ (names, shapes,
finite values) once, at the boundary; the dataclass constructor checks nothing, so that the
meta-trainer can build the lens from φ under ``torch.func.grad`` at every outer step.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import torch
from torch.utils._pytree import keystr, tree_flatten_with_path, tree_leaves, tree_unflatten

from progsynth.core.optim import _betas
from progsynth.core.transforms import _float_leaves, _number, check_put
from progsynth.errors import ConfigError, LensTypeError

__all__ = ["LEARNED_KINDS", "LearnedOptimizer", "learned_optimizer", "phi_shapes", "init_phi", "learned_hyper", "MLP_HYPER"]

LEARNED_KINDS = ("momentum", "mlp")
"""The learned update rules (module docstring)."""

MLP_HYPER: dict[str, Any] = {"hidden": 8, "betas": (0.9, 0.99), "beta2": 0.999, "eps": 1e-8}
"""The ``"mlp"`` kind's fixed hyper-parameters and their defaults: hidden units, the two momentum
timescales (β_a, β_b), the second-moment decay β2 and eps."""

N_FEATURES = 3
"""Per-coordinate features of the ``"mlp"`` kind: p' and the two momenta, over √v̂ + eps."""


def learned_hyper(kind: str, hyper: dict[str, Any] | None) -> dict[str, Any]:
    """The validated hyper-parameters of ``kind``, complete (the ``"mlp"`` defaults filled in)."""
    if kind not in LEARNED_KINDS:
        raise ConfigError(f"learned optimizer kind must be one of {', '.join(LEARNED_KINDS)}, got {kind!r}")
    hyper = dict(hyper or {})
    if kind == "momentum":
        if hyper:
            raise ConfigError(f"learned optimizer kind 'momentum' takes no hyper-parameters, got {sorted(hyper)}")
        return {}
    unknown = sorted(set(hyper) - set(MLP_HYPER))
    if unknown:
        raise ConfigError(f"learned optimizer kind 'mlp': unknown hyper-parameter(s) {unknown}; "
                          f"expected some of {sorted(MLP_HYPER)}")
    out = {**MLP_HYPER, **hyper}
    hidden = out["hidden"]
    if isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral) or not 1 <= hidden <= 1024:
        raise ConfigError(f"learned optimizer kind 'mlp': hidden must be an integer in [1, 1024], got {hidden!r}")
    out["hidden"] = int(hidden)
    out["betas"] = _betas("learned mlp", out["betas"])
    out["beta2"] = _number("learned mlp", "beta2", out["beta2"], 0.0, 1.0, open_high=True)
    out["eps"] = _number("learned mlp", "eps", out["eps"], open_low=True)
    return out


def phi_shapes(kind: str, hyper: dict[str, Any] | None = None, n_tensors: int | None = None) -> dict[str, tuple[int, ...]]:
    """The name and shape of every meta-parameter of ``kind``: for ``"momentum"``, one entry per
    parameter tensor (``n_tensors`` of them); for ``"mlp"``, sized by its ``hidden`` units."""
    hyper = learned_hyper(kind, hyper)
    if kind == "momentum":
        if isinstance(n_tensors, bool) or not isinstance(n_tensors, numbers.Integral) or n_tensors < 1:
            raise ConfigError(f"learned optimizer kind 'momentum' needs the number of parameter tensors "
                              f"(an integer ≥ 1), got {n_tensors!r}")
        return {"log_lr": (int(n_tensors),), "logit_momentum": (int(n_tensors),)}
    h = hyper["hidden"]
    return {"log_lr": (), "linear": (N_FEATURES,), "w1": (N_FEATURES, h), "b1": (h,), "w2": (h,)}


def init_phi(kind: str, lr: float, momentum: float = 0.9, hyper: dict[str, Any] | None = None,
             n_tensors: int | None = None, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Meta-parameters at a known rule, where meta-training starts: ``"momentum"``:
    SGD(lr, momentum) on every tensor; ``"mlp"``: Adam(lr, betas=(β_a, β2)) (φ.w2 = 0, so the
    MLP adds nothing yet; φ.w1 is drawn from N(0, 1/3) with ``generator`` so its units differ)."""
    lr = _number("learned", "lr", lr, open_low=True)
    shapes = phi_shapes(kind, hyper, n_tensors)
    if kind == "momentum":
        beta = _number("learned", "momentum", momentum, 0.0, 1.0, open_low=True, open_high=True)
        n = shapes["log_lr"]
        return {"log_lr": torch.full(n, math.log(lr), dtype=dtype),
                "logit_momentum": torch.full(n, math.log(beta / (1.0 - beta)), dtype=dtype)}
    return {"log_lr": torch.tensor(math.log(lr), dtype=dtype),
            "linear": torch.tensor([0.0, 1.0, 0.0], dtype=dtype),
            "w1": torch.randn(shapes["w1"], generator=generator, dtype=torch.float64).div(math.sqrt(N_FEATURES)).to(dtype),
            "b1": torch.zeros(shapes["b1"], dtype=dtype),
            "w2": torch.zeros(shapes["w2"], dtype=dtype)}


def learned_optimizer(kind: str, phi: dict[str, torch.Tensor], hyper: dict[str, Any] | None = None, *,
                      leaf_names: list[str] | tuple[str, ...] | None = None,
                      check_finite: bool = True) -> LearnedOptimizer:
    """The learned optimizer lens of ``kind`` with meta-parameters ``phi``, validated: the names
    and shapes ``phi_shapes`` gives, floating-point and finite. ``phi`` is used as given (not copied).

    ``leaf_names`` (the ``"momentum"`` kind): the key paths (``keystr``) of the parameter leaves
    φ's entries belong to, in order; ``init`` then refuses parameters named otherwise, so per-tensor
    step sizes never land on another model's tensors. None: any parameters with as many leaves."""
    hyper = learned_hyper(kind, hyper)
    if not isinstance(phi, dict) or not all(isinstance(v, torch.Tensor) for v in phi.values()):
        raise ConfigError(f"learned optimizer: φ must be a dict name -> tensor, got {type(phi).__name__}")
    if leaf_names is not None:
        if kind != "momentum" or not isinstance(leaf_names, (list, tuple)) or not leaf_names \
                or not all(isinstance(name, str) for name in leaf_names):
            raise ConfigError(f"learned optimizer kind {kind!r}: leaf_names must be None"
                              + (" or a list of strings, one per parameter tensor" if kind == "momentum" else "")
                              + f", got {leaf_names!r}")
        leaf_names = tuple(leaf_names)
        n = len(leaf_names)
    else:  # the number of parameter tensors φ is for: its first entry's length
        n = tuple(phi["log_lr"].shape)[0] if kind == "momentum" and "log_lr" in phi and phi["log_lr"].dim() == 1 else 1
    expected = phi_shapes(kind, hyper, n)
    if set(phi) != set(expected):
        raise ConfigError(f"learned optimizer kind {kind!r}: φ must have entries {sorted(expected)}, got {sorted(phi)}")
    for name, shape in expected.items():
        value = phi[name]
        if tuple(value.shape) != shape or not value.is_floating_point():
            raise ConfigError(f"learned optimizer kind {kind!r}: φ[{name!r}] must be a floating-point tensor of "
                              f"shape {shape}, got {value.dtype} {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ConfigError(f"learned optimizer kind {kind!r}: φ[{name!r}] holds NaN or inf")
    if not isinstance(check_finite, bool):
        raise ConfigError(f"learned optimizer: check_finite must be True or False, got {check_finite!r}")
    return LearnedOptimizer(kind, phi, hyper, check_finite, leaf_names=leaf_names)


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedOptimizer:
    """The learned optimizer lens (module docstring). Build it with :func:`learned_optimizer`,
    which validates; the constructor trusts its arguments (the meta-trainer calls it under
    ``torch.func.grad``). ``hyper`` must be complete (as ``learned_optimizer`` fills it in)."""

    kind: str
    phi: dict[str, torch.Tensor]
    hyper: dict[str, Any] = dataclasses.field(default_factory=dict)
    check_finite: bool = True
    name: str = "learned"
    leaf_names: tuple[str, ...] | None = None
    """The ``"momentum"`` kind's parameter leaf names, checked by ``init`` (``learned_optimizer``)."""

    @property
    def buffers(self) -> tuple[str, ...]:
        """The names of the state's buffers (each a pytree shaped like the parameters)."""
        return ("momentum_buffer",) if self.kind == "momentum" else ("exp_avg_fast", "exp_avg_slow", "exp_avg_sq")

    def _check_count(self, n_leaves: int) -> None:
        if self.kind == "momentum" and n_leaves != self.phi["log_lr"].shape[0]:
            raise LensTypeError(
                f"{self.name}: it has per-tensor step sizes for {self.phi['log_lr'].shape[0]} "
                f"parameter tensors, but the parameters have {n_leaves}; use it on the model it was meta-trained "
                f"for (or meta-train the 'mlp' kind, which fits any model)")

    def init(self, params: Any) -> dict[str, Any]:
        """Step count 0 and zero buffers shaped like ``params``."""
        leaves, spec = _float_leaves(self.name, "parameters", params)
        self._check_count(len(leaves))
        if self.leaf_names is not None:
            names = tuple(keystr(path) for path, _ in tree_flatten_with_path(params)[0])
            if names != self.leaf_names:
                raise LensTypeError(
                    f"{self.name}: its per-tensor step sizes belong to parameters "
                    f"{', '.join(self.leaf_names)}, but these parameters are {', '.join(names)}; use it on the model "
                    f"it was meta-trained for (or meta-train the 'mlp' kind, which fits any model)")
        device = leaves[0].device if leaves else None
        state: dict[str, Any] = {"step": torch.zeros((), dtype=torch.int64, device=device)}
        for buffer in self.buffers:
            state[buffer] = tree_unflatten([torch.zeros_like(p) for p in leaves], spec)
        return state

    def get(self, state: dict[str, Any], params: Any) -> Any:
        """The parameters the model uses: ``params`` itself."""
        return params

    def put(self, state: dict[str, Any], params: Any, dparams: Any) -> tuple[dict[str, Any], Any]:
        """One update from p' (= −∇L); returns (new state, new params). Differentiable in φ."""
        leaves, spec, d_leaves = check_put(self.name, state, params, dparams, self.buffers, self.check_finite)
        self._check_count(len(leaves))
        step = state["step"] + 1
        old = [tree_leaves(state[b]) for b in self.buffers]
        if self.kind == "momentum":
            new_leaves, new_buffers = self._momentum(leaves, d_leaves, old)
        else:
            new_leaves, new_buffers = self._mlp(leaves, d_leaves, old, step.to(torch.float64))
        new_state: dict[str, Any] = {"step": step}
        for buffer, buffer_leaves in zip(self.buffers, new_buffers):
            new_state[buffer] = tree_unflatten(buffer_leaves, spec)
        return new_state, tree_unflatten(new_leaves, spec)

    def _momentum(self, leaves: list, d_leaves: list, old: list) -> tuple[list, list]:
        """buf ← β_i·buf + p', p ← p + lr_i·buf per leaf i."""
        lrs, betas = self.phi["log_lr"].exp(), torch.sigmoid(self.phi["logit_momentum"])
        new_leaves, bufs = [], []
        for i, (p, d) in enumerate(zip(leaves, d_leaves)):
            buf = old[0][i] * betas[i].to(p.dtype) + d
            new_leaves.append(p + lrs[i].to(p.dtype) * buf)
            bufs.append(buf)
        return new_leaves, [bufs]

    def _mlp(self, leaves: list, d_leaves: list, old: list, t: torch.Tensor) -> tuple[list, list]:
        """The per-coordinate MLP rule of the module docstring."""
        (beta_a, beta_b), beta2, eps = self.hyper["betas"], self.hyper["beta2"], self.hyper["eps"]
        corrections = (1.0 - beta_a**t, 1.0 - beta_b**t, (1.0 - beta2**t).sqrt())
        new_leaves, fast, slow, sq = [], [], [], []
        for i, (p, d) in enumerate(zip(leaves, d_leaves)):
            dtype = p.dtype
            bias_a, bias_b, bias2 = (c.to(dtype) for c in corrections)
            phi = {k: v.to(dtype) for k, v in self.phi.items()}
            m_a = torch.lerp(old[0][i], d, 1.0 - beta_a)
            m_b = torch.lerp(old[1][i], d, 1.0 - beta_b)
            v = old[2][i] * beta2 + (1.0 - beta2) * d * d
            # √ floored at the dtype's tiniest normal: the same as v.sqrt() for any v that matters,
            # and a finite derivative where p' is exactly 0 (where √'s would be inf, and 0·inf NaN).
            denom = v.clamp_min(torch.finfo(dtype).tiny).sqrt() / bias2 + eps
            features = torch.stack((d, m_a / bias_a, m_b / bias_b), dim=-1) / denom.unsqueeze(-1)
            update = features @ phi["linear"] + torch.tanh(features @ phi["w1"] + phi["b1"]) @ phi["w2"]
            new_leaves.append(p + phi["log_lr"].exp() * update)
            fast.append(m_a)
            slow.append(m_b)
            sq.append(v)
        return new_leaves, [fast, slow, sq]

    def __repr__(self) -> str:
        if self.kind == "momentum":
            return f"learned(momentum, {self.phi['log_lr'].shape[0]} tensors)"
        return f"learned(mlp, hidden={self.hyper['hidden']})"
