"""The expression languages: parse, print, evaluate, and errors that point at the problem."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progsynth.errors import ConfigError
from progsynth.tasks.expression import (Const, Op, Pow, Var, evaluate, parse_arithmetic, parse_boolean, render,
                                        size, variables)

P = 13
A, B = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
A, B = A.ravel(), B.ravel()


def arithmetic_trees(max_leaves: int = 6) -> st.SearchStrategy:
    leaves = st.one_of(st.sampled_from([Var("a"), Var("b")]), st.integers(0, 20).map(Const))

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            st.tuples(st.sampled_from(["add", "sub", "mul", "div"]), children, children).map(
                lambda t: Op(t[0], (t[1], t[2]))),
            st.tuples(children, st.integers(0, 5)).map(lambda t: Pow(t[0], t[1])),
            children.map(lambda c: Op("neg", (c,))),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def boolean_trees() -> st.SearchStrategy:
    leaves = st.one_of(st.integers(0, 3).map(lambda i: Var(f"x{i}")), st.sampled_from([Const(0), Const(1)]))

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            st.tuples(st.sampled_from(["and", "or", "xor"]), children, children).map(lambda t: Op(t[0], (t[1], t[2]))),
            children.map(lambda c: Op("not", (c,))),
        )

    return st.recursive(leaves, extend, max_leaves=6)


def direct(expr, a: int, b: int) -> int | None:
    """Python's own arithmetic on one pair (None where a divisor is 0)."""
    if isinstance(expr, Var):
        return a if expr.name == "a" else b
    if isinstance(expr, Const):
        return expr.value % P
    if isinstance(expr, Pow):
        base = direct(expr.base, a, b)
        return None if base is None else pow(base, expr.exponent, P)
    args = [direct(x, a, b) for x in expr.args]
    if None in args:
        return None
    if expr.name == "neg":
        return -args[0] % P
    x, y = args
    if expr.name == "div":
        return None if y == 0 else x * pow(y, -1, P) % P
    return {"add": x + y, "sub": x - y, "mul": x * y}[expr.name] % P


@settings(max_examples=150, deadline=None)
@given(arithmetic_trees())
def test_arithmetic_prints_and_reads_back_to_the_same_tree(tree):
    assert parse_arithmetic(render(tree)) == tree


@settings(max_examples=150, deadline=None)
@given(boolean_trees())
def test_boolean_prints_and_reads_back_to_the_same_tree(tree):
    assert parse_boolean(render(tree), 4) == tree


@settings(max_examples=100, deadline=None)
@given(arithmetic_trees(max_leaves=4))
def test_evaluation_matches_python_arithmetic_and_marks_zero_divisors(tree):
    values, defined = evaluate(tree, {"a": A, "b": B}, P)
    for a, b, value, ok in zip(A, B, values, defined):
        expected = direct(tree, int(a), int(b))
        assert ok == (expected is not None)
        if ok:
            assert value == expected


@settings(max_examples=100, deadline=None)
@given(boolean_trees())
def test_boolean_evaluation_matches_python(tree):
    bits = np.array([[(r >> (3 - i)) & 1 for i in range(4)] for r in range(16)], dtype=bool)
    env = {f"x{i}": bits[:, i] for i in range(4)}
    values, defined = evaluate(tree, env)
    assert defined.all()

    def ev(e, row):
        if isinstance(e, Var):
            return bool(row[int(e.name[1:])])
        if isinstance(e, Const):
            return bool(e.value)
        xs = [ev(x, row) for x in e.args]
        return {"and": lambda: xs[0] and xs[1], "or": lambda: xs[0] or xs[1], "xor": lambda: xs[0] != xs[1],
                "not": lambda: not xs[0]}[e.name]()

    assert values.tolist() == [ev(tree, row) for row in bits]


@pytest.mark.parametrize("text, printed, nodes", [
    ("a*b + a + b", "a * b + a + b", 7),
    ("(a+b)^2 - b", "(a + b)^2 - b", 6),
    ("a**3+a*b", "a^3 + a * b", 6),
    ("-a^2", "-a^2", 3),
    ("a - (b - a)", "a - (b - a)", 5),
])
def test_precedence_and_printing(text, printed, nodes):
    tree = parse_arithmetic(text)
    assert render(tree) == printed
    assert size(tree) == nodes


def test_boolean_words_and_symbols_agree():
    assert parse_boolean("not x0 or x1 and x2", 3) == parse_boolean("~x0 | x1 & x2", 3)
    assert variables(parse_boolean("x0 ^ (x2 & 1)", 3)) == {"x0", "x2"}


@pytest.mark.parametrize("text, message", [
    ("a+", "an operand is missing at position 2"),
    ("a+c", "unknown name 'c' at position 2"),
    ("2^a", "literal integer exponent"),
    ("a^2^3", "with parentheses"),
    ("(a+b", "closing parenthesis is missing at position 4"),
    ("a $ b", r"unexpected character '\$' at position 2"),
    ("", "empty"),
    ("a b", "unexpected 'b' after a complete expression"),
])
def test_arithmetic_errors_point_at_the_problem(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_arithmetic(text)
    assert "\n" not in str(info.value) and "expected a, b, integers" in str(info.value)


def test_boolean_errors():
    with pytest.raises(ConfigError, match="reads bit x5, but the inputs have 3 bits"):
        parse_boolean("x0 & x5", 3)
    with pytest.raises(ConfigError, match="0 or 1, got 2"):
        parse_boolean("x0 & 2", 3)
    with pytest.raises(ConfigError, match="unknown name 'y'"):
        parse_boolean("x0 & y", 3)
