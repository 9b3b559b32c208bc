"""Permutation alignment of hidden units between two networks by weight matching (Git Re-Basin).

Why: hidden units carry no names. Permuting the units of a layer (a column of the weights into
it, its bias, and the row of the weights out of it, all together) leaves the network's function
unchanged exactly, so two seeds that learned the same program generally hold it under different
unit orders. The straight path between their raw parameters then crosses networks that mix
unrelated units, and its loss barrier says more about the labelling than about the programs:
a weak baseline. Aligning B's units to A's first (``progsynth path A B --align``) removes that.

Groups: a model names the permutation acting on each axis of each parameter through its
``unit_permutations()`` method (a ``PermutationSpec``: parameter name → one group name or None per
axis); ``permutation_spec`` also derives one for an ``nn.Sequential`` of Linear and ReLU layers.

Algorithm (Ainsworth, Hayase & Srinivasa 2022, "Git Re-Basin", weight matching): find
permutations π maximising Σ_w ⟨W_A, π(W_B)⟩, i.e. minimising ‖θ_A − π(θ_B)‖. Start from the
identity; in each sweep visit the groups in a random order and, for group g of size n, holding
every other permutation fixed, solve the linear assignment

    max_P ⟨M, P⟩,   M = Σ_{(w, k): axis k of w is in g} W_A^(k) · (π_{¬k}(W_B)^(k))ᵀ   (n × n)

where X^(k) is X with axis k moved first and the rest flattened, and π_{¬k} applies the current
permutations on every axis but k. The objective is linear in P_g, so each step is exact for its
group; it is accepted only if it improves the objective by more than ``tolerance``. Sweeps repeat
until none improves (at most ``max_sweeps``). This is coordinate descent, so it finds a local
optimum, not necessarily the global one (which is NP-hard for two or more groups); a network and
a unit-permuted copy of itself are matched exactly in practice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from progsynth.errors import ConfigError, NonFiniteError, UnsupportedOptionError
from progsynth.tasks.common import check_int, check_seed

__all__ = ["PermutationSpec", "Alignment", "permutation_spec", "apply_permutation", "weight_matching"]

PermutationSpec = dict[str, tuple[str | None, ...]]
"""Parameter name → one entry per axis: the name of the permutation group acting on it, or None."""

_ELEMENTWISE = (nn.ReLU,)
"""Layers of an ``nn.Sequential`` that act unit by unit, so hidden units may be permuted across them."""


def permutation_spec(module: nn.Module) -> PermutationSpec:
    """The permutation groups of ``module``'s parameters, validated against them.

    ``module.unit_permutations()`` if the module defines it. For an ``nn.Sequential`` of
    ``nn.Linear`` and ``nn.ReLU`` layers, group ``"hidden_k"`` holds the output units of the k-th
    Linear but the last: its weight axis 0 (torch stores Linear weights as (out, in)), its bias and
    the next Linear's weight axis 1. Anything else is an UnsupportedOptionError.
    """
    if hasattr(module, "unit_permutations"):
        spec = {name: tuple(axes) for name, axes in module.unit_permutations().items()}
    elif isinstance(module, nn.Sequential):
        spec = _sequential_spec(module)
    else:
        raise UnsupportedOptionError(
            f"cannot align the units of a {type(module).__name__}: expected a progsynth model (one with "
            f"unit_permutations()) or an nn.Sequential of Linear and ReLU layers")
    params = dict(module.named_parameters())
    if set(spec) != set(params):
        name = sorted(set(spec) ^ set(params))[0]
        where = "the spec but not the module" if name in spec else "the module but not the spec"
        raise ConfigError(f"{type(module).__name__}.unit_permutations() must name every parameter exactly; "
                          f"{name!r} is in {where}")
    _group_sizes(spec, params)
    return spec


def _sequential_spec(module: nn.Sequential) -> PermutationSpec:
    """One group per hidden Linear's output units (``permutation_spec``)."""
    linears = []
    for index, layer in module.named_children():
        if isinstance(layer, nn.Linear):
            linears.append(index)
        elif not isinstance(layer, _ELEMENTWISE):
            raise UnsupportedOptionError(
                f"cannot align the units of layer {index} of an nn.Sequential, a {type(layer).__name__}: "
                f"expected only Linear and ReLU layers")
    spec: PermutationSpec = {}
    for k, index in enumerate(linears):
        into = f"hidden_{k - 1}" if k > 0 else None
        out = f"hidden_{k}" if k < len(linears) - 1 else None
        spec[f"{index}.weight"] = (out, into)
        if module[int(index)].bias is not None:
            spec[f"{index}.bias"] = (out,)
    return spec


