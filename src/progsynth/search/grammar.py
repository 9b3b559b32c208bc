"""The typed DSL of the program search, and its prefix-free code (the simplicity prior).

A ``Grammar`` has one domain, 'zp' (residues mod p) or 'bits', and three kinds of symbols, each
building a node of ``progsynth.tasks.expression``'s trees, so that every program the search finds
prints with ``render`` and runs with ``evaluate``:

- *terminals* (arity 0): ``Var`` inputs (``a``, ``b``; or ``x0``, ``x1``, ...) and ``Const``\\ s;
- *unary* symbols (arity 1): powers ``pow2``, ``pow3``, ... (a ``Pow`` node: x² is one symbol),
  ``neg`` over Z_p, ``not`` over bits;
- *binary* operations (arity 2): ``add sub mul div`` over Z_p, ``and or xor`` over bits.

Over Z_p the search's division is total: **x ÷ 0 = 0**, the value ``expression.evaluate``
computes there too, so every program has a value on every input. ``div`` needs p prime.

Description length. Each symbol s gets a probability q(s) (uniform by default; ``weights``
overrides it, normalised) and a code length ℓ(s) = −log2 q(s) bits; a program is written as its
symbols in prefix (Polish) order and costs ``description_bits`` = Σ ℓ over its nodes (uniform:
size · log2 |symbols|). Because every symbol has a fixed arity, a reader of the prefix string
knows when a program is complete, so no complete program's string is a proper prefix of
another's: the set of programs is a prefix-free code over the alphabet of symbols. By Kraft's
inequality (equivalently: 2^−ℓ(program) = Π q(s) is the probability that drawing symbols i.i.d.
from q, in prefix order, produces exactly that program, and distinct programs are disjoint
events), Σ over all programs of 2^−ℓ ≤ 1, so the prior 2^−ℓ is a proper (sub-)probability.
The total is the probability that this branching process stops, which is 1 when the mean arity
under q is at most 1 and less otherwise. ``prior_mass`` gives the mass by size from the recurrence

    M(1) = Σ_terminals q,     M(n) = Q1 · M(n − 1) + Q2 · Σ_{i+j=n−1} M(i) M(j),

with Q1 and Q2 the total probability of the unary and of the binary symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from progsynth.errors import ConfigError
from progsynth.tasks.expression import MAX_EXPONENT, OPS, Const, Expr, Op, Pow, Var, render
from progsynth.tasks.modular import smallest_factor

__all__ = ["Grammar", "arithmetic_grammar", "boolean_grammar", "ARITHMETIC_OPS", "BOOLEAN_GATES",
           "MAX_MODULUS"]

ARITHMETIC_OPS = ("add", "sub", "mul", "div", "neg")
"""Operations an arithmetic grammar may use (``neg`` is unary)."""
BOOLEAN_GATES = ("and", "or", "xor", "not")
"""Gates a Boolean grammar may use (``not`` is unary)."""
MAX_MODULUS = (1 << 31) - 1
"""Largest modulus of an arithmetic grammar (values are held in at most 32 bits)."""


@dataclass(frozen=True)
class Grammar:
    """Symbols of one domain with their code; build with ``arithmetic_grammar`` or ``boolean_grammar``."""

    domain: str
    """'zp' or 'bits'."""
    p: int | None
    """The modulus (domain 'zp'), else None."""
    n_bits: int | None
    """The number of input bits (domain 'bits'), else None."""
    terminals: tuple[Expr, ...]
    """``Var`` and ``Const`` leaves, in enumeration order."""
    unary: tuple[str, ...]
    """Unary symbols: 'pow2', 'pow3', ..., 'neg' or 'not', in enumeration order."""
    binary: tuple[str, ...]
    """Binary operations (``OPS`` names), in enumeration order."""
    probabilities: tuple[float, ...]
    """q(s) per symbol of ``symbols`` (summing to 1)."""

    def __post_init__(self) -> None:
        if len(self.probabilities) != len(self.symbols):
            raise ConfigError(f"a grammar needs one probability per symbol: {len(self.symbols)} symbols, "
                              f"{len(self.probabilities)} probabilities")

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol's name: terminals (as rendered: 'a', '1', 'x0'), then unary, then binary."""
        return tuple(render(t) for t in self.terminals) + self.unary + self.binary

    @property
    def arities(self) -> tuple[int, ...]:
        """The arity of each symbol of ``symbols``."""
        return (0,) * len(self.terminals) + (1,) * len(self.unary) + (2,) * len(self.binary)

    @property
    def symbol_bits(self) -> tuple[float, ...]:
        """ℓ(s) = −log2 q(s) per symbol of ``symbols``."""
        return tuple(-math.log2(q) for q in self.probabilities)

    @property
    def variables(self) -> tuple[str, ...]:
        """The input names the grammar reads ('a', 'b' or 'x0', ..., 'x{n−1}')."""
        return tuple(t.name for t in self.terminals if isinstance(t, Var))

    def commutative(self, op: str) -> bool:
        """Whether a binary operation is commutative (``OPS[op].commutative``)."""
        return OPS[op].commutative

    def symbol_index(self, node: Expr) -> int:
        """The position in ``symbols`` of the symbol that builds ``node``'s root; ConfigError if the
        grammar has none."""
        if isinstance(node, (Var, Const)):
            arity, name, names, offset = 0, render(node), tuple(render(t) for t in self.terminals), 0
        elif isinstance(node, Pow):
            arity, name, names, offset = 1, f"pow{node.exponent}", self.unary, len(self.terminals)
        elif len(node.args) == 1:
            arity, name, names, offset = 1, node.name, self.unary, len(self.terminals)
        else:
            arity, name, names, offset = 2, node.name, self.binary, len(self.terminals) + len(self.unary)
        if name not in names:
            raise ConfigError(f"the grammar has no symbol {name!r} of arity {arity}; its symbols are "
                              f"{', '.join(self.symbols)}")
        return offset + names.index(name)

    def description_bits(self, expr: Expr) -> float:
        """Σ ℓ(s) over the nodes of ``expr`` (module docstring); ConfigError if a node is not a symbol."""
        bits = self.symbol_bits
        total, stack = 0.0, [expr]
        while stack:
            node = stack.pop()
            total += bits[self.symbol_index(node)]
            if isinstance(node, Pow):
                stack.append(node.base)
            elif isinstance(node, Op):
                stack.extend(node.args)
        return total

    def prior_mass(self, max_size: int) -> tuple[float, ...]:
        """Σ 2^−ℓ over all programs of each size 1..max_size (module docstring's recurrence)."""
        arity = self.arities
        q0, q1, q2 = (sum(q for q, a in zip(self.probabilities, arity) if a == k) for k in (0, 1, 2))
        mass: list[float] = []
        for n in range(1, max_size + 1):
            if n == 1:
                mass.append(q0)
                continue
            pairs = sum(mass[i - 1] * mass[n - 2 - i] for i in range(1, n - 1))
            mass.append(q1 * mass[n - 2] + q2 * pairs)
        return tuple(mass)

    def describe(self) -> str:
        """One line naming the domain and the symbols, e.g. 'Z_97: a b 1 2 pow2 pow3 add sub mul div'."""
        where = f"Z_{self.p}" if self.domain == "zp" else f"{self.n_bits} bits"
        return f"{where}: {' '.join(self.symbols)}"


