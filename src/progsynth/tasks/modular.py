"""Binary operations on Z_p (Power et al. 2022; Nanda et al. 2023; REFERENCE §3).

A task is a frozen ``ModularTask(p, op, train_fraction, split_seed)``; ``modular_dataset(task)``
builds every valid pair (a, b) with its label c = a ∘ b mod p, and the train/test split.

Operations (``OPERATIONS``; the name on the left is canonical, aliases in parentheses):

==============  ======================  =====================================================
name            label                   aliases
==============  ======================  =====================================================
``add``         a + b                   ``+``, ``plus``, ``a+b``, ``x+y``
``sub``         a − b                   ``-``, ``minus``, ``subtract``, ``a-b``, ``x-y``
``mul``         a · b                   ``*``, ``times``, ``a*b``, ``xy``
``div``         a · b⁻¹ (b ≠ 0)         ``/``, ``a/b``, ``x/y``
``x2+y2``       a² + b²                 ``x^2+y^2``, ``a**2+b**2``, ``a²+b²``
``x2+xy+y2``    a² + ab + b²            ``x^2+xy+y^2``, ``x2xyy2`` (Nanda's name)
``x3+xy``       a³ + ab                 ``x^3+x*y``, ``a³+ab``
==============  ======================  =====================================================

Formula aliases are matched after lower-casing and dropping spaces, ``^``, ``**`` and ``*``,
reading a/b as x/y, and sorting the terms of a sum, so ``b^2 + a^2`` is ``x2+y2``.

Only ``div`` needs a field: b⁻¹ mod p exists for every b ≠ 0 exactly when p is prime, so ``div``
requires a prime p and leaves out the pairs with b = 0 (p(p − 1) pairs). Every other operation is
defined on the ring Z_p for any p ≥ 2 and uses all p² pairs.

``op`` may also be any Python function ``f(a, b, p) -> int``; it is called on every pair, and a
value that is not an int in [0, p) is an error naming the pair and the value.

Encodings (REFERENCE §3): tokens ``a b =`` with ``=`` the token p, shape (N, 3), for the
transformer and the embedding MLP; one_hot(a) ⊕ one_hot(b), shape (N, 2p), for Gromov's MLP.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Union

import torch

from progsynth.errors import ConfigError
from progsynth.tasks.common import TaskData, check_int, check_train_fraction, one_hot_concat, train_test_split

__all__ = [
    "Operation",
    "OPERATIONS",
    "resolve_operation",
    "is_prime",
    "ModularTask",
    "ModularData",
    "modular_dataset",
    "tokens",
    "one_hot_pairs",
]

UserFunction = Callable[[int, int, int], int]


@dataclass(frozen=True)
class Operation:
    """A named binary operation on Z_p, computed on whole tensors of operands at once."""

    name: str
    formula: str
    """The label as a formula in a, b (for messages and reports)."""
    needs_field: bool
    """Whether p must be prime (and b ≠ 0): only division."""
    compute: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    """(a, b, p) ↦ label for int64 tensors a, b with entries in [0, p) (b ≠ 0 if needs_field)."""


def _divide(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    # b^{-1} = b^{p-2} mod p (Fermat), tabulated once for b = 0..p-1 (entry 0 is never used).
    inverse = torch.tensor([0] + [pow(v, p - 2, p) for v in range(1, p)], dtype=torch.int64)
    return a * inverse[b] % p


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("add", "a + b", False, lambda a, b, p: (a + b) % p),
        Operation("sub", "a - b", False, lambda a, b, p: (a - b) % p),
        Operation("mul", "a * b", False, lambda a, b, p: a * b % p),
        Operation("div", "a / b", True, _divide),
        Operation("x2+y2", "a^2 + b^2", False, lambda a, b, p: (a * a + b * b) % p),
        Operation("x2+xy+y2", "a^2 + ab + b^2", False, lambda a, b, p: (a * a + a * b + b * b) % p),
        Operation("x3+xy", "a^3 + ab", False, lambda a, b, p: (a * a % p * a + a * b) % p),
    )
}
"""The built-in operations by canonical name."""

_WORD_ALIASES = {
    "+": "add", "plus": "add", "addition": "add",
    "-": "sub", "minus": "sub", "subtract": "sub", "subtraction": "sub",
    "*": "mul", "times": "mul", "multiply": "mul", "multiplication": "mul",
    "/": "div", "divide": "div", "division": "div",
    "x2xyy2": "x2+xy+y2",
}
# Formula aliases in normal form (see _formula_key): a sum's terms sorted, so order does not matter.
_FORMULA_ALIASES = {"x+y": "add", "x-y": "sub", "xy": "mul", "x/y": "div", "x2+y2": "x2+y2",
                    "x2+xy+y2": "x2+xy+y2", "x3+xy": "x3+xy"}


def _formula_key(text: str) -> str:
    """Normal form of a formula: no spaces, powers and products written x2/xy, a→x, b→y, terms sorted."""
    for old, new in (("**", ""), ("^", ""), ("*", ""), ("²", "2"), ("³", "3"), ("modp", ""), ("(", ""), (")", "")):
        text = text.replace(old, new)
    text = text.translate(str.maketrans("ab", "xy"))
    return "+".join(sorted(text.split("+")))


def resolve_operation(name: str) -> str:
    """The canonical name of a built-in operation given its name or an alias.

    Raises ConfigError listing the valid names if ``name`` is none of them.
    """
    if not isinstance(name, str):
        raise ConfigError(f"operation name must be a string, got {type(name).__name__}")
    text = "".join(name.lower().split())
    found = text if text in OPERATIONS else _WORD_ALIASES.get(text) or _FORMULA_ALIASES.get(_formula_key(text))
    if found is None:
        raise ConfigError(
            f"unknown operation {name!r}; expected one of {', '.join(OPERATIONS)} (aliases such as "
            f"'+', 'a-b', 'x^2+y^2' work too) or a Python function f(a, b, p) -> int"
        )
    return found


def is_prime(n: int) -> bool:
    """Whether the integer n is prime (trial division; n is a modulus small enough to enumerate p² pairs)."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


