"""The loss as a convex function of the network's outputs composed with the parameter-function map.

Training minimises L(w) = ℓ(f_w): w ↦ f_w (the parameter-function map, the model lens's get on
the data) followed by ℓ, the loss lens parametrised by the targets, which is convex in the outputs
(cross-entropy in the logits, squared error in the predictions). The chain rule then reads

    ∇_w L = J_fᵀ ∇ℓ(f_w),

with J_f the Jacobian of the outputs with respect to the parameters and ∇ℓ(f_w) the *function-space
gradient*: the loss lens's put with α = 1 (REFERENCE §1: R[e](y, ŷ, α)). In the lens picture the
right-hand side is the model's put of the loss's put, which is exactly the supervised step's
backward pass. ``check_factorisation`` computes it that way and compares it with torch.autograd
differentiating loss.get(y, model.get(w, x)) directly, which shares none of the lens code's reverse
derivatives (for the hand-written primitives of ``core.smooth``) or its composition of residuals.
All that the NTK (``ntk``) says about training rests on this identity: gradient descent moves the
outputs by −η Θ ∇ℓ, Θ = J Jᵀ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from progsynth.core.lens import Para
from progsynth.core.losses import mse, softmax_cross_entropy
from progsynth.core.smooth import from_module
from progsynth.errors import ConfigError, LensTypeError

__all__ = ["LOSSES", "Factorisation", "function_gradient", "check_factorisation", "check_module_factorisation"]

LOSSES = ("cross_entropy", "mse")
"""The loss names ``check_module_factorisation`` accepts (as ``runs.config.RunConfig.loss``)."""


@dataclass(frozen=True)
class Factorisation:
    """The identity ∇_w L = J_fᵀ ∇ℓ(f_w) checked at one parameter point (module docstring)."""

    loss: float
    """L(w) = ℓ(f_w) on the given data."""
    function_gradient_norm: float
    """‖∇ℓ(f_w)‖, the Euclidean norm of the function-space gradient (all outputs)."""
    gradient_norm: float
    """‖∇_w L‖ over all parameters, from autograd."""
    max_abs_error: float
    """Largest absolute difference between the lens gradient and autograd's, over all parameter entries."""
    relative_error: float
    """``max_abs_error`` divided by the largest absolute entry of autograd's gradient (0 when both vanish)."""

    def to_dict(self) -> dict[str, float]:
        """The fields as plain floats (JSON-ready)."""
        return asdict(self)


def _leaves(tree: Any, what: str) -> list[torch.Tensor]:
    leaves = pytree.tree_leaves(tree)
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor) or not leaf.dtype.is_floating_point:
            dtype = f" and dtype {leaf.dtype}" if hasattr(leaf, "dtype") else ""
            raise LensTypeError(f"{what} must be a pytree of floating-point tensors, got a leaf of type "
                                f"{type(leaf).__name__}{dtype}")
    return leaves


def function_gradient(loss: Para, targets: Any, outputs: torch.Tensor) -> torch.Tensor:
    """∇ℓ at f_w: the gradient of the loss with respect to the outputs, as the loss lens's put with α = 1.

    ``loss`` is a loss lens (``core.losses``) parametrised by ``targets``; ``outputs`` are the
    network's outputs f_w(x) (for example logits (N, C)). The result has the shape of ``outputs``.
    """
    if not isinstance(loss, Para):
        raise LensTypeError(f"function_gradient expects a loss lens (core.losses), got {type(loss).__name__}")
    if not isinstance(outputs, torch.Tensor):
        raise LensTypeError(f"function_gradient expects the outputs as a torch.Tensor, got {type(outputs).__name__}")
    _, d_outputs = loss.put(targets, outputs, 1.0)
    return d_outputs


