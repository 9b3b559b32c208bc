"""Boolean models as circuits (parametric lenses over Z2), trained by reverse derivative ascent.

The learned lookup table of Wilson & Zanasi (REFERENCE §2): for k input bits, basis(x) is the
2^k minterms (basisᵢ(x) = 1 exactly when the input bits, read little-endian as an integer, equal
i), and output bit j is XORᵢ (basisᵢ(x) ∧ θᵢⱼ). So θ *is* the table: the row θᵢ. is the output for
input pattern i. Each minterm is an AND of distinct literals and each θᵢⱼ is read once, so the
circuit is safe: its compositional reverse derivative equals the brute-force one.

With batch size 1, one RDA step sets θ_{pattern(x)} ⊕= (θ_{pattern(x)} ⊕ y), i.e. to y: the table
remembers the label of the last training example seen with each pattern, and a pattern never seen
keeps the all-zero output.
"""

from __future__ import annotations

import numpy as np

from progsynth.core.boolean import Circuit, pack
from progsynth.core.learner import Learner
from progsynth.core.losses import error_rate, xor_loss
from progsynth.core.optim import rda
from progsynth.errors import ConfigError, LensTypeError

__all__ = ["lookup_table", "table_of", "fit_rda", "exact_match"]


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
