"""Boolean-function tasks: every form of function, checked against direct computation."""

import itertools

import numpy as np
import pytest
import torch

from progsynth.errors import ConfigError
from progsynth.tasks import make_task
from progsynth.tasks.boolean_functions import random_circuit


def strings(n):
    return [list(bits) for bits in itertools.product([0, 1], repeat=n)]


def labels(**values):
    data = make_task("boolean", **values).dataset()
    return data.operands.tolist(), data.labels.tolist()


def test_majority():
    rows, ys = labels(n_bits=5, function="majority")
    assert rows == strings(5)
    assert ys == [int(sum(r) > 2.5) for r in rows]


def test_comparator_reads_two_numbers_most_significant_bit_first():
    rows, ys = labels(n_bits=6, function="comparator")
    number = lambda bits: int("".join(map(str, bits)), 2)  # noqa: E731
    assert ys == [int(number(r[:3]) > number(r[3:])) for r in rows]


def test_truth_table_entry_r_labels_the_rth_string():
    table = "0110100110010110"
    rows, ys = labels(n_bits=4, function=f"table:{table}")
    assert ys == [int(c) for c in table]


def test_circuit_formula():
    rows, ys = labels(n_bits=3, function="circuit:x0 & x1 | ~x2")
    assert ys == [int((a and b) or not c) for a, b, c in rows]


def test_user_function_by_import_path():
    rows, ys = labels(n_bits=3, function="user_functions:first_two_agree")
    assert ys == [int(r[0] == r[1]) for r in rows]


def test_random_circuit_matches_a_wire_by_wire_evaluation_and_depends_on_the_seed():
    rows, ys = labels(n_bits=5, function="random-circuit:9", seed=4)
    circuit = random_circuit(5, 9, torch.Generator().manual_seed(4))
    assert len(circuit.gates) == 9
    expected = []
    for row in rows:
        wires = [bool(b) for b in row]
        for name, ins in circuit.gates:
            x = [wires[i] for i in ins]
            wires.append({"and": lambda: x[0] and x[1], "or": lambda: x[0] or x[1], "xor": lambda: x[0] != x[1],
                          "not": lambda: not x[0]}[name]())
        expected.append(int(wires[-1]))
    assert ys == expected
    tables = {tuple(labels(n_bits=5, function="random-circuit:9", seed=s)[1]) for s in range(6)}
    assert len(tables) > 1


def test_sampled_strings_are_deterministic():
    first = make_task("boolean", n_bits=30, function="majority", n_samples=200).dataset()
    again = make_task("boolean", n_bits=30, function="majority", n_samples=200).dataset()
    assert torch.equal(first.operands, again.operands) and first.operands.shape == (200, 30)
    assert np.array_equal(first.labels.numpy(), (first.operands.sum(1) > 15).long().numpy())


@pytest.mark.parametrize("values, message", [
    ({"function": "median"}, "unknown Boolean function 'median'; expected one of majority, comparator"),
    ({"n_bits": 5, "function": "comparator"}, "n_bits must be even; got 5"),
    ({"n_bits": 2, "function": "table:011"}, "needs 2.2 = 4 characters 0 or 1, got 3"),
    ({"n_bits": 2, "function": "circuit:x0 & x3"}, "reads bit x3"),
    ({"function": "random-circuit:many"}, "needs a number of gates"),
    ({"function": "user_functions:missing"}, "has no function 'missing'"),
    ({"function": "user_functions:not_callable"}, "has no function 'not_callable'"),
    ({"function": "no_such_module:f"}, "cannot import module 'no_such_module'"),
    ({"n_bits": 20}, "too many to enumerate"),
])
def test_errors_name_the_bad_value(values, message):
    with pytest.raises(ConfigError, match=message):
        make_task("boolean", **values)


def test_a_user_function_returning_a_non_bit_is_named():
    with pytest.raises(ConfigError, match="returned 2 at bits .*expected 0 or 1"):
        make_task("boolean", n_bits=2, function="user_functions:not_a_bit").dataset()
