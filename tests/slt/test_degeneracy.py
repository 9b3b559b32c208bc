"""Dead units and pruning, functional dimension and the Hessian spectrum on small MLPs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from progsynth.errors import ConfigError, UnsupportedOptionError
from progsynth.slt.degeneracy import (
    HiddenLayer,
    find_dead_units,
    functional_dimension,
    hessian_spectrum,
    prune_dead_units,
    relu_layers,
)

DEAD = (2, 5)


def mlp_with_dead_units(seed: int = 0) -> nn.Sequential:
    """4 → 8 → 3 ReLU MLP whose units 2 and 5 can never fire on inputs of norm ≲ 10."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for j in DEAD:
            model[0].bias[j] = -100.0
    return model


def inputs(rows: int = 64, width: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_dead_units_are_found_and_pruning_keeps_the_function():
    model, x = mlp_with_dead_units(), inputs()
    (units,) = find_dead_units(model, x)
    assert units.dead == DEAD and units.total == 8
    pruned = prune_dead_units(model, x)
    assert pruned.params_before == 4 * 8 + 8 + 8 * 3 + 3
    assert pruned.params_after == pruned.params_before - len(DEAD) * (4 + 1 + 3)
    assert pruned.model[0].out_features == 6 and pruned.model[2].in_features == 6
    assert pruned.max_output_diff < 1e-12
    assert model[0].weight.shape == (8, 4)  # the original is untouched
    assert find_dead_units(pruned.model, x)[0].dead == ()


def test_relu_layers_are_found_inside_nested_sequentials():
    model = nn.Sequential(
        nn.Embedding(7, 3), nn.Flatten(), nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4, bias=False)),
        nn.ReLU(), nn.Linear(4, 7),
    )
    layers = relu_layers(model)
    assert [layer.site for layer in layers] == ["2.0"]
    assert layers[0].incoming == (("2.0.weight", 0), ("2.0.bias", 0)) and layers[0].outgoing == (("2.2.weight", 1),)


class ParameterMLP(nn.Module):
    """An MLP block written with raw parameters and a hook site, like the grokking transformer's."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.W_in = nn.Parameter(torch.randn(5, 6, generator=generator, dtype=torch.float64))
        self.b_in = nn.Parameter(torch.zeros(6, dtype=torch.float64))
        self.W_out = nn.Parameter(torch.randn(6, 2, generator=generator, dtype=torch.float64))
        self.hook_pre = nn.Identity()
        with torch.no_grad():
            self.b_in[[0, 4]] = -1e3

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.hook_pre(torch.nn.functional.one_hot(tokens, 5).double() @ self.W_in + self.b_in))
        return hidden @ self.W_out  # (batch, positions, 2)


def test_a_described_hidden_layer_works_on_a_parameter_model_with_sequence_outputs():
    model = ParameterMLP()
    tokens = torch.randint(0, 5, (20, 3), generator=torch.Generator().manual_seed(0))
    layer = HiddenLayer("hook_pre", (("W_in", 1), ("b_in", 0)), (("W_out", 0),))
    pruned = prune_dead_units(model, tokens, (layer,))
    assert pruned.dead[0].dead == (0, 4)
    assert pruned.params_after == pruned.params_before - 2 * (5 + 1 + 2)
    assert pruned.max_output_diff < 1e-12


def linear_regime_mlp(i: int = 5, h: int = 3, o: int = 4) -> nn.Sequential:
    """Every hidden unit active everywhere (bias +100): the model is affine, f = W2 (W1 x + b1) + b2."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o)).double()
    with torch.no_grad():
        model[0].bias.fill_(100.0)
    return model


def test_functional_dimension_of_an_affine_regime_matches_the_rank_formula():
    # (W1, b1, W2, b2) ↦ (W2 W1, W2 b1 + b2): rank-≤h o×i matrices plus a free offset, so
    # dimension h(i + o) − h² + o (h ≤ min(i, o)), far below the 34 parameters.
    model, x = linear_regime_mlp(), inputs(40, 5)
    y = torch.randn(40, 4, dtype=torch.float64)
    fd = functional_dimension(model, x, y, loss="mse")
    assert fd.num_params == 5 * 3 + 3 + 3 * 4 + 4
    assert fd.rank == 3 * (5 + 4) - 9 + 4
    assert fd.tolerance == pytest.approx(fd.singular_values[0] * max(40 * 4, 34) * np.finfo(np.float64).eps)
    assert fd.null_space.shape == (34, 34 - fd.rank)
    assert fd.gradient_norm > 1e-3 and fd.max_gradient_along_null < 1e-10


def test_dead_units_lower_the_functional_dimension_and_the_null_space_keeps_the_gradient_out():
    model, x = mlp_with_dead_units(), inputs()
    y = torch.randint(0, 3, (64,))
    fd = functional_dimension(model, x, y)
    alive = functional_dimension(prune_dead_units(model, x).model, x, y)
    assert fd.rank == alive.rank  # dead units add parameters, never function
    assert fd.num_params - fd.rank >= len(DEAD) * (4 + 1 + 3)
    null = fd.null_space
    assert np.abs(null.T @ null - np.eye(null.shape[1])).max() < 1e-10
    assert fd.max_gradient_along_null < 1e-10


def test_exact_hessian_of_linear_regression_and_lanczos_agree_with_the_closed_form():
    # L = mean ‖y − W x‖² (no bias): ∇²L = 2 (XᵀX / n) ⊗ I_o, each eigenvalue o times
    x = inputs(50, 4)
    y = torch.randn(50, 3, dtype=torch.float64)
    model = nn.Linear(4, 3, bias=False).double()
    expected = np.sort(np.repeat(np.linalg.eigvalsh(2 * (x.T @ x).numpy() / 50), 3))[::-1]
    exact = hessian_spectrum(model, x, y, loss="mse")
    assert exact.method == "exact" and exact.num_params == 12
    np.testing.assert_allclose(exact.eigenvalues, expected, rtol=1e-10)
    assert exact.num_zero == 0 and exact.num_negative == 0
    lanczos = hessian_spectrum(model, x, y, loss="mse", top_k=4, exact_limit=0)
    assert lanczos.method == "lanczos"
    np.testing.assert_allclose(lanczos.eigenvalues, expected[:4], rtol=1e-8)


def test_dead_unit_parameters_are_zero_curvature_directions():
    model, x = mlp_with_dead_units(), inputs()
    spectrum = hessian_spectrum(model, x, torch.randint(0, 3, (64,)))
    assert spectrum.num_zero >= len(DEAD) * (4 + 1 + 3)


def test_bad_requests_name_the_problem():
    model, x = mlp_with_dead_units(), inputs()
    with pytest.raises(UnsupportedOptionError, match="no ReLU hidden layer"):
        find_dead_units(nn.Sequential(nn.Linear(4, 2)), x)
    with pytest.raises(ConfigError, match="'nowhere' is not a submodule"):
        find_dead_units(model, x, (HiddenLayer("nowhere", (), ()),))
    with pytest.raises(ConfigError, match="'0.nothing' is not a parameter"):
        prune_dead_units(model, x, (HiddenLayer("0", (("0.nothing", 0),), ()),))
    with pytest.raises(UnsupportedOptionError, match="hinge"):
        functional_dimension(model, x, torch.zeros(64), loss="hinge")
    with pytest.raises(ConfigError, match="top_k must be a positive integer, got 0"):
        hessian_spectrum(model, x, torch.zeros(64, dtype=torch.int64), top_k=0)
