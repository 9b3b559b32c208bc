"""The posterior and the predictions, checked by re-running the programs with ``expression.evaluate``."""

from __future__ import annotations

import numpy as np
import pytest

from progsynth.search import arithmetic_grammar, boolean_grammar, search_programs
from progsynth.search.engine import DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_MEMORY_BYTES
from progsynth.search.enumerate import BITS_DECIMALS, enumerate_programs
from progsynth.search.kernels import kernel_for
from progsynth.search.posterior import posterior
from progsynth.tasks.expression import evaluate, parse_arithmetic, size

P = 113
WEIGHTS = {"mul": 6.0, "a": 2.0, "pow2": 0.5, "div": 0.3}
"""Non-uniform symbol weights, so that consistent programs of one size differ in bits."""


def _pairs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, P, n), "b": rng.integers(0, P, n)}


def _ambiguous():
    """Two training pairs of a·b: few enough that dozens of programs up to size 8 fit."""
    grammar = arithmetic_grammar(P, weights=WEIGHTS)
    env = _pairs(2, seed=1)
    labels = env["a"] * env["b"] % P
    return grammar, env, labels, 8


def test_every_recorded_consistent_program_fits_and_the_posterior_is_normalised():
    grammar, env, labels, max_size = _ambiguous()
    kernel = kernel_for(grammar, env)
    found = enumerate_programs(grammar, kernel, kernel.target_row(labels), max_size, DEFAULT_MAX_CANDIDATES,
                               DEFAULT_MAX_MEMORY_BYTES, 100_000)
    consistent = found.consistent
    assert len(consistent) > 30 and found.consistent_dropped == 0
    assert sum(c.consistent for c in found.counts) == len(consistent)
    exprs = [found.table.expr(int(s), int(l), int(r))
             for s, l, r in zip(consistent.sym, consistent.left, consistent.right)]
    for expr, bits, n in zip(exprs, consistent.bits, consistent.size):
        values, _ = evaluate(expr, env, P)
        np.testing.assert_array_equal(values, labels)
        assert size(expr) == n
        assert grammar.description_bits(expr) == pytest.approx(bits, abs=1e-9)
    assert len({e for e in exprs}) == len(exprs)  # no program recorded twice

    post = posterior(consistent.bits, consistent.size)
    assert post.mass.sum() == pytest.approx(1.0)
    assert np.all(post.mass > 0)
    expected = 2.0 ** -consistent.bits
    np.testing.assert_allclose(post.mass, expected / expected.sum(), rtol=1e-9)
    fewest = np.round(consistent.bits, BITS_DECIMALS).min()
    assert np.round(post.bits[post.map_index], BITS_DECIMALS) == fewest
    assert consistent.size[post.map_index] == consistent.size[np.round(consistent.bits, BITS_DECIMALS) == fewest].min()
    order = post.order()
    assert order[0] == post.map_index
    assert np.all(np.diff(np.round(post.bits[order], BITS_DECIMALS)) >= 0)

    # Re-running the recorded programs through the table's own evaluator on fresh inputs agrees too.
    query = _pairs(40, seed=2)
    rows = found.table.rows(kernel_for(grammar, query), consistent)
    for expr, row in zip(exprs[:200], rows[:200]):
        np.testing.assert_array_equal(row[:40], evaluate(expr, query, P)[0])


def test_search_result_programs_fit_and_the_map_has_fewest_bits():
    grammar, env, labels, max_size = _ambiguous()
    result = search_programs(grammar, env, labels, max_size)
    assert result.verdict_kind == "found"
    assert result.n_consistent > 30
    for top in result.top_programs:
        tree = parse_arithmetic(top.text)
        np.testing.assert_array_equal(evaluate(tree, env, P)[0], labels)
        assert grammar.description_bits(tree) == pytest.approx(top.bits)
        assert top.bits >= result.map_bits - 1e-9
    np.testing.assert_array_equal(evaluate(result.map_program, env, P)[0], labels)
    assert grammar.description_bits(result.map_program) == pytest.approx(result.map_bits)
    assert result.top_programs[0].text == result.map_text
    masses = [t.mass for t in result.top_programs]
    bits = [round(t.bits, BITS_DECIMALS) for t in result.top_programs]
    assert bits == sorted(bits)  # MAP first, then fewer bits first (so mass never grows)
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(masses, masses[1:]))
    assert 0 < sum(masses) <= 1 + 1e-9
    assert result.map_mass == pytest.approx(result.top_programs[0].mass)
    assert result.evaluations == result.programs_enumerated * 2
    assert result.distinct_behaviours == sum(s.kept for s in result.sizes)


