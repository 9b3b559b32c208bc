"""Deep linear networks: the singular models whose learning coefficient is known exactly.

A deep linear network (DLN) with widths H₀, H₁, …, H_L maps x ∈ R^{H₀} to W_L ⋯ W₂ W₁ x, with
W_i of shape (H_i, H_{i−1}). Its parameters are a plain tuple ``(W₁, …, W_L)`` of matrices (a
pytree the SLT estimators take directly; ``progsynth.slt.dln.dln_loss`` is their squared-error loss). At a "true solution" of rank r the product W_L ⋯ W₁ is a
generic rank-r matrix; Aoyagi's formula (``progsynth.slt.dln``) gives the learning coefficient
there, which makes DLNs the ground truth for the SGLD estimator in ``progsynth.slt.llc``.

Data for those checks: x ~ N(0, I_{H₀}), y = W_true x + σ ξ with ξ ~ N(0, I_{H_L}).

The network is a composite of the core's primitives, ``dln_lens(widths)`` = ``linear(H₀, H₁) >> … >>
linear(H_{L−1}, H_L)`` without biases, over the tuple ``(W₁, …, W_L)``; ``dln_forward`` is its get,
so there is one forward pass. ``dln_module`` is the same network as an ``nn.Module`` for tools that
want one (parameters ``"0.weight"``, ``"1.weight"``, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from progsynth.core.lens import Para, regroup
from progsynth.core.smooth import linear
from progsynth.errors import ConfigError
from progsynth.tasks.common import MAX_SAMPLES, check_int

MAX_DLN_PARAMS = 10**7
"""The largest deep linear network ``check_widths`` accepts (parameters), so a typo in a width is an
error rather than an out-of-memory crash."""

__all__ = [
    "DLNParams",
    "check_widths",
    "dln_lens",
    "dln_forward",
    "dln_product",
    "random_dln",
    "dln_true_solution",
    "dln_data",
    "dln_module",
]

DLNParams = tuple[torch.Tensor, ...]
"""``(W₁, …, W_L)`` with ``W_i`` of shape ``(H_i, H_{i−1})``."""


def check_widths(widths: Sequence[int], rank: int | None = None) -> tuple[int, ...]:
    """Validate DLN widths (at least two positive integers) and optionally a rank 0 ≤ r ≤ min width.

    Returns the widths as a tuple. Raises ``ConfigError`` naming the bad value.
    """
    try:
        widths = tuple(widths)
    except TypeError:
        raise ConfigError(f"widths must be a sequence of positive integers, got {widths!r}") from None
    if len(widths) < 2:
        raise ConfigError(f"widths must list at least an input and an output width (H0, ..., HL), got {widths!r}")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
            raise ConfigError(f"every width must be a positive integer, got {w!r} in {widths!r}")
    params = sum(a * b for a, b in zip(widths, widths[1:]))
    if params > MAX_DLN_PARAMS:
        raise ConfigError(f"widths {widths!r} make a network of {params:,} parameters; at most "
                          f"{MAX_DLN_PARAMS:,} are supported")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= min(widths):
            raise ConfigError(
                f"rank must be an integer with 0 <= rank <= min(widths) = {min(widths)}, got {rank!r}"
            )
    return widths


def dln_lens(widths: Sequence[int], dtype: torch.dtype = torch.float32) -> Para:
    """The network as a parametric lens ``linear(H₀, H₁) >> … >> linear(H_{L−1}, H_L)`` (no biases)
    over the flat tuple ``(W₁, …, W_L)``; ``init(generator)`` draws ``random_dln``'s layers."""
    widths = check_widths(widths)
    return _dln_lens(widths, dtype)


@lru_cache(maxsize=64)
def _dln_lens(widths: tuple[int, ...], dtype: torch.dtype) -> Para:
    parts = [linear(h_in, h_out, bias=False, dtype=dtype) for h_in, h_out in zip(widths[:-1], widths[1:])]
    body = parts[0]
    for part in parts[1:]:
        body = body >> part
    structure = tuple((i,) for i in range(len(parts)))
    if len(parts) == 1:  # a single layer's parameters are (W,), not a one-part composite's ((W,),)
        structure = structure[0]
    return body.reparam(regroup(structure), name=f"dln({'-'.join(map(str, widths))})",
                        init=lambda generator=None: random_dln(widths, generator, dtype))


