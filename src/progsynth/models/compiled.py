"""Boolean circuits compiled to exact ReLU networks: a functor from circuits to smooth lenses.

On {0, 1} every gate is an exact ReLU expression (REFERENCE §9):

    AND(x, y) = relu(x + y − 1)              NOT(x)   = 1 − x      (affine: no unit)
    OR(x, y)  = x + y − relu(x + y − 1)      0, 1     = constants  (affine: no unit)
    XOR(x, y) = x + y − 2·relu(x + y − 1)    wires    = 0/1 matrices (copy, discard, permute)

so each gate is one **ReLU block** y = P x + Q relu(W x + b) + c: a smooth parametric lens with one
hidden unit per AND/OR/XOR (``GATE_BLOCKS``) and a linear skip P that carries the wires it does not
change. ``relu_functor`` maps a Boolean lens built from ``core.boolean`` generators with ``>>`` and
``@`` to a ``ReluNet`` built the same way: F(f >> g) = F(f) >> F(g), F(f @ g) = F(f) @ F(g). On
``ReluNet``, ``@`` stacks block-diagonally (the deeper side's extra layers face identity skips) and
``>>`` fuses a unit-free (affine) block into its neighbour, so wires and NOT gates cost no layer:
a network's depth is its number of layers of units.

``compile_circuit`` writes a ``Circuit`` (or a netlist, ``netlist_circuit``) as such a term —
``circuit_term``: gates grouped by ReLU depth, each group ``wires >> (gate @ … @ gate @ id)`` —
and applies the functor. Only the gates some output depends on are compiled, so the network has
exactly one unit per live AND/OR/XOR gate (neurons ≤ gates: linear in the gate count) and one
layer per level of AND/OR/XOR gates (``CompileReport``). Its weights are small integers, so in
float32 or float64 it computes every output as exactly 0.0 or 1.0; ``check_compiled`` confirms
that against the circuit's own bit-packed evaluation on every input (at most
``EXHAUSTIVE_INPUTS`` inputs) or on a uniform sample beyond.

The weights are dense: a layer's skip P is (wires live after it) × (wires live before it), so the
parameter count grows as depth × width² (``CompileReport.parameters``), bounded by
``MAX_PARAMETERS``.

Circuit sources for the command line (``named_circuit``): the parity and the strict majority of n
bits, the random circuits of the Boolean task family (``random-circuit:G``: the very circuit that
``--task boolean --function random-circuit:G`` labels its data with), Boolean formulas
(``circuit:x0 & x1 ^ ~x2``), and netlists read from JSON (``netlist_circuit``), where a cycle or a
dangling wire is one ``ConfigError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from progsynth.core.boolean import (BoolLens, Circuit, Gate, Wires, _BoolParallel, _BoolSequential, gate, identity,
                                    pack, unpack, wires)
from progsynth.core.lens import Para, Real, _SequentialPara
from progsynth.errors import ConfigError, LensTypeError, ResourceError
from progsynth.tasks.common import MAX_SAMPLES, check_int, check_seed

__all__ = ["GATE_BLOCKS", "EXHAUSTIVE_INPUTS", "MAX_PARAMETERS", "MAX_INPUTS", "MAX_MAJORITY_BITS", "ReluBlock",
           "ReluNet", "relu_functor", "circuit_term", "CompileReport", "CompiledCircuit", "CompileCheck", "compile_circuit", "check_compiled",
           "parity_circuit", "majority_circuit", "formula_circuit", "netlist_circuit", "named_circuit",
           "CIRCUIT_SOURCES"]

MAX_INPUTS = 4096
"""Most inputs of a circuit compiled here (as many bits as a task may have)."""
MAX_MAJORITY_BITS = 256
"""Most bits of ``majority_circuit`` (its dynamic programme has O(n²) gates)."""
EXHAUSTIVE_INPUTS = 16
"""Circuits with at most this many inputs are checked on all 2^n inputs; beyond, on a sample."""
MAX_PARAMETERS = 20_000_000
"""Most weights a compiled network may have (dense skips grow as depth × width²; built in float64,
so 160 MB)."""
CIRCUIT_SOURCES = ("parity", "majority", "random-circuit:G", "circuit:FORMULA")
"""The forms ``named_circuit`` reads (a netlist file is read by ``netlist_circuit``)."""

# Each generator gate as (W, b, P, Q, c) of y = P x + Q relu(W x + b) + c, on its own inputs.
GATE_BLOCKS: dict[str, tuple[list, list, list, list, list]] = {
    "and": ([[1, 1]], [-1], [[0, 0]], [[1]], [0]),
    "or": ([[1, 1]], [-1], [[1, 1]], [[-1]], [0]),
    "xor": ([[1, 1]], [-1], [[1, 1]], [[-2]], [0]),
    "not": ([], [], [[-1]], [[]], [1]),
    "zero": ([], [], [[]], [[]], [0]),
    "one": ([], [], [[]], [[]], [1]),
}
"""The exact ReLU block of every gate of ``core.boolean.GATES`` (module docstring)."""

_F64 = torch.float64


def _matrix(rows: list, n_rows: int, n_cols: int) -> torch.Tensor:
    return torch.tensor(rows, dtype=_F64).reshape(n_rows, n_cols)


class ReluBlock(Para):
    """y = x Pᵀ + relu(x Wᵀ + b) Qᵀ + c on the last axis: a layer of ``units`` ReLUs with a linear skip.

    A parametric lens Real(n_in) → Real(n_out) whose parameters are (W, b, P, Q, c); ``init``
    returns the compiled values (so a compiled network can also be trained on). The reverse
    derivative is written out: with z = x Wᵀ + b, h = relu(z) and dz = (dy Q) ⊙ [z > 0],
    R = ((dzᵀx, Σdz, dyᵀx, dyᵀh, Σdy), dy P + dz W), sums over every leading (batch) axis.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, c: torch.Tensor,
                 dtype: torch.dtype = torch.float32):
        self.weights = tuple(t.to(_F64) for t in (W, b, P, Q, c))
        W, b, P, Q, c = self.weights
        self.units, self.n_in = W.shape
        self.n_out = P.shape[0]
        if b.shape != (self.units,) or P.shape[1] != self.n_in or Q.shape != (self.n_out, self.units) \
                or c.shape != (self.n_out,):
            raise LensTypeError(f"ReluBlock weights do not fit together: W {tuple(W.shape)}, b {tuple(b.shape)}, "
                                f"P {tuple(P.shape)}, Q {tuple(Q.shape)}, c {tuple(c.shape)}")
        self.dtype = dtype
        self.name = f"relu_block({self.n_in}→{self.n_out}, {self.units} units)"
        self.dom, self.cod = Real(self.n_in), Real(self.n_out)

    def init(self, generator: Any = None) -> tuple[torch.Tensor, ...]:
        """The compiled weights in the block's dtype (``generator`` is ignored: nothing is drawn)."""
        return tuple(t.to(self.dtype).clone() for t in self.weights)

    def forward(self, params: Any, a: Any) -> tuple[torch.Tensor, Any]:
        if not (isinstance(a, torch.Tensor) and a.dtype.is_floating_point and a.dim() >= 1
                and a.shape[-1] == self.n_in):
            what = f"{tuple(a.shape)} {a.dtype}" if isinstance(a, torch.Tensor) else type(a).__name__
            raise LensTypeError(f"{self.name} expects a floating-point tensor of shape (..., {self.n_in}), got {what}")
        W, b, P, Q, c = params
        if a.dtype != W.dtype:
            raise LensTypeError(f"{self.name} has {W.dtype} weights, got a {a.dtype} input")
        z = a @ W.T + b
        h = torch.relu(z)
        return a @ P.T + h @ Q.T + c, (a, z, h, params)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[Any, Any]:
        x, z, h, (W, b, P, Q, c) = residual
        dy = db.reshape(-1, self.n_out)
        xs, hs = x.reshape(-1, self.n_in), h.reshape(-1, self.units)
        dz = (dy @ Q) * (z.reshape(-1, self.units) > 0).to(dy.dtype)
        grads = (dz.T @ xs, dz.sum(0), dy.T @ xs, dy.T @ hs, dy.sum(0))
        dx = (dy @ P + dz @ W).reshape(x.shape) if need_input_grad else None
        return grads, dx


