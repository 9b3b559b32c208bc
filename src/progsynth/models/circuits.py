"""Boolean models as circuits (parametric lenses over Z2), trained by reverse derivative ascent.

The learned lookup table of Wilson & Zanasi (REFERENCE §2): for k input bits, basis(x) is the
2^k minterms (basisᵢ(x) = 1 exactly when the input bits, read little-endian as an integer, equal
i), and output bit j is XORᵢ (basisᵢ(x) ∧ θᵢⱼ). So θ *is* the table: the row θᵢ. is the output for
input pattern i. Each minterm is an AND of distinct literals and each θᵢⱼ is read once, so the
circuit is safe: its compositional reverse derivative equals the brute-force one.

With batch size 1, one RDA step sets θ_{pattern(x)} ⊕= (θ_{pattern(x)} ⊕ y), i.e. to y: the table
remembers the label of the last training example seen with each pattern, and a pattern never seen
keeps the all-zero output.

Deeper: ``lut_forest`` builds trees of learned 2-input tables (the lookup table made deep, for
inputs too wide for one table, such as 64 pixels); ``fit_rda_epochs`` trains any such model for
several epochs keeping best-on-validation parameters; ``forest_program`` prints the learned
forest as pruned formulas with gate counts; ``digits_experiment`` runs it on the 8×8 digits
beside a logistic regression (``progsynth circuit digits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from progsynth.core.boolean import _ALL_ONES, Circuit, Packed, _check_words, mask_padding, pack, parity, unpack
from progsynth.core.lens import Bits, Para
from progsynth.core.learner import Learner
from progsynth.core.losses import error_rate, xor_loss
from progsynth.core.optim import rda
from progsynth.errors import ConfigError, LensTypeError
from progsynth.tasks.common import check_int, check_seed

__all__ = [
    "lookup_table", "table_of", "fit_rda", "exact_match",
    "LutForest", "lut_forest", "CircuitProgram", "forest_program", "RdaFit", "fit_rda_epochs",
    "DigitsResult", "digits_experiment", "DIGITS_EPOCHS", "DIGITS_VOTES",
]


def lookup_table(in_bits: int, out_bits: int) -> Circuit:
    """The learned lookup table on ``in_bits`` inputs and ``out_bits`` outputs as a ``Circuit``
    with 2^in_bits · out_bits parameter bits, θ[i·out_bits + j] = θᵢⱼ."""
    for what, value, allowed in (("in_bits", in_bits, range(1, 17)), ("out_bits", out_bits, None)):
        if not (isinstance(value, int) and value >= 1 and (allowed is None or value in allowed)):
            expected = "an integer from 1 to 16" if allowed else "a positive integer"
            raise ConfigError(f"lookup_table {what} must be {expected}, got {value!r}")
    patterns = 1 << in_bits
    gates: list[tuple[str, tuple[int, ...]]] = []

    def add(op: str, *ins: int) -> int:
        gates.append((op, ins))
        return in_bits + patterns * out_bits + len(gates) - 1

    negated = [add("not", b) for b in range(in_bits)]
    minterms = []
    for i in range(patterns):
        literals = [b if (i >> b) & 1 else negated[b] for b in range(in_bits)]
        term = literals[0]
        for literal in literals[1:]:
            term = add("and", term, literal)
        minterms.append(term)
    outputs = []
    for j in range(out_bits):
        terms = [add("and", minterms[i], in_bits + i * out_bits + j) for i in range(patterns)]
        total = terms[0]
        for term in terms[1:]:
            total = add("xor", total, term)
        outputs.append(total)
    return Circuit(in_bits, patterns * out_bits, gates, outputs, name=f"lookup_table({in_bits}→{out_bits})")


def table_of(theta: np.ndarray, out_bits: int) -> np.ndarray:
    """θ of a lookup table as its (2^in_bits, out_bits) table: row i is the output for pattern i."""
    return np.asarray(theta).reshape(-1, out_bits)


def fit_rda(
    model: Circuit, x: np.ndarray, y: np.ndarray, batch_size: int = 1, theta: np.ndarray | None = None
) -> np.ndarray:
    """One pass of reverse derivative ascent over (x, y) in the given order, from θ = 0 unless
    ``theta`` is given: the learner ``rda ; model ; xor_loss ; error_rate`` stepped on consecutive
    batches of ``batch_size`` examples. ``x`` and ``y`` are (n, bits) bools; returns θ."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    x, y = _bits("x", x, model.n_inputs), _bits("y", y, len(model.outputs))
    if len(x) != len(y):
        raise LensTypeError(f"fit_rda: x has {len(x)} examples but y has {len(y)}")
    learner = Learner(model, xor_loss(), rda(), error_rate())
    state = learner.init(model.init() if theta is None else theta)
    for start in range(0, len(x), batch_size):
        state, _ = learner.step(state, pack(x[start : start + batch_size]), pack(y[start : start + batch_size]))
    return state.params


