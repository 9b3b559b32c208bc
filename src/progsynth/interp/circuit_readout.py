"""Reading a Boolean circuit out of a ReLU network trained on a Boolean task; gate-level programs.

**Programs.** A ``BooleanProgram`` is straight-line code over named bits, one gate per line::

    g1 = AND(x0, ~x4)
    out = XOR(g1, x2)

Gates (``ProgramGate.op``): ``AND OR XOR XNOR`` of any arity, ``NOT``, ``ID`` (a wire, possibly
negated: not counted as a gate), ``CONST`` (0 or 1), ``MAJ`` (more than half), ``ATLEASTt`` (at
least t), ``THRESHOLD`` (Σ wᵢ·aᵢ ≥ t) and ``TABLE`` (a truth table, entry r for the arguments
spelling r in binary, first argument most significant). Arguments are literals: a name, ``~`` for
its negation. ``circuit_program`` prints any ``core.boolean.Circuit`` this way, one line per gate
(``g{k}`` for gate k, ``p{i}`` for parameter bit i), so a learned circuit reads as code.

**Read-back** (``read_back``; ``readback_run`` for a run directory). The network's decision on
every one of the 2ⁿ inputs is the Boolean function it computes; the read-back writes it with the
network's own parts:

1. Its score s(x) = logit₁ − logit₀ is an affine read-out of the last hidden layer, Σⱼ cⱼ hⱼ(x) + d.
2. Each unit's activation hⱼ takes finitely many values on {0, 1}ⁿ (merged within bins of
   ``tolerance`` × its range, so a merged value moves by less than that). A unit with one value
   is a constant; a unit with two values v₀ < v₁ is *binary*: hⱼ = v₀ + (v₁ − v₀)·[hⱼ ≥ v₁], one
   gate. A unit affine in the bits (e.g. always active) is a linear term Σ wᵢxᵢ. Any other unit
   is its level sets, hⱼ = v₀ + Σₖ (vₖ − vₖ₋₁)·[hⱼ ≥ vₖ], one gate per level — exact, since hⱼ
   takes only those values.
   So s(x) = Σ_g α_g G_g(x) + Σᵢ βᵢxᵢ + γ, every G_g a Boolean function of the bits.
3. Simplify: identical gates merge (a gate and its negation too), gates equal to a bit or a
   constant become linear terms; then terms are dropped greedily, smallest |α|·std first, as long
   as the decision stays separable — some threshold still gives the network's decision on every
   input. (If the parts do not separate it to begin with — values merged too coarsely — terms are
   dropped as long as no more inputs are decided otherwise at the network's own threshold.)
4. The output is named over the fewest kept terms: the first small subset on which one of
   AND/OR/XOR/XNOR/MAJ/ATLEAST/small-integer THRESHOLD (literals negated as needed) gives the
   decision; failing that, the threshold of the kept terms with the network's weights. Each gate
   it reads is named the same way over the bits it depends on (``TABLE`` as the last resort).
5. Check: the program is run on all 2ⁿ inputs and compared with the network's argmax; it is exact
   only when they agree on every input, and otherwise the differing inputs are listed.

Applies to runs of the ``mlp`` model with ReLU on tasks over at most 16 bits with two classes
(``NotApplicableError`` otherwise). Activations come from the model's ``preactivations``, the
decision from ``Experiment.logits`` and the read-out weights from ``interp.network.neuron_to_logit``:
nothing re-implements the network.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from progsynth.core.boolean import Circuit
from progsynth.errors import ConfigError, NotApplicableError, ResourceError, RunError

__all__ = ["Literal", "ProgramGate", "BooleanProgram", "circuit_program", "name_function", "Readout", "read_back",
           "all_inputs", "RunReadout", "readback_run", "ANALYSIS", "DEFAULT_TOLERANCE", "MAX_READBACK_BITS", "MAX_CELLS"]

ANALYSIS = "circuit_readback"
"""The ``analysis`` tag of the rows ``readback_run`` appends to measures.jsonl."""
DEFAULT_TOLERANCE = 1e-4
"""Activations of a unit count as one value when they fall in the same bin of this fraction of its
range (so merging moves a value by less than that)."""
MAX_READBACK_BITS = 16
"""Most input bits a read-back enumerates (2¹⁶ inputs)."""
MAX_CELLS = 1 << 26
"""Most (distinct gate, input) truth-table cells the read-back holds (64 MiB of bools)."""
_MAX_SUBSETS = 5_000
"""Most argument subsets tried when naming the output."""
_MAX_INTEGER_SCALE = 64
"""Integer weights tried for a threshold: the real weights scaled to at most this, rounded."""

_OPS = ("CONST", "ID", "NOT", "AND", "OR", "XOR", "XNOR", "MAJ", "ATLEAST", "THRESHOLD", "TABLE")


# ---- programs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Literal:
    """A named bit (an input or an earlier gate), negated when ``negated``."""

    name: str
    negated: bool = False

    def __str__(self) -> str:
        return f"~{self.name}" if self.negated else self.name


@dataclass(frozen=True)
class ProgramGate:
    """One line of a program: ``name = op(args)`` (module docstring for the ops).

    ``threshold`` is t for ATLEAST and THRESHOLD; ``weights`` the wᵢ of THRESHOLD; ``table`` the
    truth table of TABLE or the value ("0"/"1") of CONST; ``note`` a comment printed after it."""

    name: str
    op: str
    args: tuple[Literal, ...] = ()
    weights: tuple[float, ...] = ()
    threshold: float = 0.0
    table: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ConfigError(f"gate {self.name!r}: unknown op {self.op!r}; expected one of {list(_OPS)}")
        arity = {"CONST": 0, "ID": 1, "NOT": 1}.get(self.op)
        if arity is not None and len(self.args) != arity:
            raise ConfigError(f"gate {self.name!r}: {self.op} takes {arity} argument(s), got {len(self.args)}")
        if self.op == "THRESHOLD" and len(self.weights) != len(self.args):
            raise ConfigError(f"gate {self.name!r}: THRESHOLD needs one weight per argument")
        if self.op == "TABLE" and (len(self.table) != 1 << len(self.args) or set(self.table) - {"0", "1"}):
            raise ConfigError(f"gate {self.name!r}: TABLE needs 2^{len(self.args)} characters 0/1")
        if self.op == "CONST" and self.table not in ("0", "1"):
            raise ConfigError(f"gate {self.name!r}: CONST needs table '0' or '1'")

    def expression(self) -> str:
        """The right-hand side, e.g. ``AND(x0, ~x4)``."""
        args = ", ".join(map(str, self.args))
        if self.op == "CONST":
            return self.table
        if self.op == "ID":
            return str(self.args[0])
        if self.op == "ATLEAST":
            return f"ATLEAST{int(self.threshold)}({args})"
        if self.op == "THRESHOLD":
            parts = []
            for i, (w, a) in enumerate(zip(self.weights, self.args)):
                size = _number(abs(w))
                term = str(a) if size == "1" else f"{size}*{a}"
                parts.append(("-" if w < 0 else "") + term if i == 0 else (" - " if w < 0 else " + ") + term)
            return f"[{''.join(parts) or '0'} >= {_number(self.threshold)}]"
        if self.op == "TABLE":
            return f"TABLE({args}; {self.table})"
        return f"{self.op}({args})"

    def evaluate(self, values: Sequence[np.ndarray], n: int) -> np.ndarray:
        """The gate on argument columns ``values`` (bools, already negated per literal), n rows."""
        if self.op == "CONST":
            return np.full(n, self.table == "1")
        if self.op in ("ID", "NOT"):
            return ~values[0] if self.op == "NOT" else values[0].copy()
        stacked = np.stack(values, axis=1) if values else np.zeros((n, 0), dtype=bool)
        count = stacked.sum(axis=1)
        if self.op == "AND":
            return stacked.all(axis=1)
        if self.op == "OR":
            return stacked.any(axis=1)
        if self.op in ("XOR", "XNOR"):
            return (count % 2 == 1) ^ (self.op == "XNOR")
        if self.op == "MAJ":
            return 2 * count > len(values)
        if self.op == "ATLEAST":
            return count >= self.threshold
        if self.op == "THRESHOLD":
            return stacked.astype(np.float64) @ np.asarray(self.weights, dtype=np.float64) >= self.threshold
        index = stacked.astype(np.int64) @ (1 << np.arange(len(values) - 1, -1, -1, dtype=np.int64))
        return np.frombuffer(self.table.encode(), dtype=np.uint8)[index] == ord("1")

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"name": self.name, "op": self.op, "args": [str(a) for a in self.args],
                               "expression": self.expression()}
        if self.op == "THRESHOLD":
            row["weights"] = list(self.weights)
        if self.op in ("THRESHOLD", "ATLEAST"):
            row["threshold"] = self.threshold
        if self.note:
            row["note"] = self.note
        return row


def _number(x: float) -> str:
    """A weight as short text: an integer when it is one, else 4 significant digits (or all)."""
    if float(x).is_integer():
        return str(int(x))
    short = f"{x:.4g}"
    return short if float(short) == x else repr(float(x))


@dataclass(frozen=True)
class BooleanProgram:
    """Straight-line code over bits: ``inputs`` (names), ``gates`` in order, each reading inputs and
    earlier gates, and ``outputs`` (name, literal) pairs."""

    inputs: tuple[str, ...]
    gates: tuple[ProgramGate, ...]
    outputs: tuple[tuple[str, Literal], ...]

    def __post_init__(self) -> None:
        known = set(self.inputs)
        if len(known) != len(self.inputs):
            raise ConfigError(f"program inputs name a bit twice: {list(self.inputs)}")
        for g in self.gates:
            missing = [a.name for a in g.args if a.name not in known]
            if missing:
                raise ConfigError(f"program gate {g.name!r} reads {missing}, which no input or earlier gate defines")
            if g.name in known:
                raise ConfigError(f"program gate {g.name!r} redefines a name")
            known.add(g.name)
        for name, literal in self.outputs:
            if literal.name not in known:
                raise ConfigError(f"program output {name!r} reads {literal.name!r}, which nothing defines")

    @property
    def gate_count(self) -> int:
        """Gates, not counting ``ID`` lines (wires)."""
        return sum(1 for g in self.gates if g.op != "ID")

    def evaluate(self, bits: np.ndarray) -> np.ndarray:
        """The outputs (N, len(outputs)) bools on inputs (N, len(inputs)) of bools or 0/1."""
        bits = np.asarray(bits)
        if bits.ndim != 2 or bits.shape[1] != len(self.inputs):
            raise ConfigError(f"the program reads (N, {len(self.inputs)}) bits, got shape {bits.shape}")
        env = {name: bits[:, i].astype(bool) for i, name in enumerate(self.inputs)}

        def value(literal: Literal) -> np.ndarray:
            return ~env[literal.name] if literal.negated else env[literal.name]

        for g in self.gates:
            env[g.name] = g.evaluate([value(a) for a in g.args], bits.shape[0])
        columns = [value(literal) for _, literal in self.outputs]
        return np.stack(columns, axis=1) if columns else np.zeros((bits.shape[0], 0), dtype=bool)

    def lines(self) -> list[str]:
        """One line per gate, ``name = expression`` (with ``  # note``), then each output that is
        not itself a gate's name as ``out = literal``."""
        out = [f"{g.name} = {g.expression()}" + (f"  # {g.note}" if g.note else "") for g in self.gates]
        out += [f"{name} = {literal}" for name, literal in self.outputs if str(literal) != name]
        return out

    def text(self) -> str:
        """The program as text (``lines`` joined)."""
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "gates": [g.to_dict() for g in self.gates],
                "outputs": {name: str(literal) for name, literal in self.outputs},
                "gate_count": self.gate_count, "lines": self.lines()}


