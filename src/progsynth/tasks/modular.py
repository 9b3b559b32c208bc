"""Binary operations on Z_p (Power et al. 2022; Nanda et al. 2023; REFERENCE §3).

A task is a frozen ``ModularTask(p, op, train_fraction, split_seed, split)``; ``modular_dataset(task)``
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

Any other text is read as an **arithmetic expression** in a and b (``tasks.expression``: integers,
``+ - * /``, powers ``^`` and parentheses; parsed, never ``eval``-ed), e.g. ``'a*b + a + b'`` or
``'(a+b)^2 - b'``; an expression equal to a built-in operation (up to the order of the terms of
sums and products, and with x, y read as a, b) is that operation, so ``'b^2 + a^2'`` is ``x2+y2``.
Formula aliases that are not expressions (``xy``, ``a³+ab``) are matched after dropping spaces,
powers and products. An expression is stored in its printed form (``'a * b + a + b'``), which
reads back to the same tree, so it round-trips through ``config.json``.

Only division needs a field: b⁻¹ mod p exists for every b ≠ 0 exactly when p is prime, so ``div``
and any expression that divides require a prime p, and leave out the pairs where a divisor is 0
(for ``div``, b = 0: p(p − 1) pairs). Every other operation is defined on the ring Z_p for any
p ≥ 2 and uses all p² pairs.

``op`` may also name a Python function ``f(a, b, p) -> int`` by import path, ``'module:function'``
(stored as that text, so it round-trips through ``config.json``; the module is imported, so name
only code you trust), or, outside a run configuration, be the function itself. It is called on
every pair, and a value that is not an int in [0, p) is an error naming the pair and the value.

Encodings (REFERENCE §3): tokens ``a b =`` with ``=`` the token p, shape (N, 3), for the
transformer and the embedding MLP; one_hot(a) ⊕ one_hot(b), shape (N, 2p), for Gromov's MLP.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Union

import torch

from progsynth.errors import ConfigError
from progsynth.tasks.common import (MAX_P, TaskData, check_int, check_seed, check_split, check_train_fraction,
                                    import_function, is_import_path, one_hot_concat, train_test_split)
from progsynth.tasks.expression import Const, Expr, Pow, Var, evaluate, parse_arithmetic, render

__all__ = [
    "Operation",
    "OPERATIONS",
    "parse_operation",
    "resolve_operation",
    "is_prime",
    "smallest_factor",
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
        Operation("x2+xy+y2", "a^2 + a * b + b^2", False, lambda a, b, p: (a * a + a * b + b * b) % p),
        Operation("x3+xy", "a^3 + a * b", False, lambda a, b, p: (a * a % p * a + a * b) % p),
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


def _builtin(text: str) -> Optional[str]:
    """The built-in operation a name, word alias or formula alias denotes, else None."""
    compact = "".join(text.lower().split())
    if compact in OPERATIONS:
        return compact
    return _WORD_ALIASES.get(compact)


def _normal(expr: Expr) -> Any:
    """A key equal for trees that differ only in the order (and grouping) of sums and products."""
    if isinstance(expr, (Var, Const)):
        return expr
    if isinstance(expr, Pow):
        return ("pow", _normal(expr.base), expr.exponent)
    if expr.name in ("add", "mul"):
        terms: list[Any] = []
        for arg in expr.args:
            key = _normal(arg)
            terms.extend(key[1] if isinstance(key, tuple) and key[0] == expr.name else [key])
        return (expr.name, tuple(sorted(terms, key=repr)))
    return (expr.name, tuple(_normal(a) for a in expr.args))


_BUILTIN_TREES = {_normal(parse_arithmetic(op.formula)): op.name for op in OPERATIONS.values()}


def _unknown(name: str, reason: str) -> ConfigError:
    return ConfigError(
        f"unknown operation {name!r}; expected one of {', '.join(OPERATIONS)} (aliases such as '+', 'a-b', "
        f"'x^2+y^2' work too), an expression in a and b such as 'a*b + a + b', or a Python function "
        f"'module:function' ({reason})"
    )


def parse_operation(text: str) -> tuple[str, Optional[Expr]]:
    """(canonical op, expression tree or None) for the text of an operation: a built-in name or
    alias (tree None), ``'module:function'`` (kept as given, tree None) or an expression (its
    printed form and tree, or the built-in it equals). Raises ConfigError listing the valid forms."""
    if not isinstance(text, str):
        raise ConfigError(f"operation name must be a string, got {type(text).__name__}")
    found = _builtin(text)
    if found is not None:
        return found, None
    if is_import_path(text):
        return text.strip(), None
    readable = text.replace("²", "^2").replace("³", "^3").translate(str.maketrans("xyXY", "abab"))
    try:
        tree = parse_arithmetic(readable, "the operation")
    except ConfigError as error:
        compact = "".join(text.lower().split())
        # Formula aliases with implicit products ('xy', 'a³+ab') are not expressions; only those fall back.
        found = _FORMULA_ALIASES.get(_formula_key(compact)) if re.search(r"[abxy][abxy]", compact) else None
        if found is not None:
            return found, None
        raise _unknown(text, str(error)) from None
    found = _BUILTIN_TREES.get(_normal(tree))
    return (found, None) if found is not None else (render(tree), tree)


def resolve_operation(name: str) -> str:
    """The canonical name of a built-in operation given its name or an alias (or an expression
    equal to it). Raises ConfigError listing the valid names if ``name`` is none of them."""
    found, tree = parse_operation(name)
    if found not in OPERATIONS:
        raise _unknown(name, "this is not a built-in operation")
    return found


def smallest_factor(n: int) -> int | None:
    """The smallest proper divisor of n ≥ 2 (trial division up to √n), or None when n is prime."""
    return next((d for d in range(2, math.isqrt(n) + 1) if n % d == 0), None)


def is_prime(n: int) -> bool:
    """Whether the integer n is prime."""
    return n >= 2 and smallest_factor(n) is None


@dataclass(frozen=True)
class ModularTask:
    """Learn c = a ∘ b mod p from a fraction of all pairs.

    A built-in ``op`` given by alias is stored under its canonical name, and an expression in its
    printed form, so ``ModularTask(op="a+b") == ModularTask(op="add")``.
    """

    family: ClassVar[str] = "modular"
    domain: ClassVar[str] = "residues"

    p: int = 113
    """The modulus, ≥ 2; must be prime for ``div``. Tokens 0..p−1 are residues, token p is ``=``."""
    op: Union[str, UserFunction] = "add"
    """A built-in operation by name or alias, an expression in a and b, ``'module:function'`` (module
    docstring), or a function f(a, b, p) -> int."""
    train_fraction: float = 0.3
    """Fraction of the valid pairs used for training, in (0, 1]; floor(fraction · N) pairs."""
    split_seed: int = 0
    """Seed of the train/test split (independent of any model seed)."""
    split: str = "random"
    """How the pairs are shuffled before the first floor(fraction · N) become the training set:
    'random' (``torch.randperm`` seeded by ``split_seed``) or 'paper' (the paper's code:
    ``random.seed(split_seed); random.shuffle(pairs)`` on the pairs in a-major order, which gives
    the paper's exact train/test pairs for p² pairs); ``tasks.common.train_test_split``. A config.json
    written before this field reads as 'random', the split it trained with."""
    expression: Optional[Expr] = field(default=None, init=False, repr=False, compare=False)
    """The parsed tree when ``op`` is an expression (derived from ``op``, not a field of its own)."""
    function: Optional[UserFunction] = field(default=None, init=False, repr=False, compare=False)
    """The user function ``op`` names or is (derived from ``op``)."""

    def __post_init__(self) -> None:
        check_int("p", self.p, 2, MAX_P)
        if isinstance(self.op, str):
            canonical, tree = parse_operation(self.op)
            object.__setattr__(self, "op", canonical)
            object.__setattr__(self, "expression", tree)
            divides = OPERATIONS[canonical].needs_field if canonical in OPERATIONS else \
                tree is not None and "/" in canonical
            if divides and not is_prime(self.p):
                divisor = smallest_factor(self.p)
                raise ConfigError(
                    f"operation {self.op!r} divides, which needs a field, so p must be prime; got p = {self.p} = "
                    f"{divisor} × {self.p // divisor}"
                )
            if canonical not in OPERATIONS and tree is None:
                object.__setattr__(self, "function", import_function(canonical, "operation"))
        elif callable(self.op):
            object.__setattr__(self, "function", self.op)
        else:
            raise ConfigError(
                f"op must be an operation name, an expression or a function f(a, b, p) -> int, "
                f"got {type(self.op).__name__}"
            )
        check_train_fraction(self.train_fraction)
        check_seed("split_seed", self.split_seed)
        check_split(self.split)

    @property
    def op_name(self) -> str:
        """The canonical operation name, the expression, the import path, or a user function's ``__name__``."""
        return self.op if isinstance(self.op, str) else getattr(self.op, "__name__", "user_function")

    @property
    def formula(self) -> str:
        """The label as a formula in a and b where one is known, else the operation's name."""
        return OPERATIONS[self.op].formula if self.op in OPERATIONS else self.op_name

    @property
    def name(self) -> str:
        """E.g. 'a + b mod 113'."""
        return f"{self.formula} mod {self.p}"

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

    def operand_names(self) -> tuple[str, ...]:
        """('a', 'b')."""
        return ("a", "b")

    def dataset(self) -> "ModularData":
        """``modular_dataset(self)``."""
        return modular_dataset(self)


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

    N = p² pairs (fewer when the operation divides: ``div`` leaves out b = 0, an expression every
    pair where a divisor is 0), ordered a-major; the split is
    ``train_test_split(N, task.train_fraction, task.split_seed, task.split)``. Raises ConfigError if a user
    function returns anything but an int in [0, p).
    """
    if not isinstance(task, ModularTask):
        raise ConfigError(f"modular_dataset expects a ModularTask, got {type(task).__name__}")
    p = task.p
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if task.op in OPERATIONS:
        operation = OPERATIONS[task.op]
        if operation.needs_field:
            a, b = a[b != 0], b[b != 0]
        labels = operation.compute(a, b, p)
    elif task.expression is not None:
        values, defined = evaluate(task.expression, {"a": a.numpy(), "b": b.numpy()}, p)
        keep = torch.from_numpy(defined)
        a, b, labels = a[keep], b[keep], torch.from_numpy(values)[keep]
    else:
        labels = _user_labels(task.function, task.op_name, a, b, p)
    train_idx, test_idx = train_test_split(a.shape[0], task.train_fraction, task.split_seed, task.split)
    return ModularData(torch.stack([a, b], dim=1), labels, train_idx, test_idx, p, p, task)
