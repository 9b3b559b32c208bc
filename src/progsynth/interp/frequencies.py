"""Which frequencies a network uses: the program fit of its logits, key frequencies, neuron clusters.

The program form. In a relabelling (``interp.relabel``) with x = f(a), y = g(b), z = h(c) in Z_n,
the algorithm of Nanda et al. writes the logits as

    logit(c) = Σ_k α_k cos(w_k (x + y − z) + φ_k),   w_k = 2πk/n,

a function of s = x + y − z alone. ``fit_logits`` finds its best least-squares fit: it centres
each pair's logits over the group classes (softmax ignores a shift per pair), and since every pair
meets every s once, the best function of s is the mean over pairs of the centred logit at
z = x + y − s. Its Fourier transform over s gives α_k and φ_k, the share of each frequency in it,
and the *explained fraction*: the part of the centred logits' squared norm that the function of s
carries. A random logit table gives 1/n², a pure Fourier program 1.

Which pairs. The fit reads the *held-out* pairs when there are any. On training pairs the logits
can encode the labels by memory alone, and the mean over them of the correct class's logit is
then large for s = 0 whatever the network computes: a memorising network would seem to run the
task's program. On held-out pairs only what the network computes shows.

Key frequencies (the rule). Frequency k is key when its share of the fitted function's squared
norm is at least ``KEY_THRESHOLD`` (0.1) times the largest share. This reads the frequencies off
the logits of whatever architecture, never from a list. Two other readings are reported beside
it as a cross-check: the neurons whose activations it dominates and the embedding's norm at it.

Neuron clusters. A neuron's activation over the n × n grid of group pairs, centred and 2-D
transformed; frequency k explains the share of its variance in the terms whose two frequencies
lie in {0, k} (linear in x or y alone, and the quadratic k × k terms), as Nanda et al., plus the
second harmonic 2k of x or y alone (``fourier.frequency_of_terms``: a squared unit
cos(w a) + cos(w b), as in Gromov's network, puts a fifth of its variance there); the neuron
belongs to its dominant frequency when that share reaches ``NEURON_THRESHOLD`` (0.85). Every
neuron's share is reported, clustered or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from progsynth.errors import ConfigError
from progsynth.interp.fourier import (DTYPE, fourier_1d, fourier_2d, fourier_basis, frequency_norms,
                                      frequency_of_terms, sum_components, sum_directions)
from progsynth.interp.network import hidden_activations, neuron_to_logit, operand_embeddings
from progsynth.interp.relabel import GroupGrid
from progsynth.runs.experiment import Experiment

__all__ = [
    "KEY_THRESHOLD",
    "NEURON_THRESHOLD",
    "LogitFit",
    "fit_logits",
    "key_frequencies",
    "key_logits",
    "NeuronClusters",
    "neuron_clusters",
    "embedding_norms",
    "neuron_logit_norms",
]

KEY_THRESHOLD = 0.1
"""A frequency is key when its share of the fitted logits is ≥ this times the largest share."""

NEURON_THRESHOLD = 0.85
"""A neuron clusters at its dominant frequency when that explains ≥ this share of its variance."""


@dataclass(frozen=True, eq=False)
class LogitFit:
    """The best fit of the logits by a function of s = x + y − z in one relabelling."""

    grid: GroupGrid
    amplitudes: torch.Tensor = field(repr=False)
    """(⌊n/2⌋,) α_k for k = 1..⌊n/2⌋, in logit units."""
    phases: torch.Tensor = field(repr=False)
    """(⌊n/2⌋,) φ_k in [−π, π]."""
    shares: torch.Tensor = field(repr=False)
    """(⌊n/2⌋,) each frequency's share of the fitted function's squared norm (sums to 1)."""
    explained: float
    """Fraction of the centred logits' squared norm on the fitted pairs that the fit carries."""
    coverage: float
    """Fraction of the fitted pairs' logit entries inside the group (pairs and classes)."""
    pairs: int
    """Pairs the fit read."""
    heldout: bool
    """Whether the fit left some pairs out (the training pairs); False when it read them all."""


