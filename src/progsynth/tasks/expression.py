"""Two small expression languages, parsed without ``eval``: arithmetic over Z_p and Boolean formulas.

- **Arithmetic in a and b** (``parse_arithmetic``), for ``--op 'a*b + a + b'``: the variables
  ``a`` and ``b``, non-negative integer literals, ``+ - * /``, unary minus, powers ``x^k`` or
  ``x**k`` with a literal exponent k ≥ 0, and parentheses. Usual precedence: power (right
  associative) over unary minus over ``* /`` over ``+ -``.
- **Boolean formulas over input bits** (``parse_boolean``), for a task given by a circuit: the bits
  ``x0``, ``x1``, ..., the constants ``0`` and ``1``, ``~`` or ``!`` (not), ``&`` (and), ``^``
  (xor), ``|`` (or), the words ``not and xor or``, and parentheses; precedence not > and > xor > or,
  as in C.

Both parse to the same small tree: ``Var``, ``Const``, ``Pow`` and ``Op`` nodes, which the program
search (``progsynth.search``) also uses for the programs it finds, so a found program prints, runs
and can be handed back to ``--op``. A tree is evaluated on whole arrays of inputs at once
(``evaluate``). Over Z_p, division is multiplication by the inverse (Fermat; p must be prime); a
zero divisor has no inverse, and ``evaluate`` returns 0 there and marks the input undefined in its
``defined`` mask, so a task can leave such pairs out exactly as ``div`` leaves out b = 0.

Errors are ``ConfigError``\\ s of one line that quote the text, point at the position and list
what the language accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

import numpy as np

from progsynth.errors import ConfigError

__all__ = ["Var", "Const", "Pow", "Op", "Expr", "OPS", "parse_arithmetic", "parse_boolean", "evaluate", "power_mod",
           "render", "size", "variables", "inverses_mod", "ARITHMETIC_HELP", "BOOLEAN_HELP"]

ARITHMETIC_HELP = "a, b, integers, + - * / ^ (or **) and parentheses"
"""What an arithmetic expression may contain (quoted in error messages)."""
BOOLEAN_HELP = "x0, x1, ..., 0, 1, ~ (not), & (and), ^ (xor), | (or) and parentheses"
"""What a Boolean formula may contain (quoted in error messages)."""

MAX_EXPONENT = 1_000
"""Largest literal exponent accepted in ``x^k`` (the power is computed by repeated squaring)."""


@dataclass(frozen=True)
class Var:
    """An input: ``a`` or ``b`` over Z_p, ``x0``, ``x1``, ... over bits."""

    name: str


@dataclass(frozen=True)
class Const:
    """A constant: a residue over Z_p (reduced when evaluated), 0 or 1 over bits."""

    value: int


@dataclass(frozen=True)
class Pow:
    """``base ^ exponent`` over Z_p, the exponent a literal integer ≥ 0 (one node: x² is one symbol)."""

    base: "Expr"
    exponent: int


@dataclass(frozen=True)
class Op:
    """An operation by name (``OPS``) applied to its arguments."""

    name: str
    args: tuple["Expr", ...]


Expr = Union[Var, Const, Pow, Op]


@dataclass(frozen=True)
class OpInfo:
    """How an operation is written and read back: its symbol, arity, binding power and domain."""

    symbol: str
    arity: int
    precedence: int
    """Higher binds tighter; used to print the fewest parentheses."""
    domain: str
    """'zp' (arithmetic mod p) or 'bits'."""
    commutative: bool


OPS: dict[str, OpInfo] = {
    "add": OpInfo("+", 2, 1, "zp", True),
    "sub": OpInfo("-", 2, 1, "zp", False),
    "mul": OpInfo("*", 2, 2, "zp", True),
    "div": OpInfo("/", 2, 2, "zp", False),
    "neg": OpInfo("-", 1, 3, "zp", False),
    "or": OpInfo("|", 2, 1, "bits", True),
    "xor": OpInfo("^", 2, 2, "bits", True),
    "and": OpInfo("&", 2, 3, "bits", True),
    "not": OpInfo("~", 1, 4, "bits", False),
}
"""Every operation of the two languages by name."""

_POW_PRECEDENCE = 4


# ---- tokens -------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(?P<number>\d+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<symbol>\*\*|[-+*/^()&|~!]))")


def _tokens(text: str, what: str, help_text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) triples, kind 'number', 'name' or 'symbol', ending with ('end', '', len)."""
    out, pos = [], 0
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            rest = text[pos:]
            if not rest.strip():
                break
            bad_at = pos + len(rest) - len(rest.lstrip())
            raise ConfigError(f"cannot read {what} {text!r}: unexpected character {text[bad_at]!r} at position "
                              f"{bad_at}; expected {help_text}")
        kind = match.lastgroup
        out.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    """A Pratt parser over one language's operator table."""

    def __init__(self, text: str, what: str, help_text: str, binary: dict[str, tuple[str, int]],
                 prefix: dict[str, tuple[str, int]], variable: re.Pattern[str], words: dict[str, str]):
        if not isinstance(text, str):
            raise ConfigError(f"{what} must be a string, got {type(text).__name__}")
        self.text, self.what, self.help = text, what, help_text
        self.binary, self.prefix, self.variable, self.words = binary, prefix, variable, words
        # Operator words ('and', 'not', ...) read as their symbols.
        self.tokens = [("symbol", words[t.lower()], p) if k == "name" and t.lower() in words else (k, t, p)
                       for k, t, p in _tokens(text, what, help_text)]
        self.i = 0

    def error(self, message: str, position: int) -> ConfigError:
        return ConfigError(f"cannot read {self.what} {self.text!r}: {message} at position {position}; "
                           f"expected {self.help}")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> Expr:
        if self.peek()[0] == "end":
            raise self.error("the expression is empty", 0)
        tree = self.expression(0)
        kind, text, pos = self.peek()
        if kind != "end":
            raise self.error(f"unexpected {text!r} after a complete expression", pos)
        return tree

    def expression(self, min_power: int) -> Expr:
        left = self.operand()
        while True:
            kind, text, pos = self.peek()
            if kind != "symbol" or text not in self.binary:
                return left
            name, power = self.binary[text]
            if power < min_power:
                return left
            self.take()
            if name == "pow":
                left = Pow(left, self.exponent())
                continue
            right = self.expression(power + 1)  # left associative
            left = Op(name, (left, right))

    def exponent(self) -> int:
        kind, text, pos = self.take()
        if kind != "number":
            found = "the end" if kind == "end" else repr(text)
            raise self.error(f"a power needs a literal integer exponent ≥ 0, found {found}", pos)
        if int(text) > MAX_EXPONENT:
            raise self.error(f"exponent {text} is larger than {MAX_EXPONENT}", pos)
        if self.peek()[1] in ("^", "**"):
            _, _, later = self.peek()
            raise self.error("write a power of a power with parentheses, e.g. (a^2)^3", later)
        return int(text)

    def operand(self) -> Expr:
        kind, text, pos = self.take()
        if kind == "end":
            raise self.error("an operand is missing", pos)
        if kind == "number":
            return self.constant(int(text), pos)
        if kind == "name":
            if not self.variable.fullmatch(text):
                raise self.error(f"unknown name {text!r}", pos)
            return Var(text)
        if text == "(":
            inner = self.expression(0)
            closing = self.take()
            if closing[1] != ")":
                raise self.error("a closing parenthesis is missing", closing[2])
            return inner
        if text in self.prefix:
            name, power = self.prefix[text]
            return Op(name, (self.expression(power),))
        raise self.error(f"an operand is missing before {text!r}", pos)

    def constant(self, value: int, pos: int) -> Expr:
        return Const(value)


