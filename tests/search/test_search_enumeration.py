"""The enumeration's counts and the prior against a naive enumeration of every expression tree.

The naive side shares nothing with ``progsynth.search`` but the grammar's symbol lists: it builds
every tree of each size from ``progsynth.tasks.expression`` nodes, runs each with ``evaluate``
(whose x / 0 is 0, the search's total division) and counts the value tuples that first appear
at each size. Pruned bottom-up enumeration must find exactly those: a behaviour first seen at
size n only has subtrees whose behaviours are first seen at their own sizes.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progsynth.search import arithmetic_grammar, boolean_grammar, search_programs
from progsynth.search.estimate import level_candidates
from progsynth.search.grammar import Grammar
from progsynth.tasks.expression import Const, Expr, Op, Pow, Var, evaluate, size


def naive_trees(grammar: Grammar, max_size: int) -> list[list[Expr]]:
    """Every tree of sizes 1..max_size (index n − 1), both orders of every binary operation."""
    trees: list[list[Expr]] = [list(grammar.terminals)]
    for n in range(2, max_size + 1):
        level: list[Expr] = []
        for name in grammar.unary:
            for child in trees[n - 2]:
                level.append(Pow(child, int(name[3:])) if name.startswith("pow") else Op(name, (child,)))
        for name in grammar.binary:
            for i in range(1, n - 1):
                for left, right in product(trees[i - 1], trees[n - 2 - i]):
                    level.append(Op(name, (left, right)))
        trees.append(level)
    return trees


def naive_first_seen(grammar: Grammar, env: dict[str, np.ndarray], max_size: int) -> list[int]:
    """Per size, how many value tuples on ``env`` first appear at that size."""
    p = grammar.p if grammar.domain == "zp" else None
    seen: set[tuple] = set()
    counts = []
    for level in naive_trees(grammar, max_size):
        fresh = 0
        for tree in level:
            values, _ = evaluate(tree, env, p)
            key = tuple(values.astype(np.int64).tolist())
            if key not in seen:
                seen.add(key)
                fresh += 1
        counts.append(fresh)
    return counts


def _zp_env(p: int, n: int | None, seed: int) -> dict[str, np.ndarray]:
    if n is None:  # every pair
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        return {"a": a.ravel(), "b": b.ravel()}
    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, p, n), "b": rng.integers(0, p, n)}


def _search_counts(grammar: Grammar, env: dict[str, np.ndarray], max_size: int):
    labels = np.zeros(len(next(iter(env.values()))), dtype=np.int64 if grammar.domain == "zp" else bool)
    return search_programs(grammar, env, labels, max_size).sizes


@pytest.mark.parametrize("p, n_inputs, grammar_kwargs", [
    (7, None, dict(constants=(1,), powers=(2,))),
    (7, 4, dict(constants=(1, 3), powers=(2, 3))),
    (5, None, dict(constants=(0, 1), powers=(2,), ops=("add", "sub", "mul", "div", "neg"))),
    (11, 6, dict(constants=(2,), powers=(3,), ops=("sub", "div"))),
])
def test_kept_counts_match_naive_enumeration_over_zp(p, n_inputs, grammar_kwargs):
    grammar = arithmetic_grammar(p, **grammar_kwargs)
    env = _zp_env(p, n_inputs, seed=p)
    max_size = 6 if n_inputs is None and p == 7 else 5
    expected = naive_first_seen(grammar, env, max_size)
    sizes = _search_counts(grammar, env, max_size)
    assert [s.size for s in sizes] == list(range(1, max_size + 1))
    assert [s.kept for s in sizes] == expected
    kept = [s.kept for s in sizes]
    assert [s.candidates for s in sizes] == [level_candidates(grammar, kept, n) for n in range(1, max_size + 1)]


@pytest.mark.parametrize("gates, constants, max_size", [
    (("and", "or", "xor", "not"), False, 6),
    (("and", "not"), True, 6),
    (("xor",), False, 7),
])
def test_kept_counts_match_naive_enumeration_over_bits(gates, constants, max_size):
    grammar = boolean_grammar(3, gates=gates, constants=constants)
    table = np.array(list(product([False, True], repeat=3)))
    env = {f"x{i}": table[:, i] for i in range(3)}
    expected = naive_first_seen(grammar, env, max_size)
    sizes = _search_counts(grammar, env, max_size)
    assert [s.kept for s in sizes] == expected
    kept = [s.kept for s in sizes]
    assert [s.candidates for s in sizes] == [level_candidates(grammar, kept, n) for n in range(1, max_size + 1)]
    assert sum(kept) <= 2 ** len(table)


def test_naive_trees_have_the_size_of_their_level():
    grammar = arithmetic_grammar(5, constants=(1,), powers=(2,))
    for n, level in enumerate(naive_trees(grammar, 4), start=1):
        assert level and all(size(t) == n for t in level)


# ---- the prior ----------------------------------------------------------------------------------
def test_prior_mass_equals_the_sum_over_every_tree_of_each_size():
    weights = {"a": 3.0, "1": 0.5, "pow2": 2.0, "mul": 0.25, "div": 4.0}
    grammar = arithmetic_grammar(7, constants=(1,), powers=(2,), weights=weights)
    mass = grammar.prior_mass(5)
    for n, level in enumerate(naive_trees(grammar, 5), start=1):
        brute = sum(2.0 ** -grammar.description_bits(t) for t in level)
        assert mass[n - 1] == pytest.approx(brute, rel=1e-12)


def test_prior_mass_of_a_boolean_grammar_matches_the_trees():
    grammar = boolean_grammar(2, gates=("and", "xor", "not"), constants=True, weights={"x1": 5.0, "not": 0.1})
    mass = grammar.prior_mass(5)
    for n, level in enumerate(naive_trees(grammar, 5), start=1):
        assert mass[n - 1] == pytest.approx(sum(2.0 ** -grammar.description_bits(t) for t in level), rel=1e-12)


def _extinction(q0: float, q1: float, q2: float) -> float:
    """The smallest root in [0, 1] of s = q0 + q1 s + q2 s² (the probability that the branching
    process of drawing symbols stops): the total prior mass over all programs."""
    if q2 == 0:
        return 1.0
    a, b, c = q2, q1 - 1.0, q0
    return (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)


@settings(max_examples=60, deadline=None)
@given(
    n_constants=st.integers(0, 3),
    powers=st.lists(st.integers(2, 5), max_size=3, unique=True),
    ops=st.lists(st.sampled_from(["add", "sub", "mul", "div", "neg"]), min_size=0, max_size=5, unique=True),
    raw_weights=st.lists(st.floats(0.01, 100.0), min_size=12, max_size=12),
)
def test_prior_mass_is_a_sub_probability(n_constants, powers, ops, raw_weights):
    grammar = arithmetic_grammar(13, constants=tuple(range(1, n_constants + 1)), ops=ops, powers=powers)
    weights = dict(zip(grammar.symbols, raw_weights))
    grammar = arithmetic_grammar(13, constants=tuple(range(1, n_constants + 1)), ops=ops, powers=powers,
                                 weights=weights)
    assert sum(grammar.probabilities) == pytest.approx(1.0)
    mass = grammar.prior_mass(300)
    assert all(m >= 0 for m in mass)
    assert sum(mass) <= 1.0 + 1e-9
    q = [sum(w for w, a in zip(grammar.probabilities, grammar.arities) if a == k) for k in (0, 1, 2)]
    # The mass of size n decays like rate^n, rate = q1 + 2·sqrt(q0·q2) (the radius of convergence
    # of the size generating function; rate = 1 exactly at criticality, mean arity 1). Where 300
    # sizes leave a negligible tail, the sum is the probability that the branching process stops.
    rate = q[1] + 2 * math.sqrt(q[0] * q[2])
    if rate ** 300 < 1e-9:
        assert sum(mass) == pytest.approx(_extinction(*q), abs=1e-7)


def test_uniform_description_bits_are_size_times_log_symbols():
    grammar = arithmetic_grammar(113)
    tree = Op("add", (Pow(Var("a"), 2), Op("mul", (Const(2), Var("b")))))
    assert grammar.description_bits(tree) == pytest.approx(size(tree) * math.log2(len(grammar.symbols)))


@pytest.mark.parametrize("weights, total", [
    ({"a": 20.0, "b": 20.0}, 1.0),  # mean arity < 1: the process stops surely
    ({"mul": 20.0, "add": 20.0}, None),  # mean arity > 1: it stops with the extinction probability
])
def test_prior_total_off_criticality(weights, total):
    grammar = arithmetic_grammar(13, weights=weights)
    q = [sum(w for w, a in zip(grammar.probabilities, grammar.arities) if a == k) for k in (0, 1, 2)]
    expected = _extinction(*q) if total is None else total
    assert expected < 0.2 or total is not None
    assert sum(grammar.prior_mass(300)) == pytest.approx(expected, abs=1e-9)