def _group_sizes(spec: PermutationSpec, params: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Each group's size, in order of first appearance; ConfigError if the spec does not fit ``params``."""
    sizes: dict[str, int] = {}
    first: dict[str, str] = {}
    for name, axes in spec.items():
        if name not in params:
            raise ConfigError(f"the permutation spec names parameter {name!r}, which the parameters lack")
        shape = tuple(params[name].shape)
        if len(axes) != len(shape):
            raise ConfigError(f"the permutation spec gives {len(axes)} axes for parameter {name!r}, "
                              f"expected one per axis of its shape {shape}")
        for axis, group in enumerate(axes):
            if group is None:
                continue
            if sizes.setdefault(group, shape[axis]) != shape[axis]:
                raise ConfigError(f"group {group!r} has size {shape[axis]} on axis {axis} of {name!r} but "
                                  f"{sizes[group]} on {first[group]}; every axis of a group must have one size")
            first.setdefault(group, f"axis {axis} of {name!r}")
    return sizes


def _check_perms(perms: Mapping[str, torch.Tensor], sizes: Mapping[str, int]) -> None:
    """ConfigError unless each of ``perms`` names a group and is a permutation of 0..size−1."""
    for group, perm in perms.items():
        if group not in sizes:
            raise ConfigError(f"permutation for unknown group {group!r}; the spec's groups are {list(sizes)}")
        n = sizes[group]
        if not isinstance(perm, torch.Tensor) or perm.dim() != 1 or perm.dtype != torch.long or \
                not torch.equal(perm.sort().values.cpu(), torch.arange(n)):
            got = (f"a {perm.dtype} tensor of shape {tuple(perm.shape)}" if isinstance(perm, torch.Tensor)
                   else type(perm).__name__)
            raise ConfigError(f"permutation for group {group!r} must be a LongTensor permuting 0..{n - 1}, "
                              f"got {got}")


def _permute(param: torch.Tensor, axes: tuple[str | None, ...], perms: Mapping[str, torch.Tensor],
             skip: int | None = None) -> torch.Tensor:
    """``param`` with perms[group] applied along each grouped axis but ``skip``."""
    for axis, group in enumerate(axes):
        if axis != skip and group in perms:
            param = param.index_select(axis, perms[group].to(param.device))
    return param


def apply_permutation(spec: PermutationSpec, params: Mapping[str, torch.Tensor],
                      perms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A new dict of ``params`` with every grouped axis permuted: along an axis in group g, entry i
    becomes entry perms[g][i]. Parameters absent from the spec, or with no grouped axis, are passed
    through as they are (the same tensors); groups absent from ``perms`` stay the identity."""
    _check_perms(perms, _group_sizes(spec, params))
    return {name: _permute(param, spec[name], perms) if name in spec else param
            for name, param in params.items()}


@dataclass(frozen=True)
class Alignment:
    """The result of ``weight_matching``: permutations of B's units that bring it closest to A."""

    perms: dict[str, torch.Tensor]
    """Group name → LongTensor; ``apply_permutation(spec, params_b, perms)`` is the aligned B."""
    sweeps: int
    """Sweeps over all groups performed, the last one included."""
    converged: bool
    """Whether the last sweep improved no group (False: ``max_sweeps`` ran out first)."""
    objective_before: float
    """Σ over parameters ⟨W_A, W_B⟩."""
    objective_after: float
    """Σ over parameters ⟨W_A, π(W_B)⟩ (≥ objective_before)."""
    distance_before: float
    """‖θ_A − θ_B‖, the L2 norm over all parameters."""
    distance_after: float
    """‖θ_A − π(θ_B)‖ (≤ distance_before)."""
    moved: dict[str, int]
    """Group name → units not mapped to themselves."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields, with each permutation as a list of ints."""
        return {"perms": {group: perm.tolist() for group, perm in self.perms.items()},
                "sweeps": self.sweeps, "converged": self.converged,
                "objective_before": self.objective_before, "objective_after": self.objective_after,
                "distance_before": self.distance_before, "distance_after": self.distance_after,
                "moved": dict(self.moved)}


def _check_pair(params_a: Mapping[str, torch.Tensor], params_b: Mapping[str, torch.Tensor]) -> None:
    """ConfigError naming the first parameter whose name or shape differs; NonFiniteError for NaN/inf."""
    for name in [*params_a, *(name for name in params_b if name not in params_a)]:
        if name not in params_b or name not in params_a:
            having, lacking = ("params_a", "params_b") if name in params_a else ("params_b", "params_a")
            raise ConfigError(f"parameter {name!r} is in {having} but not in {lacking}; "
                              f"weight matching needs two networks of the same architecture")
        shape_a, shape_b = tuple(params_a[name].shape), tuple(params_b[name].shape)
        if shape_a != shape_b:
            raise ConfigError(f"parameter {name!r} has shape {shape_a} in params_a but {shape_b} in params_b; "
                              f"weight matching needs two networks of the same architecture")
        for which, params in (("params_a", params_a), ("params_b", params_b)):
            if not torch.isfinite(params[name]).all():
                raise NonFiniteError(f"parameter {name!r} of {which} holds NaN or infinity; expected finite weights")


def _objective(params_a: Mapping[str, torch.Tensor], params_b: Mapping[str, torch.Tensor]) -> float:
    """Σ over parameters ⟨W_A, W_B⟩."""
    return sum(float((params_a[name] * params_b[name]).sum()) for name in params_a)


def _distance(params_a: Mapping[str, torch.Tensor], params_b: Mapping[str, torch.Tensor]) -> float:
    """‖θ_A − θ_B‖ over all parameters."""
    return math.sqrt(sum(float(((params_a[name] - params_b[name]) ** 2).sum()) for name in params_a))


def weight_matching(spec: PermutationSpec, params_a: Mapping[str, torch.Tensor],
                    params_b: Mapping[str, torch.Tensor], seed: int = 0, max_sweeps: int = 100,
                    tolerance: float = 1e-12) -> Alignment:
    """Permutations of B's units that bring ``params_b`` closest to ``params_a`` (module docstring).

    Computed in float64. ``seed`` fixes the random order of the groups in each sweep; sweeps stop
    when none improves Σ⟨W_A, π(W_B)⟩ by more than ``tolerance``, or after ``max_sweeps``. Each
    group may act on at most one axis of a parameter (the assignment step is linear only then).
    """
    check_seed("weight_matching seed", seed)
    check_int("weight_matching max_sweeps", max_sweeps, 1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ConfigError(f"weight_matching tolerance must be a number ≥ 0, got {tolerance!r}")
    _check_pair(params_a, params_b)
    sizes = _group_sizes(spec, params_a)
    for name, axes in spec.items():
        repeated = sorted({g for g in axes if g is not None and axes.count(g) > 1})
        if repeated:
            raise UnsupportedOptionError(f"group {repeated[0]!r} acts on two axes of parameter {name!r}; "
                                         f"weight matching needs each group at most once per parameter")
    a = {name: param.detach().to(torch.float64) for name, param in params_a.items()}
    b = {name: param.detach().to(torch.float64) for name, param in params_b.items()}
    # (parameter, axis) pairs each group acts on.
    touching: dict[str, list[tuple[str, int]]] = {group: [] for group in sizes}
    for name, axes in spec.items():
        for axis, group in enumerate(axes):
            if group is not None:
                touching[group].append((name, axis))

    perms = {group: torch.arange(n) for group, n in sizes.items()}
    groups = list(sizes)
    rng = np.random.default_rng(seed)
    sweeps, converged = 0, False
    while sweeps < max_sweeps and not converged:
        sweeps += 1
        converged = True
        for g in rng.permutation(len(groups)):
            group, n = groups[g], sizes[groups[g]]
            gain = torch.zeros(n, n, dtype=torch.float64, device=next(iter(a.values())).device)
            for name, axis in touching[group]:
                w_a = a[name].movedim(axis, 0).reshape(n, -1)
                w_b = _permute(b[name], spec[name], perms, skip=axis).movedim(axis, 0).reshape(n, -1)
                gain += w_a @ w_b.T
            gain_np = gain.cpu().numpy()
            _, columns = linear_sum_assignment(gain_np, maximize=True)
            rows = np.arange(n)
            old = perms[group].numpy()
            if gain_np[rows, columns].sum() > gain_np[rows, old].sum() + tolerance:
                perms[group] = torch.from_numpy(columns).long()
                converged = False

    aligned = apply_permutation(spec, b, perms)
    return Alignment(
        perms=perms, sweeps=sweeps, converged=converged,
        objective_before=_objective(a, b), objective_after=_objective(a, aligned),
        distance_before=_distance(a, b), distance_after=_distance(a, aligned),
        moved={group: int((perm != torch.arange(len(perm))).sum()) for group, perm in perms.items()})
