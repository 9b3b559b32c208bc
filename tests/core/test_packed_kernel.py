"""The compiled bit-packed kernel (core/_packed.c) against the numpy backend and plain bools.

Where the kernel was not built (no C compiler at install) these tests skip saying so; under CI
(the CI variable set, as .ci/run does) they fail instead, since that machine has gcc.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from progsynth.core import boolean
from progsynth.core.boolean import GATES, Circuit, pack, unpack
from progsynth.errors import ConfigError

BOOL_UFUNCS = {"xor": np.logical_xor, "and": np.logical_and, "or": np.logical_or}


@pytest.fixture
def kernel():
    """The compiled module; skip (or, under CI, fail) when it was not built."""
    if boolean._kernel is None:
        reason = "the compiled kernel progsynth.core._packed was not built (no C compiler at install?)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    return boolean._kernel


def random_netlist(rng: np.random.Generator, n_inputs: int, n_params: int, n_gates: int, n_outputs: int):
    """Any gates (not only safe ones: evaluation does not care), with fan-out, constants and gates
    no output reads."""
    gates = []
    for g in range(n_gates):
        op = str(rng.choice(["and", "or", "xor", "not", "one", "zero"], p=[0.3, 0.2, 0.3, 0.1, 0.05, 0.05]))
        gates.append((op, tuple(int(w) for w in rng.integers(0, n_inputs + n_params + g, size=GATES[op].arity))))
    outputs = rng.choice(n_inputs + n_params + n_gates, size=n_outputs).tolist()
    return gates, outputs


def evaluate_on_bools(gates, outputs, n_inputs: int, theta: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The netlist evaluated wire by wire on unpacked bools: the reference both backends must match."""
    wires = [bits[:, i] for i in range(n_inputs)] + [np.full(len(bits), t) for t in theta]
    for op, ins in gates:
        if op in BOOL_UFUNCS:
            wires.append(BOOL_UFUNCS[op](wires[ins[0]], wires[ins[1]]))
        elif op == "not":
            wires.append(~wires[ins[0]])
        else:
            wires.append(np.full(len(bits), op == "one"))
    return np.stack([wires[w] for w in outputs], axis=1).reshape(len(bits), len(outputs))


@pytest.fixture(params=["compiled", "numpy"])
def backend(request) -> str:
    if request.param == "compiled":
        request.getfixturevalue("kernel")
    return request.param


def run_random_circuit(backend: str, seed: int) -> dict:
    """A random netlist on a random batch with ``backend``: what get, forward and backward give,
    and the outputs evaluated on plain bools."""
    rng = np.random.default_rng(seed)
    n_inputs, n_params = int(rng.integers(1, 9)), int(rng.integers(0, 5))
    gates, outputs = random_netlist(rng, n_inputs, n_params, int(rng.integers(1, 300)), int(rng.integers(1, 7)))
    n = int(rng.choice([0, 63, 65, 1000, 64 * 37 + 5, 4096]))  # mostly several blocks, most with a tail
    bits = rng.random((n, n_inputs)) < 0.5
    x, d = pack(bits), pack(rng.random((n, len(outputs))) < 0.5)
    circuit = Circuit(n_inputs, n_params, gates, outputs)
    circuit.backend = backend
    circuit.block_bytes = 8 * circuit._reuse.n_slots * int(rng.integers(1, 40))  # blocks of 8-40 words
    theta = circuit.init(rng)
    out, residual = circuit.forward(theta, x)
    return {
        "get": circuit.get(theta, x),
        "forward": out,
        "wires": residual[0],
        "backward": circuit.backward(residual, d),
        "expected": evaluate_on_bools(gates, outputs, n_inputs, theta, bits),
        "n": n,
    }


@pytest.mark.parametrize("seed", range(12))
def test_each_backend_matches_plain_bools(backend, seed):
    run = run_random_circuit(backend, seed)
    assert run["get"].n == run["forward"].n == run["n"]
    assert np.array_equal(unpack(run["get"]), run["expected"])
    assert np.array_equal(unpack(run["forward"]), run["expected"])


