"""Boolean models: the learned lookup table, trained by reverse derivative ascent."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from progsynth.core.boolean import Circuit, brute_force_reverse_derivative, pack, parity, unpack
from progsynth.errors import ConfigError, LensTypeError
from progsynth.models.circuits import exact_match, fit_rda, lookup_table, table_of


def all_patterns(k: int) -> np.ndarray:
    """Every k-bit input, row i being the bits of i, least significant first."""
    return ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(bool)


@pytest.mark.parametrize("k, m", [(1, 1), (2, 3), (4, 3)])
def test_lookup_table_outputs_theta_row_of_the_input_pattern(k, m):
    model = lookup_table(k, m)
    assert model.n_inputs == k and model.n_params == (1 << k) * m and len(model.outputs) == m
    theta = model.init(np.random.default_rng(k + m))
    out = unpack(model.get(theta, pack(all_patterns(k))))
    assert np.array_equal(out, table_of(theta, m))


def test_lookup_table_is_safe_its_derivatives_match_brute_force():
    model, rng = lookup_table(3, 2), np.random.default_rng(0)
    theta = model.init(rng)
    rows = np.array(list(itertools.product([0, 1], repeat=5)), dtype=bool)  # every x and d
    x, d = pack(rows[:, :3]), pack(rows[:, 3:])
    d_theta, dx = model.put(theta, x, d)
    assert np.array_equal(unpack(dx), unpack(brute_force_reverse_derivative(lambda z: model.get(theta, z), x, d)))
    uncurried = Circuit(3 + model.n_params, 0, model.gates, model.outputs)
    z = pack(np.concatenate([rows[:, :3], np.broadcast_to(theta, (len(rows), model.n_params))], axis=1))
    per_example = brute_force_reverse_derivative(lambda v: uncurried.get(uncurried.init(), v), z, d)
    assert np.array_equal(d_theta, parity(per_example[3:]))


def test_one_rda_step_with_batch_size_one_writes_the_label_into_the_table():
    model = lookup_table(2, 2)
    x, y = np.array([[True, False]]), np.array([[False, True]])
    theta = fit_rda(model, x, y)
    expected = np.zeros((4, 2), dtype=bool)
    expected[1] = [False, True]  # pattern of (1, 0) is 1
    assert np.array_equal(table_of(theta, 2), expected)
    assert np.array_equal(table_of(fit_rda(model, x, y, theta=theta), 2), expected)  # no error, no change


def test_rda_pass_remembers_the_last_label_per_pattern():
    model, rng = lookup_table(3, 2), np.random.default_rng(1)
    x, y = rng.random((40, 3)) < 0.5, rng.random((40, 2)) < 0.5
    theta = fit_rda(model, x, y)
    expected = np.zeros((8, 2), dtype=bool)
    for xi, yi in zip(x, y):
        expected[int(xi @ (1 << np.arange(3)))] = yi
    assert np.array_equal(table_of(theta, 2), expected)
    last = {}
    for i, xi in enumerate(x):
        last[int(xi @ (1 << np.arange(3)))] = i
    kept = sorted(last.values())
    assert exact_match(model, theta, x[kept], y[kept]) == 1.0


def test_larger_batches_sum_the_errors_over_the_batch():
    model = lookup_table(1, 1)
    x = np.array([[True], [True], [False]])
    y = np.array([[True], [True], [True]])
    # one batch of three from θ = 0: pattern 1 gets error 1 twice (cancels), pattern 0 once
    assert table_of(fit_rda(model, x, y, batch_size=3), 1).ravel().tolist() == [True, False]
    assert table_of(fit_rda(model, x, y, batch_size=1), 1).ravel().tolist() == [True, True]


def test_exact_match_counts_non_code_words_as_wrong():
    model = lookup_table(1, 2)
    theta = np.array([True, False, False, False])  # pattern 0 → 10, pattern 1 → 00 (unseen)
    x = np.array([[False], [True], [False]])
    y = np.array([[True, False], [False, True], [False, True]])
    assert exact_match(model, theta, x, y) == pytest.approx(1 / 3)
    many = np.zeros((130, 1), dtype=bool)
    assert exact_match(model, theta, many, np.tile([True, False], (130, 1))) == 1.0  # padding ignored


def test_bad_arguments_are_rejected():
    with pytest.raises(ConfigError, match="in_bits must be an integer from 1 to 16, got 0"):
        lookup_table(0, 1)
    model = lookup_table(2, 1)
    with pytest.raises(LensTypeError, match="x must be a \\(examples, 2\\) numpy bool array"):
        fit_rda(model, np.zeros((3, 2)), np.zeros((3, 1), dtype=bool))
    with pytest.raises(LensTypeError, match="x has 3 examples but y has 2"):
        fit_rda(model, np.zeros((3, 2), dtype=bool), np.zeros((2, 1), dtype=bool))
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        fit_rda(model, np.zeros((3, 2), dtype=bool), np.zeros((3, 1), dtype=bool), batch_size=0)