def _probabilities(names: Sequence[str], weights: Mapping[str, float] | None) -> tuple[float, ...]:
    """q over ``names``: uniform, or ``weights`` (unnamed symbols weigh 1) normalised."""
    if weights is None:
        return (1.0 / len(names),) * len(names)
    if not isinstance(weights, Mapping):
        raise ConfigError(f"weights must map symbol names to positive numbers, got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ConfigError(f"weights name unknown symbol(s) {', '.join(map(repr, unknown))}; the symbols are "
                          f"{', '.join(names)}")
    raw = []
    for name in names:
        w = weights.get(name, 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"weights[{name!r}] = {w!r}; expected a positive finite number")
        raw.append(float(w))
    total = sum(raw)
    return tuple(w / total for w in raw)


def _names(value: Sequence[str], what: str, valid: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{what} must be a sequence of names from {', '.join(valid)}, got {value!r}")
    unknown = [v for v in value if v not in valid]
    if unknown:
        raise ConfigError(f"unknown {what[:-1]} {unknown[0]!r}; valid {what}: {', '.join(valid)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{what} {tuple(value)!r} names an operation twice")
    return tuple(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def arithmetic_grammar(p: int, constants: Sequence[int] = (1, 2), ops: Sequence[str] = ("add", "sub", "mul", "div"),
                       powers: Sequence[int] = (2, 3), weights: Mapping[str, float] | None = None) -> Grammar:
    """Programs in a and b over Z_p: terminals a, b and ``constants`` (residues in [0, p)), the
    unary powers x^k for k in ``powers`` (k ≥ 2) and ``neg`` if listed in ``ops``, and the binary
    operations of ``ops`` (from ``ARITHMETIC_OPS``; ``div`` only for prime p, with x ÷ 0 = 0).
    ``weights`` (symbol name → weight) sets q; unnamed symbols weigh 1."""
    if not _is_int(p) or not 2 <= p <= MAX_MODULUS:
        raise ConfigError(f"p = {p!r}; expected an integer modulus from 2 to {MAX_MODULUS}")
    ops = _names(ops, "ops", ARITHMETIC_OPS)
    if "div" in ops and (factor := smallest_factor(p)) is not None:
        raise ConfigError(f"op 'div' needs a prime modulus, but p = {p} = {factor} × {p // factor}; "
                          f"use a prime p or drop 'div' from ops")
    if isinstance(constants, (str, bytes)) or not isinstance(constants, Sequence):
        raise ConfigError(f"constants must be a sequence of residues in [0, {p}), got {constants!r}")
    for c in constants:
        if not _is_int(c) or not 0 <= c < p:
            raise ConfigError(f"constant {c!r} is not a residue in [0, {p}) (p = {p})")
    if len(set(constants)) != len(constants):
        raise ConfigError(f"constants {tuple(constants)!r} list a residue twice")
    if isinstance(powers, (str, bytes)) or not isinstance(powers, Sequence):
        raise ConfigError(f"powers must be a sequence of integer exponents ≥ 2, got {powers!r}")
    for k in powers:
        if not _is_int(k) or not 2 <= k <= MAX_EXPONENT:
            raise ConfigError(f"power {k!r}; expected an integer exponent from 2 to {MAX_EXPONENT} "
                              f"(x^1 is x and x^0 is 1)")
    if len(set(powers)) != len(powers):
        raise ConfigError(f"powers {tuple(powers)!r} list an exponent twice")
    terminals = (Var("a"), Var("b")) + tuple(Const(c) for c in constants)
    unary = tuple(f"pow{k}" for k in powers) + (("neg",) if "neg" in ops else ())
    binary = tuple(o for o in ops if OPS[o].arity == 2)
    names = tuple(render(t) for t in terminals) + unary + binary
    return Grammar("zp", p, None, terminals, unary, binary, _probabilities(names, weights))


def boolean_grammar(n_bits: int, gates: Sequence[str] = ("and", "or", "xor", "not"), constants: bool = False,
                    weights: Mapping[str, float] | None = None) -> Grammar:
    """Boolean formulas over bits x0..x{n_bits−1} with ``gates`` (from ``BOOLEAN_GATES``, fan-in
    ≤ 2) and, if ``constants``, the constants 0 and 1. ``gates=("xor",)`` enumerates exactly the
    XORs of subsets of the bits (a k-subset has size 2k − 1): the search space of sparse parity.
    ``weights`` (symbol name → weight) sets q; unnamed symbols weigh 1."""
    if not _is_int(n_bits) or n_bits < 1:
        raise ConfigError(f"n_bits = {n_bits!r}; expected an integer ≥ 1")
    gates = _names(gates, "gates", BOOLEAN_GATES)
    if not isinstance(constants, bool):
        raise ConfigError(f"constants = {constants!r}; expected True or False")
    terminals = tuple(Var(f"x{i}") for i in range(n_bits)) + ((Const(0), Const(1)) if constants else ())
    unary = ("not",) if "not" in gates else ()
    binary = tuple(g for g in gates if g != "not")
    names = tuple(render(t) for t in terminals) + unary + binary
    return Grammar("bits", None, n_bits, terminals, unary, binary, _probabilities(names, weights))
