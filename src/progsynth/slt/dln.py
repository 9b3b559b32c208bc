"""Aoyagi's exact learning coefficient λ of a deep linear network (REFERENCE §4; Aoyagi 2024).

A DLN with widths H₀, …, H_L at a true parameter whose product W_L ⋯ W₁ has rank r. With
M_j = H_j − r (j = 0 … L), let S be the set of indices with |S| = ℓ + 1 such that

    max_{j∈S} M_j < min_{k∉S} M_k,   Σ_{j∈S} M_j ≥ ℓ · max_{j∈S} M_j,   Σ_{j∈S} M_j < ℓ · min_{k∉S} M_k

(a minimum over the empty set is +∞). With Σ = Σ_{j∈S} M_j and a = Σ − ℓ(⌈Σ/ℓ⌉ − 1),

    λ = [r(H₀ + H_L) − r²]/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4 · (Σ/ℓ)² + ½ Σ_{i<j ∈ S} M_i M_j.

Choosing S: the first condition forces S to be the ℓ + 1 smallest M_j with no tie across the
boundary, so the candidates are prefixes of the M_j sorted ascending that end where the value
strictly increases (or take everything). ℓ = 0 never qualifies (it would need Σ < 0), so L ≥ 1 and
ℓ ≥ 1. We check every candidate and require exactly one to satisfy the conditions (Aoyagi's
theorem says one does); anything else is a bug worth failing loudly on, never a silent guess.
Arithmetic is exact (``fractions.Fraction``); λ is a multiple of 1/8.

``check_dln_llc`` puts the SGLD estimate next to λ: it builds the network at
``progsynth.models.linear.dln_true_solution`` (a point where the local coefficient is λ itself;
see there why a generic true point is not) and estimates λ̂ with ``progsynth.slt.llc``.

Special cases the tests check: one layer (L = 1) gives H₀H₁/2 = d/2 at every rank (a single
linear layer is a regular model); two layers reproduce Aoyagi and Watanabe's (2005) four cases for
reduced-rank regression; widths [20, 10, 10, 10, 20] at rank 5 give λ = 97.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

from typing import Any

import torch

from progsynth.errors import ProgsynthError
from progsynth.models.linear import DLNParams, check_widths, dln_data, dln_forward, dln_true_solution
from progsynth.slt.llc import LLCResult, SGLDConfig, estimate_llc, squared_error
from progsynth.tasks.common import check_seed

__all__ = [
    "AoyagiSubset",
    "aoyagi_subset",
    "aoyagi_lambda",
    "num_parameters",
    "DLNLoss",
    "dln_loss",
    "dln_problem",
    "DLNCheck",
    "check_dln_llc",
]


@dataclass(frozen=True)
class AoyagiSubset:
    """The set S of Aoyagi's theorem for given widths and rank."""

    indices: tuple[int, ...]
    """Layer-width indices j ∈ {0, …, L} in S (ascending by M_j, ties by index)."""
    ell: int
    """ℓ = |S| − 1 (≥ 1)."""
    total: int
    """Σ_{j∈S} M_j."""


def num_parameters(widths: Sequence[int]) -> int:
    """d = Σ_i H_{i−1} H_i, the number of weights of the (bias-free) DLN."""
    widths = check_widths(widths)
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def aoyagi_subset(widths: Sequence[int], rank: int) -> AoyagiSubset:
    """The unique S of Aoyagi's theorem (see the module docstring). Raises ``ConfigError`` on bad input."""
    widths = check_widths(widths, rank)
    m = [h - rank for h in widths]
    order = sorted(range(len(m)), key=lambda j: (m[j], j))
    found = []
    for size in range(2, len(m) + 1):
        inside, ell = order[:size], size - 1
        top = m[inside[-1]]
        rest_min = m[order[size]] if size < len(m) else math.inf
        total = sum(m[j] for j in inside)
        if top < rest_min and total >= ell * top and total < ell * rest_min:
            found.append(AoyagiSubset(tuple(inside), ell, total))
    if len(found) != 1:
        raise ProgsynthError(
            f"Aoyagi's conditions picked {len(found)} subsets (expected exactly 1) for widths {widths}, "
            f"rank {rank}: {found}"
        )
    return found[0]


def aoyagi_lambda(widths: Sequence[int], rank: int) -> float:
    """Aoyagi's learning coefficient λ of the DLN with these widths (H₀ … H_L) at a true rank ``rank``.

    Widths must be ≥ 2 positive integers and 0 ≤ rank ≤ min(widths), else ``ConfigError``.
    """
    return float(_aoyagi_lambda_exact(check_widths(widths, rank), rank))