def dln_forward(params: DLNParams, x: torch.Tensor) -> torch.Tensor:
    """Apply the network to a batch ``x`` of shape (batch, H₀): returns (batch, H_L). The get of
    ``dln_lens`` (differentiable by autograd too: the primitives' forwards are torch operations)."""
    widths = (params[0].shape[1], *(w.shape[0] for w in params))
    return _dln_lens(widths, params[0].dtype).get(params, x)


def dln_product(params: DLNParams) -> torch.Tensor:
    """The end-to-end matrix W_L ⋯ W₁ of shape (H_L, H₀)."""
    product = params[0]
    for w in params[1:]:
        product = w @ product
    return product


def random_dln(
    widths: Sequence[int], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> DLNParams:
    """Independent Gaussian layers W_i ~ N(0, 1/H_{i−1}) (so the product has entries of order one)."""
    widths = check_widths(widths)
    return tuple(
        torch.randn(h_out, h_in, generator=generator, dtype=dtype) / h_in**0.5
        for h_in, h_out in zip(widths[:-1], widths[1:])
    )


def dln_true_solution(
    widths: Sequence[int],
    rank: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> DLNParams:
    """A true parameter w* of rank ``rank`` at which the local learning coefficient is Aoyagi's λ.

    Each layer is a partial isometry of rank r through a chain of random r-dimensional subspaces:
    W_i = Q_i O_i Q_{i−1}ᵀ with Q_i (H_i × r) a random orthonormal basis of a subspace of R^{H_i}
    and O_i a random r × r orthogonal matrix. The product is then Q_L (O_L ⋯ O₁) Q₀ᵀ, rank r with
    every singular value 1, and every layer is zero off the chosen subspaces. Rank 0 gives all zeros.

    Why this point and not "random layers with the first one truncated to rank r": Aoyagi's λ is
    the learning coefficient of the whole set of true parameters, i.e. the *smallest* local value
    over that set, reached where the layers' parts outside the rank-r flow vanish. At a generic
    true point the local value is larger: e.g. widths [12, 6, 12], rank 0, at (W₁ = 0, W₂
    injective) the loss is regular in W₁ and the local value is 72/2 = 36, not λ = 31.5; SGLD
    measures 36 there. Unit singular values keep the rank-r part well conditioned, so the
    estimate is not pulled down by nearly flat directions of an ill-conditioned product.
    """
    widths = check_widths(widths, rank)
    if rank == 0:
        return tuple(torch.zeros(h_out, h_in, dtype=dtype) for h_in, h_out in zip(widths[:-1], widths[1:]))

    def orthonormal(rows: int, cols: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(rows, rows, generator=generator, dtype=torch.float64))[0][:, :cols]

    bases = [orthonormal(h, rank) for h in widths]
    return tuple(
        (bases[i + 1] @ orthonormal(rank, rank) @ bases[i].T).to(dtype) for i in range(len(widths) - 1)
    )


def dln_data(
    params: DLNParams,
    n: int,
    noise_std: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n samples x ~ N(0, I_{H₀}), y = W_true x + noise_std · N(0, I_{H_L}) from the network ``params``.

    ``noise_std`` defaults to 0.1: with squared-error loss, noise of variance σ² biases an SGLD
    estimate at nβ = n/log n by roughly −2σ²λ/log n (the sampler also fits the noise), which is
    0.2 % at σ = 0.1, n = 10⁴, so the checks measure the sampler rather than the noise.
    """
    check_int("n (number of samples)", n, 1, MAX_SAMPLES)
    if not noise_std >= 0:
        raise ConfigError(f"noise_std must be a non-negative number, got {noise_std!r}")
    dtype = params[0].dtype
    x = torch.randn(n, params[0].shape[1], generator=generator, dtype=dtype)
    with torch.no_grad():
        y = dln_forward(params, x)
    return x, y + noise_std * torch.randn(y.shape, generator=generator, dtype=dtype)


def dln_module(params: DLNParams) -> nn.Sequential:
    """The same network as an ``nn.Sequential`` of bias-free ``nn.Linear`` layers (copies of ``params``).

    For tools that want an ``nn.Module`` (``estimate_llc_for_module``, devinterp in the benchmark).
    """
    layers = []
    for w in params:
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        with torch.no_grad():
            layer.weight.copy_(w)
        layers.append(layer)
    return nn.Sequential(*layers)