def exact_match(model: Circuit, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of examples whose output bits all equal the target bits (no argmax: an output
    that is not a valid code word, such as the all-zero output of an unseen pattern, is wrong)."""
    x, y = _bits("x", x, model.n_inputs), _bits("y", y, len(model.outputs))
    if len(x) == 0:
        raise ConfigError("exact_match needs at least one example")
    predicted = model.get(theta, pack(x))
    wrong = np.bitwise_or.reduce(np.asarray(predicted ^ pack(y)), axis=0)
    return 1.0 - float(np.bitwise_count(wrong).sum()) / len(x)


def _bits(what: str, value: np.ndarray, width: int) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.dtype == bool and value.ndim == 2 and value.shape[1] == width):
        raise LensTypeError(
            f"{what} must be a (examples, {width}) numpy bool array, got {type(value).__name__} "
            f"{getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}"
        )
    return value


# ---- deeper circuits: forests of learned 2-input tables ------------------------------------------
#
# The paper's MNIST model (their code, REFERENCE §9) is one 784-bit mask read by a popcount
# threshold, popcount(p ∧ x) ≤ popcount(p)/4, whose reverse derivative they take by brute force. On
# the 8×8 digits binarised at their mean a "1" overlaps a "0" in about half its pixels, and that
# model, tried in a prototype (not shipped), learned 0 vs 1 poorly for every ratio tried. So the
# deeper circuit here is the paper's own lookup table made deep: binary trees of 2-input learned
# tables, a safe circuit that RDA trains through its compositional derivative.


class LutForest(Para):
    """Trees of learned 2-input lookup tables: a parametric lens Bits(n_params) × Bits(n_inputs) →
    Bits(n_trees), one output bit per tree.

    Tree t reads every input once, in its own order ``wiring[t]`` (a permutation), and combines
    neighbours pairwise, layer after layer, until one bit is left: log2(n_inputs) layers and
    n_inputs − 1 nodes. A node with inputs (a, b) outputs its table entry θ[a + 2b], exactly
    ``lookup_table(2, 1)``: XOR over the four minterms of (a, b), each AND θ-entry.

    Parameters (a bool array): node k of tree t owns θ[4·(t·(n_inputs − 1) + k) : … + 4], nodes
    numbered from the leaves up (layer 0 has n_inputs/2 nodes, the root is the last). Each θ bit
    and each input is read once per tree, and the trees share nothing but the inputs, so the circuit
    is safe: its compositional reverse derivative is the brute-force one (``circuit()`` builds the
    same function as a ``core.boolean.Circuit`` to check this gate by gate).

    Under RDA with one example per step, an error flips the root's active entry (which alone would
    fix the output) and, at once, the active entry of every node below to which the output is
    sensitive; the flips can undo each other, so the parameters keep wandering while errors remain
    (hence ``fit_rda_epochs`` keeps each tree's best parameters on a validation set, as the paper
    keeps its best). ``forward``/``backward`` evaluate a whole layer of every tree with a fixed
    handful of numpy word operations (64 examples per word), whatever the number of trees.
    """

    def __init__(self, n_inputs: int, n_trees: int, seed: int = 0):
        check_int("lut_forest n_inputs", n_inputs, 2)
        check_int("lut_forest n_trees", n_trees, 1)
        check_seed("lut_forest seed", seed)
        if n_inputs < 2 or n_inputs & (n_inputs - 1):
            raise ConfigError(f"lut_forest n_inputs must be a power of two ≥ 2 (the trees are complete), got {n_inputs}")
        self.n_inputs, self.n_trees, self.seed = int(n_inputs), int(n_trees), int(seed)
        self.depth = self.n_inputs.bit_length() - 1
        rng = np.random.default_rng(self.seed)
        self.wiring = np.stack([rng.permutation(self.n_inputs) for _ in range(self.n_trees)])
        self.nodes_per_tree = self.n_inputs - 1
        self.n_params = 4 * self.n_trees * self.nodes_per_tree
        self.name = f"lut_forest({self.n_inputs}→{self.n_trees}, seed {self.seed})"
        self.dom, self.cod = Bits(self.n_inputs), Bits(self.n_trees)
        widths = [self.n_inputs >> (layer + 1) for layer in range(self.depth)]
        self._layers = list(zip(np.cumsum([0] + widths[:-1]).tolist(), widths))  # (first node, nodes)

    def init(self, generator: np.random.Generator | None = None) -> np.ndarray:
        """θ = 0 (every table constant 0: where RDA starts), or uniform random bits."""
        if generator is None:
            return np.zeros(self.n_params, dtype=bool)
        if not isinstance(generator, np.random.Generator):
            raise ConfigError(f"{self.name}.init expects a numpy Generator or None, got {type(generator).__name__}")
        return generator.random(self.n_params) < 0.5

    def param_groups(self) -> np.ndarray:
        """(n_trees, 4·(n_inputs − 1)) parameter indices: row t is what output t alone reads."""
        return np.arange(self.n_params).reshape(self.n_trees, -1)

    def forward(self, params: Any, a: Any) -> tuple[Packed, Any]:
        words, n = _check_words(self.name, a, self.n_inputs, "input")
        tables = self._tables(params)
        value, kept = words[self.wiring], []  # (trees, wires, words)
        for (first, width), table in zip(self._layers, tables):
            left, right = value[:, 0::2], value[:, 1::2]
            kept.append((left, right))
            t = table[..., None]  # the entry as a multiplexer: 6 word operations instead of 13 gates
            low = t[:, :, 0] ^ (left & (t[:, :, 0] ^ t[:, :, 1]))
            high = t[:, :, 2] ^ (left & (t[:, :, 2] ^ t[:, :, 3]))
            value = mask_padding(low ^ (right & (low ^ high)), n)
        return Packed(value[:, 0], n), (kept, tables, n, words.shape[1])

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[np.ndarray, Packed | None]:
        """(θ', x'): θ' per table entry is the parity over the batch of (its minterm ∧ d); d passes
        to a node's input where the table differs between the two values of that input."""
        kept, tables, n, n_words = residual
        d, _ = _check_words(self.name, db, self.n_trees, "output change", n, n_words)
        d = mask_padding(d.copy(), n)[:, None, :]
        d_theta = np.zeros((self.n_trees, self.nodes_per_tree, 4), dtype=bool)
        for (first, width), (left, right), table in reversed(list(zip(self._layers, kept, tables))):
            for k, minterm in enumerate(_minterms(left, right)):
                d_theta[:, first : first + width, k] = parity(minterm & d)
            t = table[..., None]  # (trees, nodes, 4, 1)
            d_left = d & ((~right & (t[:, :, 0] ^ t[:, :, 1])) ^ (right & (t[:, :, 2] ^ t[:, :, 3])))
            d_right = d & ((~left & (t[:, :, 0] ^ t[:, :, 2])) ^ (left & (t[:, :, 1] ^ t[:, :, 3])))
            d = np.empty((self.n_trees, 2 * width, n_words), dtype=np.uint64)
            d[:, 0::2], d[:, 1::2] = d_left, d_right
        if not need_input_grad:
            return d_theta.reshape(-1), None
        d_x = np.zeros((self.n_inputs, n_words), dtype=np.uint64)
        for wiring, change in zip(self.wiring, d):  # a permutation: no input twice within a tree
            d_x[wiring] ^= change
        return d_theta.reshape(-1), Packed(d_x, n)

    def get(self, params: Any, a: Any) -> Packed:
        return self.forward(params, a)[0]

    def circuit(self) -> Circuit:
        """The same function as a gate netlist with the same parameter layout (13 gates a node:
        two NOTs, four minterm ANDs, four θ ANDs, three XORs)."""
        gates: list[tuple[str, tuple[int, ...]]] = []
        base = self.n_inputs + self.n_params

        def add(op: str, *ins: int) -> int:
            gates.append((op, ins))
            return base + len(gates) - 1

        outputs = []
        for tree in range(self.n_trees):
            wires = [int(w) for w in self.wiring[tree]]
            for first, width in self._layers:
                nxt = []
                for i in range(width):
                    a, b = wires[2 * i], wires[2 * i + 1]
                    na, nb = add("not", a), add("not", b)
                    terms = [add("and", na, nb), add("and", a, nb), add("and", na, b), add("and", a, b)]
                    theta = self.n_inputs + 4 * (tree * self.nodes_per_tree + first + i)
                    total = add("and", terms[0], theta)
                    for k in range(1, 4):
                        total = add("xor", total, add("and", terms[k], theta + k))
                    nxt.append(total)
                wires = nxt
            outputs.append(wires[0])
        return Circuit(self.n_inputs, self.n_params, gates, outputs, name=f"{self.name} as gates")

    def _tables(self, params: Any) -> list[np.ndarray]:
        """θ as one (trees, nodes, 4) array of all-ones/zero words per layer."""
        if not (isinstance(params, np.ndarray) and params.dtype == bool and params.shape == (self.n_params,)):
            raise LensTypeError(
                f"{self.name} expects parameters θ as a numpy bool array of shape ({self.n_params},), got "
                f"{type(params).__name__} {getattr(params, 'dtype', '')} {getattr(params, 'shape', '')}".rstrip()
            )
        words = np.where(params, _ALL_ONES, np.uint64(0)).reshape(self.n_trees, self.nodes_per_tree, 4)
        return [words[:, first : first + width] for first, width in self._layers]