def _aoyagi_lambda_exact(widths: tuple[int, ...], rank: int) -> Fraction:
    subset = aoyagi_subset(widths, rank)
    m = [h - rank for h in widths]
    ell, total = subset.ell, subset.total
    a = total - ell * (-(-total // ell) - 1)  # ⌈Σ/ℓ⌉ with integer arithmetic
    pairs = sum(m[i] * m[j] for k, i in enumerate(subset.indices) for j in subset.indices[k + 1 :])
    return (
        Fraction(rank * (widths[0] + widths[-1]) - rank * rank, 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(pairs, 2)
    )


class DLNLoss:
    """The DLN's loss for LLC estimation, ``squared_error`` (mean over rows of ‖y − W_L⋯W₁x‖²), with
    its gradient written out for many chains at once (``slt.llc.LossFn``): for a linear chain the
    backward is one product per layer for the gradient and one to pass it down, batched over chains,
    where autograd under vmap pays its per-operation cost many times over on networks this small."""

    def __call__(self, params: DLNParams, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return squared_error(dln_forward(params, x), y)

    def chains_grad_and_value(
        self, params: DLNParams, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Gradients (each (C, H_i, H_{i−1})) and losses (C,) for layers stacked over C chains;
        x, y are (C, m, ·) minibatches or the (n, ·) data every chain shares (broadcast)."""
        x, y = batch
        inputs = [x.transpose(-1, -2)]  # activations kept as (features, rows): the faster product shapes
        for w in params:  # forward, keeping each layer's input
            inputs.append(torch.matmul(w, inputs[-1]))
        residual = inputs.pop() - y.transpose(-1, -2)
        rows = residual.shape[-1]
        losses = residual.square().sum(dim=(-2, -1)) / rows
        back = residual * (2.0 / rows)  # d loss / d output, (C, H_L, m)
        grads = []
        for w, h in zip(reversed(params), reversed(inputs)):
            grads.append(torch.matmul(back, h.transpose(-1, -2)))
            back = torch.matmul(w.transpose(-1, -2), back)
        return tuple(reversed(grads)), losses


dln_loss = DLNLoss()
"""``dln_loss(params, (x, y))``: the DLN's loss for LLC estimation (``DLNLoss``)."""


@dataclass(frozen=True)
class DLNCheck:
    """λ̂ of a deep linear network at a true parameter, next to Aoyagi's exact λ."""

    widths: tuple[int, ...]
    rank: int
    exact: float
    """Aoyagi's λ."""
    result: LLCResult
    """The SGLD estimate."""

    @property
    def rel_error(self) -> float:
        """(λ̂ − λ) / λ."""
        return (self.result.llc_mean - self.exact) / self.exact

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (traces left out)."""
        return {
            "widths": list(self.widths),
            "rank": self.rank,
            "num_params": self.result.num_params,
            "lambda": self.exact,
            "llc_mean": self.result.llc_mean,
            "llc_stderr": self.result.llc_stderr,
            "llc_systematic": self.result.llc_systematic,
            "llc_uncertainty": self.result.llc_uncertainty,
            "rel_error": self.rel_error,
            "epsilon": self.result.epsilon,
            "nbeta": self.result.nbeta,
            "localization": self.result.localization,
            "acceptance": self.result.diagnostics.acceptance_mean,
            "burnin": [asdict(phase) for phase in self.result.burnin],
            "localization_shift": self.result.diagnostics.localization_shift,
            "nonstationary": list(self.result.diagnostics.nonstationary),
            "drift": list(self.result.diagnostics.drift),
            "warnings": list(self.result.diagnostics.warnings),
            "seconds": self.result.seconds,
        }


def check_dln_llc(
    widths: Sequence[int],
    rank: int,
    n: int = 10_000,
    noise_std: float = 0.1,
    data_seed: int = 0,
    config: SGLDConfig = SGLDConfig(),
) -> DLNCheck:
    """Estimate λ̂ for a DLN at a true parameter of rank ``rank`` and compare it with Aoyagi's λ.

    Trains nothing: w* is ``dln_true_solution(widths, rank)`` and the data are n samples of
    ``dln_data(w*, n, noise_std)``, both drawn from a generator seeded with ``data_seed`` (``dln_problem``); the
    sampler's own randomness comes from ``config.seed``.
    """
    widths = check_widths(widths, rank)
    params, data = dln_problem(widths, rank, n, noise_std, data_seed)
    return DLNCheck(widths, rank, aoyagi_lambda(widths, rank), estimate_llc(dln_loss, params, data, config))


def dln_problem(
    widths: Sequence[int], rank: int, n: int = 10_000, noise_std: float = 0.1, data_seed: int = 0
) -> tuple[DLNParams, tuple[torch.Tensor, torch.Tensor]]:
    """The true parameter ``dln_true_solution(widths, rank)`` and n samples ``dln_data`` of it, both
    drawn from one generator seeded with ``data_seed``: what ``check_dln_llc`` estimates on."""
    check_seed("data_seed", data_seed)
    generator = torch.Generator().manual_seed(data_seed)
    params = dln_true_solution(widths, rank, generator)
    return params, dln_data(params, n, noise_std, generator)
