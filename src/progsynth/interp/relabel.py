"""Relabellings: maps that turn a binary operation on Z_p into addition in a cyclic group Z_n.

A trained network need not compute in the residues as given. Addition is read in them directly,
a − b is addition after negating b, and a · b is addition of discrete logarithms. A relabelling is
three maps into Z_n, f for a, g for b and h for c, such that the task (or the network) computes
h(c) = f(a) + g(b) mod n; the Fourier program is then written in x = f(a), y = g(b), z = h(c).
Residues a map leaves out (0 under a discrete log) are *exceptional*: pairs with an exceptional
operand lie outside the group, and an exceptional class is never the answer of a group pair.

Candidates (``candidate_relabellings(p)``), each costing log2 of their number to name:

- ``identity``: x = a, y = b, z = c in Z_p (addition);
- ``negate b``: x = a, y = −b, z = c in Z_p (subtraction);
- ``discrete log`` (p prime): x = log_γ a, y = log_γ b, z = log_γ c in Z_{p−1}, γ the smallest
  primitive root mod p; 0 is exceptional (multiplication; a · 0 = 0 · b = 0 is handled apart);
- ``discrete log, negate b`` (p prime): as above with y = −log_γ b (division).

The generic check (``cyclic_isotope``) needs no candidate list: given a table of answers (the
network's argmax on every pair) it drops absorbing rows and columns (a row or column whose answers
are all equal, as for 0 under multiplication) and missing ones, and tests whether what is left is
a Latin square isotopic to a cyclic group: with α(a) = L(a, b₀), β(b) = L(a₀, b) for the first
kept a₀, b₀, the loop x ∘ y = L(α⁻¹(x), β⁻¹(y)) has identity L(a₀, b₀); if some element γ (the
first in class order) generates it, ℓ = log_γ, and f = ℓ∘α, g = ℓ∘β, h = ℓ satisfy
h(L(a, b)) = f(a) + g(b) on every kept pair (verified; otherwise there is no isotope). For the
four tasks above it reproduces the named candidate exactly; it also finds relabellings no list
anticipates, such as (2a + 3b) mod p. Naming its three maps costs log2 of the number of injections
of the kept residues into Z_p for each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from progsynth.errors import ConfigError, ProgsynthError
from progsynth.tasks.modular import is_prime

__all__ = [
    "RelabelError",
    "Relabelling",
    "GroupGrid",
    "candidate_relabellings",
    "primitive_root",
    "cyclic_isotope",
    "group_grid",
]


class RelabelError(ProgsynthError):
    """A relabelling does not apply to the data (a pair of its group is missing)."""


@dataclass(frozen=True, eq=False)
class Relabelling:
    """Maps f, g, h from residues to Z_n with h(a ∘ b) = f(a) + g(b) (module docstring)."""

    name: str
    """'identity', 'negate b', 'discrete log', 'discrete log, negate b' or 'cyclic isotope'."""
    formula: str
    """How x, y, z are read from a, b, c, for the printed program."""
    p: int
    """Residues 0..p−1 of the operands and classes."""
    n: int
    """Order of the cyclic group Z_n."""
    f: torch.Tensor = field(repr=False)
    """(p,) int64: x = f(a), or −1 where a is exceptional."""
    g: torch.Tensor = field(repr=False)
    """(p,) int64: y = g(b), or −1 where b is exceptional."""
    h: torch.Tensor = field(repr=False)
    """(p,) int64: z = h(c), or −1 where c is exceptional."""
    bits: int
    """Bits to name this relabelling in a program's description."""

    def classes(self) -> torch.Tensor:
        """(n,) int64: the class c with h(c) = z, for z = 0..n−1."""
        return _inverse(self.h, self.n)

    def operand_residues(self, operand: int) -> torch.Tensor:
        """(n,) int64: the residue with f(a) = x (operand 0) or g(b) = y (operand 1), for x = 0..n−1."""
        return _inverse(self.f if operand == 0 else self.g, self.n)

    def same_maps(self, other: Relabelling) -> bool:
        """Whether both relabellings read x, y, z identically."""
        return (self.n == other.n and torch.equal(self.f, other.f) and torch.equal(self.g, other.g)
                and torch.equal(self.h, other.h))