def fit_logits(logits: torch.Tensor, grid: GroupGrid, rows: torch.Tensor) -> LogitFit:
    """Fit Σ_k α_k cos(w_k(x + y − z) + φ_k) to ``logits`` (N, p) on those of the data ``rows``
    that lie in the group (module docstring): pass the held-out rows when there are any.
    ``heldout`` records whether ``rows`` left some data rows out."""
    n = grid.n
    x, y = grid.x[rows], grid.y[rows]
    inside = (x >= 0) & (y >= 0)
    if not bool(inside.any()):
        raise ConfigError(f"none of the {rows.numel()} rows to fit lies in the {grid.relabelling.name!r} group")
    rows, x, y = rows[inside], x[inside], y[inside]
    centred = logits[rows][:, grid.classes].to(DTYPE)
    centred = centred - centred.mean(1, keepdim=True)
    s = torch.arange(n)
    z = (x + y).unsqueeze(1) - s.unsqueeze(0)  # (R, n): class slot z = x + y − s for each s
    level = centred.gather(1, z % n).mean(0)  # best function of s
    total = float(centred.pow(2).sum())
    basis = fourier_basis(n)
    coeff = fourier_1d(level, basis)
    amplitudes, phases = torch.zeros(n // 2, dtype=DTYPE), torch.zeros(n // 2, dtype=DTYPE)
    for k in basis.frequencies:
        c = coeff[basis.cos_row(k)]
        d = coeff[basis.sin_row(k)] if basis.has_sin(k) else c.new_zeros(())
        scale = math.sqrt(2 / n) if basis.has_sin(k) else 1 / math.sqrt(n)
        amplitudes[k - 1] = scale * torch.hypot(c, d)
        phases[k - 1] = torch.atan2(-d, c)
    energy = frequency_norms(coeff, basis).pow(2)
    fitted = float(energy.sum())
    return LogitFit(
        grid=grid,
        amplitudes=amplitudes,
        phases=phases,
        shares=energy / fitted if fitted > 0 else energy,
        explained=rows.numel() * fitted / total if total > 0 else 0.0,
        coverage=rows.numel() * n / (inside.numel() * logits.shape[1]),
        pairs=int(rows.numel()),
        heldout=inside.numel() < logits.shape[0],
    )


def key_frequencies(fit: LogitFit, threshold: float = KEY_THRESHOLD) -> list[int]:
    """The key frequencies of a fit, ascending (module docstring for the rule)."""
    if not 0 < threshold <= 1:
        raise ConfigError(f"the key-frequency threshold must lie in (0, 1], got {threshold!r}")
    top = float(fit.shares.max())
    if top == 0:
        return []
    return [k + 1 for k in (fit.shares >= threshold * top).nonzero().flatten().tolist()]


def key_logits(logits: torch.Tensor, grid: GroupGrid, key: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(restricted, excluded) logits (N, p), float64, for the frequencies ``key`` (REFERENCE §3).

    Over the group's n × n pairs, each class's logits are 2-D transformed and read along the unit
    functions cos(w_k(x + y)) and sin(w_k(x + y)) (``fourier.sum_components``). *Restricted*
    keeps only the key ones plus the class's mean; *excluded* removes the key ones and keeps the
    rest. In the identity relabelling these are Nanda et al.'s definitions; in another they read
    x + y in its group. Pairs outside the group have no such directions: restricted gives them each
    class's mean over them (the constant answer of the extracted program), excluded leaves them.
    """
    basis = fourier_basis(grid.n)
    on_grid = logits.to(DTYPE)[grid.rows]  # (n, n, p)
    index = torch.tensor([k - 1 for k in key], dtype=torch.int64)
    components = sum_components(fourier_2d(on_grid, basis), basis)[index]  # (K, 2, p)
    kept = torch.einsum("kjxy,kjc->xyc", sum_directions(basis)[index], components)
    restricted = torch.empty_like(logits, dtype=DTYPE)
    restricted[grid.rows] = on_grid.mean((0, 1)) + kept
    if grid.exceptional.numel():
        restricted[grid.exceptional] = logits[grid.exceptional].to(DTYPE).mean(0)
    excluded = logits.to(DTYPE).clone()
    excluded[grid.rows] = on_grid - kept
    return restricted, excluded


@dataclass(frozen=True, eq=False)
class NeuronClusters:
    """Per-neuron dominant frequency in a relabelling (module docstring)."""

    frequency: torch.Tensor = field(repr=False)
    """(d_hidden,) int64: each neuron's dominant frequency (0 for a neuron constant on the grid)."""
    fraction: torch.Tensor = field(repr=False)
    """(d_hidden,) float64: the share of the neuron's variance its dominant frequency explains."""
    threshold: float

    def counts(self) -> dict[int, int]:
        """{frequency: number of neurons clustered there (share ≥ threshold)}."""
        clustered = self.frequency[(self.fraction >= self.threshold) & (self.frequency > 0)]
        values, counts = clustered.unique(return_counts=True)
        return dict(zip(values.tolist(), counts.tolist()))


def neuron_clusters(experiment: Experiment, params: dict[str, torch.Tensor], grid: GroupGrid,
                    threshold: float = NEURON_THRESHOLD) -> NeuronClusters:
    """Cluster the model's neurons by frequency over the group's n × n pairs (module docstring)."""
    acts = hidden_activations(experiment, params)[grid.rows]  # (n, n, d)
    acts = acts - acts.mean((0, 1))
    basis = fourier_basis(grid.n)
    energy = fourier_2d(acts, basis).pow(2)
    total = energy.sum((0, 1))
    per_frequency = torch.einsum("kij,ijd->kd", frequency_of_terms(basis).to(DTYPE), energy)
    share = per_frequency / total.clamp_min(torch.finfo(DTYPE).tiny)
    fraction, best = share.max(0)
    dead = total <= 1e-12 * float(total.max().clamp_min(1e-300))
    return NeuronClusters(torch.where(dead, 0, best + 1), torch.where(dead, 0.0, fraction), threshold)


def embedding_norms(experiment: Experiment, params: dict[str, torch.Tensor], grid: GroupGrid) -> torch.Tensor:
    """(⌊n/2⌋,) Fourier norm per frequency of the operand embeddings, rows read in group order
    (x = f(a) for rows that serve a, y = g(b) for rows that serve only b)."""
    basis = fourier_basis(grid.n)
    energy = torch.zeros(grid.n // 2, dtype=DTYPE)
    for emb in operand_embeddings(experiment):
        residues = grid.relabelling.operand_residues(emb.operands[0])
        rows = params[emb.param][emb.offset + residues].to(DTYPE)
        energy += frequency_norms(fourier_1d(rows, basis), basis).pow(2)
    return energy.sqrt()


def neuron_logit_norms(experiment: Experiment, params: dict[str, torch.Tensor], grid: GroupGrid) -> torch.Tensor:
    """(⌊n/2⌋,) Fourier norm per frequency of the neuron-to-logit map over the group classes."""
    basis = fourier_basis(grid.n)
    return frequency_norms(fourier_1d(neuron_to_logit(experiment, params)[:, grid.classes], basis, 1), basis, 1)
