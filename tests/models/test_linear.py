"""Deep linear networks: forward pass, true solutions of a given rank, data, module view."""

from __future__ import annotations

import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.models.linear import (
    check_widths,
    dln_data,
    dln_forward,
    dln_module,
    dln_product,
    dln_true_solution,
    random_dln,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_forward_is_the_product_and_the_module_agrees():
    params = random_dln([5, 4, 3, 2], gen(), dtype=torch.float64)
    assert [tuple(w.shape) for w in params] == [(4, 5), (3, 4), (2, 3)]
    x = torch.randn(7, 5, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close(dln_forward(params, x), x @ dln_product(params).T)
    torch.testing.assert_close(dln_module(params)(x), dln_forward(params, x))


@pytest.mark.parametrize("widths,rank", [([20, 10, 10, 10, 20], 5), ([6, 3, 6], 0), ([4, 4], 4), ([3, 7, 2, 5], 2)])
def test_true_solution_has_rank_r_in_every_layer_and_unit_singular_values(widths, rank):
    params = dln_true_solution(widths, rank, gen(), dtype=torch.float64)
    product = dln_product(params)
    assert torch.linalg.matrix_rank(product) == rank
    assert all(torch.linalg.matrix_rank(w) == rank for w in params)
    expected = torch.cat([torch.ones(rank), torch.zeros(min(product.shape) - rank)]).double()
    torch.testing.assert_close(torch.linalg.svdvals(product), expected, atol=1e-10, rtol=0)


def test_data_follow_the_teacher_with_the_requested_noise():
    params = dln_true_solution([8, 4, 6], 3, gen())
    x, y = dln_data(params, 20_000, noise_std=0.5, generator=gen(2))
    assert x.shape == (20_000, 8) and y.shape == (20_000, 6)
    residual = y - dln_forward(params, x)
    assert residual.std().item() == pytest.approx(0.5, rel=0.02)
    assert x.std().item() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: check_widths([3]), "at least an input and an output"),
        (lambda: check_widths([3, -1]), "positive integer, got -1"),
        (lambda: dln_true_solution([3, 2, 3], 3), "min\\(widths\\) = 2, got 3"),
        (lambda: dln_data(random_dln([2, 2]), 0), "n \\(number of samples\\) must be an integer from 1 to 10000000, got 0"),
        (lambda: check_widths([10**5, 10**5]), "10,000,000,000 parameters; at most 10,000,000"),
        (lambda: dln_data(random_dln([2, 2]), 5, noise_std=-1.0), "noise_std"),
    ],
)
def test_bad_inputs_are_config_errors(call, needle):
    with pytest.raises(ConfigError, match=needle):
        call()
