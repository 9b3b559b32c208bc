"""Degeneracy of a trained network: dead units, functional dimension, the Hessian spectrum.

Everything works on an ``nn.Module`` at its current parameters through
``torch.func.functional_call`` over a flat parameter vector (every parameter with
``requires_grad``, in ``named_parameters`` order); nothing is trained or modified. "The function"
is the model's output as its loss reads it (``progsynth.slt.llc.model_outputs``: (batch,
positions, classes) outputs of a cross-entropy model are read at the last position).

- **Dead units** (``find_dead_units``, ``prune_dead_units``): a ReLU unit is dead when its
  pre-activation is ≤ 0 on every row of the data, so it outputs 0 there and removing it (its
  incoming weights and bias, its outgoing weights) leaves the function on the data unchanged. The
  pruned copy is checked: the largest absolute output difference on the data is reported.
  ``HiddenLayer`` says where a layer's units live; ``relu_layers`` finds them automatically in
  ``nn.Sequential`` containers (Linear → ReLU → Linear); other models (the grokking transformer's
  MLP) describe theirs with a ``HiddenLayer`` naming the site and parameter slices.
- **Functional dimension** (``functional_dimension``): the rank of the Jacobian J of the map
  parameters → outputs on the data (rows × outputs by d). Tolerance, as numpy's ``matrix_rank``:
  singular values ≤ σ_max · max(J.shape) · eps(dtype) count as zero. The computation runs in
  float64 by default (a copy), since rank decisions in float32 sit much closer to the noise.
  The degenerate directions are the null space of J (right singular vectors beyond the rank,
  plus the d − rows directions when J is wide); moving along them does not change the outputs
  on the data to first order, so the gradient of any loss of the outputs is orthogonal to them:
  ∇L · v = (∂L/∂f)·(J v) = 0. The result reports max_v |∇L · v| / ‖∇L‖ as that check.
- **Hessian spectrum** (``hessian_spectrum``): eigenvalues of the full-data loss Hessian; exact
  (dense Hessian, ``eigvalsh``) up to ``exact_limit`` parameters, else the top-k by Lanczos
  (``scipy.sparse.linalg.eigsh``, largest algebraic) on Hessian-vector products
  (``progsynth.slt.llc.hvp_operator``). An eigenvalue counts as zero when
  |μ| ≤ |μ|_max · d · eps(dtype), the same rule as for J.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.func import functional_call, grad, jacrev

from progsynth.errors import ConfigError, LensTypeError, UnsupportedOptionError
from progsynth.slt.llc import MODULE_LOSSES, hvp_operator, model_outputs

__all__ = [
    "HiddenLayer",
    "relu_layers",
    "DeadUnits",
    "PrunedModel",
    "find_dead_units",
    "prune_dead_units",
    "FunctionalDimension",
    "functional_dimension",
    "jacobian_rank",
    "HessianSpectrum",
    "hessian_spectrum",
]


@dataclass(frozen=True)
class HiddenLayer:
    """Where the units of one ReLU hidden layer live in a module.

    ``site`` names the submodule whose output holds the layer's pre-activations (or its
    post-ReLU activations: either is > 0 exactly when the unit is active) with units on the last
    axis. ``incoming`` lists (parameter name, axis) slices that belong to unit j alone on the way
    in (a weight's row, a bias entry); ``outgoing`` those on the way out (a weight's column).
    """

    site: str
    incoming: tuple[tuple[str, int], ...]
    outgoing: tuple[tuple[str, int], ...]


def relu_layers(module: nn.Module) -> tuple[HiddenLayer, ...]:
    """Every Linear → ReLU → Linear pattern among consecutive children of ``nn.Sequential``s."""
    found = []
    for prefix, seq in module.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (a, first), (_, act), (c, second) in zip(children, children[1:], children[2:]):
            if isinstance(first, nn.Linear) and isinstance(act, nn.ReLU) and isinstance(second, nn.Linear):
                p_in, p_out = _join(prefix, a), _join(prefix, c)
                incoming = ((f"{p_in}.weight", 0),) + (((f"{p_in}.bias", 0),) if first.bias is not None else ())
                found.append(HiddenLayer(p_in, incoming, ((f"{p_out}.weight", 1),)))
    return tuple(found)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True)
class DeadUnits:
    """The units of one hidden layer that never fire on the data."""

    layer: HiddenLayer
    dead: tuple[int, ...]
    """Indices (on the layer's last axis) of units with pre-activation ≤ 0 on every row."""
    total: int
    """Number of units in the layer."""


@dataclass(frozen=True, eq=False)
class PrunedModel:
    """A copy of the model without its dead units, and the check that it computes the same function."""

    model: nn.Module
    dead: tuple[DeadUnits, ...]
    params_before: int
    params_after: int
    """Effective size: the number of parameters left after pruning."""
    max_output_diff: float
    """max |f_pruned(x) − f(x)| over the data (logits for a classifier); ~0 up to rounding."""


def find_dead_units(
    module: nn.Module, x: torch.Tensor, layers: tuple[HiddenLayer, ...] | None = None
) -> tuple[DeadUnits, ...]:
    """Dead units of each hidden layer on inputs ``x`` (``layers`` defaults to ``relu_layers(module)``)."""
    layers = relu_layers(module) if layers is None else layers
    if not layers:
        raise UnsupportedOptionError(
            f"found no ReLU hidden layer in {type(module).__name__}: pass layers=(HiddenLayer(...), ...)"
        )
    submodules = dict(module.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for layer in layers:
        if layer.site not in submodules:
            raise ConfigError(f"hidden-layer site {layer.site!r} is not a submodule of {type(module).__name__}")
        site = layer.site

        def record(_mod: nn.Module, _inp: Any, out: torch.Tensor, site: str = site) -> None:
            fired = (out > 0).reshape(-1, out.shape[-1]).any(0)
            seen[site] = fired if site not in seen else seen[site] | fired

        handles.append(submodules[site].register_forward_hook(record))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return tuple(
        DeadUnits(layer, tuple(int(j) for j in torch.nonzero(~seen[layer.site]).flatten()), int(seen[layer.site].numel()))
        for layer in layers
    )


def prune_dead_units(
    module: nn.Module, x: torch.Tensor, layers: tuple[HiddenLayer, ...] | None = None
) -> PrunedModel:
    """Remove every dead unit (see ``find_dead_units``) from a deep copy and verify it on ``x``.

    Parameters are sliced in place in the copy (``nn.Linear.in_features``/``out_features`` are
    updated); a model whose forward hard-codes a layer width will fail the check, which is reported
    through ``max_output_diff`` or the exception it raises.
    """
    dead = find_dead_units(module, x, layers)
    pruned = copy.deepcopy(module)
    params = dict(pruned.named_parameters())
    for units in dead:
        if not units.dead:
            continue
        alive = torch.tensor([j for j in range(units.total) if j not in set(units.dead)], dtype=torch.int64)
        for name, axis in units.layer.incoming + units.layer.outgoing:
            if name not in params:
                raise ConfigError(f"hidden-layer parameter {name!r} is not a parameter of {type(module).__name__}")
            param = params[name]
            param.data = param.data.index_select(axis, alive)
        _resize_linears(pruned)
    with torch.no_grad():
        before, after = module(x), pruned(x)
    return PrunedModel(
        model=pruned,
        dead=dead,
        params_before=_count(module),
        params_after=_count(pruned),
        max_output_diff=float((before - after).abs().max()),
    )


def _resize_linears(module: nn.Module) -> None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.out_features, sub.in_features = sub.weight.shape


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class _FlatModule:
    """A module as functions of one flat parameter vector (optionally cast to another dtype)."""

    def __init__(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss: str, dtype: torch.dtype | None):
        if not isinstance(module, nn.Module):
            raise LensTypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if loss not in MODULE_LOSSES:
            raise UnsupportedOptionError(f"loss must be one of {sorted(MODULE_LOSSES)}, got {loss!r}")
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise LensTypeError(f"{type(module).__name__} has no trainable parameters")

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dtype) if dtype is not None and t.is_floating_point() else t.detach()

        self.module, self.loss = module, loss
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.w0 = torch.cat([cast(p).reshape(-1) for _, p in named])
        self.buffers = {name: cast(b) for name, b in module.named_buffers()}
        self.x, self.y = cast(x), (cast(y) if y is not None else None)
        self.criterion = MODULE_LOSSES[loss]

    def outputs(self, w: torch.Tensor) -> torch.Tensor:
        """The model's outputs on x at flat parameters w, as the loss reads them."""
        parts = torch.split(w, self.sizes)
        params = {n: part.view(s) for n, part, s in zip(self.names, parts, self.shapes)}
        return model_outputs(functional_call(self.module, (params, self.buffers), (self.x,)), self.loss)

    def loss_at(self, w: torch.Tensor) -> torch.Tensor:
        """The full-data loss at flat parameters w."""
        return self.criterion(self.outputs(w), self.y)


def _in_eval(module: nn.Module, fn: Callable[[], Any]) -> Any:
    was_training = module.training
    module.eval()
    try:
        return fn()
    finally:
        module.train(was_training)


def _zero_tolerance(largest: float, size: int, dtype: torch.dtype) -> float:
    """numpy ``matrix_rank``'s rule: largest · size · eps(dtype)."""
    return largest * size * torch.finfo(dtype).eps


@dataclass(frozen=True, eq=False)
class FunctionalDimension:
    """Rank of the Jacobian of parameters → outputs on the data, and the directions it misses."""

    rank: int
    """The functional dimension."""
    num_params: int
    singular_values: np.ndarray
    """Singular values of J, descending."""
    tolerance: float
    """Singular values ≤ this count as zero (σ_max · max(J.shape) · eps(dtype))."""
    null_space: np.ndarray
    """(d, d − rank): an orthonormal basis of the degenerate directions (null space of J)."""
    gradient_norm: float
    """‖∇L‖ of the full-data loss at the parameters."""
    max_gradient_along_null: float
    """max over the null-space basis of |∇L · v| / ‖∇L‖ (0 when ∇L = 0); ~0 up to rounding."""


def functional_dimension(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str = "cross_entropy",
    dtype: torch.dtype | None = torch.float64,
) -> FunctionalDimension:
    """The functional dimension and degenerate directions of ``module`` on ``x`` (module docstring).

    J has (rows × outputs) × d entries: subsample ``x`` for large models. ``y`` and ``loss`` give
    the loss whose gradient is checked against the null space. ``dtype=None`` keeps the model's.
    """
    flat = _FlatModule(module, x, y, loss, dtype)

    def compute() -> FunctionalDimension:
        gradient = grad(flat.loss_at)(flat.w0)
        return _null_space_report(_jacobian(flat), gradient)

    return _in_eval(module, compute)


def _jacobian(flat: _FlatModule) -> torch.Tensor:
    """J, (rows × outputs) × d: the outputs on the data differentiated by the flat parameters."""
    return jacrev(lambda w: flat.outputs(w).reshape(-1))(flat.w0)


def jacobian_rank(module: nn.Module, x: torch.Tensor, loss: str = "cross_entropy",
                  dtype: torch.dtype | None = torch.float64) -> int:
    """The functional dimension alone: the rank of J on ``x`` by its singular values (the same
    tolerance as ``functional_dimension``), without the d × d basis that the null space needs, so it
    also serves models with hundreds of thousands of parameters when ``x`` is a few rows."""
    flat = _FlatModule(module, x, None, loss, dtype)

    def compute() -> int:
        jac = _jacobian(flat)
        s = torch.linalg.svdvals(jac)
        return int((s > _zero_tolerance(float(s[0]) if s.numel() else 0.0, max(jac.shape), jac.dtype)).sum())

    return _in_eval(module, compute)


def _null_space_report(jac: torch.Tensor, gradient: torch.Tensor) -> FunctionalDimension:
    rows, d = jac.shape
    _, s, vh = torch.linalg.svd(jac, full_matrices=True)
    tol = _zero_tolerance(float(s[0]) if s.numel() else 0.0, max(rows, d), jac.dtype)
    rank = int((s > tol).sum())
    null = vh[rank:].T
    g_norm = float(gradient.norm())
    along = float((null.T @ gradient).abs().max() / g_norm) if null.shape[1] and g_norm > 0 else 0.0
    return FunctionalDimension(rank, d, s.cpu().numpy(), tol, null.cpu().numpy(), g_norm, along)


@dataclass(frozen=True, eq=False)
class HessianSpectrum:
    """Eigenvalues of the full-data loss Hessian at the parameters."""

    eigenvalues: np.ndarray
    """Descending; all d of them (exact) or the top k (Lanczos)."""
    method: str
    """'exact' or 'lanczos'."""
    num_params: int
    tolerance: float
    """|μ| ≤ this counts as zero (|μ|_max · d · eps(dtype))."""

    @property
    def num_zero(self) -> int:
        """Eigenvalues within the tolerance of zero (among those computed)."""
        return int((np.abs(self.eigenvalues) <= self.tolerance).sum())

    @property
    def num_negative(self) -> int:
        """Eigenvalues below −tolerance (negative curvature: not a local minimum)."""
        return int((self.eigenvalues < -self.tolerance).sum())


def hessian_spectrum(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str = "cross_entropy",
    top_k: int = 20,
    exact_limit: int = 5000,
    dtype: torch.dtype | None = torch.float64,
    seed: int = 0,
) -> HessianSpectrum:
    """The loss Hessian's eigenvalues: all of them when d ≤ ``exact_limit``, else the ``top_k``
    largest by Lanczos on Hessian-vector products (``seed`` fixes Lanczos' start vector)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(exact_limit, bool) or not isinstance(exact_limit, int) or exact_limit < 0:
        raise ConfigError(f"exact_limit must be an integer >= 0, got {exact_limit!r}")
    flat = _FlatModule(module, x, y, loss, dtype)
    d = flat.w0.numel()

    def compute() -> HessianSpectrum:
        if d <= exact_limit:
            hessian = jacrev(grad(flat.loss_at))(flat.w0)
            values = torch.linalg.eigvalsh((hessian + hessian.T) / 2).flip(0).cpu().numpy()
            method = "exact"
        else:
            if top_k >= d:
                raise ConfigError(f"top_k must be < d = {d} for Lanczos, got {top_k}")
            start = np.random.default_rng(seed).standard_normal(d)
            values = np.sort(
                eigsh(hvp_operator(flat.loss_at, flat.w0), k=top_k, which="LA", v0=start, return_eigenvectors=False)
            )[::-1]
            method = "lanczos"
        largest = float(np.abs(values).max()) if values.size else 0.0
        return HessianSpectrum(values.copy(), method, d, _zero_tolerance(largest, d, flat.w0.dtype))

    return _in_eval(module, compute)


from progsynth.slt.compress import compress  # noqa: E402  (re-export: slt.degeneracy.compress)

__all__ += ["compress"]
