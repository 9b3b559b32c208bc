"""The posterior over the consistent programs and its predictions on held-out inputs.

Prior and posterior. A program of ℓ description bits (``Grammar.description_bits``) has prior
2^−ℓ; every recorded consistent program fits the training data exactly (likelihood 1, the others
0), so the posterior is 2^−ℓ normalised over the recorded consistent programs
(``search.enumerate`` says which programs are recorded). The MAP program has the shortest code;
ties (equal bits to ``BITS_DECIMALS`` decimals) go to the smaller size, then to the program found
first in the enumeration order.

Held-out behaviour. On query inputs, programs that agree on every query input compute the same
function there, so they are grouped (by the 128-bit key of their query row, ``search.hashing``)
and their masses summed. The posterior-predictive (Bayes mixture) prediction on a query input is
the output value with the largest total mass over the programs; a tie goes to the MAP program's
output when it is among the largest, else to the smallest value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from progsynth.search.enumerate import BITS_DECIMALS

__all__ = ["Posterior", "Behaviour", "Predictive", "posterior", "predictive"]

_TIE = 1e-9
"""Relative difference of mixture masses below which two output values tie."""


@dataclass(frozen=True)
class Posterior:
    """Masses of the consistent programs (aligned with their bits and sizes) and the MAP's index."""

    bits: np.ndarray
    sizes: np.ndarray
    mass: np.ndarray
    map_index: int

    def order(self) -> np.ndarray:
        """Program indices from the MAP down: fewer bits, then smaller size, then found first."""
        return np.lexsort((np.arange(len(self.bits)), self.sizes, np.round(self.bits, BITS_DECIMALS)))


def posterior(bits: np.ndarray, sizes: np.ndarray) -> Posterior:
    """The posterior ∝ 2^−bits over programs (at least one), and the MAP (module docstring)."""
    bits = np.asarray(bits, dtype=np.float64)
    weights = np.exp2(-(bits - bits.min()))
    mass = weights / weights.sum()
    order = np.lexsort((np.arange(len(bits)), sizes, np.round(bits, BITS_DECIMALS)))
    return Posterior(bits, np.asarray(sizes), mass, int(order[0]))


@dataclass(frozen=True)
class Behaviour:
    """Programs that agree on every query input: the shortest of them, their number and mass."""

    representative: int
    """Index of the shortest program of the group (ties as for the MAP)."""
    programs: int
    mass: float


@dataclass(frozen=True)
class Predictive:
    """Held-out behaviours (by mass, largest first) and the MAP's and the mixture's predictions."""

    behaviours: tuple[Behaviour, ...]
    map_values: np.ndarray
    mixture_values: np.ndarray


def predictive(post: Posterior, chunks: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
               n_values: int) -> Predictive:
    """Group programs by held-out behaviour and form the mixture prediction.

    ``chunks`` yields (first program index, values, k1, k2) for consecutive blocks of programs:
    their outputs on the query inputs ((programs, n_query) ints in [0, n_values)) and the keys of
    their query rows. Work per block is proportional to its distinct behaviours × n_query.
    """
    rank = np.empty(len(post.bits), dtype=np.int64)
    rank[post.order()] = np.arange(len(post.bits))  # position in MAP-first order: smaller is shorter
    groups: dict[tuple[int, int], list] = {}  # key → [best rank, programs, mass]
    mixture = _SparseScores()
    map_values = None
    for first, values, k1, k2 in chunks:
        index = first + np.arange(len(values))
        if first <= post.map_index < first + len(values):
            map_values = values[post.map_index - first].copy()
        keys = np.stack([k1, k2], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        masses = np.bincount(inverse, weights=post.mass[index], minlength=len(unique))
        counts = np.bincount(inverse, minlength=len(unique))
        best = np.full(len(unique), np.iinfo(np.int64).max)
        np.minimum.at(best, inverse, rank[index])
        where = np.zeros(len(unique), dtype=np.int64)  # a member of each group, to read its values
        where[inverse] = np.arange(len(values))
        mixture.add(values[where], masses, n_values)
        for g, key in enumerate(map(tuple, unique.tolist())):
            entry = groups.get(key)
            if entry is None:
                groups[key] = [int(best[g]), int(counts[g]), float(masses[g])]
            else:
                entry[0] = min(entry[0], int(best[g]))
                entry[1] += int(counts[g])
                entry[2] += float(masses[g])
    order = post.order()
    behaviours = sorted((Behaviour(int(order[r]), n, m) for r, n, m in groups.values()),
                        key=lambda b: (-b.mass, rank[b.representative]))
    if map_values is None:
        raise ValueError("the chunks did not include the MAP program")
    return Predictive(tuple(behaviours), map_values, mixture.argmax(map_values, n_values))


class _SparseScores:
    """Σ mass per (query input, output value), held sparsely as sorted flat keys t·V + v."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.mass = np.zeros(0, dtype=np.float64)

    def add(self, values: np.ndarray, masses: np.ndarray, n_values: int) -> None:
        n_query = values.shape[1]
        flat = (np.arange(n_query, dtype=np.int64)[None, :] * n_values + values).reshape(-1)
        keys = np.concatenate([self.keys, flat])
        mass = np.concatenate([self.mass, np.repeat(masses, n_query)])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.mass = np.bincount(inverse.reshape(-1), weights=mass, minlength=len(self.keys))

    def argmax(self, preferred: np.ndarray, n_values: int) -> np.ndarray:
        """Per query input, the value of largest mass; ties → ``preferred``'s value, else the smallest."""
        t, v = self.keys // n_values, self.keys % n_values
        starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        top = np.maximum.reduceat(self.mass, starts)
        tied = self.mass >= top[t] * (1 - _TIE)
        smallest = np.minimum.reduceat(np.where(tied, v, n_values), starts)
        prefer = np.zeros(len(starts), dtype=bool)
        prefer[t[tied & (v == preferred[t])]] = True
        return np.where(prefer, preferred, smallest).astype(np.int64)
