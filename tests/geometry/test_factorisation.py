"""geometry/factorisation.py: ∇_w L = J_fᵀ ∇ℓ(f_w) through the lenses equals autograd, on every model kind."""

from __future__ import annotations

import pytest
import torch

from progsynth.core.losses import mse, softmax_cross_entropy
from progsynth.core.smooth import Linear, mlp
from progsynth.errors import ConfigError, LensTypeError
from progsynth.geometry.factorisation import (Factorisation, check_factorisation, check_module_factorisation,
                                              function_gradient)
from progsynth.models import build_model
from progsynth.tasks.modular import ModularTask

TASK = ModularTask(p=7, train_fraction=0.5)
TINY = {"d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32}
MODELS = {
    "gromov": ("gromov", {"d_mlp": 16}),
    "embedding mlp": ("mlp", {"d_model": 8, "d_mlp": 16}),
    "transformer": ("transformer", TINY),
    "straightforward transformer": ("transformer", {**TINY, "implementation": "straightforward"}),
}


def data_for(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    data = TASK.dataset()
    return data.inputs(module.input_kind, torch.float64), data.labels


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("model", list(MODELS))
def test_the_identity_holds_on_every_model(model: str, loss: str):
    name, options = MODELS[model]
    module = build_model(name, TASK, seed=0, dtype=torch.float64, **options)
    x, labels = data_for(module)
    check = check_module_factorisation(module, x, labels, loss)
    assert check.relative_error < 1e-10 and check.max_abs_error < 1e-10
    assert check.gradient_norm > 1e-3 and check.function_gradient_norm > 1e-3 and check.loss > 0
    assert set(check.to_dict()) == {"loss", "function_gradient_norm", "gradient_norm", "max_abs_error",
                                    "relative_error"}


@pytest.mark.parametrize("activation", ["relu", "gelu", "square"])
def test_the_identity_holds_on_a_composite_of_hand_written_primitives(activation: str):
    model = mlp([6, 12, 9, 5], activation, dtype=torch.float64)
    params = model.init(torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 5, (40,), generator=generator)
    for loss, y in ((softmax_cross_entropy(), labels),
                    (mse(), torch.nn.functional.one_hot(labels, 5).to(torch.float64)),
                    (mse("sum"), torch.randn(40, 5, dtype=torch.float64, generator=generator))):
        check = check_factorisation(model, loss, params, x, y)
        assert isinstance(check, Factorisation)
        assert check.relative_error < 1e-10 and check.gradient_norm > 1e-3


class _WrongLinear(Linear):
    """A linear layer whose reverse derivative doubles the weight gradient."""

    def backward(self, residual, db, need_input_grad=True):
        (dw, db_), dx = super().backward(residual, db, need_input_grad)
        return (2 * dw, db_), dx


def test_a_wrong_reverse_derivative_is_caught():
    model = _WrongLinear(4, 3, dtype=torch.float64)
    params = model.init(torch.Generator().manual_seed(0))
    x = torch.randn(10, 4, dtype=torch.float64)
    check = check_factorisation(model, softmax_cross_entropy(), params, x, torch.arange(10) % 3)
    assert check.relative_error > 0.1


def test_the_function_gradient_is_the_loss_gradient_in_the_outputs():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 5, (8,), generator=generator)
    targets = torch.randn(8, 5, dtype=torch.float64, generator=generator)
    for loss, y, reference in (
            (softmax_cross_entropy(), labels, torch.nn.functional.cross_entropy),
            (mse(), targets, torch.nn.functional.mse_loss)):
        free = logits.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(reference(free, y), free)
        assert torch.allclose(function_gradient(loss, y, logits), expected, rtol=0, atol=1e-15)


def test_bad_input_is_named():
    module = build_model("gromov", TASK, seed=0, dtype=torch.float64, d_mlp=4)
    x, labels = data_for(module)
    with pytest.raises(ConfigError, match="'hinge'"):
        check_module_factorisation(module, x, labels, "hinge")
    with pytest.raises(ConfigError, match="nn.Module"):
        check_module_factorisation("gromov", x, labels)
    with pytest.raises(LensTypeError, match="loss lens"):
        check_factorisation(mlp([2, 2]), "mse", mlp([2, 2]).init(), torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(LensTypeError, match=r"\[0, 7\)"):
        check_module_factorisation(module, x, labels + 7, "mse")