def _inverse(m: torch.Tensor, n: int) -> torch.Tensor:
    inverse = torch.full((n,), -1, dtype=torch.int64)
    kept = (m >= 0).nonzero().flatten()
    inverse[m[kept]] = kept
    return inverse


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group Z_p^* (p an odd prime or 2)."""
    if not is_prime(p):
        raise ConfigError(f"Z_p^* is cyclic with a discrete logarithm only for prime p here; got p = {p}")
    factors = [q for q in range(2, p) if (p - 1) % q == 0 and is_prime(q)]
    return next(r for r in range(1, p) if all(pow(r, (p - 1) // q, p) != 1 for q in factors))


def _named(name: str, formula: str, p: int, n: int, f: torch.Tensor, g: torch.Tensor, h: torch.Tensor,
           count: int) -> Relabelling:
    return Relabelling(name, formula, p, n, f, g, h, bits=math.ceil(math.log2(count)))


def candidate_relabellings(p: int) -> list[Relabelling]:
    """The named relabellings for modulus p (module docstring); the discrete-log pair only for prime p ≥ 3."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 2:
        raise ConfigError(f"relabellings need a modulus p ≥ 2, got {p!r}")
    residues = torch.arange(p)
    logs = is_prime(p) and p >= 3
    count = 4 if logs else 2
    found = [
        _named("identity", f"x = a, y = b, z = c (mod {p})", p, p, residues, residues, residues, count),
        _named("negate b", f"x = a, y = -b, z = c (mod {p})", p, p, residues, (-residues) % p, residues, count),
    ]
    if logs:
        gamma = primitive_root(p)
        log = torch.full((p,), -1, dtype=torch.int64)
        for i in range(p - 1):
            log[pow(gamma, i, p)] = i
        neg_log = torch.where(log >= 0, (-log) % (p - 1), log)
        where = f"(mod {p - 1}); a, b, c != 0"
        found += [
            _named("discrete log", f"x = log_{gamma} a, y = log_{gamma} b, z = log_{gamma} c {where}",
                   p, p - 1, log, log, log, count),
            _named("discrete log, negate b", f"x = log_{gamma} a, y = -log_{gamma} b, z = log_{gamma} c {where}",
                   p, p - 1, log, neg_log, log, count),
        ]
    return found


def _log2_injections(p: int, n: int) -> int:
    """⌈log2(p! / (p − n)!)⌉: bits to name an injection of n residues into p."""
    return math.ceil((math.lgamma(p + 1) - math.lgamma(p - n + 1)) / math.log(2))