_CIRCUIT_OPS = {"and": "AND", "or": "OR", "xor": "XOR", "not": "NOT"}


def circuit_program(circuit: Circuit, theta: Optional[np.ndarray] = None, live_only: bool = False) -> BooleanProgram:
    """A ``core.boolean.Circuit`` as a program: inputs ``x0..``, gate k as ``g{k} = OP(...)`` (one
    line per gate, so ``gate_count`` is the circuit's), outputs ``out`` (``out0, out1, ...`` for
    several). Parameter bits are the constants ``p{i} = 0/1`` of ``theta``, or, without it, extra
    inputs ``p0..`` after the x's. ``live_only`` leaves out gates and parameters no output reads."""
    if not isinstance(circuit, Circuit):
        raise ConfigError(f"circuit_program expects a core.boolean.Circuit, got {type(circuit).__name__}")
    if theta is not None and not (isinstance(theta, np.ndarray) and theta.dtype == bool
                                  and theta.shape == (circuit.n_params,)):
        raise ConfigError(f"theta must be a numpy bool array of shape ({circuit.n_params},), got "
                          f"{type(theta).__name__} {getattr(theta, 'shape', '')}")
    first = circuit.n_inputs + circuit.n_params
    names = [f"x{i}" for i in range(circuit.n_inputs)] + [f"p{i}" for i in range(circuit.n_params)]
    names += [f"g{g}" for g in range(len(circuit.gates))]
    live = np.ones(circuit.n_wires, dtype=bool)
    if live_only:
        live[:] = False
        live[list(circuit.outputs)] = True
        for g in range(len(circuit.gates) - 1, -1, -1):
            if live[first + g]:
                live[list(circuit.gates[g][1])] = True
    inputs = names[:circuit.n_inputs] + (names[circuit.n_inputs:first] if theta is None else [])
    gates = []
    if theta is not None:
        gates += [ProgramGate(names[circuit.n_inputs + i], "CONST", table="1" if theta[i] else "0")
                  for i in range(circuit.n_params) if live[circuit.n_inputs + i]]
    for g, (op, ins) in enumerate(circuit.gates):
        if not live[first + g]:
            continue
        if op in ("zero", "one"):
            gates.append(ProgramGate(names[first + g], "CONST", table="1" if op == "one" else "0"))
        else:
            gates.append(ProgramGate(names[first + g], _CIRCUIT_OPS[op], tuple(Literal(names[i]) for i in ins)))
    outs = ["out"] if len(circuit.outputs) == 1 else [f"out{j}" for j in range(len(circuit.outputs))]
    outputs = tuple((o, Literal(names[w])) for o, w in zip(outs, circuit.outputs))
    return BooleanProgram(tuple(inputs), tuple(gates), outputs)


