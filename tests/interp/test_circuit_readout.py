"""Reading Boolean circuits out of ReLU networks (interp.circuit_readout): printed programs run as
their circuits, named gates compute their truth tables, and read-backs of planted, random and
trained networks agree with the network on every input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.core.boolean import Circuit, pack, unpack
from progsynth.errors import NotApplicableError
from progsynth.interp.circuit_readout import (ANALYSIS, BooleanProgram, Literal, ProgramGate, all_inputs,
                                              circuit_program, name_function, read_back, readback_run)
from progsynth.models.compiled import majority_circuit
from progsynth.runs.config import ModelConfig, OptimConfig, RunConfig
from progsynth.runs.store import RunStore, flatten_named
from progsynth.runs.train import train
from progsynth.tasks import make_task

runner = CliRunner()
OPS = ("and", "or", "xor", "not", "zero", "one")
ARITY = {"and": 2, "or": 2, "xor": 2, "not": 1, "zero": 0, "one": 0}


@st.composite
def circuits(draw):
    n, n_params = draw(st.integers(1, 6)), draw(st.integers(0, 2))
    gates = []
    for g in range(draw(st.integers(0, 12))):
        op = draw(st.sampled_from(OPS))
        gates.append((op, tuple(draw(st.integers(0, n + n_params + g - 1)) for _ in range(ARITY[op]))))
    outputs = draw(st.lists(st.integers(0, n + n_params + len(gates) - 1), min_size=1, max_size=2))
    theta = np.array(draw(st.lists(st.booleans(), min_size=n_params, max_size=n_params)), dtype=bool)
    return Circuit(n, n_params, gates, outputs), theta


@settings(max_examples=30, deadline=None)
@given(circuits(), st.booleans())
def test_printed_circuits_run_as_the_circuits(drawn, live_only):
    circuit, theta = drawn
    program = circuit_program(circuit, theta, live_only=live_only)
    bits = all_inputs(circuit.n_inputs)
    assert np.array_equal(program.evaluate(bits), unpack(circuit.get(theta, pack(bits))))
    if not live_only:
        assert program.gate_count == len(circuit.gates) + circuit.n_params  # one line per gate and θ bit
    # without θ the parameter bits are inputs after the x's
    free = circuit_program(circuit)
    both = np.concatenate([bits, np.broadcast_to(theta, (len(bits), circuit.n_params))], axis=1)
    assert np.array_equal(free.evaluate(both), program.evaluate(bits))


def test_program_text():
    program = circuit_program(majority_circuit(3))
    assert program.lines() == ["g0 = OR(x0, x1)", "g1 = AND(x1, x0)", "g2 = AND(x2, g0)", "g3 = OR(g1, g2)",
                               "out = g3"]
    gates = (ProgramGate("g1", "THRESHOLD", (Literal("x0"), Literal("x1", True)), (2.0, -1.0), 1.5),
             ProgramGate("out", "ATLEAST", (Literal("g1"), Literal("x2"), Literal("x0")), threshold=2))
    assert BooleanProgram(("x0", "x1", "x2"), gates, (("out", Literal("out")),)).lines() == [
        "g1 = [2*x0 - ~x1 >= 1.5]", "out = ATLEAST2(g1, x2, x0)"]


def test_name_function_finds_each_family_and_falls_back_to_a_table():
    x = all_inputs(4)
    i = x.astype(int)
    cases = {
        "AND": x[:, 0] & ~x[:, 2], "OR": x[:, 1] | ~x[:, 3] | x[:, 0], "XOR": x[:, 0] ^ x[:, 1] ^ x[:, 3],
        "XNOR": ~(x[:, 2] ^ x[:, 3]), "MAJ": i[:, :3].sum(1) >= 2,
        "ATLEAST": i[:, 0] + i[:, 1] + (1 - i[:, 2]) + i[:, 3] >= 2,
        "THRESHOLD": 2 * i[:, 0] + i[:, 1] + i[:, 2] - i[:, 3] >= 2,
        "TABLE": x[:, 0] ^ (x[:, 1] & x[:, 2]),
    }
    for op, target in cases.items():
        fit = name_function(x, target)
        assert fit.op == op, (op, fit)
        gate = fit.gate("out", ["x0", "x1", "x2", "x3"])
        program = BooleanProgram(("x0", "x1", "x2", "x3"), (gate,), (("out", Literal("out")),))
        assert np.array_equal(program.evaluate(x)[:, 0], target), op
    assert name_function(x, x[:, 0] ^ (x[:, 1] & x[:, 2]), table=False) is None
    assert name_function(x[:, :1], x[:, 0] & x[:, 1]) is None  # no function of x0 alone


def relu_net(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, readout: np.ndarray, offset: float):
    pre = x.astype(np.float64) @ weights + bias
    hidden = np.maximum(pre, 0)
    score = hidden @ readout + offset
    return hidden, score, pre


def test_planted_programs_are_read_back():
    x = all_inputs(5)
    # XOR(x1, x3) with units relu(x1), relu(x3), relu(x1 + x3 − 1) and a constant unit
    w = np.zeros((5, 4))
    w[1, 0] = w[3, 1] = w[1, 2] = w[3, 2] = 1
    hidden, score, pre = relu_net(x, w, np.array([0, 0, -1, 1.0]), np.array([1, 1, -2, -0.5]), 0.0)
    found = read_back(hidden, np.array([1, 1, -2, -0.5]), score, score > 0, pre)
    assert found.exact and found.program.lines() == ["out = XOR(x1, x3)"] and found.program.gate_count == 1
    assert found.units == {"constant": 1, "binary": 3, "affine": 0, "multilevel": 0}
    # AND(x0, x4) OR majority(x1, x2, x3): two units, the second with three values
    w = np.zeros((5, 2))
    w[[0, 4], 0] = 1
    w[[1, 2, 3], 1] = 1
    readout = np.array([1.0, 1.0])
    hidden, score, pre = relu_net(x, w, np.array([-1.0, -1.0]), readout, -0.5)
    found = read_back(hidden, readout, score, score > 0, pre)
    assert found.exact and found.program.gate_count == 3
    assert found.program.lines()[-1] == "out = OR(g1, g2)"
    assert {line.split("  #")[0] for line in found.program.lines()[:2]} == {"g1 = AND(x0, x4)", "g2 = MAJ(x1, x2, x3)"}


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_random_relu_networks_are_read_back_exactly(n, m, seed):
    rng = np.random.default_rng(seed)
    readout = rng.normal(size=m)
    hidden, score, pre = relu_net(all_inputs(n), rng.normal(size=(n, m)), rng.normal(size=m), readout,
                                  float(rng.normal()))
    found = read_back(hidden, readout, score, score > 0, pre, tolerance=1e-12)
    assert found.exact and found.separable and found.reconstruction_error < 1e-9
    assert np.array_equal(found.program.evaluate(all_inputs(n))[:, 0], score > 0)
    if found.equivalent is not None:
        program = BooleanProgram(tuple(f"x{i}" for i in range(n)), (found.equivalent,), (("out", Literal("out")),))
        assert np.array_equal(program.evaluate(all_inputs(n))[:, 0], score > 0)


def test_inputs_where_the_program_differs_are_reported_and_bad_networks_refused():
    x = all_inputs(2)
    hidden = x[:, :1].astype(np.float64)  # one unit: x0
    decision = x[:, 0] ^ x[:, 1]  # a decision no threshold of x0 gives
    found = read_back(hidden, np.ones(1), hidden[:, 0] - 0.5, decision)
    assert not found.exact and not found.separable and found.mismatches == 2 and found.agreement == 0.5
    answer = found.program.evaluate(x)[:, 0]
    assert len(found.mismatch_examples) == 2 and all(answer[int(e, 2)] != decision[int(e, 2)]
                                                     for e in found.mismatch_examples)
    with pytest.raises(NotApplicableError, match="affine read-out"):
        read_back(hidden, np.ones(1), hidden[:, 0] ** 2 + x[:, 1], x[:, 0])


def parity_run(path, activation: str = "relu") -> tuple:
    """A hand-made run: the embedding MLP on sparse parity (k = 2 of 6 bits) with weights set to
    out = x_a + x_b − 2·relu(x_a + x_b − 1) − ½."""
    config = RunConfig(task=make_task("parity", n_bits=6, k=2, seed=4, train_fraction=0.5),
                       model=ModelConfig(name="mlp", d_model=1, d_mlp=4, activation=activation),
                       optim=OptimConfig(weight_decay=0.0), epochs=1)
    a, b = config.task.relevant_bits
    W_0, b_0, W_U = torch.zeros(6, 4), torch.tensor([0.0, 0.0, -1.0, 1.0]), torch.zeros(4, 2)
    W_0[a, 0] = W_0[b, 1] = W_0[a, 2] = W_0[b, 2] = 1
    W_U[:, 1] = torch.tensor([1.0, 1.0, -2.0, -0.5])
    params = {"W_E": torch.tensor([[0.0], [1.0]]), "W_0": W_0, "b_0": b_0, "W_U": W_U}
    RunStore.create(path, config, flatten_named("params", params))
    return a, b


def test_read_back_from_a_hand_made_checkpoint_and_the_cli(tmp_path):
    a, b = parity_run(tmp_path / "parity")
    found = readback_run(tmp_path / "parity")
    assert found.step == 0 and found.readout.exact and found.readout.program.lines() == [f"out = XOR(x{a}, x{b})"]
    assert found.program_accuracy == found.network_accuracy == {"train": 1.0, "test": 1.0}
    rows = RunStore.open(tmp_path / "parity").measures()
    assert list(rows["analysis"]) == [ANALYSIS] and bool(rows["exact"].iloc[0]) and rows["gate_count"].iloc[0] == 1
    result = runner.invoke(app, ["circuit", "readback", str(tmp_path / "parity"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["exact"] and out["program"]["lines"] == [f"out = XOR(x{a}, x{b})"] and out["inputs_checked"] == 64
    parity_run(tmp_path / "gelu", activation="gelu")
    result = runner.invoke(app, ["circuit", "readback", str(tmp_path / "gelu")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: reading a Boolean circuit reads ReLU units")


def test_read_back_of_a_network_trained_on_majority(tmp_path):
    config = RunConfig(task=make_task("boolean", n_bits=4, function="majority", train_fraction=1.0),
                       model=ModelConfig(name="mlp", d_model=4, d_mlp=8),
                       optim=OptimConfig(lr=0.01, weight_decay=0.1), epochs=300, metrics_every=100)
    trained = train(config, tmp_path / "majority")
    assert trained.final[0]["train_accuracy"] == 1.0  # it learned majority on all 16 strings
    found = readback_run(tmp_path / "majority", record=False)
    assert found.readout.exact and found.readout.inputs_checked == 16
    assert found.readout.equivalent.expression() == "ATLEAST3(x0, x1, x2, x3)"
    assert found.program_accuracy["train"] == 1.0
    assert RunStore.open(tmp_path / "majority").measures().empty  # record=False writes nothing