def cyclic_isotope(table: torch.Tensor) -> Relabelling | None:
    """A relabelling read off a (p, p) table of answers (−1 for pairs not in the data), or None
    when the table, past its absorbing and missing rows and columns, is not isotopic to a cyclic
    group (module docstring)."""
    if not isinstance(table, torch.Tensor) or table.dim() != 2 or table.shape[0] != table.shape[1]:
        raise ConfigError(f"cyclic_isotope expects a square (p, p) table, got {getattr(table, 'shape', table)!r}")
    p = table.shape[0]
    table = table.to(torch.int64)
    present = table >= 0
    rows, cols = present.any(1), present.any(0)

    def constant(lines: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        values = lines[:, keep]
        return (values == values[:, :1]).all(1)

    rows = rows & ~constant(table, cols)
    cols = cols & ~constant(table.T, rows)
    block = table[rows][:, cols]
    n = block.shape[0]
    if n < 2 or block.shape[1] != n or bool((block < 0).any()):
        return None
    classes = block[0].sort().values
    if classes.unique().numel() != n or not all(
            torch.equal(line.sort().values, classes) for line in (*block, *block.T)):
        return None
    index = torch.full((p,), -1, dtype=torch.int64)
    index[classes] = torch.arange(n)
    local = index[block]  # the block with classes numbered 0..n−1
    # Loop x ∘ y = L(α⁻¹(x), β⁻¹(y)), α = first column, β = first row of the block.
    alpha_inv, beta_inv = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
    alpha_inv[local[:, 0]] = torch.arange(n)
    beta_inv[local[0]] = torch.arange(n)
    loop = local[alpha_inv][:, beta_inv]
    identity = int(local[0, 0])
    log = None
    for gamma in range(n):
        powers, element = [identity], identity
        for _ in range(n - 1):
            element = int(loop[element, gamma])
            powers.append(element)
        if len(set(powers)) == n:
            log = torch.empty(n, dtype=torch.int64)
            log[torch.tensor(powers)] = torch.arange(n)
            break
    if log is None:
        return None
    f = torch.full((p,), -1, dtype=torch.int64)
    g = torch.full((p,), -1, dtype=torch.int64)
    h = torch.full((p,), -1, dtype=torch.int64)
    f[rows.nonzero().flatten()] = log[local[:, 0]]
    g[cols.nonzero().flatten()] = log[local[0]]
    h[classes] = log
    x, y = f[rows.nonzero().flatten()], g[cols.nonzero().flatten()]
    if not torch.equal(log[local], (x.unsqueeze(1) + y.unsqueeze(0)) % n):
        return None
    named = len(candidate_relabellings(p))
    bits = math.ceil(math.log2(named + 1)) + 3 * _log2_injections(p, n)
    return Relabelling("cyclic isotope", f"x = f(a), y = g(b), z = h(c) (mod {n}), tables read from the "
                       "network's answers", p, n, f, g, h, bits)


@dataclass(frozen=True, eq=False)
class GroupGrid:
    """Where a relabelling's group sits in a data set: the pairs and classes it covers."""

    relabelling: Relabelling
    rows: torch.Tensor = field(repr=False)
    """(n, n) int64: rows[x, y] is the data row of the pair with f(a) = x, g(b) = y."""
    classes: torch.Tensor = field(repr=False)
    """(n,) int64: classes[z] is the class c with h(c) = z."""
    exceptional: torch.Tensor = field(repr=False)
    """int64 data rows whose pair lies outside the group (an exceptional operand)."""
    x: torch.Tensor = field(repr=False)
    """(N,) int64: f(a) of every data row (−1 when exceptional)."""
    y: torch.Tensor = field(repr=False)
    """(N,) int64: g(b) of every data row (−1 when exceptional)."""

    @property
    def n(self) -> int:
        return self.relabelling.n


def group_grid(relabelling: Relabelling, operands: torch.Tensor) -> GroupGrid:
    """Locate the relabelling's n × n group pairs among the data rows ``operands`` (N, 2).

    Raises RelabelError naming a missing pair when the data do not hold the whole group (for
    example the identity relabelling on division data, which lack b = 0).
    """
    if not isinstance(operands, torch.Tensor) or operands.dim() != 2 or operands.shape[1] != 2:
        raise ConfigError(f"group_grid expects operands of shape (N, 2), got {getattr(operands, 'shape', operands)!r}")
    a, b = operands[:, 0], operands[:, 1]
    x, y = relabelling.f[a], relabelling.g[b]
    inside = (x >= 0) & (y >= 0)
    n = relabelling.n
    rows = torch.full((n, n), -1, dtype=torch.int64)
    index = inside.nonzero().flatten()
    rows[x[index], y[index]] = index
    if bool((rows < 0).any()):
        gx, gy = (rows < 0).nonzero()[0].tolist()
        ra, rb = relabelling.operand_residues(0)[gx], relabelling.operand_residues(1)[gy]
        raise RelabelError(f"the {relabelling.name!r} relabelling needs every pair of its group, but the data lack "
                           f"(a, b) = ({int(ra)}, {int(rb)})")
    return GroupGrid(relabelling, rows, relabelling.classes(), (~inside).nonzero().flatten(), x, y)