# ---- naming a Boolean function ------------------------------------------------------------------
@dataclass(frozen=True)
class _Fit:
    """A named gate over some of the caller's arguments: ``columns`` picks them (None: all)."""

    op: str
    negated: tuple[bool, ...]
    weights: tuple[float, ...] = ()
    threshold: float = 0.0
    table: str = ""
    columns: Optional[tuple[int, ...]] = None

    def gate(self, name: str, args: Sequence[str], note: str = "") -> ProgramGate:
        fit, args = _bind(self, list(args))
        literals = tuple(Literal(a, neg) for a, neg in zip(args, fit.negated))
        return ProgramGate(name, fit.op, literals, fit.weights, fit.threshold, fit.table, note)


def _bind(fit: _Fit, args: list) -> tuple[_Fit, list]:
    """The arguments ``fit`` reads (its ``columns``, without zero-weight THRESHOLD arguments) and the
    fit over exactly those."""
    chosen = list(range(len(args))) if fit.columns is None else list(fit.columns)
    if fit.op == "THRESHOLD":
        keep = [j for j, w in enumerate(fit.weights) if w != 0]
        fit = replace(fit, negated=tuple(fit.negated[j] for j in keep), weights=tuple(fit.weights[j] for j in keep))
        chosen = [chosen[j] for j in keep]
    return replace(fit, columns=None), [args[i] for i in chosen]