def _brute_mixture(grammar, env, labels, max_size, query):
    """The posterior-predictive prediction computed from scratch: every recorded consistent program
    run on the query inputs with ``evaluate``, its prior mass 2^−bits added to its output value;
    ties as the engine documents them (the MAP's value if tied for the top, else the smallest)."""
    kernel = kernel_for(grammar, env)
    found = enumerate_programs(grammar, kernel, kernel.target_row(labels), max_size, DEFAULT_MAX_CANDIDATES,
                               DEFAULT_MAX_MEMORY_BYTES, 100_000)
    c = found.consistent
    post = posterior(c.bits, c.size)
    n_query = len(next(iter(query.values())))
    scores = np.zeros((n_query, P))
    map_values = None
    for k in range(len(c)):
        values = evaluate(found.table.expr(int(c.sym[k]), int(c.left[k]), int(c.right[k])), query, P)[0]
        scores[np.arange(n_query), values] += post.mass[k]
        if k == post.map_index:
            map_values = values
    top = scores.max(axis=1, keepdims=True)
    tied = scores >= top * (1 - 1e-9)
    smallest = tied.argmax(axis=1)
    return np.where(tied[np.arange(n_query), map_values], map_values, smallest), map_values


def _one_random_pair():
    """One training pair with a random label, uniform weights: a handful of size-5 programs of
    equal bits fit, the MAP is just the first of them and the mixture disagrees with it nearly
    everywhere, with ties between output values (the tie rule is exercised)."""
    rng = np.random.default_rng(2)
    env = {"a": rng.integers(0, P, 1), "b": rng.integers(0, P, 1)}
    return arithmetic_grammar(P), env, rng.integers(0, P, 1), 5


@pytest.mark.parametrize("setup", [_ambiguous, _one_random_pair])
def test_mixture_and_map_predictions_match_a_brute_force_posterior(setup):
    grammar, env, labels, max_size = setup()
    query = _pairs(60, seed=3)
    truth = query["a"] * query["b"] % P
    result = search_programs(grammar, env, labels, max_size, query_inputs=query, query_labels=truth)
    assert result.n_query == 60
    assert len(result.mixture_predictions) == 60 and len(result.map_predictions) == 60
    assert 0.0 <= result.map_heldout_accuracy <= 1.0 and 0.0 <= result.mixture_heldout_accuracy <= 1.0
    mixture, map_values = _brute_mixture(grammar, env, labels, max_size, query)
    np.testing.assert_array_equal(result.map_predictions, map_values)
    np.testing.assert_array_equal(result.map_predictions, evaluate(result.map_program, query, P)[0])
    np.testing.assert_array_equal(result.mixture_predictions, mixture)
    if setup is _one_random_pair:
        assert np.count_nonzero(mixture != map_values) > 30
    assert result.map_heldout_accuracy == pytest.approx(np.mean(map_values == truth))
    assert result.mixture_heldout_accuracy == pytest.approx(np.mean(mixture == truth))
    # With query inputs, the top programs are held-out behaviours: the representative's outputs
    # differ between any two listed behaviours, and their masses are sums over distinct programs.
    outputs = {tuple(evaluate(parse_arithmetic(t.text), query, P)[0].tolist()) for t in result.top_programs}
    assert len(outputs) == len(result.top_programs)
    assert sum(t.programs for t in result.top_programs) <= result.n_consistent
    assert sum(t.mass for t in result.top_programs) <= 1 + 1e-9


def test_query_without_labels_predicts_without_accuracy():
    grammar = boolean_grammar(4)
    rng = np.random.default_rng(0)
    bits = rng.random((12, 4)) < 0.5
    env = {f"x{i}": bits[:, i] for i in range(4)}
    labels = bits[:, 0] & ~bits[:, 2]
    query_bits = rng.random((30, 4)) < 0.5
    query = {f"x{i}": query_bits[:, i] for i in range(4)}
    result = search_programs(grammar, env, labels, 4, query_inputs=query)
    assert result.verdict_kind == "found"
    assert result.map_heldout_accuracy is None and result.mixture_heldout_accuracy is None
    assert result.mixture_predictions.dtype == bool and len(result.mixture_predictions) == 30
    np.testing.assert_array_equal(result.map_predictions, evaluate(result.map_program, query)[0])
    masses = [t.mass for t in result.top_programs]
    if result.n_consistent <= 10 and len(result.top_programs) < 10:
        assert sum(masses) == pytest.approx(1.0)
