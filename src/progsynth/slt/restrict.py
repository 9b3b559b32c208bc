"""The refined LLC: λ̂ of a subset of the weights, the others frozen at w* (REFERENCE §7).

Wang, Hoogland, van Wingerden, Furman and Murfet (2024, "Differentiation and specialization of
attention heads via the refined local learning coefficient") estimate λ̂ with SGLD moving only one
component's parameters, the embedding, one attention head, the MLP or the unembedding, while
every other weight stays at the checkpoint w*. The estimate then measures how degenerate the loss
is along that component alone: a component whose weights the function barely depends on has a
small λ̂, and a regular (non-degenerate) subset of d_subset weights gives d_subset/2.

A restriction is named by a model component (the model's ``components()`` method: the
transformer's ``embedding``, ``head0`` …, ``mlp``, ``unembedding``) or by parameter-name patterns
(``fnmatch`` globs, comma-separated, e.g. ``"W_Q,W_K"`` or ``"b_*"``), which take whole tensors. A
component may take one index along a parameter's first axis (a head's slice of W_Q).

How it is estimated: ``restricted_module`` wraps the model in a module whose only parameters are
the chosen weights; its forward writes them into w* and runs the model. ``estimate_llc_for_module``
then samples exactly as for the whole network (the same nβ = n / log n, localization and
diagnostics), now in d_subset dimensions. Nothing in the sampler knows about the restriction.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call

from progsynth.errors import ConfigError, NotApplicableError

__all__ = ["ALL_COMPONENTS", "Restriction", "components_of", "component_names", "resolve", "restricted_module"]

ALL_COMPONENTS = "all-components"
"""The ``--restrict`` value that estimates every component of the model in turn."""


@dataclass(frozen=True)
class Restriction:
    """Which weights SGLD moves: parameter name → an index along its axis 0, or None for all of it."""

    name: str
    """The component or pattern as given (what measures.jsonl records as ``restrict``)."""
    parts: dict[str, Optional[int]]
    """Parameter name → the index along axis 0 it contributes, or None for the whole tensor."""
    size: int
    """d_subset: the number of weights sampled."""


def components_of(module: nn.Module) -> dict[str, dict[str, Optional[int]]]:
    """The model's named components (its ``components()`` method), or {} for a model without one."""
    method = getattr(module, "components", None)
    return method() if callable(method) else {}


def resolve(module: nn.Module, restrict: str) -> Restriction:
    """The restriction ``restrict`` names on ``module``: a component name, else comma-separated
    parameter-name globs. ConfigError listing the components and parameter names when nothing
    matches."""
    params = dict(module.named_parameters())
    components = components_of(module)
    if not isinstance(restrict, str) or not restrict.strip():
        raise ConfigError(f"--restrict must name a component or a parameter pattern, got {restrict!r}")
    restrict = restrict.strip()
    if restrict in components:
        parts = components[restrict]
    else:
        patterns = [p.strip() for p in restrict.split(",") if p.strip()]
        parts = {name: None for name in params if any(fnmatchcase(name, p) for p in patterns)}
    if not parts:
        known = f"components {sorted(components)}; " if components else ""
        raise ConfigError(f"--restrict {restrict!r} matches no component or parameter of {type(module).__name__}: "
                          f"{known}parameters {list(params)}")
    size = sum(params[name].numel() if index is None else params[name][index].numel() for name, index in parts.items())
    return Restriction(restrict, dict(parts), size)


def component_names(module: nn.Module) -> list[str]:
    """Every component of the model, for ``--restrict all-components``; NotApplicableError for a
    model that names none."""
    names = list(components_of(module))
    if not names:
        raise NotApplicableError(f"{type(module).__name__} names no components; restrict to parameter patterns "
                                 f"instead (parameters {[n for n, _ in module.named_parameters()]})")
    return names


class _Restricted(nn.Module):
    """The model with only the restriction's weights as parameters (module docstring)."""

    def __init__(self, module: nn.Module, restriction: Restriction):
        super().__init__()
        self._model = (module,)  # a tuple, so the model's parameters are not registered as this module's
        self._frozen = {name: p.detach() for name, p in module.named_parameters()}
        self._slots = {}  # attribute name (no dots) → (parameter name, axis-0 index or None)
        self._buffers_of_model = dict(module.named_buffers())
        for i, (name, index) in enumerate(restriction.parts.items()):
            value = self._frozen[name] if index is None else self._frozen[name][index]
            attribute = f"w{i}"
            setattr(self, attribute, nn.Parameter(value.clone()))
            self._slots[attribute] = (name, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self._frozen)
        for attribute, (name, index) in self._slots.items():
            moved = getattr(self, attribute)
            if index is None:
                params[name] = moved
            else:
                base = self._frozen[name]
                params[name] = base.index_copy(0, torch.tensor([index], device=base.device), moved.unsqueeze(0))
        return functional_call(self._model[0], (params, self._buffers_of_model), (x,))


def restricted_module(module: nn.Module, restriction: Restriction) -> nn.Module:
    """A module computing ``module``'s function whose parameters are only the restriction's weights
    (at their current values), the rest frozen: what ``estimate_llc_for_module`` samples for the
    refined LLC. ``module`` is not modified."""
    return _Restricted(module, restriction)
