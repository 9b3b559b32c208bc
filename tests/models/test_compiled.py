"""Circuits compiled to exact ReLU networks (models.compiled): checked against the circuits' own
bit-packed evaluation on every input, the reverse derivative against autograd, sizes against
independent counts, and bad netlists against their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from progsynth.cli import app
from progsynth.core.boolean import Circuit, gate, identity, pack, unpack, wires
from progsynth.errors import ConfigError, LensTypeError
from progsynth.models.compiled import (GATE_BLOCKS, ReluBlock, ReluNet, check_compiled, compile_circuit,
                                       formula_circuit, majority_circuit, named_circuit,
                                       parity_circuit, relu_functor)
from progsynth.tasks import make_task

runner = CliRunner()
OPS = ("and", "or", "xor", "not", "zero", "one")
ARITY = {"and": 2, "or": 2, "xor": 2, "not": 1, "zero": 0, "one": 0}


def every_input(n: int) -> np.ndarray:
    return ((np.arange(2 ** n)[:, None] >> np.arange(n - 1, -1, -1)) & 1).astype(bool)


@st.composite
def circuits(draw, max_inputs: int = 12, max_gates: int = 30):
    """Random netlists: any gate on any earlier wires, parameter bits, one to three outputs."""
    n = draw(st.integers(1, max_inputs))
    n_params = draw(st.integers(0, 2))
    gates = []
    for g in range(draw(st.integers(0, max_gates))):
        op = draw(st.sampled_from(OPS))
        wire_count = n + n_params + g
        gates.append((op, tuple(draw(st.integers(0, wire_count - 1)) for _ in range(ARITY[op]))))
    wire_count = n + n_params + len(gates)
    outputs = draw(st.lists(st.integers(0, wire_count - 1), min_size=1, max_size=3))
    theta = np.array(draw(st.lists(st.booleans(), min_size=n_params, max_size=n_params)), dtype=bool)
    return Circuit(n, n_params, gates, outputs, name="drawn"), theta


def live_counts(circuit: Circuit) -> tuple[int, int, int]:
    """(live gates, live AND/OR/XOR gates, longest chain of AND/OR/XOR gates to an output), by a
    plain recursion over the netlist."""
    first = circuit.n_inputs + circuit.n_params
    memo: dict[int, int] = {}
    live: set[int] = set()

    def depth(w: int) -> int:
        if w < first:
            return 0
        if w not in memo:
            live.add(w)
            op, ins = circuit.gates[w - first]
            memo[w] = (op in ("and", "or", "xor")) + max((depth(i) for i in ins), default=0)
        return memo[w]

    longest = max(depth(w) for w in circuit.outputs)
    binary = sum(circuit.gates[w - first][0] in ("and", "or", "xor") for w in live)
    return len(live), binary, longest


@settings(max_examples=25, deadline=None)
@given(circuits())
def test_compiled_networks_equal_their_circuits_on_every_input(drawn):
    circuit, theta = drawn
    compiled = compile_circuit(circuit, theta)
    bits = every_input(circuit.n_inputs)
    expected = unpack(circuit.get(theta, pack(bits))).astype(np.float64)
    assert np.array_equal(compiled.outputs(bits).double().numpy(), expected)  # exactly 0.0 / 1.0
    check = check_compiled(compiled)
    assert check.exhaustive and check.exact and check.inputs_checked == 2 ** circuit.n_inputs
    live, binary, longest = live_counts(circuit)
    report = compiled.report
    assert (report.live_gates, report.neurons, report.depth) == (live, binary, longest)
    assert report.neurons <= report.gates and sum(report.widths) == report.neurons
    # the term the network is the image of computes the circuit too
    assert np.array_equal(unpack(compiled.term.get(pack(bits))), expected.astype(bool))


def test_a_sampled_check_beyond_sixteen_inputs():
    circuit = named_circuit("random-circuit:80", 24, seed=5)
    compiled = compile_circuit(circuit)
    check = check_compiled(compiled, samples=3000, seed=1)
    assert not check.exhaustive and check.inputs_checked == 3000 and check.exact
    bits = np.random.default_rng(2).random((500, 24)) < 0.5  # and independently of check_compiled
    assert np.array_equal(compiled.evaluate(bits), unpack(circuit.get(np.zeros(0, dtype=bool), pack(bits))))


def test_neurons_grow_linearly_with_gates():
    for gates in (10, 40, 160):
        circuit = named_circuit(f"random-circuit:{gates}", 8, seed=gates)
        report = compile_circuit(circuit).report
        assert report.neurons == live_counts(circuit)[1] <= gates
    for n in (3, 8, 13):
        assert compile_circuit(parity_circuit(n)).report.neurons == n - 1
        majority = compile_circuit(majority_circuit(n)).report
        assert majority.neurons == majority.gates <= n * n


def test_each_gate_block_is_exact_and_the_functor_respects_composition():
    for name, (W, *_) in GATE_BLOCKS.items():
        net = relu_functor(gate(name))
        bits = every_input(ARITY[name])
        out = net.get(net.init(), torch.tensor(bits, dtype=torch.float32)).squeeze(1).double().numpy()
        assert np.array_equal(out, unpack(gate(name).get(pack(bits)))[:, 0].astype(float)), name
        assert net.neurons == len(W)
    f = wires(3, [0, 1, 1, 2]) >> (gate("and") @ gate("xor"))
    g = gate("or") @ identity(1) @ gate("not")
    term = (f @ wires(2, [1, 0])) >> (wires(4, [0, 1, 3, 2]) >> (gate("xor") @ identity(1) @ gate("not")))
    for lens in (f, f >> gate("or"), (f @ g) >> (wires(5, [0, 2, 4, 1, 3])), term):
        n = lens.dom.shape[0]
        bits = every_input(n)
        net = relu_functor(lens)
        got = net.get(net.init(), torch.tensor(bits, dtype=torch.float32)).numpy()
        assert np.array_equal(got, unpack(lens.get(pack(bits))).astype(np.float32))
    # F(f) @ F(g) stacks the two networks: each half of the output reads its half of the input
    both = relu_functor(f) @ relu_functor(g)
    x = torch.tensor(every_input(7), dtype=torch.float32)
    left = relu_functor(f).get(relu_functor(f).init(), x[:, :3])
    right = relu_functor(g).get(relu_functor(g).init(), x[:, 3:])
    assert torch.equal(both.get(both.init(), x), torch.cat([left, right], 1))
    with pytest.raises(LensTypeError):
        relu_functor(f) >> relu_functor(g)  # 2 outputs into 3 inputs


def test_relu_block_reverse_derivative_matches_autograd():
    generator = torch.Generator().manual_seed(0)

    def block(n_in: int, units: int, n_out: int) -> ReluBlock:
        shapes = ((units, n_in), (units,), (n_out, n_in), (n_out, units), (n_out,))
        return ReluBlock(*(torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes),
                         dtype=torch.float64)

    net = ReluNet([block(4, 5, 3)], torch.float64) >> ReluNet([block(3, 2, 2)], torch.float64)
    assert isinstance(net, ReluNet) and net.depth == 2 and net.neurons == 7
    x = torch.randn(7, 2, 4, generator=generator, dtype=torch.float64)
    dy = torch.randn(7, 2, 2, generator=generator, dtype=torch.float64)
    params = net.init()
    grads, dx = net.put(params, x, dy)
    leaves = [t.clone().requires_grad_() for t in (*params[0], *params[1], x)]
    y = net.get((tuple(leaves[:5]), tuple(leaves[5:10])), leaves[10])
    expected = torch.autograd.grad(y, leaves, dy)
    for got, want in zip((*grads[0], *grads[1], dx), expected):
        assert torch.allclose(got, want)


def test_named_circuits_compute_their_functions():
    bits = every_input(7)
    count = bits.sum(1)
    formula = ((bits[:, 0] & bits[:, 1]) ^ ~bits[:, 2]) | bits[:, 6]
    for circuit, want in ((parity_circuit(7), count % 2 == 1), (majority_circuit(7), 2 * count > 7),
                          (formula_circuit("x0 & x1 ^ ~x2 | x6", 7), formula)):
        assert np.array_equal(unpack(circuit.get(np.zeros(0, dtype=bool), pack(bits)))[:, 0], want), circuit.name
        assert np.array_equal(compile_circuit(circuit).evaluate(bits)[:, 0], want)
    # random-circuit:G is the circuit the Boolean task labels its strings with (reached through the registry)
    data = make_task("boolean", n_bits=6, function="random-circuit:12", seed=3).dataset()
    compiled = compile_circuit(named_circuit("random-circuit:12", 6, seed=3))
    assert np.array_equal(compiled.evaluate(data.operands.numpy().astype(bool))[:, 0], data.labels.numpy() == 1)


FULL_ADDER = {"inputs": ["a", "b", "cin"],
              "gates": {"cout": ["or", "ab", "c_axb"], "s": ["xor", "axb", "cin"], "axb": ["xor", "a", "b"],
                        "ab": ["and", "a", "b"], "c_axb": ["and", "cin", "axb"]},
              "outputs": ["s", "cout"]}


def test_netlists_in_any_order_compile_and_bad_ones_fail_with_one_clear_error():
    compiled = compile_circuit(FULL_ADDER)
    bits = every_input(3)
    total = bits.sum(1)
    assert np.array_equal(compiled.evaluate(bits), np.stack([total % 2 == 1, total >= 2], 1))
    assert (compiled.report.neurons, compiled.report.depth) == (5, 3) and check_compiled(compiled).exact
    cases = {
        "cycle": ({"t": ["and", "a", "u"], "u": ["not", "t"]}, ["t"], "cycle: t -> u -> t"),
        "self loop": ({"t": ["xor", "a", "t"]}, ["t"], "cycle: t -> t"),
        "undriven": ({"t": ["and", "a", "q"]}, ["t"], "dangling wire 'q'"),
        "unread": ({"t": ["and", "a", "b"], "u": ["not", "a"]}, ["t"], "dangling wire 'u'"),
        "output": ({"t": ["and", "a", "b"]}, ["t", "z"], "dangling wire 'z'"),
        "gate": ({"t": ["nand", "a", "b"]}, ["t"], "unknown gate 'nand'"),
        "arity": ({"t": ["not", "a", "b"]}, ["t"], "not reads 1 wire(s)"),
    }
    for name, (gates, outputs, message) in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compile_circuit({"inputs": ["a", "b"], "gates": gates, "outputs": outputs})
    with pytest.raises(ConfigError, match="below its own wire"):  # a Circuit cannot hold a cycle at all
        Circuit(2, 0, [("and", (0, 2))], [2])
    with pytest.raises(ConfigError, match="parameter bits; pass theta"):
        compile_circuit(Circuit(1, 1, [("and", (0, 1))], [2]))
    with pytest.raises(ConfigError, match="unknown circuit"):
        named_circuit("nand", 4)


def test_cli_compile_json_and_bad_netlist(tmp_path):
    result = runner.invoke(app, ["circuit", "compile", "--function", "majority", "--n-bits", "5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["check"]["exact"] and out["check"]["exhaustive"] and out["check"]["inputs_checked"] == 32
    assert out["neurons"] == out["gates"] == 12 and out["depth"] == 6 and out["program"][-1] == "out = g11"
    adder = tmp_path / "adder.json"
    adder.write_text(json.dumps(FULL_ADDER))
    result = runner.invoke(app, ["circuit", "compile", "--netlist", str(adder)])
    assert result.exit_code == 0 and "exact on all 8 inputs" in result.output and "5 units in 3 layers" in result.output
    looped = tmp_path / "loop.json"
    looped.write_text(json.dumps({"inputs": 2, "gates": {"t": ["and", "x0", "u"], "u": ["or", "t", "x1"]},
                                  "outputs": ["u"]}))
    for args in (["--netlist", str(looped)], ["--function", "random-circuit:x"]):
        result = runner.invoke(app, ["circuit", "compile", *args, "--json"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:")
