"""interp/fourier.py: the basis, 1-D and 2-D transforms, sum directions, neuron terms, Gini."""

from __future__ import annotations

import math

import pytest
import torch

from progsynth.errors import ConfigError, LensTypeError, ProgsynthError
from progsynth.interp.fourier import (fourier_1d, fourier_2d, fourier_basis, frequency_norms, frequency_of_terms,
                                      gini, harmonic, sum_components, sum_directions)


@pytest.mark.parametrize("n", [2, 7, 8, 23, 30])
def test_basis_is_orthonormal_with_documented_rows(n):
    basis = fourier_basis(n)
    m = basis.matrix
    assert m.shape == (n, n) and m.dtype == torch.float64
    assert torch.allclose(m @ m.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert basis.labels[0] == "const" and len(basis.labels) == n
    x = torch.arange(n, dtype=torch.float64)
    for k in basis.frequencies:
        cos = torch.cos(2 * math.pi * k * x / n)
        assert torch.allclose(m[basis.cos_row(k)], cos / cos.norm(), atol=1e-12)
        assert basis.labels[basis.cos_row(k)] == f"cos {k}"
        assert basis.has_sin(k) == (2 * k != n)
    assert basis.row_frequency().tolist() == [0] + [(i + 1) // 2 for i in range(1, n)]


@pytest.mark.parametrize("n,k", [(23, 3), (23, 11), (8, 3), (8, 4)])
def test_1d_transform_of_a_pure_wave_puts_its_norm_at_its_frequency(n, k):
    basis = fourier_basis(n)
    x = torch.arange(n, dtype=torch.float64)
    wave = 2.5 * torch.cos(2 * math.pi * k * x / n + (0.7 if basis.has_sin(k) else 0.0)) + 4.0  # plus a constant
    norms = frequency_norms(fourier_1d(wave, basis), basis)
    assert norms.shape == (n // 2,)
    assert norms[k - 1] == pytest.approx(float((wave - 4.0).norm()), rel=1e-12)
    assert float(norms.pow(2).sum() - norms[k - 1] ** 2) == pytest.approx(0.0, abs=1e-20)


def test_1d_transform_along_any_axis_is_an_inverse_rotation():
    basis = fourier_basis(11)
    weights = torch.randn(5, 11, 3, generator=torch.Generator().manual_seed(0))
    along1 = fourier_1d(weights, basis, dim=1)
    assert along1.shape == weights.shape
    assert torch.allclose(along1, fourier_1d(weights.transpose(0, 1), basis, 0).transpose(0, 1))
    back = torch.einsum("ij,aik->ajk", basis.matrix, along1)  # the basis is orthogonal: M^T inverts M
    assert torch.allclose(back, weights.double(), atol=1e-12)
    assert torch.allclose(fourier_1d(weights, basis, dim=-2), along1)
    assert float(along1.norm()) == pytest.approx(float(weights.double().norm()), rel=1e-12)


@pytest.mark.parametrize("n,k", [(23, 4), (10, 5)])
def test_2d_transform_of_a_sum_wave(n, k):
    basis = fourier_basis(n)
    s = (torch.arange(n).unsqueeze(1) + torch.arange(n).unsqueeze(0)).double()
    grid = 3.0 * torch.cos(2 * math.pi * k * s / n)
    hat = fourier_2d(grid, basis)
    rows = basis.rows(k)
    inside = torch.zeros(n, n, dtype=torch.bool)
    inside[torch.tensor(rows).unsqueeze(1), torch.tensor(rows)] = True
    assert float(hat[~inside].abs().max()) < 1e-10  # only the k × k terms
    components = sum_components(hat, basis)
    assert components[k - 1, 0] == pytest.approx(float(grid.norm()), rel=1e-12)  # all along cos(w(x + y))
    components[k - 1, 0] = 0
    assert float(components.abs().max()) < 1e-10
    # Directions and components rebuild any grid's sum part; for a pure sum wave, the grid itself.
    rebuilt = torch.einsum("kjxy,kj->xy", sum_directions(basis), sum_components(hat, basis))
    assert torch.allclose(rebuilt, grid, atol=1e-10)


def test_sum_directions_are_orthonormal():
    basis = fourier_basis(12)
    d = sum_directions(basis).reshape(-1, 144)
    d = d[d.norm(dim=1) > 0]  # the Nyquist frequency has no sine
    assert d.shape[0] == 11
    assert torch.allclose(d @ d.T, torch.eye(11, dtype=torch.float64), atol=1e-12)


def test_a_squared_frequency_k_unit_lies_wholly_in_frequency_k_terms():
    """(cos(w a) + cos(w b))², Gromov's neuron: k × k terms plus the harmonic 2k of a or b alone."""
    n, k = 23, 5
    basis = fourier_basis(n)
    w = 2 * math.pi * k / n
    x = torch.arange(n, dtype=torch.float64)
    neuron = (torch.cos(w * x + 0.3).unsqueeze(1) + torch.cos(w * x - 1.1).unsqueeze(0)) ** 2
    energy = fourier_2d(neuron - neuron.mean(), basis).pow(2)
    share = (frequency_of_terms(basis).double() * energy).sum((1, 2)) / energy.sum()
    assert share[k - 1] == pytest.approx(1.0, abs=1e-12)
    assert harmonic(k, n) == 10 and harmonic(7, n) == 9 and harmonic(3, 6) == 0
    assert share[harmonic(k, n) - 1] == pytest.approx(0.2, abs=1e-12)  # its own linear terms only


def test_gini():
    assert gini(torch.tensor([0.0, 0.0, 5.0, 0.0])) == pytest.approx(3 / 4)
    assert gini(torch.ones(10)) == pytest.approx(0.0, abs=1e-15)
    assert gini(torch.tensor([0.0, 1.0])) == pytest.approx(0.5)
    values = torch.rand(20, generator=torch.Generator().manual_seed(1))
    assert gini(values) == pytest.approx(gini(7 * values)) and gini(values) == pytest.approx(gini(values.flip(0)))
    assert gini(torch.zeros(3)) == 0.0
    assert 0 < gini(values) < gini(values ** 4) < 1  # sparser is higher


def test_bad_input_names_what_was_wrong():
    basis = fourier_basis(7)
    with pytest.raises(LensTypeError, match=r"axis 0 of a tensor of shape \(6, 3\) must have the group's 7"):
        fourier_1d(torch.zeros(6, 3), basis)
    with pytest.raises(LensTypeError, match="axis 1"):
        fourier_2d(torch.zeros(7, 5), basis)
    with pytest.raises(LensTypeError, match="torch.Tensor"):
        fourier_1d([1.0] * 7, basis)
    with pytest.raises(LensTypeError, match="axis 2 of a tensor of shape"):
        fourier_1d(torch.zeros(7, 7), basis, dim=2)
    with pytest.raises(LensTypeError, match="frequency_norms expects a torch.Tensor, got list"):
        frequency_norms([0.0] * 7, basis)
    with pytest.raises(ConfigError, match="n ≥ 2, got 1"):
        fourier_basis(1)
    with pytest.raises(ConfigError, match=r"frequency must be an integer in 1\.\.3 for Z_7, got 4"):
        basis.cos_row(4)
    with pytest.raises(ConfigError, match="no sine row"):
        fourier_basis(8).sin_row(4)
    with pytest.raises(ConfigError, match="non-negative"):
        gini(torch.tensor([1.0, -1.0]))
    with pytest.raises(ProgsynthError):
        gini(torch.tensor([]))