@pytest.mark.parametrize("seed", range(12))
def test_compiled_and_numpy_backends_agree_bit_for_bit(kernel, seed):
    compiled, fallback = run_random_circuit("compiled", seed), run_random_circuit("numpy", seed)
    # padding included: every wire forward keeps for the backward pass, and what backward gives
    for key in ("get", "forward", "wires"):
        assert np.array_equal(compiled[key], fallback[key]), key
    for ours, theirs in zip(compiled["backward"], fallback["backward"]):
        assert np.array_equal(ours, theirs)


def test_the_default_backend_is_the_compiled_one_where_it_was_built(kernel):
    assert boolean.PACKED_BACKEND == "compiled" and Circuit(1, 0, [], [0]).backend == "compiled"


def test_backend_errors_name_the_value_and_what_was_expected(monkeypatch):
    circuit = Circuit(2, 0, [("xor", (0, 1))], [2], name="tiny")
    x = pack(np.zeros((3, 2), dtype=bool))
    circuit.backend = "fast"
    with pytest.raises(ConfigError, match=r"tiny: unknown backend 'fast'; expected one of \['compiled', 'numpy'\]"):
        circuit.get(circuit.init(), x)
    monkeypatch.setattr(boolean, "_kernel", None)
    circuit.backend = "compiled"
    with pytest.raises(ConfigError, match="needs the C kernel .* use backend 'numpy'"):
        circuit.forward(circuit.init(), x)
    circuit.backend = "numpy"
    assert unpack(circuit.get(circuit.init(), x)).tolist() == [[False]] * 3


def _call(kernel, **override) -> np.ndarray:
    """``kernel.evaluate`` on one input row, two words, four scratch rows of two words and one
    xor gate (row 2 = row 0 ^ row 1), with any argument replaced by ``override``."""
    args = dict(
        inputs=np.ones((1, 2), dtype=np.uint64),
        n_words=2,
        theta=np.zeros(0, dtype=np.uint64),
        rows=np.zeros((4, 2), dtype=np.uint64),
        block=2,
        tape=np.array([[0, 0, 1, 2]], dtype=np.int32),
        outputs=np.array([2], dtype=np.int32),
        out=np.zeros((1, 2), dtype=np.uint64),
    )
    args.update(override)
    kernel.evaluate(*args.values())
    return args["out"]


def test_the_kernel_checks_every_index_before_running(kernel):
    one = np.uint64(2**64 - 1)
    assert _call(kernel, theta=np.array([one], dtype=np.uint64)).tolist() == [[2**64 - 2] * 2]  # 1 ^ θ
    for bad in ([0, 0, 4, 2], [0, -1, 1, 2], [0, 0, 1, 9], [6, 0, 1, 2]):
        with pytest.raises(ValueError, match=r"tape step 1 .* unknown op or a row outside \[0, 4\)"):
            _call(kernel, tape=np.array([[3, 0, 0, 3], bad], dtype=np.int32))
    with pytest.raises(ValueError, match=r"output 0 reads row 4 outside \[0, 4\)"):
        _call(kernel, outputs=np.array([4], dtype=np.int32))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        _call(kernel, out=np.zeros((2, 2), dtype=np.uint64))  # room for two outputs, one is listed
    with pytest.raises(ValueError, match="inconsistent shapes"):
        _call(kernel, block=0)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        _call(kernel, theta=np.zeros(4, dtype=np.uint64))  # 1 input + 4 parameters do not fit 4 rows
    with pytest.raises(ValueError, match="tape must be a C-contiguous buffer of 4-byte items"):
        _call(kernel, tape=np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):  # numpy itself refuses a strided view
        _call(kernel, inputs=np.ones((2, 4), dtype=np.uint64)[:, ::2])
