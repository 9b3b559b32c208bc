"""The reverse-derivative category over Z2: packing, generators, composition, circuits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from progsynth.core.boolean import (
    GATES,
    Circuit,
    Packed,
    brute_force_reverse_derivative,
    copy,
    discard,
    gate,
    identity,
    pack,
    parity,
    tail_mask,
    unpack,
    wires,
)
from progsynth.core.lens import Bits
from progsynth.errors import ConfigError, LensTypeError


def all_inputs_and_changes(k: int, m: int) -> tuple[Packed, Packed]:
    """Every (x, d) in {0,1}^k × {0,1}^m as one batch of 2^(k+m) examples."""
    rows = np.array(list(itertools.product([0, 1], repeat=k + m)), dtype=bool).reshape(-1, k + m)
    return pack(rows[:, :k]), pack(rows[:, k:])


def assert_matches_brute_force(lens, k: int, m: int) -> None:
    x, d = all_inputs_and_changes(k, m)
    expected = brute_force_reverse_derivative(lens.get, x, d)
    assert np.array_equal(unpack(lens.put(x, d)), unpack(expected)), lens.name


# ---------------------------------------------------------------------------------------- packing


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 130, 1000])
@pytest.mark.parametrize("w", [1, 3])
def test_pack_unpack_round_trip(n, w):
    bits = np.random.default_rng(n + w).random((n, w)) < 0.5
    words = pack(bits)
    assert words.dtype == np.uint64 and words.shape == (w, -(-n // 64)) and words.n == n
    assert np.array_equal(unpack(words), bits)
    assert np.array_equal(unpack(np.asarray(words), n), bits)  # plain words with an explicit n
    if n % 64:
        assert not (words[:, -1] & ~tail_mask(n)).any()  # padding bits are zero


def test_pack_layout_is_little_endian_64_examples_per_word():
    bits = np.zeros((130, 2), dtype=bool)
    bits[5, 0] = bits[64, 0] = bits[129, 1] = True
    words = pack(bits)
    assert words[0, 0] == 1 << 5 and words[0, 1] == 1 and words[1, 2] == 2
    assert np.array_equal(pack(bits.astype(np.int64)), words)  # 0/1 integers pack the same


def test_tail_mask_and_parity():
    assert tail_mask(1) == 1 and tail_mask(70) == 63 and tail_mask(64) == tail_mask(128) == 2**64 - 1
    bits = np.zeros((100, 2), dtype=bool)
    bits[:7, 0] = True
    bits[:64, 1] = True
    assert parity(pack(bits)).tolist() == [True, False]


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 2)), np.array([[0, 2]]), np.zeros(3, dtype=bool), [[0, 1]], torch.zeros(2, 2)]
)
def test_pack_rejects_non_bits(bad):
    with pytest.raises(LensTypeError, match="pack expects"):
        pack(bad)


# ------------------------------------------------------------------------------------- generators

EXPECTED_R = {  # REFERENCE §2, written out: R(x, d) per generator
    "xor": lambda x, d: (d, d),
    "and": lambda x, d: (x[1] & d, x[0] & d),
    "or": lambda x, d: (~x[1] & d, ~x[0] & d),
    "not": lambda x, d: (d,),
    "zero": lambda x, d: (),
    "one": lambda x, d: (),
}
FORWARD = {
    "xor": lambda x: x[0] ^ x[1],
    "and": lambda x: x[0] & x[1],
    "or": lambda x: x[0] | x[1],
    "not": lambda x: ~x[0],
    "zero": lambda x: False,
    "one": lambda x: True,
}


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_forward_and_reverse_derivative_on_every_input(name):
    lens = gate(name)
    k = GATES[name].arity
    assert lens.dom == Bits(k) and lens.cod == Bits(1)
    x, d = all_inputs_and_changes(k, 1)
    xs, ds = unpack(x).T, unpack(d)[:, 0]
    assert np.array_equal(unpack(lens.get(x))[:, 0], np.broadcast_to(FORWARD[name](xs), ds.shape))
    expected = np.array(EXPECTED_R[name](xs, ds), dtype=bool).reshape(k, len(ds)).T
    assert np.array_equal(unpack(lens.put(x, d)), expected)
    assert_matches_brute_force(lens, k, 1)


@pytest.mark.parametrize(
    "lens, k, m, expected",
    [
        (copy(), 1, 2, lambda x, d: d[:, [0]] ^ d[:, [1]]),
        (discard(), 1, 0, lambda x, d: np.zeros((len(x), 1), dtype=bool)),
        (wires(3, [2, 0]), 3, 2, lambda x, d: np.stack([d[:, 1], np.zeros(len(x), bool), d[:, 0]], axis=1)),
        (wires(2, [1, 1, 0]), 2, 3, lambda x, d: np.stack([d[:, 2], d[:, 0] ^ d[:, 1]], axis=1)),
        (identity(2), 2, 2, lambda x, d: d),
    ],
    ids=["copy", "discard", "projection", "permute-copy", "identity"],
)
def test_wiring_reverse_derivatives(lens, k, m, expected):
    x, d = all_inputs_and_changes(k, m)
    assert np.array_equal(unpack(lens.put(x, d)), expected(unpack(x), unpack(d)))
    assert_matches_brute_force(lens, k, m)


# ------------------------------------------------------------------------------------ composition

SAFE_LENSES = {
    # (x, y) -> (x ⊕ y, x ∧ y)
    "half adder": (wires(2, [0, 1, 0, 1]) >> gate("xor") @ gate("and"), 2, 2),
    # majority xy ⊕ yz ⊕ xz
    "majority": (wires(3, [0, 1, 1, 2, 0, 2]) >> gate("and") @ gate("and") @ gate("and")
                 >> gate("xor") @ identity(1) >> gate("xor"), 3, 1),
    # (s, a, b) -> s ? b : a = (¬s ∧ a) ⊕ (s ∧ b)
    "multiplexer": (wires(3, [0, 1, 0, 2]) >> (gate("not") @ identity(1) >> gate("and")) @ gate("and")
                    >> gate("xor"), 3, 1),
    # (x, y, z) -> (¬(x ∨ y), z ∧ 1, 0)
    "nor and constants": (identity(2) @ (identity(1) @ gate("one") >> gate("and")) @ gate("zero")
                          >> (gate("or") >> gate("not")) @ identity(2), 3, 3),
    "double negation": (gate("not") >> gate("not"), 1, 1),
}


@pytest.mark.parametrize("name", sorted(SAFE_LENSES))
def test_compositional_reverse_derivative_of_safe_lenses_matches_brute_force(name):
    lens, k, m = SAFE_LENSES[name]
    assert lens.dom == Bits(k) and lens.cod == Bits(m)
    assert_matches_brute_force(lens, k, m)


def test_compositions_compute_the_right_functions():
    x, _ = all_inputs_and_changes(3, 0)
    xs = unpack(x)
    majority = unpack(SAFE_LENSES["majority"][0].get(x))[:, 0]
    assert np.array_equal(majority, xs.sum(axis=1) >= 2)
    mux = unpack(SAFE_LENSES["multiplexer"][0].get(x))[:, 0]
    assert np.array_equal(mux, np.where(xs[:, 0], xs[:, 2], xs[:, 1]))


def test_unsafe_composition_differs_from_brute_force():
    """and(¬x, x) is the constant 0 (derivative 0), but the compositional R is ¬x∧d ⊕ x∧d = d."""
    lens = copy() >> gate("not") @ identity(1) >> gate("and")
    x, d = all_inputs_and_changes(1, 1)
    assert not unpack(lens.get(x)).any()
    assert np.array_equal(unpack(lens.put(x, d)), unpack(d))
    assert not unpack(brute_force_reverse_derivative(lens.get, x, d)).any()


def test_composition_type_errors_name_both_lenses():
    with pytest.raises(LensTypeError, match="and >> and"):
        gate("and") >> gate("and")


# --------------------------------------------------------------------------------------- circuits


def random_safe_netlist(rng, n_inputs: int, n_params: int, n_gates: int, n_outputs: int):
    """A random netlist whose AND/OR gates read signals with disjoint supports (so it is safe)."""
    supports = [{w} for w in range(n_inputs + n_params)]
    gates = []
    while len(gates) < n_gates:
        op = str(rng.choice(["and", "or", "xor", "not", "one", "zero"], p=[0.3, 0.2, 0.3, 0.1, 0.05, 0.05]))
        ins = tuple(int(w) for w in rng.integers(0, len(supports), size=GATES[op].arity))
        if op in ("and", "or") and supports[ins[0]] & supports[ins[1]]:
            continue
        gates.append((op, ins))
        supports.append(set().union(*(supports[w] for w in ins)))
    outputs = rng.choice(len(supports), size=n_outputs, replace=True).tolist()
    return gates, outputs


@pytest.mark.parametrize("seed", range(25))
def test_random_safe_circuits_input_derivative_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    gates, outputs = random_safe_netlist(rng, 4, 0, int(rng.integers(3, 12)), 2)
    circuit = Circuit(4, 0, gates, outputs)
    x, d = all_inputs_and_changes(4, 2)
    theta = circuit.init()
    _, dx = circuit.put(theta, x, d)
    expected = brute_force_reverse_derivative(lambda z: circuit.get(theta, z), x, d)
    assert np.array_equal(unpack(dx), unpack(expected))


@pytest.mark.parametrize("seed", range(15))
def test_circuit_parameter_derivative_is_the_batch_parity_of_the_brute_force_one(seed):
    rng = np.random.default_rng(100 + seed)
    gates, outputs = random_safe_netlist(rng, 3, 4, int(rng.integers(4, 14)), 3)
    circuit = Circuit(3, 4, gates, outputs)
    n = 150  # not a multiple of 64
    x = pack(rng.random((n, 3)) < 0.5)
    d = pack(rng.random((n, 3)) < 0.5)
    theta = circuit.init(rng)
    d_theta, dx = circuit.put(theta, x, d)
    f_theta = circuit.get(theta, x)
    expected = []
    for i in range(circuit.n_params):
        flipped = theta.copy()
        flipped[i] = ~flipped[i]
        expected.append(unpack((f_theta ^ circuit.get(flipped, x)) & d).sum() % 2 == 1)
    assert d_theta.dtype == bool and d_theta.tolist() == expected
    # the same figure from the circuit with θ as per-example inputs ("uncurried"), summed over the batch
    uncurried = Circuit(7, 0, gates, outputs)
    z = pack(np.concatenate([unpack(x), np.broadcast_to(theta, (n, 4))], axis=1))
    per_example = brute_force_reverse_derivative(lambda v: uncurried.get(uncurried.init(), v), z, d)
    assert parity(per_example[3:]).tolist() == expected
    assert np.array_equal(unpack(dx), unpack(per_example[:3]))


def test_circuits_compose_with_boolean_lenses_as_parametric_lenses():
    circuit = Circuit(2, 1, [("and", (0, 2)), ("xor", (3, 1))], [4])
    negated = Circuit(2, 1, [("and", (0, 2)), ("xor", (3, 1)), ("not", (4,))], [5])
    model = copy() @ identity(1) >> wires(3, [0, 2]) >> circuit >> gate("not")
    theta = np.array([True])
    x, d = all_inputs_and_changes(2, 1)
    assert model.dom == Bits(2) and model.cod == Bits(1)
    assert len(model.parts) == 3  # the Boolean lenses fused into one part, then circuit, then not
    assert np.array_equal(model.get(((), theta, ()), x), negated.get(theta, x))
    (_, d_theta, _), dx = model.put(((), theta, ()), x, d)
    expected_theta, expected_x = negated.put(theta, x, d)
    assert np.array_equal(d_theta, expected_theta)
    # x₀ is copied and one copy discarded: R[copy] = d₁ ⊕ 0, the same as the circuit's own
    assert np.array_equal(unpack(dx), unpack(expected_x))


def test_need_input_grad_false_skips_the_input_derivative():
    circuit = Circuit(2, 1, [("and", (0, 2)), ("xor", (3, 1))], [4])
    x, d = all_inputs_and_changes(2, 1)
    _, residual = circuit.forward(np.array([True]), x)
    d_theta, dx = circuit.backward(residual, d, need_input_grad=False)
    assert dx is None and d_theta.shape == (1,)


def test_fan_out_of_a_wire_xor_accumulates():
    # x is output 0 and feeds ¬x, output 1: R = d₁ ⊕ d₂ (copy, then not's R = d)
    circuit = Circuit(1, 0, [("not", (0,))], [0, 1])
    x, d = all_inputs_and_changes(1, 2)
    _, dx = circuit.put(circuit.init(), x, d)
    assert np.array_equal(unpack(dx)[:, 0], unpack(d)[:, 0] ^ unpack(d)[:, 1])


def test_padding_never_leaks():
    # output = ¬x and θ₀; with n = 65 one padding-free parity differs from the padded one
    circuit = Circuit(1, 1, [("not", (0,)), ("one", ())], [2, 1, 3])
    n = 65
    x = pack(np.zeros((n, 1), dtype=bool))
    theta = np.array([True])
    for out in (circuit.get(theta, x), circuit.forward(theta, x)[0]):
        assert out.n == n and out[:, -1].tolist() == [1, 1, 1]  # only the valid bit of word 2
    garbage = Packed(np.full((3, 2), 2**64 - 1, dtype=np.uint64), n)  # d = 1 everywhere, padding too
    d_theta, dx = circuit.put(theta, x, garbage)
    assert d_theta.tolist() == [True]  # parity of 65 ones, not of 128
    assert dx[:, -1].tolist() == [1]
    assert unpack(gate("not").get(x)).all() and gate("not").get(x)[0, -1] == 1
    assert gate("xor").put(pack(np.zeros((n, 2), bool)), garbage[:1])[:, -1].tolist() == [1, 1]


def test_get_with_recycled_rows_in_blocks_equals_forward():
    rng = np.random.default_rng(7)
    gates, outputs = random_safe_netlist(rng, 8, 5, 200, 6)
    gates.append(("and", (0, 1)))  # a dead gate: get skips it
    circuit = Circuit(8, 5, gates, outputs)
    circuit.block_bytes = 8 * circuit._reuse.n_slots * 3  # blocks of 3 words, rounded up to 8: 11 words leave a tail
    assert circuit._reuse.n_slots < circuit.n_wires
    theta = circuit.init(rng)
    x = pack(rng.random((64 * 10 + 5, 8)) < 0.5)
    assert np.array_equal(circuit.get(theta, x), circuit.forward(theta, x)[0])
    empty = pack(np.zeros((0, 8), dtype=bool))
    assert circuit.get(theta, empty).shape == (6, 0)


def test_circuit_init():
    circuit = Circuit(1, 200, [], [0])
    assert not circuit.init().any() and circuit.init().dtype == bool
    assert 50 < circuit.init(np.random.default_rng(0)).sum() < 150
    with pytest.raises(ConfigError, match="numpy Generator"):
        circuit.init(torch.Generator())


@pytest.mark.parametrize(
    "gates, outputs, match",
    [
        ([("nand", (0, 1))], [2], "unknown gate 'nand'"),
        ([("and", (0,))], [2], "gate 0 \\(and \\[0\\]\\) must read 2 wires"),
        ([("not", (2,))], [2], "numbered below its own wire 2"),
        ([("not", (0,))], [3], "output wires"),
    ],
)
def test_malformed_netlists_are_rejected(gates, outputs, match):
    with pytest.raises(ConfigError, match=match):
        Circuit(2, 0, gates, outputs)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.zeros((2, 1)), "float64 array of shape \\(2, 1\\)"),
        (torch.zeros(2, 1, dtype=torch.int64), "got Tensor"),
        (np.zeros((3, 1), dtype=np.uint64), "shape \\(3, 1\\)"),
        (np.zeros((2, 1), dtype=np.int64), "int64"),
        (Packed(np.zeros((2, 1), dtype=np.uint64), 200), "1 words per wire, which cannot hold n = 200 examples"),
    ],
)
def test_boolean_lenses_reject_the_wrong_data(value, match):
    circuit = Circuit(2, 0, [], [0])
    no_params = np.zeros(0, dtype=bool)
    for get in (gate("and").get, (gate("xor") @ identity(0)).get, lambda a: circuit.get(no_params, a),
                lambda a: circuit.forward(no_params, a)):
        with pytest.raises(LensTypeError, match=match):
            get(value)
    with pytest.raises(LensTypeError, match="^and\\b"):  # the message names the lens
        gate("and").get(value)


def test_wrong_parameters_and_changes_are_rejected():
    circuit = Circuit(1, 2, [("and", (0, 1))], [3], name="tiny")
    x = pack(np.ones((3, 1), dtype=bool))
    with pytest.raises(LensTypeError, match="tiny expects parameters θ as a numpy bool array of shape \\(2,\\)"):
        circuit.get(np.zeros(2, dtype=np.int64), x)
    with pytest.raises(LensTypeError, match="tiny expects output change"):
        circuit.put(np.zeros(2, dtype=bool), x, torch.zeros(1, 1))
    with pytest.raises(LensTypeError, match="with 1 words per wire, got 2"):
        circuit.put(np.zeros(2, dtype=bool), x, np.zeros((1, 2), dtype=np.uint64))
