"""Loss lenses: values and reverse derivatives against torch's losses and torch.autograd."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from progsynth.core.losses import mse, softmax_cross_entropy
from progsynth.errors import ConfigError, LensTypeError


def _grad(loss_fn, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.detach().clone().requires_grad_(True)
    loss = loss_fn(z)
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("target_kind", ["index", "probability"])
def test_cross_entropy_matches_torch(target_kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g) if target_kind == "index" else \
        torch.softmax(torch.randn(7, 5, generator=g, dtype=torch.float64), -1)
    lens = softmax_cross_entropy()
    loss, residual = lens.forward(y, logits)
    _, d_logits = lens.backward(residual, 0.5)
    ref_loss, ref_grad = _grad(lambda z: F.cross_entropy(z, y), logits)
    assert torch.allclose(loss, ref_loss, atol=1e-12)
    assert torch.allclose(d_logits, 0.5 * ref_grad, atol=1e-12)


def test_high_precision_cross_entropy_is_the_float64_loss_handed_back_in_float32() -> None:
    """The paper's loss: float32 logits, loss and gradient computed in float64. Near a perfect fit
    (train loss ≈ 1e-8) float32 arithmetic gets the correct class's gradient wrong; float64 does not."""
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 11, (64,), generator=g)
    logits = torch.randn(64, 11, generator=g)
    logits[torch.arange(64), y] += 20.0  # confident and right: the regime where float32 loses it
    lens = softmax_cross_entropy(precision=torch.float64)
    loss, residual = lens.forward(y, logits)
    _, d_logits = lens.backward(residual, 1.0)
    ref_loss, ref_grad = _grad(lambda z: F.cross_entropy(z, y), logits.double())
    assert loss.dtype == torch.float64 and d_logits.dtype == torch.float32
    assert torch.allclose(loss, ref_loss, rtol=1e-12)
    assert torch.allclose(d_logits, ref_grad.float(), rtol=1e-6, atol=0)
    _, float32_grad = _grad(lambda z: F.cross_entropy(z, y), logits)
    correct = torch.arange(64), y
    assert not torch.allclose(float32_grad[correct], ref_grad.float()[correct], rtol=1e-2, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_autograd(reduction: str) -> None:
    g = torch.Generator().manual_seed(2)
    y_hat, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    lens = mse(reduction)
    loss, residual = lens.forward(y, y_hat)
    d_y, d_y_hat = lens.backward(residual, 1.0)
    reference = (lambda z: F.mse_loss(z, y)) if reduction == "mean" else (lambda z: 0.5 * ((z - y) ** 2).sum())
    ref_loss, ref_grad = _grad(reference, y_hat)
    assert torch.allclose(loss, ref_loss) and torch.allclose(d_y_hat, ref_grad) and torch.allclose(d_y, -ref_grad)


def test_bad_input_names_the_loss_and_what_was_expected() -> None:
    with pytest.raises(ConfigError, match="reduction must be 'mean' or 'sum', got 'max'"):
        mse("max")
    with pytest.raises(LensTypeError, match=r"softmax_cross_entropy: class indices must lie in \[0, 3\)"):
        softmax_cross_entropy().forward(torch.tensor([0, 5]), torch.zeros(2, 3))
    with pytest.raises(LensTypeError, match=r"mse\(mean\): prediction has shape \(2,\) but target has shape \(3,\)"):
        mse().forward(torch.zeros(3), torch.zeros(2))


def test_valid_class_targets_are_not_range_checked_each_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The label range is validated where data enters (gather refuses an out-of-range index), not by
    a min/max host read on every step: on valid targets the forward never reads the range."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the forward read the targets' range")

    monkeypatch.setattr(torch.Tensor, "min", refuse)
    monkeypatch.setattr(torch.Tensor, "max", refuse)
    loss, _ = softmax_cross_entropy().forward(torch.tensor([0, 2, 1]), torch.zeros(3, 3))
    assert float(loss) == pytest.approx(math.log(3))
