"""Gromov's analytic solution (Gromov 2023, "Grokking modular arithmetic"), for checking extraction.

The network is Gromov's quadratic MLP (``models.mlp.GromovMLP``: one_hot(a) ⊕ one_hot(b) → N units
with activation u² → p outputs, no biases). For each chosen frequency σ, with w = 2πσ/n and
x = f(a), y = g(b), z = h(c) in a relabelling (``interp.relabel``; the identity for addition),
a neuron with phases (ψ₁, ψ₂) has weights

    W_in[a] = A cos(w x + ψ₁),  W_in[p + b] = A cos(w y + ψ₂),  W_out[c] = A cos(w z + ψ₁ + ψ₂).

Squaring cos(wx + ψ₁) + cos(wy + ψ₂) and multiplying by W_out gives ½A³ cos(w(x + y − z)) plus
terms whose phase is a non-zero combination mψ₁ + m'ψ₂ with |m|, |m'| ≤ 3 and (m, m') ≢ (0, 0)
mod 3. The paper draws the phases at random, so those cancel as the width grows; here each
frequency gets nine neurons with (ψ₁, ψ₂) on the grid {0, 2π/3, 4π/3}², where they cancel
exactly, so at finite width

    logit(c) = Σ_σ (9/2) A_σ³ cos(2πσ(x + y − z)/n)

and the argmax is h⁻¹(x + y) for every pair in the group. When the relabelling leaves residues out
(0 under a discrete log), one more neuron reads them (input weight 1 on each exceptional residue
of a and of b) and writes a logit larger than any Fourier logit onto ``default_class``, the answer
outside the group (0 for multiplication).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from progsynth.errors import ConfigError
from progsynth.interp.relabel import Relabelling

__all__ = ["gromov_width", "gromov_solution"]

PHASES = tuple(2 * math.pi * i / 3 for i in range(3))
"""Each frequency's neurons take (ψ₁, ψ₂) over PHASES × PHASES (module docstring)."""


def gromov_width(relabelling: Relabelling, frequencies: Sequence[int]) -> int:
    """Hidden units of the analytic network: nine per frequency, plus one for exceptional residues."""
    exceptional = bool((relabelling.f < 0).any() or (relabelling.g < 0).any())
    return len(PHASES) ** 2 * len(frequencies) + int(exceptional)


def gromov_solution(relabelling: Relabelling, frequencies: Sequence[int], amplitudes: Sequence[float] | None = None,
                    default_class: int | None = None, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Parameters {'W_in': (2p, N), 'W_out': (N, p)} of the analytic network (module docstring)
    for ``frequencies`` in 1..⌊n/2⌋ with amplitudes A_σ (default 1)."""
    p, n = relabelling.p, relabelling.n
    frequencies = list(frequencies)
    if not frequencies or len(set(frequencies)) != len(frequencies) or not all(
            isinstance(k, int) and 1 <= k <= n // 2 for k in frequencies):
        raise ConfigError(f"frequencies must be distinct integers in 1..{n // 2}, got {frequencies!r}")
    amplitudes = [1.0] * len(frequencies) if amplitudes is None else list(amplitudes)
    if len(amplitudes) != len(frequencies) or not all(a > 0 for a in amplitudes):
        raise ConfigError(f"give one positive amplitude per frequency, got {amplitudes!r} for {frequencies!r}")
    width = gromov_width(relabelling, frequencies)
    exceptional = width > len(PHASES) ** 2 * len(frequencies)
    if exceptional and (default_class is None or not 0 <= default_class < p):
        raise ConfigError(f"the {relabelling.name!r} relabelling leaves residues out, so the analytic network needs "
                          f"default_class in [0, {p}) for them, got {default_class!r}")
    w_in = torch.zeros(2 * p, width, dtype=torch.float64)
    w_out = torch.zeros(width, p, dtype=torch.float64)
    x, y, z = (m.to(torch.float64) for m in (relabelling.f, relabelling.g, relabelling.h))  # −1: left out
    unit = 0
    for k, amplitude in zip(frequencies, amplitudes):
        w = 2 * math.pi * k / n
        for psi1 in PHASES:
            for psi2 in PHASES:
                w_in[:p, unit] = torch.where(x >= 0, amplitude * torch.cos(w * x + psi1), 0.0)
                w_in[p:, unit] = torch.where(y >= 0, amplitude * torch.cos(w * y + psi2), 0.0)
                w_out[unit] = torch.where(z >= 0, amplitude * torch.cos(w * z + psi1 + psi2), 0.0)
                unit += 1
    if exceptional:
        w_in[:p, unit] = (x < 0).to(torch.float64)
        w_in[p:, unit] = (y < 0).to(torch.float64)
        # Every Fourier unit moves a logit by at most (2A)²·A; outweigh all of them together.
        w_out[unit, default_class] = 2 * unit * 4 * max(amplitudes) ** 3 + 1
    return {"W_in": w_in.to(dtype), "W_out": w_out.to(dtype)}
