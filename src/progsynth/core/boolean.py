"""The reverse-derivative category over Z2 on bit-packed arrays (Wilson & Zanasi; REFERENCE §2).

Data layout. A batch of n examples over w wires is a ``np.uint64`` array of shape
``(w, ceil(n/64))``: bit j of word k of row i is wire i of example 64k + j (little-endian, as
``np.packbits(bitorder="little")``). One machine instruction then evaluates a gate on 64 examples.
The last word of each row has ``64·ceil(n/64) − n`` padding bits; since a NOT gate or the constant 1
would set them, every lens here zeroes them in what it returns, and backward passes zero them in
the incoming change before anything is summed over examples, so padding never reaches a result.

Because the word array alone cannot tell n, ``pack`` returns a ``Packed`` array: an ordinary
``np.uint64`` array that also remembers n (and so flows unchanged through ``xor_loss`` and the
learner). A plain ``np.uint64`` array is accepted too and read as 64 examples per word.

Generators and their reverse derivatives R(x, d) (d is the change of the output):

    copy    x ↦ (x, x)        R = d₁ ⊕ d₂          xor  (x₁, x₂) ↦ x₁ ⊕ x₂   R = (d, d)
    discard x ↦ ()            R = 0                and  (x₁, x₂) ↦ x₁ ∧ x₂   R = (x₂ ∧ d, x₁ ∧ d)
    zero/one () ↦ 0 / 1       R = ()               or   x ⊕ y ⊕ xy           R = (¬y ∧ d, ¬x ∧ d)
    not     x ↦ ¬x            R = d

Copy, discard and every permutation or projection of wires are one lens, ``wires``, whose reverse
derivative XOR-accumulates the output changes onto the wires they came from. Generators compose
with ``>>`` (sequential) and ``@`` (parallel: wires stacked, first operand on top).

``Circuit`` is a netlist as a parametric lens: parameter bits θ are constants broadcast to every
example, so the reverse derivative with respect to θ is the Z2 sum (parity) over the batch of the
per-example derivatives. The compositional R agrees with ``brute_force_reverse_derivative`` on
"safe" circuits, for example those whose AND/OR gates never combine two signals that depend on a
common wire (then the circuit's polynomial is multilinear); ``and(x, ¬x)`` is the classic unsafe
case (compositional R = d, the true derivative of the constant 0 is 0).

Speed. ``Circuit.forward`` keeps every wire (the backward pass needs them). ``Circuit.get``, for
evaluation only, recycles a wire's row once it is read for the last time and runs the gates over
blocks of words small enough to stay in cache. Both hand the whole gate schedule to a compiled
kernel (``_packed.c``, built at install; AVX2 where the CPU has it) in one call; where it could not
be built, the same schedule runs as one numpy call per gate and block (``PACKED_BACKEND`` says
which). On a random 1,088-gate circuit over 2^20 examples the kernel is 31–36× faster than the
same gates on numpy bools, the numpy fallback 16–18× (``benchmarks/core.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from progsynth.core.lens import Bits, Lens, Para, _SequentialLens
from progsynth.errors import ConfigError, LensTypeError

try:  # the optional compiled kernel (setup.py builds it where a C compiler is found)
    from progsynth.core import _packed as _kernel
except ImportError:  # pragma: no cover - depends on the machine's compiler
    _kernel = None

__all__ = [
    "WORD_BITS",
    "PACKED_BACKEND",
    "Packed",
    "pack",
    "unpack",
    "tail_mask",
    "mask_padding",
    "parity",
    "GateOp",
    "GATES",
    "BoolLens",
    "Gate",
    "Wires",
    "gate",
    "wires",
    "copy",
    "discard",
    "identity",
    "Circuit",
    "brute_force_reverse_derivative",
]

WORD_BITS = 64
#: How circuits are evaluated by default: "compiled" (the C kernel imported) or "numpy".
PACKED_BACKEND = "compiled" if _kernel is not None else "numpy"
_BACKENDS = ("compiled", "numpy")
#: Scratch bytes per block of words in ``Circuit.get``, by backend. The compiled kernel wants the
#: block in the core's own L2 (1 MiB here): on the benchmark circuit (80 rows) 128 KiB gives
#: ~200-word blocks and 6.1 ms, against 7.4–8.6 ms at 64 words and 8.5–9.7 ms at 512. Numpy pays ~1 µs
#: per call, so it takes blocks as large as a shared last-level cache (32 MiB here) allows.
DEFAULT_BLOCK_BYTES = {"compiled": 128 << 10, "numpy": 4 << 20}
_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def _n_words(n: int) -> int:
    return -(-n // WORD_BITS)


class Packed(np.ndarray):
    """Bit-packed words (``np.uint64``, shape (wires, ceil(n/64))) that remember ``n``, the number
    of examples, so that padding bits of the last word can be told from data.

    Row slices and elementwise operations keep ``n``; slicing words (columns) does not make sense
    for it and is caught by the lenses' checks. ``Packed(words, None)`` means 64 examples per word.
    """

    n: int | None

    def __new__(cls, words: np.ndarray, n: int | None) -> Packed:
        array = np.asarray(words)
        if array.dtype != np.uint64:
            raise LensTypeError(f"Packed expects np.uint64 words, got dtype {array.dtype}")
        obj = array.view(cls)
        obj.n = n
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.n = getattr(obj, "n", None)


def tail_mask(n: int) -> np.uint64:
    """The valid bits of the last word of a batch of ``n`` examples (all ones when 64 | n)."""
    rest = n % WORD_BITS
    return _ALL_ONES if rest == 0 else np.uint64((1 << rest) - 1)


def mask_padding(words: np.ndarray, n: int) -> np.ndarray:
    """Zero the padding bits of the last word of every row, in place; returns ``words``."""
    if words.shape[-1] and n % WORD_BITS:
        words[..., -1] &= tail_mask(n)
    return words


def parity(words: np.ndarray) -> np.ndarray:
    """Per row, the XOR over all bits of the row's words (the Z2 sum over a batch), as bools.

    Padding bits are counted, so callers pass words whose padding is zero (every lens here returns
    such words)."""
    return (np.bitwise_count(np.asarray(words)).sum(axis=-1, dtype=np.int64) & 1).astype(bool)


def pack(bits: np.ndarray) -> Packed:
    """Pack a (n, w) array of bools or 0/1 integers into (w, ceil(n/64)) words remembering n."""
    if not isinstance(bits, np.ndarray) or bits.ndim != 2:
        raise LensTypeError(
            f"pack expects a 2-D numpy array (examples, wires) of bools or 0/1, got "
            f"{type(bits).__name__} with shape {getattr(bits, 'shape', None)}"
        )
    if bits.dtype != bool:
        if not np.issubdtype(bits.dtype, np.integer) or (bits.size and (bits.min() < 0 or bits.max() > 1)):
            raise LensTypeError(f"pack expects bools or integers 0/1, got dtype {bits.dtype}")
        bits = bits.astype(bool)
    n, w = bits.shape
    n_words = _n_words(n)
    as_bytes = np.zeros((w, n_words * 8), dtype=np.uint8)
    as_bytes[:, : -(-n // 8)] = np.packbits(bits.T, axis=1, bitorder="little")
    return Packed(as_bytes.view("<u8").astype(np.uint64, copy=False), n)


def unpack(words: np.ndarray, n: int | None = None) -> np.ndarray:
    """Unpack (w, ceil(n/64)) words into a (n, w) bool array; ``n`` defaults to ``words.n``."""
    array, n = _check_words("unpack", words, None, "words", n)
    as_bytes = array.astype("<u8", copy=False).view(np.uint8).reshape(array.shape[0], 8 * array.shape[1])
    return np.unpackbits(as_bytes, axis=1, count=n, bitorder="little").T.astype(bool)


def _check_words(
    owner: str, value: Any, wires: int | None, what: str, n: int | None = None, n_words: int | None = None
) -> tuple[np.ndarray, int]:
    """Validate bit-packed data for ``owner`` and return (plain uint64 array, number of examples)."""
    expected = f"bit-packed np.uint64 words of shape ({'w' if wires is None else wires}, ceil(n/64))"
    if not isinstance(value, np.ndarray):
        raise LensTypeError(f"{owner} expects {what} as {expected}, got {type(value).__name__}")
    if value.dtype != np.uint64 or value.ndim != 2 or (wires is not None and value.shape[0] != wires):
        raise LensTypeError(
            f"{owner} expects {what} as {expected}, got {value.dtype} array of shape {value.shape}"
        )
    if n_words is not None and value.shape[1] != n_words:
        raise LensTypeError(f"{owner} expects {what} with {n_words} words per wire, got {value.shape[1]}")
    if n is None:
        n = getattr(value, "n", None)
    if n is None:
        n = value.shape[1] * WORD_BITS
    if not (isinstance(n, (int, np.integer)) and 0 <= n and _n_words(int(n)) == value.shape[1]):
        raise LensTypeError(
            f"{owner}: {what} has {value.shape[1]} words per wire, which cannot hold n = {n!r} examples "
            f"(expected ceil(n/64) words)"
        )
    return np.asarray(value), int(n)


@dataclass(frozen=True)
class GateOp:
    """A generator gate: how to evaluate it into a preallocated row of words, and its reverse
    derivative ``reverse(*inputs, d) -> input changes`` (REFERENCE §2)."""

    name: str
    code: int  # the op number in the compiled kernel's tape (_packed.c)
    arity: int
    ufunc: np.ufunc | None  # evaluated as ufunc(*inputs, out); None for a constant
    constant: np.uint64 | None  # the word a constant fills its output with
    reverse: Callable[..., tuple[np.ndarray, ...]]

    def bind(self, out: np.ndarray, inputs: Sequence[np.ndarray]) -> tuple[Callable, tuple]:
        """``(f, args)`` such that ``f(*args)`` writes the gate's output into ``out`` without
        temporaries; binding once and calling many times keeps the per-gate overhead low."""
        if self.ufunc is None:
            return out.fill, (self.constant,)
        return self.ufunc, (*inputs, out)


GATES: dict[str, GateOp] = {
    "xor": GateOp("xor", 0, 2, np.bitwise_xor, None, lambda a, b, d: (d, d)),
    "and": GateOp("and", 1, 2, np.bitwise_and, None, lambda a, b, d: (b & d, a & d)),
    "or": GateOp("or", 2, 2, np.bitwise_or, None, lambda a, b, d: (d & ~b, d & ~a)),
    "not": GateOp("not", 3, 1, np.invert, None, lambda a, d: (d,)),
    "zero": GateOp("zero", 4, 0, None, np.uint64(0), lambda d: ()),
    "one": GateOp("one", 5, 0, None, _ALL_ONES, lambda d: ()),
}


def _gate_op(name: str) -> GateOp:
    if name not in GATES:
        raise ConfigError(f"unknown gate {name!r}; expected one of {sorted(GATES)}")
    return GATES[name]


class BoolLens(Lens):
    """A lens between spaces of bits (``Bits(k)``) acting on bit-packed batches.

    Sequential (``>>``) and parallel (``@``) composites of Boolean lenses are Boolean lenses again;
    ``@`` stacks wires (the first operand's wires on top), the monoidal product of the category.
    """

    def __rshift__(self, other: Lens | Para) -> Lens | Para:
        composite = super().__rshift__(other)
        return _BoolSequential(composite.parts) if isinstance(other, BoolLens) else composite

    def __matmul__(self, other: Lens | Para) -> Lens | Para:
        if isinstance(other, BoolLens):
            return _BoolParallel(_flatten_parallel(self) + _flatten_parallel(other))
        return super().__matmul__(other)


class _Generator(BoolLens):
    """A primitive Boolean lens: subclasses give ``_get(words) -> (out, residual)`` and
    ``_put(residual, d) -> input change``; this class checks types and keeps padding zero."""

    def forward(self, a: Any) -> tuple[Packed, Any]:
        words, n = _check_words(self.name, a, self.dom.shape[0], "input")
        out, residual = self._get(words)
        return Packed(mask_padding(out, n), n), (residual, n, words.shape[1])

    def backward(self, residual: Any, db: Any) -> Packed:
        inner, n, n_words = residual
        d, _ = _check_words(self.name, db, self.cod.shape[0], "output change", n, n_words)
        return Packed(self._put(inner, mask_padding(d.copy(), n)), n)

    def _get(self, words: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _put(self, residual: Any, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Gate(_Generator):
    """One generator gate (xor, and, or, not, zero, one) as a lens Bits(arity) → Bits(1)."""

    def __init__(self, op: GateOp):
        self.op = op
        self.name, self.dom, self.cod = op.name, Bits(op.arity), Bits(1)

    def _get(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty((1, words.shape[1]), dtype=np.uint64)
        f, args = self.op.bind(out[0], list(words))
        f(*args)
        return out, words

    def _put(self, words: np.ndarray, d: np.ndarray) -> np.ndarray:
        changes = self.op.reverse(*words, d[0])
        return np.stack(changes) if changes else np.zeros((0, d.shape[1]), dtype=np.uint64)


class Wires(_Generator):
    """Rewiring Bits(k) → Bits(len(indices)): output j is input ``indices[j]``.

    Covers permutations, projections, copy (an index repeated: R XOR-accumulates, d₁ ⊕ d₂) and
    discard (an index left out: R = 0)."""

    def __init__(self, k: int, indices: Sequence[int], name: str | None = None):
        if not (isinstance(k, int) and k >= 0) or any(not (0 <= int(i) < k) for i in indices):
            raise ConfigError(f"wires({k}, {list(indices)}): indices must lie in [0, {k})")
        self.k, self.indices = k, tuple(int(i) for i in indices)
        self.name = name or f"wires({k}, {list(self.indices)})"
        self.dom, self.cod = Bits(k), Bits(len(self.indices))

    def _get(self, words: np.ndarray) -> tuple[np.ndarray, None]:
        return words[list(self.indices)], None

    def _put(self, residual: None, d: np.ndarray) -> np.ndarray:
        change = np.zeros((self.k, d.shape[1]), dtype=np.uint64)
        np.bitwise_xor.at(change, list(self.indices), d)
        return change


class _BoolSequential(_SequentialLens, BoolLens):
    """A sequential composite of Boolean lenses (forward/backward from ``_SequentialLens``)."""


class _BoolParallel(BoolLens):
    """Boolean lenses side by side on stacked wires."""

    def __init__(self, parts: list[BoolLens]):
        for part in parts:
            if part.dom.shape is None or part.cod.shape is None:
                raise LensTypeError(f"cannot stack {part.name} with @: its number of wires is unknown")
        self.parts = tuple(parts)
        self.name = " @ ".join(f"({p.name})" if " " in p.name else p.name for p in parts)
        self._dom_edges = np.cumsum([0] + [p.dom.shape[0] for p in parts])
        self._cod_edges = np.cumsum([0] + [p.cod.shape[0] for p in parts])
        self.dom, self.cod = Bits(int(self._dom_edges[-1])), Bits(int(self._cod_edges[-1]))

    def forward(self, a: Any) -> tuple[Packed, Any]:
        words, n = _check_words(self.name, a, self.dom.shape[0], "input")
        outs, residuals = [], []
        for part, lo, hi in zip(self.parts, self._dom_edges[:-1], self._dom_edges[1:]):
            out, residual = part.forward(Packed(words[lo:hi], n))
            outs.append(out)
            residuals.append(residual)
        return Packed(_stack_rows(outs, words.shape[1]), n), (residuals, n, words.shape[1])

    def backward(self, residual: Any, db: Any) -> Packed:
        residuals, n, n_words = residual
        d, _ = _check_words(self.name, db, self.cod.shape[0], "output change", n, n_words)
        changes = [
            part.backward(r, Packed(d[lo:hi], n))
            for part, r, lo, hi in zip(self.parts, residuals, self._cod_edges[:-1], self._cod_edges[1:])
        ]
        return Packed(_stack_rows(changes, n_words), n)


def _flatten_parallel(lens: BoolLens) -> list[BoolLens]:
    return list(lens.parts) if isinstance(lens, _BoolParallel) else [lens]


def _stack_rows(blocks: list[np.ndarray], n_words: int) -> np.ndarray:
    return np.concatenate([np.asarray(b) for b in blocks] + [np.zeros((0, n_words), dtype=np.uint64)])


def gate(name: str) -> Gate:
    """The generator gate ``name`` ("xor", "and", "or", "not", "zero", "one") as a lens."""
    return Gate(_gate_op(name))


def wires(k: int, indices: Sequence[int]) -> Wires:
    """Rewire k wires: output j is input ``indices[j]`` (permutations, projections, copies)."""
    return Wires(k, indices)


def copy() -> Wires:
    """x ↦ (x, x); R(x, (d₁, d₂)) = d₁ ⊕ d₂."""
    return Wires(1, (0, 0), name="copy")


def discard() -> Wires:
    """x ↦ (); R = 0."""
    return Wires(1, (), name="discard")


def identity(k: int) -> Wires:
    """The identity on k wires."""
    return Wires(k, range(k), name=f"id({k})")


@dataclass(frozen=True)
class _Schedule:
    """Gates in topological order on numbered rows ("slots") of a scratch array.

    Rows 0..n_inputs−1 hold the inputs and the next n_params rows θ. In ``keep_all`` schedules
    every wire has its own row (the forward pass keeps them all for the backward pass); in
    ``reuse`` schedules a row is recycled once its wire is read for the last time and gates no
    output depends on are dropped, so the live rows stay in cache.
    """

    n_slots: int
    steps: tuple[tuple[GateOp, tuple[int, ...], int], ...]  # (gate, input rows, output row)
    outputs: tuple[int, ...]

    @staticmethod
    def keep_all(circuit: Circuit) -> _Schedule:
        first = circuit.n_inputs + circuit.n_params
        steps = tuple((op, ins, first + g) for g, (op, ins) in enumerate(circuit._ops))
        return _Schedule(circuit.n_wires, steps, circuit.outputs)

    @staticmethod
    def reuse(circuit: Circuit) -> _Schedule:
        first = circuit.n_inputs + circuit.n_params
        needed = np.zeros(circuit.n_wires, dtype=bool)
        needed[list(circuit.outputs)] = True
        for g in range(len(circuit._ops) - 1, -1, -1):
            if needed[first + g]:
                needed[list(circuit._ops[g][1])] = True
        last_read = {w: len(circuit._ops) for w in circuit.outputs}  # outputs stay live to the end
        for g, (_, ins) in enumerate(circuit._ops):
            if needed[first + g]:
                for w in ins:
                    last_read[w] = max(last_read.get(w, g), g)
        slot = list(range(first))
        free = [w for w in range(first) if w not in last_read]
        n_slots, steps = first, []
        for g, (op, ins) in enumerate(circuit._ops):
            if not needed[first + g]:
                slot.append(-1)
                continue
            in_slots = tuple(slot[w] for w in ins)
            free.extend(slot[w] for w in set(ins) if last_read[w] == g)
            if free:
                out = free.pop()
            else:
                out, n_slots = n_slots, n_slots + 1
            slot.append(out)
            steps.append((op, in_slots, out))
        return _Schedule(n_slots, tuple(steps), tuple(slot[w] for w in circuit.outputs))

    def bind(self, rows: np.ndarray) -> list[tuple[Callable, tuple]]:
        """The steps as ``(f, args)`` calls on the rows of ``rows`` (the numpy backend)."""
        views = list(rows)
        return [op.bind(views[out], [views[i] for i in ins]) for op, ins, out in self.steps]

    @cached_property
    def tape(self) -> np.ndarray:
        """The steps for the compiled kernel: int32 rows (op code, input a, input b, output row).
        A gate with fewer than two inputs repeats a row it may read (its output row for a
        constant), since the kernel checks every row index."""
        tape = [(op.code, *(ins + (out, out))[:2], out) for op, ins, out in self.steps]
        return np.array(tape, dtype=np.int32).reshape(len(tape), 4)

    @cached_property
    def output_rows(self) -> np.ndarray:
        """``outputs`` as the int32 array the compiled kernel reads."""
        return np.array(self.outputs, dtype=np.int32)


class Circuit(Para):
    """A Boolean circuit (netlist) as a parametric lens Bits(n_params) × Bits(n_inputs) → Bits(m).

    Wires are numbered: 0..n_inputs−1 the inputs, then n_params parameter bits θ, then one wire per
    gate in ``gates`` order. A gate is ``(name, input wires)`` with ``name`` in ``GATES`` and input
    wires numbered below its own (topological order). ``outputs`` lists the output wires.
    A wire read several times is copied, so its reverse derivative XOR-accumulates.

    Parameters are a numpy bool array of shape (n_params,), broadcast to every example.
    ``forward`` keeps every wire for ``backward``; ``get`` (evaluation only) recycles rows and
    evaluates in cache-sized blocks of words, which is what makes bit-packed evaluation fast.
    ``backend`` ("compiled" or "numpy", default ``PACKED_BACKEND``) picks who runs the gates.
    """

    #: bytes of scratch rows ``get`` keeps per block of words; None: the backend's default
    #: (``DEFAULT_BLOCK_BYTES``)
    block_bytes: int | None = None

    def __init__(
        self,
        n_inputs: int,
        n_params: int,
        gates: Sequence[tuple[str, Sequence[int]]],
        outputs: Sequence[int],
        name: str = "circuit",
    ):
        for what, value in (("n_inputs", n_inputs), ("n_params", n_params)):
            if not (isinstance(value, (int, np.integer)) and value >= 0):
                raise ConfigError(f"circuit {what} must be a non-negative integer, got {value!r}")
        self.n_inputs, self.n_params, self.name = int(n_inputs), int(n_params), name
        ops = []
        for g, (op_name, ins) in enumerate(gates):
            op, ins, wire = _gate_op(op_name), tuple(int(i) for i in ins), self.n_inputs + self.n_params + g
            if len(ins) != op.arity or any(not (0 <= i < wire) for i in ins):
                raise ConfigError(
                    f"{name}: gate {g} ({op_name} {list(ins)}) must read {op.arity} wires numbered "
                    f"below its own wire {wire}"
                )
            ops.append((op, ins))
        self._ops = tuple(ops)
        self.gates = tuple((op.name, ins) for op, ins in ops)
        self.outputs = tuple(int(w) for w in outputs)
        if any(not (0 <= w < self.n_wires) for w in self.outputs):
            raise ConfigError(f"{name}: output wires {list(self.outputs)} must lie in [0, {self.n_wires})")
        self.dom, self.cod = Bits(self.n_inputs), Bits(len(self.outputs))
        self._keep_all, self._reuse = _Schedule.keep_all(self), _Schedule.reuse(self)
        self.backend = PACKED_BACKEND
        self._scratch: np.ndarray | None = None  # get's rows, kept between calls
        self._bound: tuple[np.ndarray, list] | None = None  # rows and the numpy calls bound to them

    @property
    def n_wires(self) -> int:
        """Inputs, parameter bits and gates."""
        return self.n_inputs + self.n_params + len(self._ops)

    def init(self, generator: np.random.Generator | None = None) -> np.ndarray:
        """θ = 0 (where reverse derivative ascent starts), or uniformly random bits from a numpy
        ``Generator``."""
        if generator is None:
            return np.zeros(self.n_params, dtype=bool)
        if not isinstance(generator, np.random.Generator):
            raise ConfigError(
                f"{self.name}.init expects a numpy Generator or None, got {type(generator).__name__}"
            )
        return generator.random(self.n_params) < 0.5

    def forward(self, params: Any, a: Any) -> tuple[Packed, Any]:
        theta, (words, n) = self._check_theta(params), _check_words(self.name, a, self.n_inputs, "input")
        values = np.empty((self.n_wires, words.shape[1]), dtype=np.uint64)
        return self._evaluate(self._keep_all, values, theta, words, n), (values, n)

    def get(self, params: Any, a: Any) -> Packed:
        """Evaluation only: rows recycled, blocks of words sized by ``block_bytes``. The scratch
        rows are kept between calls (so ``get`` is not re-entrant)."""
        theta, (words, n) = self._check_theta(params), _check_words(self.name, a, self.n_inputs, "input")
        block_bytes = DEFAULT_BLOCK_BYTES[self._backend()] if self.block_bytes is None else self.block_bytes
        n_blocks = -(-words.shape[1] // max(1, block_bytes // (8 * self._reuse.n_slots)))
        block = -(-words.shape[1] // max(1, n_blocks))  # equal blocks: no idle tail at full width
        block = -(-block // 8) * 8  # whole 64-byte cache lines: rows stay aligned for the kernel
        if self._scratch is None or self._scratch.shape[1] != block:
            self._scratch = np.empty((self._reuse.n_slots, block), dtype=np.uint64)
        return self._evaluate(self._reuse, self._scratch, theta, words, n)

    def backward(self, residual: Any, db: Any, need_input_grad: bool = True) -> tuple[np.ndarray, Packed | None]:
        """(θ', x'): θ' is, per parameter bit, the parity over the batch of its per-example
        reverse derivative; x' (skipped when ``need_input_grad`` is False) is per example."""
        values, n = residual
        d, _ = _check_words(self.name, db, len(self.outputs), "output change", n, values.shape[1])
        change = np.zeros_like(values)
        np.bitwise_xor.at(change, list(self.outputs), mask_padding(d.copy(), n))
        for op, ins, out in reversed(self._keep_all.steps):
            for i, c in zip(ins, op.reverse(*(values[i] for i in ins), change[out])):
                change[i] ^= c
        d_theta = parity(change[self.n_inputs : self.n_inputs + self.n_params])
        d_x = Packed(change[: self.n_inputs].copy(), n) if need_input_grad else None
        return d_theta, d_x

    def _check_theta(self, theta: Any) -> np.ndarray:
        if not (isinstance(theta, np.ndarray) and theta.dtype == bool and theta.shape == (self.n_params,)):
            raise LensTypeError(
                f"{self.name} expects parameters θ as a numpy bool array of shape ({self.n_params},), got "
                f"{type(theta).__name__} {getattr(theta, 'dtype', '')} {getattr(theta, 'shape', '')}".rstrip()
            )
        return theta

    def _backend(self) -> str:
        """``backend``, checked: a known name, and the kernel built if it is "compiled"."""
        if self.backend not in _BACKENDS:
            raise ConfigError(f"{self.name}: unknown backend {self.backend!r}; expected one of {list(_BACKENDS)}")
        if self.backend == "compiled" and _kernel is None:
            raise ConfigError(
                f"{self.name}: backend 'compiled' needs the C kernel progsynth.core._packed, which was not "
                "built (no C compiler at install?); reinstall with gcc available, or use backend 'numpy'"
            )
        return self.backend

    def _evaluate(self, schedule: _Schedule, rows: np.ndarray, theta: np.ndarray, words: np.ndarray, n: int) -> Packed:
        """Run ``schedule`` on the scratch ``rows`` (slots × block words) over successive blocks of
        ``words``: inputs and θ are copied into their rows, the gates run, the output rows are
        copied out. Numpy runs a last, partial block at full width: its extra columns hold stale
        words that are never copied out."""
        n_words, block = words.shape[1], rows.shape[1]
        theta_words = np.where(theta, _ALL_ONES, np.uint64(0))
        out = np.empty((len(schedule.outputs), n_words), dtype=np.uint64)
        if self._backend() == "compiled":
            if n_words:
                _kernel.evaluate(np.ascontiguousarray(words), n_words, theta_words, rows, block,
                                 schedule.tape, schedule.output_rows, out)
            return Packed(mask_padding(out, n), n)
        if self._bound is not None and self._bound[0] is rows:
            bound = self._bound[1]
        else:  # binding costs ~1 µs a gate: kept for get's scratch rows, not for forward's one-off ones
            bound = schedule.bind(rows)
            if rows is self._scratch:
                self._bound = (rows, bound)
        outputs = list(schedule.outputs)
        for start in range(0, n_words, max(block, 1)):
            width = min(block, n_words - start)
            rows[: self.n_inputs, :width] = words[:, start : start + width]
            rows[self.n_inputs : self.n_inputs + self.n_params] = theta_words[:, None]  # recycled rows are refilled
            for f, args in bound:
                f(*args)
            out[:, start : start + width] = rows[outputs, :width]
        return Packed(mask_padding(out, n), n)


def brute_force_reverse_derivative(f: Callable[[Packed], np.ndarray], x: Any, d: Any) -> Packed:
    """R[f](x, d)ᵢ = parity((f(x) ⊕ f(x ⊕ eᵢ)) ∧ d), per example, for any f on packed batches.

    ``f`` maps (k, words) to (m, words) example by example (e.g. ``lens.get``); k + 1 evaluations.
    This is the reference the compositional R must match on safe circuits.
    """
    words, n = _check_words("brute_force_reverse_derivative", x, None, "input")
    fx = np.asarray(f(Packed(words, n)))
    dw, _ = _check_words("brute_force_reverse_derivative", d, fx.shape[0], "output change", n, words.shape[1])
    dw = mask_padding(dw.copy(), n)
    result = np.empty_like(words)
    for i in range(words.shape[0]):
        flipped = words.copy()
        flipped[i] = ~flipped[i]
        diff = fx ^ np.asarray(f(Packed(mask_padding(flipped, n), n)))
        result[i] = np.bitwise_xor.reduce(diff & dw, axis=0)
    return Packed(mask_padding(result, n), n)