def check_factorisation(model: Para, loss: Para, params: Any, x: torch.Tensor, y: Any) -> Factorisation:
    """Compare ∇_w L computed through the lens decomposition with torch.autograd (module docstring).

    Lens side: one forward pass of ``model`` and of ``loss`` keeping their residuals, the loss's put
    with α = 1 gives ∇ℓ(f_w), and the model's put of it gives J_fᵀ ∇ℓ. Autograd side: the
    parameters' leaves (a dict or nested tuples, walked with ``torch.utils._pytree``) are detached
    copies requiring grad, and ``torch.autograd.grad`` differentiates loss.get(y, model.get(w, x)).
    Use float64 parameters and inputs for a check at rounding level (≈ 1e-15 relative).
    """
    if not isinstance(model, Para) or not isinstance(loss, Para):
        raise LensTypeError(f"check_factorisation expects a model lens and a loss lens (Para), got "
                            f"{type(model).__name__} and {type(loss).__name__}")
    leaves = _leaves(params, "the parameters")
    if not leaves:
        raise ConfigError("check_factorisation needs a model with parameters, got an empty parameter pytree")
    with torch.no_grad():
        outputs, model_residual = model.forward(params, x)
        value, loss_residual = loss.forward(y, outputs)
        _, grad_f = loss.backward(loss_residual, 1.0)
        lens_grad, _ = model.backward(model_residual, grad_f, need_input_grad=False)

    spec = pytree.tree_structure(params)
    free = [leaf.detach().clone().requires_grad_(True) for leaf in leaves]
    with torch.enable_grad():
        reference = loss.get(y, model.get(pytree.tree_unflatten(free, spec), x))
        auto = torch.autograd.grad(reference, free, allow_unused=True)
    auto = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(free, auto)]

    lens_leaves = pytree.tree_leaves(lens_grad)
    if len(lens_leaves) != len(auto):
        raise LensTypeError(f"{model.name}'s put returned {len(lens_leaves)} parameter gradients for "
                            f"{len(auto)} parameter tensors")
    max_abs_error, max_abs, sq_norm = 0.0, 0.0, 0.0
    for g_lens, g_auto in zip(lens_leaves, auto):
        g_lens = torch.zeros_like(g_auto) if g_lens is None else g_lens.reshape(g_auto.shape)
        if g_auto.numel():
            max_abs_error = max(max_abs_error, float((g_lens - g_auto).abs().max()))
            max_abs = max(max_abs, float(g_auto.abs().max()))
        sq_norm += float((g_auto.double() ** 2).sum())
    relative = max_abs_error / max_abs if max_abs > 0 else (0.0 if max_abs_error == 0 else math.inf)
    return Factorisation(
        loss=float(value),
        function_gradient_norm=float(grad_f.double().norm()),
        gradient_norm=math.sqrt(sq_norm),
        max_abs_error=max_abs_error,
        relative_error=relative,
    )


def check_module_factorisation(module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                               loss: str = "cross_entropy") -> Factorisation:
    """``check_factorisation`` for an ``nn.Module`` at its current parameters, with a named loss.

    ``loss`` is ``"cross_entropy"`` (``y`` class indices (N,) or probability rows) or ``"mse"``
    (``y`` class indices, turned into one-hot rows in the outputs' dtype as the runs do, or float
    targets of the outputs' shape).
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"check_module_factorisation expects a torch.nn.Module, got {type(module).__name__}")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if not isinstance(y, torch.Tensor):
        raise LensTypeError(f"check_module_factorisation expects the targets as a torch.Tensor, got {type(y).__name__}")
    model = from_module(module)
    params = model.init()
    if loss == "cross_entropy":
        return check_factorisation(model, softmax_cross_entropy(), params, x, y)
    if not y.is_floating_point():
        with torch.no_grad():
            outputs = model.get(params, x)
        if y.dim() != 1 or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= outputs.shape[-1])):
            raise LensTypeError(f"mse class-index targets must be (N,) in [0, {outputs.shape[-1]}), got shape "
                                f"{tuple(y.shape)}")
        y = torch.nn.functional.one_hot(y.long(), outputs.shape[-1]).to(outputs.dtype)
    return check_factorisation(model, mse(), params, x, y)