@dataclass(frozen=True)
class ModularTask:
    """Learn c = a ∘ b mod p from a fraction of all pairs.

    A built-in ``op`` given by alias is stored under its canonical name, so
    ``ModularTask(op="a+b") == ModularTask(op="add")``.
    """

    p: int = 113
    """The modulus, ≥ 2; must be prime for ``div``. Tokens 0..p−1 are residues, token p is ``=``."""
    op: Union[str, UserFunction] = "add"
    """A built-in operation by name or alias (module docstring), or a function f(a, b, p) -> int."""
    train_fraction: float = 0.3
    """Fraction of the valid pairs used for training, in (0, 1]; floor(fraction · N) pairs."""
    split_seed: int = 0
    """Seed of the train/test split (independent of any model seed)."""

    def __post_init__(self) -> None:
        check_int("p", self.p, 2)
        if isinstance(self.op, str):
            object.__setattr__(self, "op", resolve_operation(self.op))
            if OPERATIONS[self.op].needs_field and not is_prime(self.p):
                divisor = next(d for d in range(2, self.p) if self.p % d == 0)
                raise ConfigError(
                    f"operation {self.op!r} needs a field, so p must be prime; got p = {self.p} = "
                    f"{divisor} × {self.p // divisor}"
                )
        elif not callable(self.op):
            raise ConfigError(
                f"op must be an operation name or a function f(a, b, p) -> int, got {type(self.op).__name__}"
            )
        check_train_fraction(self.train_fraction)
        check_int("split_seed", self.split_seed, 0)

    @property
    def op_name(self) -> str:
        """The canonical operation name, or a user function's ``__name__``."""
        return self.op if isinstance(self.op, str) else getattr(self.op, "__name__", "user_function")

    @property
    def n_operands(self) -> int:
        """Operands per example: a and b."""
        return 2

    @property
    def operand_vocab(self) -> int:
        """Values an operand can take: the residues 0..p−1."""
        return self.p

    @property
    def n_classes(self) -> int:
        """Label classes: the residues 0..p−1."""
        return self.p


def tokens(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    """The transformer's input ``a b =`` with ``=`` the token p: int64, shape (N, 3)."""
    return torch.stack([a, b, torch.full_like(a, p)], dim=1)


def one_hot_pairs(a: torch.Tensor, b: torch.Tensor, p: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """one_hot(a) ⊕ one_hot(b), shape (N, 2p): Gromov's MLP input."""
    return one_hot_concat(torch.stack([a, b], dim=1), p, dtype)


def _user_labels(fn: UserFunction, name: str, a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    """Call a user function on every pair, checking each value is an int in [0, p)."""
    labels = []
    for x, y in zip(a.tolist(), b.tolist()):
        try:
            value = fn(x, y, p)
        except Exception as exc:
            raise ConfigError(f"operation {name} raised {exc!r} at (a, b) = ({x}, {y})") from exc
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(
                f"operation {name} returned {value!r} ({type(value).__name__}) at (a, b) = ({x}, {y}); "
                f"expected an int in [0, {p})"
            )
        if not 0 <= value < p:
            raise ConfigError(
                f"operation {name} returned {value} at (a, b) = ({x}, {y}); expected a value in Z_{p}, "
                f"an int in [0, {p}) (reduce it mod p)"
            )
        labels.append(int(value))
    return torch.tensor(labels, dtype=torch.int64)


@dataclass(frozen=True, eq=False)
class ModularData(TaskData):
    """All valid pairs of a modular task in row-major order (a outer, b inner), labels and split."""

    task: ModularTask

    @property
    def a(self) -> torch.Tensor:
        """First operands, (N,)."""
        return self.operands[:, 0]

    @property
    def b(self) -> torch.Tensor:
        """Second operands, (N,)."""
        return self.operands[:, 1]

    def tokens(self) -> torch.Tensor:
        """``a b =`` token ids, (N, 3), with ``=`` = p."""
        return tokens(self.a, self.b, self.task.p)


def modular_dataset(task: ModularTask) -> ModularData:
    """Every valid pair of ``task`` with its label, and the train/test split.

    N = p² pairs (p(p − 1) for ``div``, which leaves out b = 0), ordered a-major; the split is
    ``train_test_split(N, task.train_fraction, task.split_seed)``. Raises ConfigError if a user
    function returns anything but an int in [0, p).
    """
    if not isinstance(task, ModularTask):
        raise ConfigError(f"modular_dataset expects a ModularTask, got {type(task).__name__}")
    p = task.p
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if isinstance(task.op, str):
        operation = OPERATIONS[task.op]
        if operation.needs_field:
            a, b = a[b != 0], b[b != 0]
        labels = operation.compute(a, b, p)
    else:
        labels = _user_labels(task.op, task.op_name, a, b, p)
    train_idx, test_idx = train_test_split(a.shape[0], task.train_fraction, task.split_seed)
    return ModularData(torch.stack([a, b], dim=1), labels, train_idx, test_idx, p, p, task)