class _BooleanParser(_Parser):
    def constant(self, value: int, pos: int) -> Expr:
        if value not in (0, 1):
            raise self.error(f"a Boolean constant is 0 or 1, got {value}", pos)
        return Const(value)


_ARITHMETIC_BINARY = {"+": ("add", 1), "-": ("sub", 1), "*": ("mul", 2), "/": ("div", 2),
                      "^": ("pow", 5), "**": ("pow", 5)}
_ARITHMETIC_PREFIX = {"-": ("neg", 3)}  # binds looser than ^: -a^2 is -(a^2)
_BOOLEAN_BINARY = {"|": ("or", 1), "^": ("xor", 2), "&": ("and", 3)}
_BOOLEAN_PREFIX = {"~": ("not", 4), "!": ("not", 4)}
_BOOLEAN_WORDS = {"and": "&", "or": "|", "xor": "^", "not": "~"}


def parse_arithmetic(text: str, what: str = "the expression") -> Expr:
    """The tree of an arithmetic expression in a and b (module docstring); ConfigError if malformed."""
    return _Parser(text, what, ARITHMETIC_HELP, _ARITHMETIC_BINARY, _ARITHMETIC_PREFIX,
                   re.compile(r"[ab]"), {}).parse()


def parse_boolean(text: str, n_bits: int, what: str = "the formula") -> Expr:
    """The tree of a Boolean formula over bits x0..x{n_bits−1} (module docstring); ConfigError if
    malformed or if it names a bit outside that range."""
    tree = _BooleanParser(text, what, BOOLEAN_HELP, _BOOLEAN_BINARY, _BOOLEAN_PREFIX,
                          re.compile(r"x\d+"), _BOOLEAN_WORDS).parse()
    for name in sorted(variables(tree)):
        if int(name[1:]) >= n_bits:
            raise ConfigError(f"{what} {text!r} reads bit {name}, but the inputs have {n_bits} bits "
                              f"(x0 to x{n_bits - 1})")
    return tree


# ---- reading a tree -----------------------------------------------------------------------------
def variables(expr: Expr) -> set[str]:
    """The names of the inputs ``expr`` reads."""
    if isinstance(expr, Var):
        return {expr.name}
    if isinstance(expr, Const):
        return set()
    children = (expr.base,) if isinstance(expr, Pow) else expr.args
    return set().union(*(variables(c) for c in children))