def _minterms(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four minterms of (a, b) in table order: index a + 2b."""
    na, nb = ~a, ~b
    return na & nb, a & nb, na & b, a & b


def lut_forest(n_inputs: int, n_trees: int, seed: int = 0) -> LutForest:
    """``n_trees`` trees of learned 2-input tables over ``n_inputs`` (a power of two) inputs, each
    tree reading the inputs in its own seeded random order; see ``LutForest``."""
    return LutForest(n_inputs, n_trees, seed)


# ---- reading a learned forest as a program ------------------------------------------------------
@dataclass(frozen=True)
class CircuitProgram:
    """A learned circuit with its parameters substituted and pruned, as a gate netlist over the
    inputs only (``circuit``, no parameter bits). The gates of output j are ``circuit.gates[a:b]``
    for ``(a, b) = cones[j]`` (outputs share no gates). Pruning: a table entry pattern that makes a
    node constant, or blind to an input, removes that node or the whole subtree it ignores; a node
    that passes one input through (possibly negated) costs no gate; negations are carried along
    and only become a NOT where an AND/OR needs one or at an output. A constant output is one
    ``zero``/``one`` gate; an output equal to an input costs none."""

    circuit: Circuit
    cones: tuple[tuple[int, int], ...]
    input_names: tuple[str, ...]

    def gate_counts(self) -> list[int]:
        """Gates per output bit."""
        return [b - a for a, b in self.cones]

    def formula(self, output: int) -> str:
        """Output ``output`` as one nested expression (each gate appears once: the trees are
        read-once formulas)."""
        return self._expression(self.circuit.outputs[output])

    def text(self, output_names: list[str] | None = None) -> str:
        """One line per output: name, gate count, formula."""
        names = output_names or [f"y{j}" for j in range(len(self.cones))]
        counts = self.gate_counts()
        return "\n".join(f"{name} ({count} gates) = {self.formula(j)}" for j, (name, count) in enumerate(zip(names, counts)))

    def to_dict(self, output_names: list[str] | None = None) -> dict[str, Any]:
        names = output_names or [f"y{j}" for j in range(len(self.cones))]
        return {
            "gates": sum(self.gate_counts()),
            "outputs": [{"name": name, "gates": count, "formula": self.formula(j)}
                        for j, (name, count) in enumerate(zip(names, self.gate_counts()))],
        }

    def _expression(self, wire: int) -> str:
        if wire < self.circuit.n_inputs:
            return self.input_names[wire]
        op, ins = self.circuit.gates[wire - self.circuit.n_inputs]
        if op in ("zero", "one"):
            return "0" if op == "zero" else "1"
        return f"{op}({', '.join(self._expression(i) for i in ins)})"


def forest_program(forest: LutForest, theta: np.ndarray, input_names: list[str] | None = None) -> CircuitProgram:
    """The pruned program of ``forest`` at parameters ``theta`` (see ``CircuitProgram``); it
    computes the same outputs as ``forest.get(theta, ·)`` on every input."""
    forest._tables(theta)  # validates θ
    names = tuple(input_names) if input_names is not None else tuple(f"x{i}" for i in range(forest.n_inputs))
    if len(names) != forest.n_inputs:
        raise ConfigError(f"forest_program needs {forest.n_inputs} input names, got {len(names)}")
    table = np.asarray(theta).reshape(forest.n_trees, forest.nodes_per_tree, 4)
    gates: list[tuple[str, tuple[int, ...]]] = []
    n_in = forest.n_inputs

    def emit(op: str, *ins: int) -> int:
        gates.append((op, ins))
        return n_in + len(gates) - 1

    def wire_of(signal: tuple, negate: bool = False) -> int:  # a literal's wire, with its NOT made
        _, wire, neg = signal
        return emit("not", wire) if neg != negate else wire

    outputs, starts = [], []
    for tree in range(forest.n_trees):
        starts.append(len(gates))
        signals: list[tuple] = [("l", int(w), False) for w in forest.wiring[tree]]
        for first, width in forest._layers:
            signals = [_prune_node(table[tree, first + i], signals[2 * i], signals[2 * i + 1], emit, wire_of)
                       for i in range(width)]
        root = signals[0]
        outputs.append(emit("one" if root[1] else "zero") if root[0] == "c" else wire_of(root))
    live = np.zeros(len(gates), dtype=bool)
    for wire in reversed(outputs):
        if wire >= n_in:
            live[wire - n_in] = True
    for g in range(len(gates) - 1, -1, -1):  # inputs of live gates are live
        if live[g]:
            for i in gates[g][1]:
                if i >= n_in:
                    live[i - n_in] = True
    new_wire = np.full(n_in + len(gates), -1)
    new_wire[:n_in] = np.arange(n_in)
    new_wire[n_in:][live] = n_in + np.arange(int(live.sum()))
    kept = [(op, tuple(int(new_wire[i]) for i in ins)) for (op, ins), keep in zip(gates, live) if keep]
    before = np.concatenate([[0], np.cumsum(live)])
    bounds = [int(before[s]) for s in starts] + [len(kept)]
    circuit = Circuit(n_in, 0, kept, [int(new_wire[w]) for w in outputs], name=f"program of {forest.name}")
    return CircuitProgram(circuit, tuple(zip(bounds[:-1], bounds[1:])), names)


def _prune_node(t: np.ndarray, a: tuple, b: tuple, emit: Any, wire_of: Any) -> tuple:
    """The signal of a table node t[a + 2b] on input signals ("c", value) or ("l", wire, negated),
    emitting the gates it needs (see ``CircuitProgram``)."""
    t = [bool(v) for v in t]
    if a[0] == "c":
        return _unary((t[a[1]], t[a[1] + 2]), b)
    if b[0] == "c":
        return _unary((t[2 * b[1]], t[1 + 2 * b[1]]), a)
    (_, wa, na), (_, wb, nb) = a, b
    u = [t[((i & 1) ^ na) + 2 * ((i >> 1) ^ nb)] for i in range(4)]  # the table over the wires themselves
    ones = sum(u)
    if ones in (0, 4):
        return ("c", ones == 4)
    if u[0] == u[2] and u[1] == u[3]:  # reads wa only: u = wa ⊕ u[0]
        return ("l", wa, u[0])
    if u[0] == u[1] and u[2] == u[3]:
        return ("l", wb, u[0])
    if ones == 2:  # wa ⊕ wb ⊕ u[0]
        return ("l", emit("xor", wa, wb), u[0])
    lone = u.index(ones == 1)  # the one 1 (AND-like) or the one 0 (OR-like) of the table
    ua, ub = lone & 1, lone >> 1  # indicator [wa = ua ∧ wb = ub]: AND of literals, or NOT of an OR
    if (1 - ua) + (1 - ub) <= ua + ub:
        gate, negated = emit("and", wire_of(("l", wa, False), not ua), wire_of(("l", wb, False), not ub)), False
    else:
        gate, negated = emit("or", wire_of(("l", wa, False), bool(ua)), wire_of(("l", wb, False), bool(ub))), True
    return ("l", gate, negated != (ones == 3))


def _unary(g: tuple[bool, bool], s: tuple) -> tuple:
    """The signal of g(s) for a one-input function given by its values (g(0), g(1))."""
    if g[0] == g[1]:
        return ("c", g[0])
    if s[0] == "c":
        return ("c", g[int(s[1])])
    return ("l", s[1], s[2] != g[0])


# ---- training with best-on-validation parameters ------------------------------------------------
@dataclass(frozen=True)
class RdaFit:
    """The result of ``fit_rda_epochs``.

    ``theta``: the kept parameters: per parameter group, those of the step at which the group's
    output scored best on the validation set (the latest such step on ties), as the RDA paper keeps
    its best-on-validation parameters; the last parameters when there is no validation set.
    ``kept_step[g]`` is that step (0: the initial θ) and ``validation_accuracy[g]`` the group's bit
    accuracy there, over the validation bits it is asked about."""

    theta: np.ndarray
    last_theta: np.ndarray
    steps: int
    kept_step: np.ndarray
    validation_accuracy: np.ndarray


def fit_rda_epochs(
    model: Para,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    seed: int = 0,
    care: np.ndarray | None = None,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    check_every: int = 1,
    theta: np.ndarray | None = None,
    progress: Any = None,
) -> RdaFit:
    """Reverse derivative ascent, one example per step (as in the paper), for ``epochs`` passes
    over (x, y) in a fresh seeded random order each pass, from θ = 0 unless ``theta`` is given:
    the learner ``rda ; model ; xor_loss ; error_rate``.

    ``care`` (like y; default all True) marks the target bits that count: a bit not cared about gets
    the model's own output as its target, so its error is 0 and it changes nothing. Every
    ``check_every`` steps the model is scored on ``validation`` = (x, y, care or None) and each
    parameter group keeps its best parameters (see ``RdaFit``). Groups are the rows of
    ``model.param_groups()`` when the model has it (one per output bit, the parameters only that
    output reads), else one group of all parameters. ``progress(done, total)`` is called about 200
    times. Arrays are (examples, bits) bools."""
    check_int("epochs", epochs, 1)
    check_seed("seed", seed)
    check_int("check_every", check_every, 1)
    n_out = model.cod.shape[0]
    x, y = _bits("x", x, model.dom.shape[0]), _bits("y", y, n_out)
    care = np.ones_like(y) if care is None else _bits("care", care, n_out)
    if not (len(x) == len(y) == len(care)) or len(x) == 0:
        raise LensTypeError(f"fit_rda_epochs: x, y and care need the same number (≥ 1) of examples, got {len(x)}, {len(y)}, {len(care)}")
    groups = model.param_groups() if hasattr(model, "param_groups") else None
    learner = Learner(model, xor_loss(), rda(), error_rate())
    state = learner.init(model.init() if theta is None else theta)
    if groups is None:
        groups = np.arange(state.params.size)[None]
    score = _group_scorer(model, validation, len(groups))
    best = state.params.copy()
    best_accuracy = score(best) if score else np.full(len(groups), np.nan)
    kept_step = np.zeros(len(groups), dtype=np.int64)
    xs, ys, cares = x.astype(np.uint64), y.astype(np.uint64), care.astype(np.uint64)
    all_cared = bool(care.all())
    rng, total = np.random.default_rng(seed), epochs * len(x)
    report_every = max(1, total // 200)
    for epoch in range(epochs):
        for i in rng.permutation(len(x)):
            xi, yi = Packed(xs[i][:, None], 1), ys[i][:, None]
            if not all_cared:
                yi = (yi & cares[i][:, None]) | (np.asarray(model.get(state.params, xi)) & (1 - cares[i][:, None]))
            state, _ = learner.step(state, xi, Packed(yi, 1))
            if score and state.step % check_every == 0:
                accuracy = score(state.params)
                better = accuracy >= best_accuracy
                if better.any():
                    rows = groups[better].ravel()
                    best[rows] = state.params[rows]
                    best_accuracy[better], kept_step[better] = accuracy[better], state.step
            if progress is not None and (state.step % report_every == 0 or state.step == total):
                progress(state.step, total)
    return RdaFit(best if score else state.params, state.params, state.step, kept_step, best_accuracy)


def _group_scorer(model: Para, validation: Any, n_groups: int) -> Any:
    """θ ↦ per group bit accuracy on the validation set (None without one). With one group for
    several outputs the group's score pools all their cared bits."""
    if validation is None:
        return None
    xv, yv, cv = validation
    n_out = model.cod.shape[0]
    xv, yv = _bits("validation x", xv, model.dom.shape[0]), _bits("validation y", yv, n_out)
    cv = np.ones_like(yv) if cv is None else _bits("validation care", cv, n_out)
    if not (len(xv) == len(yv) == len(cv)) or len(xv) == 0:
        raise LensTypeError(f"validation x, y and care need the same number (≥ 1) of examples, got {len(xv)}, {len(yv)}, {len(cv)}")
    if n_groups not in (1, n_out):
        raise ConfigError(f"{model.name}: {n_groups} parameter groups for {n_out} outputs (expected one per output, or one)")
    packed_x, packed_y, packed_care = pack(xv), np.asarray(pack(yv)), np.asarray(pack(cv))
    asked = np.bitwise_count(packed_care).sum(axis=1)
    if n_groups == 1:
        asked = asked.sum(keepdims=True)
    asked = np.maximum(asked, 1)

    def score(theta: np.ndarray) -> np.ndarray:
        wrong = np.bitwise_count((np.asarray(model.get(theta, packed_x)) ^ packed_y) & packed_care).sum(axis=1)
        return 1.0 - (wrong.sum(keepdims=True) if n_groups == 1 else wrong) / asked

    return score


# ---- the digits experiment ----------------------------------------------------------------------
#: defaults of ``digits_experiment`` (and of ``progsynth circuit digits``)
DIGITS_EPOCHS, DIGITS_VOTES = 5, 3


@dataclass(frozen=True)
class DigitsResult:
    """What ``digits_experiment`` measured: accuracies of the circuit (kept parameters) and of a
    logistic regression on the same bits, the pruned program, and seconds per phase."""

    classes: int
    votes: int
    epochs: int
    seed: int
    threshold: float
    model: str
    parameter_bits: int
    steps: int
    train_accuracy: float
    validation_accuracy: float
    test_accuracy: float
    last_test_accuracy: float
    logistic_train_accuracy: float
    logistic_test_accuracy: float
    examples: dict[str, int]
    program: CircuitProgram
    output_names: tuple[str, ...]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.__dict__.items() if k not in ("program", "output_names")}
        return {**fields, "program": self.program.to_dict(list(self.output_names))}


