"""``search_programs`` end to end: known targets at their known sizes, sparse parity, no-fit,
the cost guards (refusal before the work, 'stopped' by the per-level guard) and bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest

import progsynth.search.enumerate as enumerate_module
from progsynth.errors import ConfigError
from progsynth.search import arithmetic_grammar, boolean_grammar, search_programs
from progsynth.search.engine import DEFAULT_MAX_CANDIDATES, DEFAULT_MAX_MEMORY_BYTES
from progsynth.search.enumerate import enumerate_programs
from progsynth.search.hashing import KEYSET_CLAIM_BYTES
from progsynth.search.kernels import kernel_for
from progsynth.tasks.expression import evaluate, parse_arithmetic, parse_boolean, size, variables

P = 113


def _pairs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, P, n), "b": rng.integers(0, P, n)}


# ---- known targets ------------------------------------------------------------------------------
@pytest.mark.parametrize("target, known_size", [
    ("a + b", 3), ("a - b", 3), ("a * b", 3), ("a^2 + b^2", 5), ("a * b + a + b", 7),
    ("(a + b)^2 - b", 6), ("a^3 + a * b + b", 8),
])
def test_known_target_found_at_its_size_and_generalises(target, known_size):
    tree = parse_arithmetic(target)
    assert size(tree) == known_size
    train, query = _pairs(20, seed=known_size), _pairs(300, seed=100 + known_size)
    labels, truth = evaluate(tree, train, P)[0], evaluate(tree, query, P)[0]
    result = search_programs(arithmetic_grammar(P), train, labels, known_size, query_inputs=query,
                             query_labels=truth)
    assert result.verdict_kind == "found", result.verdict
    assert result.map_size == known_size
    assert all(s.consistent == 0 for s in result.sizes[:known_size - 1])
    assert result.map_heldout_accuracy == 1.0 and result.mixture_heldout_accuracy == 1.0
    np.testing.assert_array_equal(evaluate(result.map_program, query, P)[0], truth)


def test_sparse_parity_returns_the_planted_subset():
    n_bits, planted = 20, (3, 11, 17)
    rng = np.random.default_rng(0)
    bits = rng.random((300, n_bits)) < 0.5
    env = {f"x{i}": bits[:, i] for i in range(n_bits)}
    labels = np.bitwise_xor.reduce(bits[:, planted], axis=1)
    result = search_programs(boolean_grammar(n_bits, gates=("xor",)), env, labels, 2 * len(planted) - 1)
    assert result.verdict_kind == "found", result.verdict
    assert result.map_size == 2 * len(planted) - 1
    assert variables(result.map_program) == {f"x{i}" for i in planted}
    assert variables(parse_boolean(result.map_text, n_bits)) == {f"x{i}" for i in planted}
    assert [s.kept for s in result.sizes][1::2] == [0] * (len(planted) - 1)  # even sizes: nothing new


def test_random_labels_are_no_fit_with_the_true_best_partial_fit():
    train = _pairs(30, seed=5)
    labels = np.random.default_rng(6).integers(0, P, 30)
    grammar = arithmetic_grammar(P)
    result = search_programs(grammar, train, labels, 4)
    assert result.verdict_kind == "no-fit" and result.map_program is None
    assert result.stopped_at is None and "no program" in result.verdict
    best = result.best_fit
    assert best is not None and best.total == 30
    assert best.correct == int(np.count_nonzero(evaluate(best.program, train, P)[0] == labels))
    assert best.size == size(best.program) and best.bits == pytest.approx(grammar.description_bits(best.program))
    # No program up to size 4 gets more right: check every kept behaviour from scratch.
    kernel = kernel_for(grammar, train)
    found = enumerate_programs(grammar, kernel, kernel.target_row(labels), 4, DEFAULT_MAX_CANDIDATES,
                               DEFAULT_MAX_MEMORY_BYTES, 1000)
    most = max(int(np.count_nonzero(evaluate(found.table.expr_of(k), train, P)[0] == labels))
               for k in range(len(found.table.refs)))
    assert best.correct >= most  # the last level is not stored, so the best may lie there


# ---- guards -------------------------------------------------------------------------------------
def test_a_huge_bound_is_refused_before_the_work():
    train = _pairs(20, seed=0)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"max_size 30 would evaluate about [0-9.e+]+ candidate programs") as info:
        search_programs(arithmetic_grammar(P), train, train["a"], 30)
    assert time.perf_counter() - started < 5.0
    assert "\n" not in str(info.value) and "max_candidates" in str(info.value)


def test_a_small_candidate_budget_is_refused_with_the_estimate():
    # The budget is below the pilot: the estimate comes once the budget would be passed, and
    # refuses (rather than the search stopping part way), having evaluated at most the budget.
    train = _pairs(20, seed=0)
    seen: list[int] = []
    with pytest.raises(ConfigError, match=r"max_size 8 would evaluate about .* the limit is 1e\+04"):
        search_programs(arithmetic_grammar(P), train, train["a"], 8, max_candidates=10_000,
                        progress=lambda size, candidates, kept: seen.append(candidates))
    assert seen and max(seen) <= 10_000


def test_a_small_memory_budget_is_refused():
    train = _pairs(20, seed=0)
    with pytest.raises(ConfigError, match=r"GiB .*max_memory_bytes"):
        search_programs(arithmetic_grammar(P), train, train["a"], 6, max_memory_bytes=1_000_000)


def test_per_level_guard_stops_when_the_estimate_was_too_low(monkeypatch):
    # With the pilot ending after size 2 the growth read off sizes 1-2 (4 → 6 kept) is far below
    # the real one, so the estimate is low, passes the budget, and the exact per-level count stops
    # the search instead.
    monkeypatch.setattr(enumerate_module, "PILOT_CANDIDATES", 15)
    grammar, train = arithmetic_grammar(P), _pairs(20, seed=0)
    labels = evaluate(parse_arithmetic("a * b + a + b"), train, P)[0]
    kernel = kernel_for(grammar, train)
    full = enumerate_programs(grammar, kernel, kernel.target_row(labels), 7, DEFAULT_MAX_CANDIDATES,
                              DEFAULT_MAX_MEMORY_BYTES, 1000)
    assert full.estimate.exact_up_to == 2
    assert full.estimate.candidates < full.candidates  # the premise: an under-estimate
    budget = int(full.estimate.candidates) + 1
    result = search_programs(grammar, train, labels, 7, max_candidates=budget)
    assert result.verdict_kind == "stopped", result.verdict
    assert result.stopped_at is not None and 2 < result.stopped_at <= 7
    assert result.programs_enumerated <= budget
    assert [s.to_dict() for s in result.sizes] == [s.to_dict() for s in full.counts[:result.stopped_at - 1]]
    assert f"stopped before size {result.stopped_at}" in result.verdict and "max_candidates" in result.verdict
    assert result.best_fit is not None


def test_memory_guard_while_a_level_runs_stops_the_search(monkeypatch):
    # The estimate's verdict is bypassed (its memory model would refuse first); the running guard
    # must then stop the search at the level that outgrows the budget.
    monkeypatch.setattr(enumerate_module, "_refusal", lambda *args: None)
    train = _pairs(20, seed=0)
    budget = KEYSET_CLAIM_BYTES + 400_000
    result = search_programs(arithmetic_grammar(P), train, train["a"] * 3 % P, 8, max_memory_bytes=budget)
    assert result.verdict_kind == "stopped" and "max_memory_bytes" in result.verdict
    assert 1 < result.stopped_at <= 8 and len(result.sizes) == result.stopped_at - 1


# ---- bad input ----------------------------------------------------------------------------------
def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_input_names_are_named():
    train = _pairs(5, seed=0)
    with pytest.raises(ConfigError) as info:
        search_programs(arithmetic_grammar(P), {"a": train["a"], "c": train["b"]}, train["a"], 3)
    message = _one_line(info)
    assert "'c'" in message and "'b'" in message


def test_values_out_of_range_are_named():
    train = _pairs(5, seed=0)
    train["b"][2] = P
    with pytest.raises(ConfigError) as info:
        search_programs(arithmetic_grammar(P), train, train["a"], 3)
    assert "113" in _one_line(info) and "'b'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        search_programs(arithmetic_grammar(P), _pairs(5, 0), np.array([1, 2, -3, 4, 5]), 3)
    assert "-3" in _one_line(info)
    with pytest.raises(ConfigError) as info:
        search_programs(boolean_grammar(2), {"x0": np.array([0, 1]), "x1": np.array([2, 0])}, np.array([0, 1]), 3)
    assert "2" in _one_line(info)


def test_labels_length_mismatch_is_named():
    train = _pairs(5, seed=0)
    with pytest.raises(ConfigError) as info:
        search_programs(arithmetic_grammar(P), train, np.arange(4), 3)
    message = _one_line(info)
    assert "4" in message and "5" in message
    with pytest.raises(ConfigError) as info:
        search_programs(arithmetic_grammar(P), train, train["a"], 3, query_inputs=_pairs(7, 1),
                        query_labels=np.arange(6))
    assert "6" in _one_line(info) and "7" in str(info.value)


def test_grammar_errors_name_the_value():
    with pytest.raises(ConfigError) as info:
        arithmetic_grammar(100)
    assert "100" in _one_line(info) and "div" in str(info.value)
    arithmetic_grammar(100, ops=("add", "mul"))  # fine without division
    with pytest.raises(ConfigError) as info:
        boolean_grammar(3, gates=("and", "nand"))
    assert "'nand'" in _one_line(info)
    with pytest.raises(ConfigError) as info:
        arithmetic_grammar(P, constants=(1, 200))
    assert "200" in _one_line(info)
    with pytest.raises(ConfigError) as info:
        arithmetic_grammar(P, weights={"pow9": 1.0})
    assert "'pow9'" in _one_line(info)
    with pytest.raises(ConfigError) as info:
        arithmetic_grammar(P, weights={"mul": -1.0})
    assert "-1.0" in _one_line(info)


@pytest.mark.parametrize("kwargs, named", [
    (dict(max_size=0), "max_size = 0"),
    (dict(max_size=3, max_candidates=0), "max_candidates = 0"),
    (dict(max_size=3, max_consistent=2.5), "max_consistent = 2.5"),
])
def test_bad_bounds_are_named(kwargs, named):
    train = _pairs(5, seed=0)
    with pytest.raises(ConfigError) as info:
        search_programs(arithmetic_grammar(P), train, train["a"], **kwargs)
    assert named in _one_line(info)
