"""How much an enumeration up to a size will cost, known before the expensive levels start.

The number of candidates at size n follows exactly from the numbers K(s) of distinct behaviours
kept at the smaller sizes (``level_candidates``):

    C(1) = |terminals|,
    C(n) = |unary| · K(n − 1) + Σ_ops Σ_{i+j=n−1} pairs(i, j),

where pairs(i, j) = K(i)·K(j), except for a commutative operation, which takes one order only:
K(i)·K(j) when i < j, K(i)(K(i) + 1)/2 when i = j, and none when i > j.

``estimate`` knows K exactly for the levels already enumerated (the cheap *pilot* levels) and
extrapolates the rest geometrically: K(s) ≈ K(a) · g^(s − a), with g the growth per size between
the last two non-empty exact levels a > b, g = (K(a)/K(b))^(1/(a − b)), capped by C(s) (pruning
never adds programs) and by the number of behaviours left unseen (p^n or 2^n for n inputs). The
candidates then follow from C(s) with the extrapolated K. Limits: pruning usually grows stronger
with size (more identities apply), so a growth read off small sizes tends to *over*-estimate; a
grammar whose kept counts oscillate (XOR only: every even size is empty) is extrapolated as if it
grew smoothly, which over-estimates too; with fewer than two non-empty exact levels nothing is
pruned in the model (K = C). An over-estimate refuses a search that would have fitted; the
enumeration's own per-level guard (exact counts before each level) catches an under-estimate.

Memory is modelled as the stored value rows and references of every level below the last, the
hash set of every behaviour kept (the last level's too, to count them) and the working buffers
(``memory_bytes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from progsynth.search.grammar import Grammar
from progsynth.search.hashing import KEYSET_BYTES_PER_SLOT, KEYSET_CLAIM_BYTES, KeySet

__all__ = ["Estimate", "level_candidates", "estimate", "memory_bytes", "REF_BYTES", "CONSISTENT_BYTES"]

REF_BYTES = 2 + 4 + 4 + 8
"""Bytes per stored program besides its value row: symbol (int16), two child ids (int32), bits (float64)."""
CONSISTENT_BYTES = 2 + 4 + 4 + 2 + 8
"""Bytes per recorded consistent program: symbol, child ids, size (int16) and bits."""


@dataclass(frozen=True)
class Estimate:
    """Predicted cost of enumerating sizes 1..max_size."""

    candidates: float
    """Candidate programs evaluated over all sizes (exact for the exact levels)."""
    candidates_by_size: tuple[float, ...]
    kept_by_size: tuple[float, ...]
    exact_up_to: int
    """Sizes 1..exact_up_to were counted, not extrapolated."""
    growth: float | None
    """g, the extrapolated growth of kept behaviours per size (None: no pruning assumed)."""
    memory_bytes: float


def level_candidates(grammar: Grammar, kept: Sequence[float], n: int) -> float:
    """C(n) from kept[s − 1] = K(s) for s < n (module docstring)."""
    if n == 1:
        return float(len(grammar.terminals))
    total = len(grammar.unary) * float(kept[n - 2])
    for op in grammar.binary:
        commutative = grammar.commutative(op)
        for i in range(1, n - 1):
            j = n - 1 - i
            ki, kj = float(kept[i - 1]), float(kept[j - 1])
            if not commutative:
                total += ki * kj
            elif i < j:
                total += ki * kj
            elif i == j:
                total += ki * (ki + 1) / 2
    return total


def memory_bytes(kept: Sequence[float], row_bytes: int, max_consistent: int, chunk_bytes: int) -> float:
    """Modelled peak bytes of an enumeration keeping ``kept`` behaviours per size (the last level's
    rows are not stored): rows and references, the hash set, a prepared copy of the largest stored
    level, the recorded consistent programs and ``chunk_bytes`` of working buffers."""
    stored = [float(k) for k in kept[:-1]]
    rows = sum(stored) * (row_bytes + REF_BYTES)
    table = KeySet.capacity_for(int(min(sum(float(k) for k in kept), 1 << 62))) * KEYSET_BYTES_PER_SLOT
    table += KEYSET_CLAIM_BYTES
    prepared = max(stored, default=0.0) * row_bytes * 2
    return rows + table + prepared + max_consistent * CONSISTENT_BYTES + chunk_bytes


def estimate(grammar: Grammar, kept: Sequence[int], candidates: Sequence[int], max_size: int,
             behaviours: float, row_bytes: int, max_consistent: int, chunk_bytes: int) -> Estimate:
    """Extrapolate from exact counts of sizes 1..len(kept) (``kept``, ``candidates``) to max_size.
    ``behaviours`` is the number of distinct value rows possible (may be ``math.inf``)."""
    exact = len(kept)
    known = [float(k) for k in kept]
    nonempty = [s for s in range(1, exact + 1) if known[s - 1] > 0]
    growth = None
    if len(nonempty) >= 2:
        a, b = nonempty[-1], nonempty[-2]
        growth = (known[a - 1] / known[b - 1]) ** (1.0 / (a - b))
    cands = [float(c) for c in candidates]
    for s in range(exact + 1, max_size + 1):
        c = level_candidates(grammar, known, s)
        left = max(behaviours - sum(known), 0.0)
        k = min(c, left)
        if growth is not None:
            a = nonempty[-1]
            k = min(k, math.exp(min(700.0, math.log(known[a - 1]) + (s - a) * math.log(growth))))
        cands.append(c)
        known.append(k)
    total = sum(cands)
    return Estimate(total, tuple(cands), tuple(known), exact, growth,
                    memory_bytes(known, row_bytes, max_consistent, chunk_bytes))
