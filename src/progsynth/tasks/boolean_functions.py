"""Boolean functions of n input bits: the third task family, for circuits, formulas and tables.

``BooleanTask(n_bits, function, seed, ...)`` labels every n-bit string (or a sample of strings,
as ``ParityTask`` does, in the same order) with one output bit. ``function`` is text, so the task
round-trips through ``config.json``:

==========================  =================================================================
``function``                label of the bits x0 … x{n−1} (x0 the most significant)
==========================  =================================================================
``majority``                1 when more than half the bits are 1
``comparator``              1 when the number in the first n/2 bits exceeds the one in the
                            last n/2 (n even; each half read most significant bit first)
``random-circuit:G``        a random circuit of G gates (``random_circuit``, drawn from ``seed``)
``table:0110…``             a truth table of 2ⁿ bits, entry r the label of the r-th string in
                            counting order (the string whose bits spell r in binary)
``circuit:x0 & x1 ^ ~x2``   a circuit written as a Boolean formula (``tasks.expression``:
                            ``~ & ^ |``, the words ``not and xor or``, 0, 1, parentheses)
``module:function``         a Python function called on each string as a tuple of n ints 0/1,
                            returning 0 or 1 (the module is imported: name only code you trust)
==========================  =================================================================

Operands are the bits (vocabulary {0, 1}); labels are 0 or 1 (two classes).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch

from progsynth.core.boolean import Circuit, pack, unpack
from progsynth.errors import ConfigError
from progsynth.tasks.common import (MAX_BITS, MAX_GATES, MAX_SAMPLES, BitOperands, TaskData, bit_strings, check_int,
                                    check_seed, check_train_fraction, import_function,
                                    is_import_path, train_test_split)
from progsynth.tasks.expression import evaluate, parse_boolean, render
from progsynth.tasks.parity import MAX_ENUMERATED_BITS

__all__ = ["BooleanTask", "BOOLEAN_FUNCTIONS", "random_circuit", "boolean_dataset"]

BOOLEAN_FUNCTIONS = ("majority", "comparator", "random-circuit:G", "table:BITS", "circuit:FORMULA",
                     "module:function")
"""The forms ``BooleanTask.function`` takes (module docstring)."""

RANDOM_GATES = ("and", "or", "xor", "not")
"""Gates a random circuit draws from, uniformly."""


def random_circuit(n_inputs: int, n_gates: int, generator: torch.Generator) -> Circuit:
    """A random circuit (``core.boolean.Circuit``) of ``n_gates`` gates on ``n_inputs`` bits.

    Gate g draws its kind uniformly from ``RANDOM_GATES`` and its inputs uniformly from the wires
    below it, except that its first input is always the newest wire (the previous gate, or an input
    bit for gate 0), so every gate feeds the output: the last gate.
    """
    gates = []
    for g in range(n_gates):
        name = RANDOM_GATES[int(torch.randint(len(RANDOM_GATES), (1,), generator=generator))]
        wire = n_inputs + g
        first = wire - 1 if g else int(torch.randint(n_inputs, (1,), generator=generator))
        ins = (first,) if name == "not" else (first, int(torch.randint(wire, (1,), generator=generator)))
        gates.append((name, ins))
    return Circuit(n_inputs, 0, gates, [n_inputs + n_gates - 1], name=f"random circuit of {n_gates} gates")


@dataclass(frozen=True)
class BooleanTask(BitOperands):
    """Learn one output bit as a function of ``n_bits`` input bits (module docstring)."""

    family: ClassVar[str] = "boolean"
    domain: ClassVar[str] = "bits"

    n_bits: int = 9
    """Input bits per string, ≥ 1."""
    function: str = "majority"
    """Which function labels the strings (module docstring)."""
    seed: int = 0
    """Draws the random circuit (for ``random-circuit:G``) and the sampled strings."""
    train_fraction: float = 0.5
    """Fraction of the examples used for training, in (0, 1]."""
    split_seed: int = 0
    """Seed of the train/test split."""
    n_samples: Optional[int] = None
    """None: all 2ⁿ strings (n ≤ 16); otherwise this many uniformly drawn strings."""
    user_function: Optional[Callable[[tuple[int, ...]], Any]] = field(default=None, init=False, repr=False,
                                                                     compare=False)
    """The function ``module:function`` names (derived from ``function``)."""

    def __post_init__(self) -> None:
        check_int("n_bits", self.n_bits, 1, MAX_BITS)
        check_seed("seed", self.seed)
        check_train_fraction(self.train_fraction)
        check_seed("split_seed", self.split_seed)
        if self.n_samples is None:
            if self.n_bits > MAX_ENUMERATED_BITS:
                raise ConfigError(f"n_bits = {self.n_bits} is too many to enumerate all 2^{self.n_bits} strings "
                                  f"(at most {MAX_ENUMERATED_BITS}); give n_samples to draw a sample instead")
        else:
            check_int("n_samples", self.n_samples, 1, MAX_SAMPLES)
        if not isinstance(self.function, str):
            raise ConfigError(f"function must be text, one of {', '.join(BOOLEAN_FUNCTIONS)}; "
                              f"got {type(self.function).__name__}")
        text = self.function.strip()
        kind, _, rest = text.partition(":")
        if text in ("majority",):
            pass
        elif text == "comparator":
            if self.n_bits % 2:
                raise ConfigError(f"the comparator reads two numbers of n_bits/2 bits, so n_bits must be even; "
                                  f"got {self.n_bits}")
        elif kind == "random-circuit":
            try:
                check_int("random-circuit gates", int(rest), 1, MAX_GATES)
            except ValueError:
                raise ConfigError(f"function {text!r}: random-circuit:G needs a number of gates G ≥ 1") from None
            text = f"random-circuit:{int(rest)}"
        elif kind == "table":
            table = rest.strip()
            if len(table) != 2**self.n_bits or set(table) - {"0", "1"}:
                raise ConfigError(f"function 'table:…' needs 2^{self.n_bits} = {2**self.n_bits} characters 0 or 1, "
                                  f"got {len(table)} characters {sorted(set(table))[:6]}")
            text = f"table:{table}"
        elif kind == "circuit":
            text = f"circuit:{render(parse_boolean(rest, self.n_bits, 'the circuit'))}"
        elif is_import_path(text):
            object.__setattr__(self, "user_function", import_function(text, "function"))
        else:
            raise ConfigError(f"unknown Boolean function {self.function!r}; expected one of "
                              f"{', '.join(BOOLEAN_FUNCTIONS)}")
        object.__setattr__(self, "function", text)

    @property
    def name(self) -> str:
        """E.g. 'majority of 9 bits'."""
        return f"{self.function} of {self.n_bits} bits"

    def dataset(self) -> TaskData:
        """``boolean_dataset(self)``."""
        return boolean_dataset(self)

    def labels_of(self, bits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The label of every row of ``bits`` (N, n_bits) int64; ``generator`` (seeded by ``seed``)
        draws the random circuit."""
        n = self.n_bits
        kind, _, rest = self.function.partition(":")
        if self.function == "majority":
            return (bits.sum(dim=1) * 2 > n).long()
        if self.function == "comparator":
            weights = 2 ** torch.arange(n // 2 - 1, -1, -1)
            return ((bits[:, : n // 2] * weights).sum(1) > (bits[:, n // 2:] * weights).sum(1)).long()
        if kind == "random-circuit":
            circuit = random_circuit(n, int(rest), generator)
            return torch.from_numpy(unpack(circuit.get(np.zeros(0, dtype=bool), pack(bits.numpy())))[:, 0]
                                    .astype(np.int64))
        if kind == "table":
            index = (bits * 2 ** torch.arange(n - 1, -1, -1)).sum(1)
            return torch.tensor([int(c) for c in rest], dtype=torch.int64)[index]
        if kind == "circuit":
            columns = bits.numpy().astype(bool)
            values, _ = evaluate(parse_boolean(rest, n), {f"x{i}": columns[:, i] for i in range(n)})
            return torch.from_numpy(values.astype(np.int64))
        return self._user_labels(bits)

    def _user_labels(self, bits: torch.Tensor) -> torch.Tensor:
        labels = []
        for row in bits.tolist():
            try:
                value = self.user_function(tuple(row))
            except Exception as exc:
                raise ConfigError(f"function {self.function} raised {exc!r} at bits {row}") from exc
            if not isinstance(value, (bool, numbers.Integral, np.bool_)) or int(value) not in (0, 1):
                raise ConfigError(f"function {self.function} returned {value!r} at bits {row}; expected 0 or 1")
            labels.append(int(value))
        return torch.tensor(labels, dtype=torch.int64)


def boolean_dataset(task: BooleanTask) -> TaskData:
    """The strings of ``task`` (bits (N, n) int64, as ``ParityTask`` orders them), their labels and
    the train/test split."""
    if not isinstance(task, BooleanTask):
        raise ConfigError(f"boolean_dataset expects a BooleanTask, got {type(task).__name__}")
    generator = torch.Generator().manual_seed(task.seed)
    labels_generator = torch.Generator().manual_seed(task.seed)
    bits = bit_strings(task.n_bits, task.n_samples, generator)
    labels = task.labels_of(bits, labels_generator)
    train_idx, test_idx = train_test_split(bits.shape[0], task.train_fraction, task.split_seed)
    return TaskData(bits, labels, train_idx, test_idx, 2, 2)