def _patterns(columns: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct rows of ``columns`` (ascending as binary numbers, first column most significant)
    and the target on each, or None if some row pattern has both target values (the target is
    then no function of these columns)."""
    k = columns.shape[1]
    if k > 30:
        raise ResourceError(f"naming a function of {k} arguments; at most 30 are enumerated")
    codes = columns.astype(np.int64) @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64))
    counts = np.bincount(codes, minlength=1)
    ones = np.bincount(codes, weights=target.astype(np.float64), minlength=1)
    if np.any((ones > 0) & (ones < counts)):
        return None
    seen = np.flatnonzero(counts)
    patterns = ((seen[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(bool)
    return patterns, ones[seen] > 0


def _separating(z: np.ndarray, y: np.ndarray) -> float | None:
    """The smallest z of the y rows if it exceeds every z of the other rows (y = [z ≥ t]), else None."""
    low, high = z[~y], z[y]
    if high.size == 0 or (low.size and low.max() >= high.min()):
        return None
    return float(high.min())


def _integer_threshold(patterns: np.ndarray, y: np.ndarray, hint: Optional[np.ndarray]) -> _Fit | None:
    """y = [Σ wᵢaᵢ ≥ t] with small integer weights: the hint's real weights scaled to at most
    1, 2, ..., ``_MAX_INTEGER_SCALE`` and rounded (the first that separates), or, without a hint
    and for at most 4 arguments, every weight vector in {−3..3}^k, lightest first."""
    x = patterns.astype(np.float64)
    k = x.shape[1]
    if hint is not None:
        if not np.abs(hint).max() > 0:
            return None
        candidates = np.round(np.outer(np.arange(1, _MAX_INTEGER_SCALE + 1), hint / np.abs(hint).max()))
    elif k <= 4:
        candidates = np.array(list(itertools.product(range(-3, 4), repeat=k)), dtype=np.float64)
        candidates = candidates[np.argsort(np.abs(candidates).sum(1), kind="stable")]
    else:
        return None
    if not y.any() or y.all():
        return None
    z = x @ candidates.T  # (patterns, candidates)
    low, high = z[~y].max(axis=0), z[y].min(axis=0)
    good = np.flatnonzero(low < high)
    if good.size == 0:
        return None
    c = int(good[0])
    return _Fit("THRESHOLD", (False,) * k, tuple(float(v) for v in candidates[c]), float(high[c]))


def name_function(columns: np.ndarray, target: np.ndarray, hint: Optional[np.ndarray] = None,
                  table: bool = True) -> _Fit | None:
    """A named gate over the columns (N, k) bools that gives ``target`` (N,) on every row, or None.

    Tried in order: a constant, a literal, AND and OR of literals, XOR / XNOR, at-least-t of
    literals (MAJ when t is more than half), a threshold with small integer weights (scaled from
    ``hint``, real weights, when given), then — if ``table`` and every pattern of the columns
    occurs — the truth table. Only the row patterns that occur are constrained, and columns the
    target does not need there are left out first (``_Fit.columns`` says which ones it reads)."""
    reduced = _patterns(columns, target)
    if reduced is None:
        return None
    used = list(range(columns.shape[1]))
    for i in reversed(range(columns.shape[1])):  # leave out columns the target does not need
        fewer = [j for j in used if j != i]
        smaller = _patterns(reduced[0][:, fewer], reduced[1])
        if smaller is not None:
            used = fewer
    fit = _name_patterns(*_patterns(reduced[0][:, used], reduced[1]), None if hint is None else hint[used], table)
    return None if fit is None else replace(fit, columns=tuple(used[i] for i in (
        fit.columns if fit.columns is not None else range(len(used)))))


def _name_patterns(patterns: np.ndarray, y: np.ndarray, hint: Optional[np.ndarray], table: bool) -> _Fit | None:
    """``name_function`` on distinct row patterns that all matter."""
    k = patterns.shape[1]
    if y.all() or not y.any():
        return _Fit("CONST", (), table="1" if y.all() else "0")
    if k == 0:
        return None
    if k == 1:
        col = patterns[:, 0]
        if np.array_equal(col, y) or np.array_equal(~col, y):
            return _Fit("ID", (not np.array_equal(col, y),))
        return None
    on, off = patterns[y], patterns[~y]  # distinct patterns
    if len(on) == 1:  # AND of literals: a single pattern gives 1
        return _Fit("AND", tuple(not v for v in on[0]))
    if len(off) == 1:  # OR of literals: a single pattern gives 0
        return _Fit("OR", tuple(bool(v) for v in off[0]))
    parity = patterns.sum(axis=1) % 2 == 1
    if np.array_equal(parity, y):
        return _Fit("XOR", (False,) * k)
    if np.array_equal(~parity, y):
        return _Fit("XNOR", (False,) * k)
    negated = tuple(bool(y[patterns[:, i]].mean() < y[~patterns[:, i]].mean())
                    if patterns[:, i].any() and (~patterns[:, i]).any() else False for i in range(k))
    count = (patterns ^ np.array(negated)).sum(axis=1)
    t = _separating(count.astype(np.float64), y)
    if t is not None:
        return _Fit("MAJ", negated) if k % 2 == 1 and 2 * t == k + 1 else \
            _Fit("ATLEAST", negated, threshold=float(int(t)))
    fit = _integer_threshold(patterns, y, hint)
    if fit is not None:
        return fit
    if table and len(patterns) == 1 << k and k <= MAX_READBACK_BITS:
        index = patterns.astype(np.int64) @ (1 << np.arange(k - 1, -1, -1, dtype=np.int64))
        entries = np.zeros(1 << k, dtype=bool)
        entries[index] = y
        return _Fit("TABLE", (False,) * k, table=(entries.astype(np.uint8) + ord("0")).tobytes().decode())
    return None


# ---- the read-back ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Readout:
    """A program read out of a network and its check against the network (module docstring)."""

    program: BooleanProgram
    n_bits: int
    inputs_checked: int
    mismatches: int
    """Inputs on which the program's output differs from the network's decision."""
    mismatch_examples: tuple[str, ...]
    """Up to 8 of those inputs, as bit strings x0 x1 ... ."""
    units: dict[str, int]
    """Hidden units by kind: constant (dead or unread ones included), binary, affine, multilevel."""
    level_gates: int
    """Gates the units decomposed into (one per binary unit, one per extra level of the others)."""
    distinct_gates: int
    """Distinct gates after merging equal ones (and negations) and moving literals to linear terms."""
    terms_kept: int
    """Gates and linear terms left after pruning."""
    reconstruction_error: float
    """max |Σ α G + Σ β x + γ − score| before pruning: how exactly the parts add up to the network's
    score (0 up to float rounding and the ``tolerance`` merging of values)."""
    separable: bool
    """Whether the parts separate the network's decision before pruning (if not, the program is the
    plain threshold of all parts and cannot be exact)."""
    equivalent: Optional[ProgramGate]
    """The network's decision as a single named gate over the bits it depends on, when there is one
    (not read from the units: the shortest program with the same truth table among the named gates)."""

    @property
    def exact(self) -> bool:
        """The program agrees with the network on every input."""
        return self.mismatches == 0

    @property
    def agreement(self) -> float:
        """Fraction of the inputs on which they agree."""
        return 1.0 - self.mismatches / self.inputs_checked

    def to_dict(self) -> dict[str, Any]:
        return {"exact": self.exact, "agreement": self.agreement, "inputs_checked": self.inputs_checked,
                "mismatches": self.mismatches, "mismatch_examples": list(self.mismatch_examples),
                "gate_count": self.program.gate_count, "program": self.program.to_dict(), "n_bits": self.n_bits,
                "units": dict(self.units), "level_gates": self.level_gates, "distinct_gates": self.distinct_gates,
                "terms_kept": self.terms_kept, "reconstruction_error": self.reconstruction_error,
                "separable": self.separable,
                "equivalent": None if self.equivalent is None else f"out = {self.equivalent.expression()}"}


def all_inputs(n_bits: int) -> np.ndarray:
    """Every n-bit string (2ⁿ, n) bools in counting order, x0 the most significant bit (the order of
    the Boolean tasks' data)."""
    index = np.arange(1 << n_bits)
    return ((index[:, None] >> np.arange(n_bits - 1, -1, -1)) & 1).astype(bool)


def _clusters(h: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(label per row, value per label ascending): the values binned on a grid of ``tolerance`` ×
    range (so a merged value is off by less than that; 0: only equal values merge), each bin
    represented by the mean of its values."""
    span = float(h.max() - h.min())
    keys = h if tolerance == 0 or span == 0 else np.floor((h - h.min()) / (tolerance * span))
    _, labels = np.unique(keys, return_inverse=True)
    labels = labels.reshape(-1)
    values = np.bincount(labels, weights=h) / np.bincount(labels)
    return labels, values


def _affine_fit(h: np.ndarray, design: np.ndarray, tolerance: float) -> np.ndarray | None:
    """(w, b) with h = x·w + b on every row (within ``tolerance`` × range), or None."""
    coef, *_ = np.linalg.lstsq(design, h, rcond=None)
    span = max(float(h.max() - h.min()), 1e-300)
    return coef if np.abs(design @ coef - h).max() <= tolerance * span else None


@dataclass
class _Gate:
    column: np.ndarray
    alpha: float
    sources: list = field(default_factory=list)
    hint: Optional[np.ndarray] = None


def read_back(hidden: np.ndarray, readout: np.ndarray, score: np.ndarray, decision: np.ndarray,
              pre: Optional[np.ndarray] = None, tolerance: float = DEFAULT_TOLERANCE) -> Readout:
    """Read a program out of one hidden layer on every input (module docstring).

    ``hidden`` (2ⁿ, m) activations on ``all_inputs(n)``; ``readout`` (m,) how each unit moves the
    score; ``score`` (2ⁿ,) the network's logit₁ − logit₀; ``decision`` (2ⁿ,) its answer (bools);
    ``pre`` (2ⁿ, m) the pre-activations, if known: where they are affine in the bits their weights
    seed the integer thresholds. NotApplicableError if the score is no affine read-out of
    ``hidden``."""
    hidden, readout, score = (np.asarray(a, dtype=np.float64) for a in (hidden, readout, score))
    decision = np.asarray(decision, dtype=bool)
    n_rows = hidden.shape[0] if hidden.ndim == 2 else -1
    n = int(round(math.log2(n_rows))) if n_rows > 0 else -1
    if not (hidden.ndim == 2 and n_rows == 1 << n and 0 < n <= MAX_READBACK_BITS and readout.shape == hidden.shape[1:]
            and score.shape == decision.shape == (n_rows,)):
        raise ConfigError(f"read_back needs activations (2^n, m) on every n-bit input (n ≤ {MAX_READBACK_BITS}), "
                          f"readout (m,), score and decision (2^n,); got {hidden.shape}, {readout.shape}, "
                          f"{score.shape}, {decision.shape}")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ConfigError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    bits = all_inputs(n)
    design = np.concatenate([bits.astype(np.float64), np.ones((n_rows, 1))], axis=1)
    scale = max(float(np.abs(score).max()), 1e-12)
    residual = score - hidden @ readout
    gamma = float(residual.mean())
    if np.abs(residual - gamma).max() > 1e-3 * scale + 1e-9:
        raise NotApplicableError("the network's score is not an affine read-out of its last hidden layer "
                                 f"(off by up to {np.abs(residual - gamma).max():.3g}); the read-back needs one")
    beta = np.zeros(n)
    gates: dict[bytes, _Gate] = {}
    units = {"constant": 0, "binary": 0, "affine": 0, "multilevel": 0}
    level_gates = 0
    max_gates = max(1, MAX_CELLS // n_rows)

    def add_gate(column: np.ndarray, alpha: float, source: str, hint: Optional[np.ndarray]) -> None:
        nonlocal gamma
        if column[0]:  # the all-zeros input reads 0 in every stored gate: G = 1 − ¬G
            column, gamma, alpha = ~column, gamma + alpha, -alpha
            hint = None if hint is None else -hint
        if not column.any():
            return
        key = np.packbits(column).tobytes()
        if key not in gates:
            if len(gates) >= max_gates:
                raise ResourceError(f"the read-back would hold more than {max_gates:,} distinct gates over "
                                    f"{n_rows:,} inputs ({MAX_CELLS:,} cells): the units take too many values; "
                                    "raise the tolerance (--tolerance) to merge close ones, or read a narrower "
                                    "network or fewer bits")
            gates[key] = _Gate(column, 0.0, [], hint)
        gates[key].alpha += alpha
        gates[key].sources.append(source)

    for j in range(hidden.shape[1]):
        h, c = hidden[:, j], float(readout[j])
        if h.max() - h.min() <= 0 or c == 0:
            units["constant"] += 1
            gamma += c * float(h.mean())
            continue
        labels, values = _clusters(h, tolerance)
        hint = None
        if pre is not None:
            fit = _affine_fit(np.asarray(pre[:, j], dtype=np.float64), design, tolerance)
            hint = None if fit is None else fit[:n]
        if len(values) == 1:
            units["constant"] += 1
            gamma += c * float(values[0])
            continue
        if len(values) > 2:
            fit = _affine_fit(h, design, tolerance)
            if fit is not None:
                units["affine"] += 1
                beta += c * fit[:n]
                gamma += c * float(fit[n])
                continue
        units["binary" if len(values) == 2 else "multilevel"] += 1
        gamma += c * float(values[0])
        for k in range(1, len(values)):
            level_gates += 1
            add_gate(labels >= k, c * float(values[k] - values[k - 1]), f"unit {j} ≥ {values[k]:.4g}", hint)

    # gates equal to a bit become linear terms
    bit_keys = {np.packbits(bits[:, i]).tobytes(): i for i in range(n)}
    for key in [key for key in gates if key in bit_keys]:
        beta[bit_keys[key]] += gates.pop(key).alpha
    names = [f"x{i}" for i in range(n)]
    terms: list[tuple[str, np.ndarray, float, Optional[_Gate]]] = [
        ("gate", g.column, g.alpha, g) for g in gates.values() if g.alpha != 0]
    terms += [(names[i], bits[:, i], float(beta[i]), None) for i in range(n) if beta[i] != 0]
    cols = np.stack([t[1] for t in terms], axis=1) if terms else np.zeros((n_rows, 0), dtype=bool)
    coefs = np.array([t[2] for t in terms], dtype=np.float64)
    summed = _weighted(cols, coefs)
    reconstruction_error = float(np.abs(summed + gamma - score).max())

    keep = np.ones(len(terms), dtype=bool)
    separable = True
    if decision.all() or not decision.any():
        keep[:] = False
        out_fit, out_args = _Fit("CONST", (), table="1" if decision.all() else "0"), []
    else:
        eps = 1e-6 * scale
        separable = _gap(summed, decision) > eps
        share = cols.sum(axis=0) / n_rows
        importance = np.abs(coefs) * np.sqrt(share * (1 - share))
        errors = int(np.count_nonzero((summed + gamma > 0) != decision))
        for t in np.argsort(importance, kind="stable"):
            trial = summed - coefs[t] * cols[:, t]
            if separable:  # keep some threshold giving the decision on every input
                drop = _gap(trial, decision) > eps
            else:  # the network's own threshold, no more inputs decided otherwise
                wrong = int(np.count_nonzero((trial + gamma > 0) != decision))
                drop, errors = wrong <= errors, min(wrong, errors)
            if drop:
                summed = trial
                keep[t] = False
        out_fit, out_args = _bind(*_name_output(terms, list(np.flatnonzero(keep)), cols, coefs, gamma, decision))
    # name the gates the output reads, g1, g2, ... in the order of its arguments
    program_gates: list[ProgramGate] = []
    arg_names = []
    if out_fit.op == "ID" and terms[out_args[0]][3] is not None:  # out = g or ~g: that gate is the output
        _, column, _, gate = terms[out_args[0]]
        program_gates.append(_name_gate("out", column, bits, gate, negate=out_fit.negated[0]))
        out_fit, out_args = None, []
    for t in out_args:
        label, column, _, gate = terms[t]
        if gate is None:
            arg_names.append(label)
            continue
        name = f"g{len(program_gates) + 1}"
        program_gates.append(_name_gate(name, column, bits, gate))
        arg_names.append(name)
    if out_fit is not None:
        program_gates.append(out_fit.gate("out", arg_names))
    program = BooleanProgram(tuple(names), tuple(program_gates), (("out", Literal("out")),))
    answer = program.evaluate(bits)[:, 0]
    wrong = np.flatnonzero(answer != decision)
    examples = tuple("".join("1" if b else "0" for b in bits[r]) for r in wrong[:8])
    return Readout(program, n, n_rows, int(wrong.size), examples, units, level_gates, len(gates), int(keep.sum()),
                   reconstruction_error, separable, _direct(decision, score, bits, design))


def _weighted(cols: np.ndarray, coefs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """cols (N, T) bools times coefs (T,), a chunk of columns at a time (no full float copy)."""
    out = np.zeros(cols.shape[0])
    for start in range(0, cols.shape[1], chunk):
        out += cols[:, start:start + chunk].astype(np.float64) @ coefs[start:start + chunk]
    return out


def _support(column: np.ndarray, n: int) -> list[int]:
    """The bits a function on ``all_inputs(n)`` depends on (flipping bit i changes it somewhere)."""
    index = np.arange(len(column))
    return [i for i in range(n) if np.any(column != column[index ^ (1 << (n - 1 - i))])]


def _direct(decision: np.ndarray, score: np.ndarray, bits: np.ndarray, design: np.ndarray) -> ProgramGate | None:
    """The decision as one named gate over the bits it depends on (no truth table), or None; the
    threshold search is seeded by the least-squares fit of the score on the bits."""
    support = _support(decision, bits.shape[1])
    coef, *_ = np.linalg.lstsq(design, score, rcond=None)
    fit = name_function(bits[:, support], decision, hint=coef[support] if support else None, table=False)
    if fit is None:
        return None
    return fit.gate("out", [f"x{i}" for i in support])


def _gap(summed: np.ndarray, decision: np.ndarray) -> float:
    """min of the score where the decision is 1 minus max where it is 0 (> 0: a threshold separates)."""
    return float(summed[decision].min() - summed[~decision].max())


def _name_output(terms: list, kept: list[int], cols: np.ndarray, coefs: np.ndarray, gamma: float,
                 decision: np.ndarray) -> tuple[_Fit, list[int]]:
    """The output's gate and the terms it reads: a named gate over the fewest kept terms (bits
    before gates on a tie), else the threshold of all kept terms with integer or rounded weights
    (or, when they do not separate the decision, the network's own: Σ coef·term ≥ −γ)."""
    ranked = sorted(kept, key=lambda t: terms[t][3] is not None)
    # the distinct rows of (kept terms, decision) say as much as all rows, and there are fewer
    distinct = np.unique(np.concatenate([cols[:, kept], decision[:, None]], axis=1), axis=0)
    rows, answer = distinct[:, :-1], distinct[:, -1]
    position = {t: i for i, t in enumerate(kept)}
    tried = 0
    for size in range(1, len(ranked) + 1):
        tried += math.comb(len(ranked), size)
        if tried > _MAX_SUBSETS:
            break
        subsets = sorted(itertools.combinations(ranked, size), key=lambda s: sum(terms[t][3] is not None for t in s))
        for subset in subsets:
            fit = name_function(rows[:, [position[t] for t in subset]], answer, table=False)
            if fit is not None:
                return fit, list(subset)
    x = cols[:, kept].astype(np.float64)
    weights = coefs[kept]
    fit = _integer_threshold(x, decision, weights) if kept else None
    if fit is not None:
        return fit, kept
    for digits in (3, 4, 6, 17):
        rounded = np.array([float(f"{w:.{digits}g}") for w in weights])
        z = x @ rounded
        t = _separating(z, decision)
        if t is not None:
            threshold = float(f"{(t + z[~decision].max()) / 2:.{digits}g}")
            if np.array_equal(z >= threshold, decision):
                return _Fit("THRESHOLD", (False,) * len(kept), tuple(rounded), threshold), kept
    return _Fit("THRESHOLD", (False,) * len(kept), tuple(float(w) for w in weights), -gamma), kept


def _name_gate(name: str, column: np.ndarray, bits: np.ndarray, gate: _Gate, negate: bool = False) -> ProgramGate:
    """A gate (its negation with ``negate``) over the bits it depends on, named by ``name_function``
    (with the unit's weights as the hint), its note the units and levels it came from."""
    if negate:
        column, gate = ~column, replace(gate, hint=None if gate.hint is None else -gate.hint)
    support = _support(column, bits.shape[1])
    hint = None if gate.hint is None else gate.hint[support]
    fit = name_function(bits[:, support], column, hint=hint)
    note = ", ".join(gate.sources[:3]) + (f" (+{len(gate.sources) - 3} more)" if len(gate.sources) > 3 else "")
    return fit.gate(name, [f"x{i}" for i in support], note)


# ---- runs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunReadout:
    """``readback_run``'s result: the read-out of one checkpoint and the accuracies on the run's data."""

    run: str
    step: int
    task: str
    model: str
    hidden_units: int
    readout: Readout
    network_accuracy: dict[str, float]
    """Train/test accuracy of the network's decision against the run's labels."""
    program_accuracy: dict[str, float]
    """The same for the program."""

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "step": self.step, "task": self.task, "model": self.model,
                "hidden_units": self.hidden_units, **self.readout.to_dict(),
                "network_accuracy": dict(self.network_accuracy), "program_accuracy": dict(self.program_accuracy)}


def check_applies(experiment: Any) -> None:
    """NotApplicableError unless the run is a ReLU ``mlp`` on a two-class task over at most
    ``MAX_READBACK_BITS`` bits."""
    task, model = experiment.task, experiment.config.model
    if task.domain != "bits" or experiment.data.n_classes != 2:
        raise NotApplicableError(f"reading a Boolean circuit applies to two-class tasks on bits (parity, boolean), "
                                 f"not to this run's {task.family} task ({task.name})")
    if task.n_bits > MAX_READBACK_BITS:
        raise NotApplicableError(f"reading a Boolean circuit runs the network on all 2^n inputs, so n_bits must be at "
                                 f"most {MAX_READBACK_BITS}; this run's task has {task.n_bits}")
    if model.name != "mlp" or model.activation != "relu":
        raise NotApplicableError(f"reading a Boolean circuit reads ReLU units: the model 'mlp' with activation 'relu'; "
                                 f"this run has {model.name!r}" + (f" with {model.activation!r}"
                                                                   if model.name == "mlp" else ""))


def readback_run(run: str | Path, step: Optional[int] = None, tolerance: float = DEFAULT_TOLERANCE,
                 record: bool = True) -> RunReadout:
    """Read a program out of the checkpoint at ``step`` (default: the newest scheduled one) of a run
    directory and check it on every input; with ``record``, append a ``circuit_readback`` row to its
    measures.jsonl."""
    from progsynth.interp.network import neuron_to_logit
    from progsynth.runs.experiment import Experiment
    from progsynth.runs.store import RunStore

    store = RunStore.open(run)
    steps = store.checkpoint_steps()
    if not steps:
        raise RunError(f"run {str(store.path)!r} has no scheduled checkpoints to read")
    step = steps[-1] if step is None else step
    experiment = Experiment(store.config())
    check_applies(experiment)
    params = store.load_checkpoint(step).params(experiment.init_params(0))
    module = experiment.build_module(seed=0)
    module.load_state_dict(params)
    n = experiment.task.n_bits
    strings = torch.from_numpy(all_inputs(n).astype(np.int64))
    data = experiment.data
    everything = replace(data, operands=strings, labels=torch.zeros(len(strings), dtype=torch.int64),
                         train_idx=torch.arange(len(strings)), test_idx=torch.zeros(0, dtype=torch.int64))
    inputs = everything.inputs(getattr(module, "input_kind", "tokens"), experiment.dtype)
    with torch.no_grad():
        pres = module.preactivations(inputs)
        if not pres:
            raise NotApplicableError("the run's mlp has no hidden layer, so it has no units to read gates from")
        pre = pres[-1].to(torch.float64)
        logits = experiment.logits(params, inputs).to(torch.float64)
    to_logit = neuron_to_logit(experiment, params)
    found = read_back(torch.relu(pre).numpy(), (to_logit[:, 1] - to_logit[:, 0]).numpy(),
                      (logits[:, 1] - logits[:, 0]).numpy(), (logits.argmax(1) == 1).numpy(), pre.numpy(), tolerance)
    network, program = {}, {}
    with torch.no_grad():
        answers = experiment.logits(params).argmax(1).numpy()
    ours = found.program.evaluate(data.operands.numpy().astype(bool))[:, 0]
    labels = experiment.labels.numpy()
    for split, rows in (("train", data.train_idx), ("test", data.test_idx)):
        rows = rows.numpy()
        network[split] = float((answers[rows] == labels[rows]).mean()) if rows.size else math.nan
        program[split] = float((ours[rows].astype(np.int64) == labels[rows]).mean()) if rows.size else math.nan
    result = RunReadout(str(store.path), step, experiment.task.name, experiment.config.model.name, pre.shape[1],
                        found, network, program)
    if record:
        with store.writer():
            store.append_measures({"analysis": ANALYSIS, "step": step, "recorded": time.time(),
                                   "tolerance": tolerance, "exact": found.exact, "agreement": found.agreement,
                                   "mismatches": found.mismatches, "gate_count": found.program.gate_count,
                                   "program": found.program.lines(), "terms_kept": found.terms_kept})
    return result