def digits_experiment(
    classes: int = 2, epochs: int = DIGITS_EPOCHS, seed: int = 0, votes: int = DIGITS_VOTES, progress: Any = None
) -> DigitsResult:
    """RDA on scikit-learn's binarised 8×8 digits (``tasks.boolean.digits_bits``: 0 vs 1, or all
    ten), beside a logistic regression on the same bits.

    Model: ``lut_forest(64, pairs·votes, seed)``, ``votes`` trees per one-versus-one pair bit.
    Training: ``fit_rda_epochs`` for ``epochs`` passes, one example per step, validation checked
    after every step, each tree keeping its best-on-validation parameters. Accuracy: the fraction
    of images whose decoded class (``decode_pairs``) is right. Logistic regression: scikit-learn's
    ``LogisticRegression`` (L2, C = 1, lbfgs) fitted on the same training bits and class indices.
    ``progress(done, total)`` reports training steps."""
    import time

    from sklearn.linear_model import LogisticRegression

    from progsynth.tasks.boolean import class_pairs, decode_pairs, digits_bits

    check_int("epochs", epochs, 1)
    check_seed("seed", seed)
    check_int("votes", votes, 1)
    if votes % 2 == 0:
        raise ConfigError(f"votes must be odd (each pair takes its trees' majority), got {votes}")
    clock = time.perf_counter()
    data = digits_bits(classes, votes)
    model = lut_forest(data.x_train.shape[1], data.y_train.shape[1], seed)
    seconds = {"data": time.perf_counter() - clock}
    clock = time.perf_counter()
    fit = fit_rda_epochs(model, data.x_train, data.y_train, care=data.care_train, epochs=epochs, seed=seed,
                         validation=(data.x_val, data.y_val, data.care_val), progress=progress)
    seconds["train"] = time.perf_counter() - clock

    def accuracy(theta: np.ndarray, x: np.ndarray, labels: np.ndarray) -> float:
        decoded = decode_pairs(unpack(model.get(theta, pack(x))), classes, votes)
        return float((decoded == labels).mean())

    clock = time.perf_counter()
    logistic = LogisticRegression(max_iter=5000).fit(data.x_train, data.classes_train)
    seconds["logistic_regression"] = time.perf_counter() - clock
    clock = time.perf_counter()
    pixel_names = [f"p{r}{c}" for r in range(8) for c in range(8)]
    program = forest_program(model, fit.theta, pixel_names)
    seconds["readout"] = time.perf_counter() - clock
    names = tuple(f"{j} vs {i} #{v + 1}" for i, j in class_pairs(classes) for v in range(votes))
    return DigitsResult(
        classes=classes, votes=votes, epochs=epochs, seed=seed, threshold=data.threshold, model=model.name, parameter_bits=model.n_params,
        steps=fit.steps,
        train_accuracy=accuracy(fit.theta, data.x_train, data.classes_train),
        validation_accuracy=accuracy(fit.theta, data.x_val, data.classes_val),
        test_accuracy=accuracy(fit.theta, data.x_test, data.classes_test),
        last_test_accuracy=accuracy(fit.last_theta, data.x_test, data.classes_test),
        logistic_train_accuracy=float(logistic.score(data.x_train, data.classes_train)),
        logistic_test_accuracy=float(logistic.score(data.x_test, data.classes_test)),
        examples={"train": len(data.x_train), "validation": len(data.x_val), "test": len(data.x_test)},
        program=program, output_names=names, seconds={k: round(v, 4) for k, v in seconds.items()},
    )