def _affine(P: torch.Tensor, c: torch.Tensor) -> ReluBlock:
    """A unit-free block y = P x + c."""
    return ReluBlock(torch.zeros(0, P.shape[1], dtype=_F64), torch.zeros(0, dtype=_F64), P,
                     torch.zeros(P.shape[0], 0, dtype=_F64), c)


def _fuse(first: ReluBlock, then: ReluBlock) -> ReluBlock:
    """``first`` then ``then`` as one block, when one of them has no units (it is affine)."""
    W1, b1, P1, Q1, c1 = first.weights
    W2, b2, P2, Q2, c2 = then.weights
    if then.units == 0:
        return ReluBlock(W1, b1, P2 @ P1, P2 @ Q1, P2 @ c1 + c2)
    return ReluBlock(W2 @ P1, W2 @ c1 + b2, P2 @ P1, Q2, P2 @ c1 + c2)


def _normalise(blocks: Sequence[ReluBlock]) -> list[ReluBlock]:
    """Fold every unit-free block into its neighbour (the previous one, or the next for the first)."""
    out: list[ReluBlock] = []
    for block in blocks:
        if out and (block.units == 0 or out[-1].units == 0):
            out[-1] = _fuse(out[-1], block)
        else:
            out.append(block)
    return out


def _block_diag(blocks: Sequence[ReluBlock]) -> ReluBlock:
    parts = [blk.weights for blk in blocks]
    return ReluBlock(torch.block_diag(*[p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                     torch.block_diag(*[p[2] for p in parts]), torch.block_diag(*[p[3] for p in parts]),
                     torch.cat([p[4] for p in parts]))


class ReluNet(_SequentialPara):
    """A sequence of ``ReluBlock`` layers, each with at least one unit (or a single affine block).

    The image of the functor: ``>>`` composes (fusing affine blocks into their neighbours) and ``@``
    stacks on the last axis (block-diagonal weights; the shallower side gets identity skips for the
    missing layers), so a network built from gate blocks has the circuit's structure. Composing
    with any other ``Para`` falls back to the core's sequential and parallel composites.
    Parameters: one (W, b, P, Q, c) tuple per block.
    """

    def __init__(self, blocks: Sequence[ReluBlock], dtype: torch.dtype = torch.float32):
        blocks = _normalise(blocks)
        if not blocks:
            raise ConfigError("a ReluNet needs at least one block")
        super().__init__(blocks)
        self.blocks, self.dtype = tuple(blocks), dtype
        self.n_in, self.n_out = blocks[0].n_in, blocks[-1].n_out
        self.name = f"relu_net({self.n_in}→{self.n_out}, {self.neurons} units, depth {self.depth})"

    def init(self, generator: Any = None) -> tuple:
        """The compiled weights of every block, in the network's dtype (nothing is drawn)."""
        return tuple(tuple(t.to(self.dtype).clone() for t in blk.weights) for blk in self.blocks)

    @property
    def neurons(self) -> int:
        """Hidden ReLU units, all layers."""
        return sum(blk.units for blk in self.blocks)

    @property
    def depth(self) -> int:
        """Layers of units (0 for an affine network)."""
        return sum(1 for blk in self.blocks if blk.units)

    @property
    def widths(self) -> tuple[int, ...]:
        """Units per layer."""
        return tuple(blk.units for blk in self.blocks if blk.units)

    @property
    def parameters(self) -> int:
        """Weights and biases, every block."""
        return sum(t.numel() for blk in self.blocks for t in blk.weights)

    @staticmethod
    def identity(n: int, dtype: torch.dtype = torch.float32) -> ReluNet:
        """The identity on n wires (an affine block, no units)."""
        return ReluNet([_affine(torch.eye(n, dtype=_F64), torch.zeros(n, dtype=_F64))], dtype)

    @staticmethod
    def stack(nets: Sequence[ReluNet]) -> ReluNet:
        """n-ary ``@``: the nets side by side on stacked inputs and outputs, depths aligned with
        identity skips."""
        if not nets:
            raise ConfigError("ReluNet.stack needs at least one network")
        depth = max(len(net.blocks) for net in nets)
        layers = []
        for i in range(depth):
            layer = []
            for net in nets:
                blk = net.blocks[i] if i < len(net.blocks) else ReluNet.identity(net.n_out).blocks[0]
                layer.append(blk)
            layers.append(_block_diag(layer))
        return ReluNet(layers, nets[0].dtype)

    def __rshift__(self, other: Any) -> Para:
        if isinstance(other, ReluNet):
            if self.n_out != other.n_in:
                raise LensTypeError(f"cannot compose {self.name} >> {other.name}: {self.n_out} outputs feed "
                                    f"{other.n_in} inputs")
            return ReluNet([*self.blocks, *other.blocks], self.dtype)
        return super().__rshift__(other)

    def __matmul__(self, other: Any) -> Para:
        if isinstance(other, ReluNet):
            return ReluNet.stack([self, other])
        return super().__matmul__(other)


def _gate_net(name: str, dtype: torch.dtype) -> ReluNet:
    W, b, P, Q, c = GATE_BLOCKS[name]
    arity, units = len(P[0]), len(W)
    return ReluNet([ReluBlock(_matrix(W, units, arity), _matrix(b, units, 1).reshape(units),
                              _matrix(P, 1, arity), _matrix(Q, 1, units), _matrix(c, 1, 1).reshape(1))], dtype)


def _wires_net(k: int, indices: Sequence[int], dtype: torch.dtype) -> ReluNet:
    P = torch.zeros(len(indices), k, dtype=_F64)
    P[torch.arange(len(indices)), torch.as_tensor(list(indices), dtype=torch.long)] = 1.0
    return ReluNet([_affine(P, torch.zeros(len(indices), dtype=_F64))], dtype)


def relu_functor(lens: BoolLens, dtype: torch.dtype = torch.float32) -> ReluNet:
    """The image of a Boolean lens built from ``core.boolean`` generators (gates, wires) with ``>>``
    and ``@``: each gate its ``GATE_BLOCKS`` block, each rewiring its 0/1 matrix, composites the
    same composites of the images (module docstring). On inputs in {0, 1} the network computes
    exactly the lens's bits, as 0.0 and 1.0."""
    if isinstance(lens, Gate):
        return _gate_net(lens.op.name, dtype)
    if isinstance(lens, Wires):
        return _wires_net(lens.k, lens.indices, dtype)
    if isinstance(lens, _BoolSequential):
        net = relu_functor(lens.parts[0], dtype)
        for part in lens.parts[1:]:
            net = net >> relu_functor(part, dtype)
        return net
    if isinstance(lens, _BoolParallel):
        return ReluNet.stack([relu_functor(part, dtype) for part in lens.parts])
    raise LensTypeError(f"relu_functor maps Boolean lenses built from core.boolean gates and wires with >> and @, "
                        f"got {type(lens).__name__} {getattr(lens, 'name', '')!r} (for a Circuit, use compile_circuit)")


# ---- circuits as terms ------------------------------------------------------------------------
def _theta(circuit: Circuit, theta: Any) -> np.ndarray:
    if circuit.n_params == 0 and theta is None:
        return np.zeros(0, dtype=bool)
    if theta is None:
        raise ConfigError(f"{circuit.name} has {circuit.n_params} parameter bits; pass theta (a numpy bool array "
                          f"of shape ({circuit.n_params},)) to fix them")
    if not (isinstance(theta, np.ndarray) and theta.dtype == bool and theta.shape == (circuit.n_params,)):
        raise ConfigError(f"theta must be a numpy bool array of shape ({circuit.n_params},), got "
                          f"{type(theta).__name__} {getattr(theta, 'dtype', '')} {getattr(theta, 'shape', '')}")
    return theta


def _live(circuit: Circuit) -> np.ndarray:
    """Which wires some output depends on."""
    first = circuit.n_inputs + circuit.n_params
    live = np.zeros(circuit.n_wires, dtype=bool)
    live[list(circuit.outputs)] = True
    for g in range(len(circuit.gates) - 1, -1, -1):
        if live[first + g]:
            live[list(circuit.gates[g][1])] = True
    return live


def _relu_levels(circuit: Circuit) -> tuple[list[int], list[int]]:
    """Per wire: its ReLU depth (AND/OR/XOR gates on the longest path from the inputs) and its
    stage within that depth (NOT gates after the depth's AND/OR/XOR gates, one stage each)."""
    first = circuit.n_inputs + circuit.n_params
    level, stage = [0] * circuit.n_wires, [0] * circuit.n_wires
    for g, (name, ins) in enumerate(circuit.gates):
        w = first + g
        if name in ("and", "or", "xor"):
            level[w], stage[w] = 1 + max(level[i] for i in ins), 0
        elif name == "not":
            level[w], stage[w] = level[ins[0]], stage[ins[0]] + 1
    return level, stage


@dataclass(frozen=True)
class _Plan:
    """The stages of a circuit's term: per stage the wires on the bus before it, the wires it
    computes and the wires it passes on; the bus at the end; the operation of each live wire; and
    about as many weights as the network will have (each stage's skip is (bus after) × (bus
    before); NOT stages fold into the layer before them)."""

    stages: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    final_bus: np.ndarray
    ops: dict
    dense_weights: int


def _plan(circuit: Circuit, theta: np.ndarray) -> _Plan:
    """The plan of ``circuit_term``; ResourceError as soon as the weights would pass ``MAX_PARAMETERS``."""
    first = circuit.n_inputs + circuit.n_params
    live = _live(circuit)
    level, stage = _relu_levels(circuit)
    ops: dict[int, tuple[str, tuple[int, ...]]] = {}
    for p in range(circuit.n_params):
        if live[circuit.n_inputs + p]:
            ops[circuit.n_inputs + p] = ("one" if theta[p] else "zero", ())
    for g, (name, ins) in enumerate(circuit.gates):
        if live[first + g]:
            ops[first + g] = (name, tuple(ins))
    grouped: dict[tuple[int, int], list[int]] = {}
    for w in sorted(ops):
        grouped.setdefault((level[w], stage[w]), []).append(w)
    order = sorted(grouped)
    last_use = np.full(circuit.n_wires, -1, dtype=np.int64)
    last_use[list(circuit.outputs)] = len(order)  # outputs stay on the bus to the end
    for s, key in enumerate(order):
        for w in grouped[key]:
            for i in ops[w][1]:
                last_use[i] = max(last_use[i], s)
    bus, stages, weights = np.arange(circuit.n_inputs), [], 0
    for s, key in enumerate(order):
        new = np.array(grouped[key], dtype=np.int64)
        kept = bus[last_use[bus] > s]
        stages.append((bus, new, kept))
        weights += len(bus) * (len(new) + len(kept) + 2)
        if weights > MAX_PARAMETERS:
            raise ResourceError(f"compiling {circuit.name} ({len(circuit.gates)} gates) would need more than "
                                f"{MAX_PARAMETERS:,} dense weights (by stage {s + 1} of {len(order)}); compile a "
                                "shallower or smaller circuit")
        bus = np.concatenate([new, kept])
    return _Plan(tuple(stages), bus, ops, weights + 2 * len(bus))


def circuit_term(circuit: Circuit, theta: np.ndarray | None = None) -> BoolLens:
    """The circuit as a Boolean lens Bits(n_inputs) → Bits(outputs) composed of generators with
    ``>>`` and ``@``: parameter bits become the constants ``theta`` fixes, gates no output depends
    on are left out, and the rest run in stages (ReLU depth, then NOT stage), each stage
    ``wires(bus → gate inputs + kept wires) >> (gate @ … @ gate @ id(kept))``."""
    if not isinstance(circuit, Circuit):
        raise ConfigError(f"circuit_term expects a core.boolean.Circuit, got {type(circuit).__name__}")
    plan = _plan(circuit, _theta(circuit, theta))
    term: BoolLens | None = None
    for bus, new, kept in plan.stages:
        position = {int(w): j for j, w in enumerate(bus)}
        indices = [position[i] for w in new for i in plan.ops[int(w)][1]] + [position[int(w)] for w in kept]
        layer: BoolLens = gate(plan.ops[int(new[0])][0])
        for w in new[1:]:
            layer = layer @ gate(plan.ops[int(w)][0])
        if len(kept):
            layer = layer @ identity(len(kept))
        step = wires(len(bus), indices) >> layer
        term = step if term is None else term >> step
    position = {int(w): j for j, w in enumerate(plan.final_bus)}
    out = wires(len(plan.final_bus), [position[w] for w in circuit.outputs])
    return out if term is None else term >> out


# ---- compiling and checking -------------------------------------------------------------------
@dataclass(frozen=True)
class CompileReport:
    """The size of a compiled circuit."""

    circuit: str
    """The circuit's name."""
    inputs: int
    outputs: int
    gates: int
    """Gates of the circuit (parameter bits not counted)."""
    live_gates: int
    """Gates some output depends on: the ones compiled."""
    neurons: int
    """Hidden ReLU units: one per live AND/OR/XOR gate."""
    depth: int
    """Layers of units: the longest chain of AND/OR/XOR gates (NOT gates and wires are affine)."""
    widths: tuple[int, ...]
    """Units per layer."""
    parameters: int
    """Weights and biases of the network (dense skips included)."""

    def to_dict(self) -> dict[str, Any]:
        return {"circuit": self.circuit, "inputs": self.inputs, "outputs": self.outputs, "gates": self.gates,
                "live_gates": self.live_gates, "neurons": self.neurons, "depth": self.depth,
                "widths": list(self.widths), "parameters": self.parameters}


@dataclass(frozen=True, eq=False)
class CompiledCircuit:
    """A circuit, its term, and the ReLU network the functor maps it to, with its compiled weights."""

    circuit: Circuit
    theta: np.ndarray
    term: BoolLens
    net: ReluNet
    params: tuple
    report: CompileReport

    def outputs(self, bits: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The network's raw outputs (N, outputs) on inputs (N, n_inputs) of 0/1 (bools or numbers)."""
        x = torch.as_tensor(np.asarray(bits) if not isinstance(bits, torch.Tensor) else bits)
        if x.dim() != 2 or x.shape[1] != self.circuit.n_inputs:
            raise LensTypeError(f"the compiled {self.circuit.name} reads (N, {self.circuit.n_inputs}) bits, got "
                                f"shape {tuple(x.shape)}")
        y = x.to(self.net.dtype)
        with torch.no_grad():  # block by block, keeping no residuals (``net.get`` keeps every layer's)
            for block, params in zip(self.net.blocks, self.params):
                y = block.forward(params, y)[0]
        return y

    def evaluate(self, bits: np.ndarray) -> np.ndarray:
        """The network's outputs read as bits (> 0.5), (N, outputs) bools."""
        return (self.outputs(bits) > 0.5).numpy()


def compile_circuit(circuit: Circuit | Mapping[str, Any], theta: np.ndarray | None = None,
                    dtype: torch.dtype = torch.float32) -> CompiledCircuit:
    """The exact ReLU network of a circuit (a ``core.boolean.Circuit`` or a netlist mapping, read by
    ``netlist_circuit``): ``relu_functor(circuit_term(circuit, theta))`` with its report (module
    docstring). ``theta`` fixes the circuit's parameter bits, if it has any. ResourceError, before
    anything is built, if the network would have more than ``MAX_PARAMETERS`` weights."""
    if isinstance(circuit, Mapping):
        circuit = netlist_circuit(circuit)
    if not isinstance(circuit, Circuit):
        raise ConfigError(f"compile_circuit expects a core.boolean.Circuit or a netlist mapping, got "
                          f"{type(circuit).__name__}")
    if dtype not in (torch.float32, torch.float64):  # half precision would round the integer sums
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    if not 1 <= circuit.n_inputs <= MAX_INPUTS:
        raise ConfigError(f"compile_circuit compiles circuits of 1 to {MAX_INPUTS} inputs, got {circuit.n_inputs}")
    theta = _theta(circuit, theta)
    term = circuit_term(circuit, theta)
    net = relu_functor(term, dtype)
    live = _live(circuit)[circuit.n_inputs + circuit.n_params:]
    report = CompileReport(circuit.name, circuit.n_inputs, len(circuit.outputs), len(circuit.gates),
                           int(live.sum()), net.neurons, net.depth, net.widths, net.parameters)
    return CompiledCircuit(circuit, theta, term, net, net.init(), report)


@dataclass(frozen=True)
class CompileCheck:
    """The compiled network against the circuit's own (bit-packed) evaluation."""

    exhaustive: bool
    """True when every one of the 2^n inputs was checked."""
    inputs_checked: int
    mismatches: int
    """Inputs on which some output differs (read as > 0.5)."""
    max_error: float
    """Largest |network output − circuit bit| over the checked inputs (0.0 when exact)."""
    example: tuple[int, ...] | None
    """The bits of one input where they differ, or None."""

    @property
    def exact(self) -> bool:
        """Every checked output exactly 0.0 or 1.0, as the circuit's."""
        return self.mismatches == 0 and self.max_error == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"exhaustive": self.exhaustive, "inputs_checked": self.inputs_checked, "mismatches": self.mismatches,
                "max_error": self.max_error, "exact": self.exact,
                "example": None if self.example is None else list(self.example)}


def check_compiled(compiled: CompiledCircuit, samples: int = 65_536, seed: int = 0,
                   batch: int = 16_384) -> CompileCheck:
    """Compare ``compiled`` with its circuit on all 2^n inputs when n ≤ ``EXHAUSTIVE_INPUTS``, else on
    ``samples`` uniform inputs drawn with numpy's generator seeded by ``seed``; ``batch`` inputs at a
    time (fewer for wide networks)."""
    if not isinstance(compiled, CompiledCircuit):
        raise ConfigError(f"check_compiled expects a CompiledCircuit, got {type(compiled).__name__}")
    check_int("samples", samples, 1, MAX_SAMPLES)
    check_seed("seed", seed)
    check_int("batch", batch, 1)
    n = compiled.circuit.n_inputs
    widest = max([n] + [blk.n_out for blk in compiled.net.blocks] + [blk.units for blk in compiled.net.blocks])
    batch = max(1, min(batch, (1 << 22) // widest))  # about 16 MiB per activation tensor
    exhaustive = n <= EXHAUSTIVE_INPUTS
    total = 1 << n if exhaustive else samples
    rng = np.random.default_rng(seed)
    mismatches, max_error, example = 0, 0.0, None
    for start in range(0, total, batch):
        count = min(batch, total - start)
        if exhaustive:
            index = np.arange(start, start + count)
            bits = ((index[:, None] >> np.arange(n - 1, -1, -1)) & 1).astype(bool)
        else:
            bits = rng.random((count, n)) < 0.5
        expected = unpack(compiled.circuit.get(compiled.theta, pack(bits)))
        got = compiled.outputs(bits).to(_F64).numpy()
        error = np.abs(got - expected)
        max_error = max(max_error, float(error.max(initial=0.0)))
        wrong = ((got > 0.5) != expected).any(axis=1)
        if wrong.any() and example is None:
            example = tuple(int(b) for b in bits[int(np.argmax(wrong))])
        mismatches += int(wrong.sum())
    return CompileCheck(exhaustive, total, mismatches, max_error, example)


# ---- circuit sources --------------------------------------------------------------------------
class _Builder:
    """Appends gates to a netlist under construction and returns their wires."""

    def __init__(self, n_inputs: int):
        self.n_inputs, self.gates = n_inputs, []

    def add(self, name: str, *ins: int) -> int:
        self.gates.append((name, tuple(ins)))
        return self.n_inputs + len(self.gates) - 1

    def circuit(self, outputs: Sequence[int], name: str) -> Circuit:
        return Circuit(self.n_inputs, 0, self.gates, outputs, name=name)


def parity_circuit(n: int) -> Circuit:
    """x0 ⊕ x1 ⊕ … ⊕ x{n−1}: a chain of n − 1 XOR gates (n = 1: the wire x0)."""
    check_int("parity bits", n, 1, MAX_INPUTS)
    build, acc = _Builder(n), 0
    for i in range(1, n):
        acc = build.add("xor", acc, i)
    return build.circuit([acc], f"parity of {n} bits")


def majority_circuit(n: int) -> Circuit:
    """1 when more than half of the n bits are 1 (the Boolean task's ``majority``), by dynamic
    programming over the bits: after bit i, wire a[j] says "at least j of the bits so far are 1",
    a[j] ← a[j] ∨ (xᵢ ∧ a[j − 1]), keeping only counts that can still reach ⌊n/2⌋ + 1. O(n²) gates."""
    check_int("majority bits", n, 1, MAX_MAJORITY_BITS)
    t = n // 2 + 1
    build = _Builder(n)
    at_least: dict[int, int] = {}  # j -> wire "at least j of the bits read so far"
    for i in range(n):
        remaining = n - 1 - i
        new: dict[int, int] = {}
        for j in range(max(1, t - remaining), min(i + 1, t) + 1):
            # a[j − 1] was kept after the previous bit, since j − 1 ≥ t − remaining − 1
            with_bit = i if j == 1 else build.add("and", i, at_least[j - 1])
            new[j] = build.add("or", at_least[j], with_bit) if j in at_least else with_bit
        at_least = new
    if t not in at_least:  # cannot happen for n ≥ 1; kept as a guard against a wrong count
        raise ConfigError(f"majority_circuit({n}) built no output")
    return build.circuit([at_least[t]], f"majority of {n} bits")


def formula_circuit(text: str, n: int) -> Circuit:
    """The circuit of a Boolean formula over x0..x{n−1} (``tasks.expression.parse_boolean``: ``~ & ^ |``,
    the words not and xor or, 0, 1, parentheses), one gate per operation and constant."""
    from progsynth.tasks.expression import Const, Op, Var, parse_boolean, render

    check_int("formula bits", n, 1, MAX_INPUTS)
    try:
        tree = parse_boolean(text, n, "the formula")
    except RecursionError:  # the parser recurses once per nesting level
        raise ConfigError(f"the formula {text[:40]!r}… is nested too deeply to read") from None
    build = _Builder(n)

    def wire(node: Any) -> int:
        if isinstance(node, Var):
            return int(node.name[1:])
        if isinstance(node, Const):
            return build.add("one" if node.value else "zero")
        if isinstance(node, Op):
            return build.add(node.name, *(wire(arg) for arg in node.args))
        raise ConfigError(f"the formula {text!r} has a part a circuit cannot hold: {node!r}")

    try:
        return build.circuit([wire(tree)], render(tree))
    except RecursionError:
        raise ConfigError(f"the formula {text[:40]!r}… is nested too deeply to compile") from None


def netlist_circuit(spec: Mapping[str, Any]) -> Circuit:
    """A circuit from a netlist with named wires, gates in any order::

        {"inputs": ["a", "b", "c"] (or a number n: x0..x{n−1}),
         "gates": {"t": ["and", "a", "b"], "y": ["xor", "t", "c"]},
         "outputs": ["y"]}

    Each gate is ``[gate name, input wire, ...]`` with a gate of ``core.boolean.GATES``. The gates
    are sorted so that each comes after the wires it reads; ConfigError (one line, naming the wires)
    for a cycle, or a dangling wire: one read (by a gate or as an output) that no input or gate
    drives, or a gate whose output nothing reads."""
    from progsynth.core.boolean import GATES

    if not isinstance(spec, Mapping):
        raise ConfigError(f"a netlist is a mapping with keys inputs, gates and outputs, got {type(spec).__name__}")
    unknown = sorted(set(spec) - {"inputs", "gates", "outputs", "name"})
    if unknown or not {"inputs", "gates", "outputs"} <= set(spec):
        raise ConfigError(f"a netlist has the keys inputs, gates, outputs (and optionally name); got {sorted(spec)}")
    inputs = spec["inputs"]
    if isinstance(inputs, int) and not isinstance(inputs, bool):
        inputs = [f"x{i}" for i in range(check_int("netlist inputs", inputs, 1, MAX_INPUTS))]
    if not (isinstance(inputs, list) and all(isinstance(w, str) and w for w in inputs)):
        raise ConfigError(f"netlist inputs must be a number or a list of wire names, got {inputs!r}"[:200])
    if not 1 <= len(inputs) <= MAX_INPUTS:
        raise ConfigError(f"a netlist has 1 to {MAX_INPUTS} inputs, got {len(inputs)}")
    if len(set(inputs)) != len(inputs):
        raise ConfigError(f"netlist inputs name a wire twice: {sorted({w for w in inputs if inputs.count(w) > 1})}")
    gates, outputs = spec["gates"], spec["outputs"]
    if not isinstance(gates, Mapping):
        raise ConfigError(f"netlist gates must map wire names to [gate, inputs...], got {type(gates).__name__}")
    if not (isinstance(outputs, list) and outputs and all(isinstance(w, str) for w in outputs)):
        raise ConfigError(f"netlist outputs must be a non-empty list of wire names, got {outputs!r}"[:200])
    for name, body in gates.items():
        if name in inputs:
            raise ConfigError(f"netlist wire {name!r} is both an input and a gate's output")
        if not (isinstance(body, list) and body and isinstance(body[0], str) and all(isinstance(w, str) for w in body)):
            raise ConfigError(f"netlist gate {name!r} must be [gate name, input wires...], got {body!r}"[:200])
        if body[0] not in GATES:
            raise ConfigError(f"netlist gate {name!r}: unknown gate {body[0]!r}; expected one of {sorted(GATES)}")
        if len(body) - 1 != GATES[body[0]].arity:
            raise ConfigError(f"netlist gate {name!r}: {body[0]} reads {GATES[body[0]].arity} wire(s), got "
                              f"{len(body) - 1} ({body[1:]})")
    driven = set(inputs) | set(gates)
    for name, body in gates.items():
        for w in body[1:]:
            if w not in driven:
                raise ConfigError(f"dangling wire {w!r}: gate {name!r} reads it, but no input or gate drives it")
    for w in outputs:
        if w not in driven:
            raise ConfigError(f"dangling wire {w!r}: it is an output, but no input or gate drives it")
    read = {w for body in gates.values() for w in body[1:]} | set(outputs)
    unread = [name for name in gates if name not in read]
    if unread:
        raise ConfigError(f"dangling wire {unread[0]!r}: gate output that no gate reads and that is not an output"
                          + (f" (also {', '.join(map(repr, unread[1:4]))}{'…' if len(unread) > 4 else ''})"
                             if len(unread) > 1 else ""))
    order = _topological(gates)
    wire = {w: i for i, w in enumerate(inputs)}
    build = _Builder(len(inputs))
    for name in order:
        op, *ins = gates[name]
        wire[name] = build.add(op, *(wire[w] for w in ins))
    return build.circuit([wire[w] for w in outputs], str(spec.get("name", "netlist")))


def _topological(gates: Mapping[str, list]) -> list[str]:
    """The gate names, each after the gates it reads; ConfigError naming a cycle if there is one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    order: list[str] = []
    for root in gates:
        if state.get(root):
            continue
        path, stack = [root], [iter(gates[root][1:])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                done = path.pop()
                stack.pop()
                state[done] = 2
                order.append(done)
            elif nxt in gates:
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    raise ConfigError(f"the netlist has a cycle: {' -> '.join(cycle)} (each wire read by the "
                                      "next gate); a circuit's gates must not feed back")
                if not state.get(nxt):
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(gates[nxt][1:]))
    return order


def named_circuit(function: str, n_bits: int, seed: int = 0) -> Circuit:
    """A circuit by name (``CIRCUIT_SOURCES``): ``parity`` or ``majority`` of ``n_bits`` bits,
    ``random-circuit:G`` (the Boolean task's random circuit of G gates drawn from ``seed``, the
    same circuit the task with that seed labels its strings with), or ``circuit:FORMULA``."""
    from progsynth.tasks.boolean_functions import random_circuit
    from progsynth.tasks.common import MAX_GATES

    check_int("n_bits", n_bits, 1, MAX_INPUTS)
    check_seed("seed", seed)
    if not isinstance(function, str):
        raise ConfigError(f"circuit must be text, one of {', '.join(CIRCUIT_SOURCES)}; got {type(function).__name__}")
    text = function.strip()
    kind, _, rest = text.partition(":")
    if text == "parity":
        return parity_circuit(n_bits)
    if text == "majority":
        return majority_circuit(n_bits)
    if kind == "random-circuit":
        try:
            gates = int(rest)
        except ValueError:
            raise ConfigError(f"circuit {text!r}: random-circuit:G needs a number of gates G ≥ 1") from None
        check_int("random-circuit gates", gates, 1, MAX_GATES)
        return random_circuit(n_bits, gates, torch.Generator().manual_seed(seed))
    if kind == "circuit":
        return formula_circuit(rest, n_bits)
    raise ConfigError(f"unknown circuit {function!r}; expected one of {', '.join(CIRCUIT_SOURCES)}")