def size(expr: Expr) -> int:
    """The number of nodes (inputs, constants, operations and powers each count one)."""
    if isinstance(expr, (Var, Const)):
        return 1
    children = (expr.base,) if isinstance(expr, Pow) else expr.args
    return 1 + sum(size(c) for c in children)


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Pow):
        return _POW_PRECEDENCE
    if isinstance(expr, Op):
        return OPS[expr.name].precedence
    return 99


def render(expr: Expr) -> str:
    """The expression as text with the fewest parentheses that read back to the same tree
    (``parse_arithmetic(render(e)) == e``; for Boolean trees, ``parse_boolean``)."""
    if isinstance(expr, Var):
        return expr.name
    if isinstance(expr, Const):
        return str(expr.value)
    if isinstance(expr, Pow):
        base = render(expr.base)
        return f"{base if _precedence(expr.base) > _POW_PRECEDENCE else f'({base})'}^{expr.exponent}"
    info = OPS[expr.name]
    if info.arity == 1:
        (arg,) = expr.args
        text = render(arg)
        # ~(x) around any operation; -(...) around sums and products, and around a negation.
        wrap = _precedence(arg) < 99 if info.domain == "bits" else _precedence(arg) <= info.precedence
        return f"{info.symbol}({text})" if wrap else f"{info.symbol}{text}"
    left, right = expr.args
    left_text, right_text = render(left), render(right)
    if _precedence(left) < info.precedence:
        left_text = f"({left_text})"
    if _precedence(right) <= info.precedence or isinstance(right, Op) and right.name == "neg":
        right_text = f"({right_text})"
    return f"{left_text} {info.symbol} {right_text}"


# ---- evaluation ---------------------------------------------------------------------------------
def inverses_mod(p: int) -> np.ndarray:
    """int64 table of b⁻¹ mod p for b = 0..p−1 (b^{p−2} by Fermat, so p must be prime; entry 0 is 0)."""
    return np.array([0] + [pow(v, p - 2, p) for v in range(1, p)], dtype=np.int64)


def power_mod(x: np.ndarray, exponent: int, p: int) -> np.ndarray:
    """x^exponent mod p elementwise by repeated squaring (int64, so p < 2^31)."""
    result = np.ones_like(x) % p
    base = x.copy()
    while exponent:
        if exponent & 1:
            result = result * base % p
        base = base * base % p
        exponent >>= 1
    return result


def evaluate(expr: Expr, env: dict[str, np.ndarray], p: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values, defined) of ``expr`` on arrays of inputs ``env`` (name → array, all one shape).

    With ``p`` (arithmetic), values are int64 residues in [0, p) and ``defined`` is False wherever
    a divisor was 0 (the value there is computed with x / 0 = 0). Without ``p`` (Boolean), the
    inputs and values are bool arrays and ``defined`` is all True.
    """
    shape = np.shape(next(iter(env.values()))) if env else ()
    defined = np.ones(shape, dtype=bool)
    inverse = inverses_mod(p) if p is not None and _has_division(expr) else None

    def ev(e: Expr) -> np.ndarray:
        nonlocal defined
        if isinstance(e, Var):
            if e.name not in env:
                raise ConfigError(f"the expression reads {e.name!r}, which is not an input here; "
                                  f"the inputs are {sorted(env)}")
            value = np.asarray(env[e.name])
            return value.astype(np.int64) % p if p is not None else value.astype(bool)
        if isinstance(e, Const):
            return np.full(shape, e.value % p if p is not None else bool(e.value),
                           dtype=np.int64 if p is not None else bool)
        if isinstance(e, Pow):
            if p is None:
                raise ConfigError("a power is not a Boolean operation")
            return power_mod(ev(e.base), e.exponent, p)
        args = [ev(a) for a in e.args]
        if p is None:
            if OPS[e.name].domain != "bits":
                raise ConfigError(f"{e.name!r} is not a Boolean operation")
            return {"and": lambda x, y: x & y, "or": lambda x, y: x | y, "xor": lambda x, y: x ^ y,
                    "not": lambda x: ~x}[e.name](*args)
        if OPS[e.name].domain != "zp":
            raise ConfigError(f"{e.name!r} is not an operation on Z_p")
        if e.name == "div":
            defined = defined & (args[1] != 0)
            return args[0] * inverse[args[1]] % p
        return {"add": lambda x, y: (x + y) % p, "sub": lambda x, y: (x - y) % p,
                "mul": lambda x, y: x * y % p, "neg": lambda x: (-x) % p}[e.name](*args)

    values = ev(expr)
    return np.broadcast_to(values, shape).copy(), defined


def _has_division(expr: Expr) -> bool:
    if isinstance(expr, (Var, Const)):
        return False
    if isinstance(expr, Pow):
        return _has_division(expr.base)
    return expr.name == "div" or any(_has_division(a) for a in expr.args)
