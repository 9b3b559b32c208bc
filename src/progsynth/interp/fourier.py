"""Fourier analysis over a cyclic group Z_n (REFERENCE §3).

The basis. ``fourier_basis(n)`` is the real orthonormal Fourier basis of functions on Z_n, one row
per basis function, rows in the order

    const, cos 1, sin 1, cos 2, sin 2, ..., cos K, sin K  [, cos n/2]

with w_k = 2πk/n, the constant row 1/√n, and every cos/sin row scaled to unit norm (√(2/n)). The
frequencies are k = 1..⌊n/2⌋. For odd n (a prime p) that is 1 + 2·(n−1)/2 = n rows. For even n
(for example the p − 1 elements of Z_p^*, the group of the discrete-log relabelling) the Nyquist
frequency n/2 has only a cosine row, cos(πx) = (−1)^x, with norm factor 1/√n, because sin(πx)
vanishes on the integers; then the rows are 1 + 2(n/2 − 1) + 1 = n. Either way the matrix is
square and orthogonal, so transforms are exact rotations and norms are preserved.

Transforms. ``fourier_1d`` transforms one axis indexed by group elements (rows of an embedding,
classes of an unembedding or neuron-to-logit map); ``fourier_2d`` transforms the first two axes
of a grid over the inputs (x, y) ∈ Z_n × Z_n (activations, logits). ``frequency_norms`` gathers
the cos and sin rows of each frequency into one norm per frequency.

Sums. The algorithm of Nanda et al. reads the logits along cos(w_k(x + y)) and sin(w_k(x + y)).
These are not single 2-D basis functions but combinations of four of them (cos(u + v) = cos u cos v
− sin u sin v); ``sum_components`` reads their coefficients off the 2-D transform and
``sum_directions`` gives the unit-norm functions on the grid, so a restricted or excluded logit
tensor is one contraction away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from progsynth.errors import ConfigError, LensTypeError

__all__ = [
    "FourierBasis",
    "fourier_basis",
    "fourier_1d",
    "fourier_2d",
    "frequency_norms",
    "sum_components",
    "sum_directions",
    "harmonic",
    "frequency_of_terms",
    "gini",
]

DTYPE = torch.float64
"""All Fourier analysis runs in float64 (weights are cast on the way in)."""


@dataclass(frozen=True, eq=False)
class FourierBasis:
    """The orthonormal real Fourier basis of Z_n (module docstring for the row order)."""

    n: int
    """The group order."""
    matrix: torch.Tensor = field(repr=False)
    """(n, n) float64; row i is basis function i evaluated at x = 0..n−1."""
    labels: tuple[str, ...] = field(repr=False)
    """Row names: 'const', 'cos 1', 'sin 1', ..."""

    @property
    def frequencies(self) -> list[int]:
        """The frequencies k = 1..⌊n/2⌋."""
        return list(range(1, self.n // 2 + 1))

    def has_sin(self, k: int) -> bool:
        """Whether frequency k has a sine row (every k except the Nyquist frequency n/2 of even n)."""
        return 2 * k != self.n

    def cos_row(self, k: int) -> int:
        """Index of cos(w_k x) in the basis."""
        self._check_frequency(k)
        return 2 * k - 1

    def sin_row(self, k: int) -> int:
        """Index of sin(w_k x) in the basis (ConfigError for the Nyquist frequency, which has none)."""
        self._check_frequency(k)
        if not self.has_sin(k):
            raise ConfigError(f"frequency {k} = n/2 of Z_{self.n} has no sine row (sin(πx) vanishes on the integers)")
        return 2 * k

    def rows(self, k: int) -> list[int]:
        """Basis rows of frequency k: [cos, sin], or [cos] at the Nyquist frequency."""
        return [self.cos_row(k), self.sin_row(k)] if self.has_sin(k) else [self.cos_row(k)]

    def row_frequency(self) -> torch.Tensor:
        """(n,) int64: the frequency of each basis row (0 for the constant)."""
        return torch.tensor([0] + [(i + 1) // 2 for i in range(1, self.n)], dtype=torch.int64)

    def _check_frequency(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.n // 2:
            raise ConfigError(f"frequency must be an integer in 1..{self.n // 2} for Z_{self.n}, got {k!r}")


_BASES: dict[int, FourierBasis] = {}


def fourier_basis(n: int) -> FourierBasis:
    """The orthonormal Fourier basis of Z_n (cached per n; treat the matrix as read-only)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"the Fourier basis needs a group order n ≥ 2, got {n!r}")
    if n not in _BASES:
        x = torch.arange(n, dtype=DTYPE)
        rows, labels = [torch.full((n,), 1 / math.sqrt(n), dtype=DTYPE)], ["const"]
        for k in range(1, n // 2 + 1):
            w = 2 * math.pi * k / n
            if 2 * k == n:
                rows.append(torch.cos(w * x) / math.sqrt(n))
                labels.append(f"cos {k}")
            else:
                rows += [torch.cos(w * x) * math.sqrt(2 / n), torch.sin(w * x) * math.sqrt(2 / n)]
                labels += [f"cos {k}", f"sin {k}"]
        _BASES[n] = FourierBasis(n, torch.stack(rows), tuple(labels))
    return _BASES[n]


def _check_axis(name: str, x: torch.Tensor, axis: int, n: int) -> int:
    """``axis`` of ``x`` made non-negative, after checking it exists and has the group's n elements."""
    if not isinstance(x, torch.Tensor):
        raise LensTypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if not -x.dim() <= axis < x.dim() or x.shape[axis] != n:
        raise LensTypeError(f"{name}: axis {axis} of a tensor of shape {tuple(x.shape)} must have the group's "
                            f"{n} elements")
    return axis % x.dim()


def fourier_1d(x: torch.Tensor, basis: FourierBasis, dim: int = 0) -> torch.Tensor:
    """Coefficients of ``x`` along ``dim`` (indexed by group elements 0..n−1) in the basis, float64."""
    dim = _check_axis("fourier_1d", x, dim, basis.n)
    return torch.movedim(torch.tensordot(basis.matrix, x.to(DTYPE), dims=([1], [dim])), 0, dim)


def fourier_2d(grid: torch.Tensor, basis: FourierBasis) -> torch.Tensor:
    """Coefficients over the first two axes of ``grid`` (n, n, ...), indexed by (x, y); float64.

    Entry [i, j, ...] is the coefficient of basis_i(x)·basis_j(y).
    """
    _check_axis("fourier_2d", grid, 0, basis.n)
    _check_axis("fourier_2d", grid, 1, basis.n)
    return fourier_1d(fourier_1d(grid, basis, 0), basis, 1)


def frequency_norms(coefficients: torch.Tensor, basis: FourierBasis, dim: int = 0) -> torch.Tensor:
    """(⌊n/2⌋,) norms per frequency k = 1..⌊n/2⌋: the root sum of squares of the cos and sin
    coefficients of k along ``dim``, over every other axis. The constant is left out."""
    dim = _check_axis("frequency_norms", coefficients, dim, basis.n)
    per_row = torch.movedim(coefficients.to(DTYPE), dim, 0).reshape(basis.n, -1).pow(2).sum(1)
    energy = torch.zeros(basis.n // 2 + 1, dtype=DTYPE).index_add_(0, basis.row_frequency(), per_row)
    return energy[1:].sqrt()


def sum_components(grid_hat: torch.Tensor, basis: FourierBasis) -> torch.Tensor:
    """Coefficients along the unit functions cos(w_k(x + y)) and sin(w_k(x + y)) of the grid,
    read from its 2-D transform ``grid_hat`` (n, n, ...): shape (⌊n/2⌋, 2, ...), [k−1, 0] for cos
    and [k−1, 1] for sin (zero at the Nyquist frequency, which has no sine).

    With unit basis rows c = cos_k, s = sin_k: cos(w(x+y)) ∝ c⊗c − s⊗s and sin(w(x+y)) ∝ s⊗c + c⊗s,
    each of norm √2, so the coefficients are (ĝ[c,c] − ĝ[s,s])/√2 and (ĝ[s,c] + ĝ[c,s])/√2; at the
    Nyquist frequency cos(π(x+y)) = c⊗c exactly.
    """
    _check_axis("sum_components", grid_hat, 0, basis.n)
    _check_axis("sum_components", grid_hat, 1, basis.n)
    out = grid_hat.new_zeros((basis.n // 2, 2, *grid_hat.shape[2:]))
    for k in basis.frequencies:
        c = basis.cos_row(k)
        if basis.has_sin(k):
            s = basis.sin_row(k)
            out[k - 1, 0] = (grid_hat[c, c] - grid_hat[s, s]) / math.sqrt(2)
            out[k - 1, 1] = (grid_hat[s, c] + grid_hat[c, s]) / math.sqrt(2)
        else:
            out[k - 1, 0] = grid_hat[c, c]
    return out


def sum_directions(basis: FourierBasis) -> torch.Tensor:
    """(⌊n/2⌋, 2, n, n) float64: the unit functions of ``sum_components`` on the (x, y) grid
    (the sine slot of the Nyquist frequency is zero)."""
    n = basis.n
    s = (torch.arange(n).unsqueeze(1) + torch.arange(n).unsqueeze(0)).to(DTYPE)
    out = torch.zeros(n // 2, 2, n, n, dtype=DTYPE)
    for k in basis.frequencies:
        w = 2 * math.pi * k / n
        cos, sin = torch.cos(w * s), torch.sin(w * s)
        out[k - 1, 0] = cos / cos.norm()
        if basis.has_sin(k):
            out[k - 1, 1] = sin / sin.norm()
    return out


def harmonic(k: int, n: int) -> int:
    """The frequency of the second harmonic cos(2 w_k x) on Z_n: 2k folded into 0..⌊n/2⌋."""
    return min(2 * k % n, -2 * k % n)


def frequency_of_terms(basis: FourierBasis) -> torch.Tensor:
    """(⌊n/2⌋, n, n) bool: for each frequency k, the 2-D basis terms basis_i(x)·basis_j(y) that a
    neuron of frequency k fills: the terms whose row frequencies both lie in {0, k} except the
    constant (linear in x or y alone, and the quadratic k × k terms, as Nanda et al.), plus the
    second harmonic 2k of x or y alone, which any nonlinearity applied to a frequency-k input makes
    (cos² u = (1 + cos 2u)/2: a squared unit cos(w a) + cos(w b) puts a fifth of its variance there,
    and without it could never reach 0.85). The share of a neuron's variance in these terms is how
    much of it frequency k explains."""
    freq = basis.row_frequency()
    ks = torch.tensor(basis.frequencies).view(-1, 1, 1)
    twice = torch.tensor([harmonic(k, basis.n) for k in basis.frequencies]).view(-1, 1, 1)
    fi, fj = freq.view(1, -1, 1), freq.view(1, 1, -1)
    inside = ((fi == 0) | (fi == ks)) & ((fj == 0) | (fj == ks))
    harmonics = ((fi == 0) & (fj == twice)) | ((fi == twice) & (fj == 0))
    return (inside | (harmonics & (twice > 0))) & ~((fi == 0) & (fj == 0))


def gini(values: torch.Tensor) -> float:
    """The Gini coefficient of non-negative ``values`` (flattened): 0 when all are equal, (m−1)/m
    when one of m is non-zero; a measure of sparsity (Nanda et al. use it on Fourier norms).

    Computed as Σ_i (2i − m − 1) v_(i) / (m Σ v) over the values sorted ascending, i = 1..m.
    """
    if not isinstance(values, torch.Tensor):
        raise LensTypeError(f"gini expects a torch.Tensor, got {type(values).__name__}")
    v = values.detach().to(DTYPE).flatten()
    if v.numel() == 0 or bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
        raise ConfigError(f"gini needs a non-empty tensor of finite non-negative values, got {values!r}")
    total = float(v.sum())
    if total == 0:
        return 0.0
    m = v.numel()
    ranks = torch.arange(1, m + 1, dtype=DTYPE)
    return float(((2 * ranks - m - 1) * v.sort().values).sum() / (m * total))
