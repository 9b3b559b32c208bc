"""Losses and learning rates as lenses (REFERENCE §1).

A loss is a parametric lens whose parameter is the target: ``forward(y, ŷ) -> (loss, residual)``
and ``backward(residual, α) -> (y', ŷ')``, where α is what the learning-rate lens puts back.
A learning rate is a lens from the loss to the unit whose put returns −ε over the reals (so the
update moves downhill) and the error bits themselves over Z2.

Reductions (documented once, here):
- ``mse(reduction="mean")``: mean over all elements of (ŷ − y)², exactly ``torch.nn.MSELoss()``;
  ``reduction="sum"``: ½ Σ (ŷ − y)², the paper's form, whose reverse derivative is α(ŷ − y).
- ``softmax_cross_entropy()``: mean over the batch of −Σ_c y_c log softmax(z)_c, exactly
  ``torch.nn.CrossEntropyLoss()``; targets are class indices (int64) or probability rows (float).
- ``xor_loss()``: e = y ⊕ ŷ on bit-packed words, R[e](y, ŷ, α) = (α, α).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from progsynth.core.lens import Bits, Lens, Para, Real
from progsynth.errors import ConfigError, LensTypeError

__all__ = ["mse", "softmax_cross_entropy", "xor_loss", "learning_rate", "error_rate"]


def _require_tensor(name: str, what: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise LensTypeError(f"{name} expects {what} as a torch.Tensor, got {type(value).__name__}")
    return value


class MSE(Para):
    """Squared error as a lens parametrised by the target."""

    dom, cod = Real(), Real()

    def __init__(self, reduction: str = "mean"):
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"mse reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.name = f"mse({reduction})"

    def forward(self, y: Any, y_hat: Any) -> tuple[torch.Tensor, Any]:
        y = _require_tensor(self.name, "the target", y)
        y_hat = _require_tensor(self.name, "the prediction", y_hat)
        if y.shape != y_hat.shape:
            raise LensTypeError(
                f"{self.name}: prediction has shape {tuple(y_hat.shape)} but target has shape {tuple(y.shape)}"
            )
        diff = y_hat - y
        if self.reduction == "sum":
            return 0.5 * (diff * diff).sum(), diff
        return (diff * diff).mean(), diff

    def backward(self, residual: Any, alpha: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        diff = residual
        scale = alpha if self.reduction == "sum" else alpha * (2.0 / diff.numel())
        d_y_hat = scale * diff
        return -d_y_hat, d_y_hat


class SoftmaxCrossEntropy(Para):
    """Softmax cross-entropy on logits (batch, classes) as a lens parametrised by the target."""

    name = "softmax_cross_entropy"
    dom, cod = Real(), Real()

    def __init__(self, precision: torch.dtype | None = None):
        self.precision = precision

    def forward(self, y: Any, logits: Any) -> tuple[torch.Tensor, Any]:
        logits = _require_tensor(self.name, "logits", logits)
        y = _require_tensor(self.name, "the target", y)
        if logits.dim() != 2:
            raise LensTypeError(f"{self.name}: logits must be (batch, classes), got shape {tuple(logits.shape)}")
        dtype = logits.dtype
        if self.precision is not None:
            logits = logits.to(self.precision)
            if y.is_floating_point():
                y = y.to(self.precision)
        log_p = torch.log_softmax(logits, dim=-1)
        batch, classes = logits.shape
        if y.dtype in (torch.int64, torch.int32):
            if y.shape != (batch,):
                raise LensTypeError(f"{self.name}: class-index target must have shape ({batch},), got {tuple(y.shape)}")
            try:  # gather refuses an index outside [0, classes): the range is read only then, no per-step sync
                loss = -log_p.gather(1, y.long().unsqueeze(1)).mean()
            except (RuntimeError, IndexError):
                raise LensTypeError(
                    f"{self.name}: class indices must lie in [0, {classes}), got range "
                    f"[{int(y.min())}, {int(y.max())}]"
                ) from None
        else:
            if y.shape != logits.shape:
                raise LensTypeError(
                    f"{self.name}: probability target must have shape {tuple(logits.shape)}, got {tuple(y.shape)}"
                )
            loss = -(y * log_p).sum(dim=1).mean()
        return loss, (y, log_p, dtype)

    def backward(self, residual: Any, alpha: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        y, log_p, dtype = residual
        batch = log_p.shape[0]
        d_logits = log_p.exp()
        if y.dtype in (torch.int64, torch.int32):
            d_logits[torch.arange(batch), y.long()] -= 1.0
            d_y = None  # class indices are discrete: no reverse derivative
        else:
            d_logits = d_logits * y.sum(dim=1, keepdim=True) - y
            d_y = (-(alpha / batch) * log_p).to(dtype)
        return d_y, (d_logits * (alpha / batch)).to(dtype)


class XorLoss(Para):
    """The Boolean loss e(y, ŷ) = y ⊕ ŷ on bit-packed words; R[e](y, ŷ, α) = (α, α)."""

    name = "xor_loss"
    dom, cod = Bits(), Bits()

    def forward(self, y: Any, y_hat: Any) -> tuple[np.ndarray, Any]:
        for what, value in (("target", y), ("prediction", y_hat)):
            if not (isinstance(value, np.ndarray) and value.dtype == np.uint64):
                raise LensTypeError(
                    f"{self.name} expects the {what} as bit-packed np.uint64 words, got "
                    f"{type(value).__name__} of dtype {getattr(value, 'dtype', None)}"
                )
        if y.shape != y_hat.shape:
            raise LensTypeError(f"{self.name}: prediction has shape {y_hat.shape} but target has {y.shape}")
        return y ^ y_hat, None

    def backward(self, residual: Any, alpha: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        return alpha, alpha


class LearningRate(Lens):
    """Learning rate over the reals: a lens loss → 1 whose put returns −ε."""

    dom, cod = Real(), Real()

    def __init__(self, eps: float):
        if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
            raise ConfigError(f"learning rate ε must be a positive finite number, got {eps!r}")
        self.eps = float(eps)
        self.name = f"learning_rate({eps:g})"

    def forward(self, loss: Any) -> tuple[tuple, None]:
        return (), None

    def backward(self, residual: Any, d_unit: Any) -> float:
        return -self.eps


class ErrorRate(Lens):
    """Learning rate over Z2: a lens loss → 1 whose put returns the error bits themselves."""

    name = "error_rate"
    dom, cod = Bits(), Bits()

    def forward(self, loss: Any) -> tuple[tuple, Any]:
        return (), loss

    def backward(self, residual: Any, d_unit: Any) -> Any:
        return residual


def mse(reduction: str = "mean") -> MSE:
    """Squared-error loss lens; see the module docstring for the two reductions."""
    return MSE(reduction)


def softmax_cross_entropy(precision: torch.dtype | None = None) -> SoftmaxCrossEntropy:
    """Softmax cross-entropy loss lens on logits, matching ``torch.nn.CrossEntropyLoss()``.

    ``precision=torch.float64`` computes the log-softmax, the loss and its reverse derivative in
    float64 and hands the gradient back in the logits' dtype, as Nanda et al.'s code does
    (``cross_entropy_high_precision``). In float32, once the training loss nears float32's
    resolution (≈ 1e-7) the gradient of the correct logit rounds to zero while the others do not,
    and Adam turns that into periodic loss spikes ("slingshots") that change when a run groks."""
    return SoftmaxCrossEntropy(precision)


def xor_loss() -> XorLoss:
    """The Boolean error lens y ⊕ ŷ."""
    return XorLoss()


def learning_rate(eps: float = 1.0) -> LearningRate:
    """The real learning-rate lens (put returns −ε). With optimizers that hold their own step size
    (all of ``core.optim``), the default ε = 1 makes p' the negative gradient."""
    return LearningRate(eps)


def error_rate() -> ErrorRate:
    """The Z2 learning-rate lens (put returns the error bits)."""
    return ErrorRate()
